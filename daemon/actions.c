/* SPDX-License-Identifier: MIT */
/* cancel (SIGINT) and terminate (SIGTERM), with every check; never anything else. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "join.h"
#include "journal.h"
#include "macro.h"
#include "manager.h"
#include "remote-act.h"
#include "remote.h"
#include "rules.h"

static const char *cluster_key(const PgTree *t, const PgProcess *p) {
        return p->cluster >= 0 ? t->clusters[p->cluster].name : p->cwd ? p->cwd : "orphans";
}

static bool enforcing(Manager *m, const PgTree *t, const PgProcess *p) {
        if (p->cluster >= 0)
                return t->clusters[p->cluster].enforce;
        /* an orphan: the [cluster] section of its data directory, else [daemon] */
        const ClusterConf *cc = p->cwd ? config_find_cluster(m->config, NULL, p->cwd, 0) : NULL;
        return config_cluster_enforce(m->config, cc);
}

/* The rate limit: at most max_actions_per_minute per cluster in any 60 s (0: no limit). pending:
 * actions on a managed server whose outcome is not known yet count as carried out. */
static bool rate_allows(Manager *m, const char *cluster, uint64_t now, bool record, size_t pending) {
        unsigned max = m->config->max_actions_per_minute;
        /* sized to the configured maximum (resized after a reload): every limit up to the
         * config's 10,000 holds */
        RateWindow *w = rate_table_get(&m->rates, cluster, max, 60 * USEC_PER_SEC, now);
        if (!w)
                return false;
        if (!rate_window_allows(w, now))
                return false;
        if (max > 0 && pending > 0 && rate_window_count(w, now) + pending >= max)
                return false;
        if (record)
                rate_window_record(w, now);
        return true;
}

static int on_term_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        TermWatch *w = userdata;
        Manager *m = w->manager;
        LogEntry e = {};
        log_add_finding(&e, &w->finding);
        log_add(&e, "PGTREE_REQUESTED_BY", "%s", w->requested_by);
        double took = (double) (now_monotonic_usec() - w->sent_at) / 1e6;
        log_add(&e, "PGTREE_EXIT_SECONDS", "%.3f", took);
        log_send(&e, LOG_INFO, MSGID_ACTION_EXITED, "pid %d exited %.2fs after SIGTERM", (int) w->ref.pid, took);
        for (size_t i = 0; i < m->n_terms; i++)
                if (m->terms[i] == w) {
                        m->terms[i] = m->terms[--m->n_terms];
                        break;
                }
        sd_event_source_disable_unref(w->exit_source);
        sd_event_source_disable_unref(w->grace_source);
        pidref_done(&w->ref);
        free(w);
        return 0;
}

static int on_term_grace(sd_event_source *s, uint64_t usec, void *userdata) {
        TermWatch *w = userdata;
        if (pidref_exited(&w->ref))
                return on_term_exit(s, -1, 0, userdata);
        LogEntry e = {};
        log_add_finding(&e, &w->finding);
        log_add(&e, "PGTREE_REQUESTED_BY", "%s", w->requested_by);
        w->manager->counters.not_exited++;
        log_send(&e, LOG_ERR, MSGID_ACTION_DID_NOT_EXIT,
                 "pid %d did not exit within %.0fs of SIGTERM; pgtree never escalates to SIGKILL (that would make the "
                 "postmaster restart every session): look at it by hand",
                 (int) w->ref.pid, (double) w->manager->config->terminate_grace_usec / 1e6);
        /* keep watching for its exit, quietly */
        w->grace_source = sd_event_source_disable_unref(w->grace_source);
        return 0;
}

static void watch_terminate(Manager *m, PidRef *ref, const Finding *f, const char *requested_by) {
        TermWatch *w = calloc(1, sizeof *w);
        if (!w || GROW(m->terms, m->terms_allocated, m->n_terms + 1) < 0) {
                free(w);
                pidref_done(ref);
                return;
        }
        *w = (TermWatch){ .manager = m, .ref = *ref, .finding = *f, .sent_at = now_monotonic_usec() };
        *ref = PIDREF_NULL;
        snprintf(w->requested_by, sizeof w->requested_by, "%s", requested_by);
        if (sd_event_add_io(m->event, &w->exit_source, w->ref.fd, EPOLLIN, on_term_exit, w) < 0 ||
            sd_event_add_time_relative(m->event, &w->grace_source, CLOCK_MONOTONIC, m->config->terminate_grace_usec, 10000,
                                       on_term_grace, w) < 0) {
                sd_event_source_disable_unref(w->exit_source);
                pidref_done(&w->ref);
                free(w);
                return;
        }
        m->terms[m->n_terms++] = w;
}

/* Test hook, reachable only through the test harness's environment (never the config):
 * PGTREED_TEST_HOOKS=1 and PGTREED_TEST_ACT_GATE=/PATH make an action, once every check on the
 * scanned tree passed, write the target's pid to PATH and wait (up to 60 s) until the test removes
 * it: the test can then replace the process between detection and action. */
static void test_act_gate(pid_t pid) {
        const char *hooks = getenv("PGTREED_TEST_HOOKS"), *gate = getenv("PGTREED_TEST_ACT_GATE");
        if (!hooks || strcmp(hooks, "1") != 0 || !gate || gate[0] != '/')
                return;
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s.tmp", gate);
        FILE *f = fopen(tmp, "we");
        if (!f)
                return;
        fprintf(f, "%d\n", (int) pid);
        if (fclose(f) != 0 || rename(tmp, gate) < 0)
                return;
        log_plain(LOG_WARNING, "test hook: holding the action on pid %d until %s is removed", (int) pid, gate);
        for (int i = 0; i < 3000 && access(gate, F_OK) == 0; i++)
                usleep(20000);
}

#define RESULT(word, id, prio, ...)                                          \
        do {                                                                 \
                snprintf(why, why_size, __VA_ARGS__);                        \
                log_add(&e, "PGTREE_RESULT", "%s", word);                    \
                log_send(&e, prio, id, "%s pid %d (%s): %s", action_to_string(action), (int) f->pid, requested_by, why); \
                return word;                                                 \
        } while (0)

/* SIGTERM (never anything else) to a foreign process, once its backend was terminated: only the
 * very process that was scanned (pid, start time and parent, through a pidfd), running as the
 * backend's uid (never another user's program), and not PostgreSQL itself. */
static void terminate_foreign(const Finding *f, const PgProcess *backend, char *note, size_t size) {
        if (f->uid < 0 || !backend->rec.ident.ids_valid || (uid_t) f->uid != backend->rec.ident.euid) {
                snprintf(note, size, "; foreign process %d left alone: it does not run as the backend's uid", (int) f->pid);
                return;
        }
        PidRef ref;
        /* pid and start time: its parent may have been terminated just before (the shell of
         * COPY … FROM PROGRAM), which re-parents it */
        int r = pidref_open_verified(f->pid, f->start_ticks, 0, &ref);
        if (r >= 0) {
                /* and still the backend's uid now that the pidfd holds it (no setuid exec since) */
                char path[64], buf[2048];
                unsigned long ruid, euid;
                snprintf(path, sizeof path, "/proc/%d/status", (int) f->pid);
                _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
                ssize_t k = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
                const char *u = k > 0 ? (buf[k] = 0, strstr(buf, "\nUid:")) : NULL;
                if (!u || sscanf(u + 5, "%lu %lu", &ruid, &euid) != 2 || (uid_t) euid != backend->rec.ident.euid ||
                    (uid_t) ruid != backend->rec.ident.euid) {
                        pidref_done(&ref);
                        snprintf(note, size, "; foreign process %d left alone: it does not run as the backend's uid now",
                                 (int) f->pid);
                        return;
                }
        }
        if (r < 0) {
                snprintf(note, size, "; foreign process %d not signalled: %s", (int) f->pid,
                         r == -ESRCH ? "gone" : r == -ESTALE ? "not the scanned process any more" : strerror(-r));
                return;
        }
        r = pidref_signal(&ref, SIGTERM);
        pidref_done(&ref);
        if (r < 0)
                snprintf(note, size, "; SIGTERM to foreign process %d failed: %s", (int) f->pid, strerror(-r));
        else
                snprintf(note, size, "; sent SIGTERM to foreign process %d", (int) f->pid);
}

void manager_rate_record(Manager *m, const char *key) {
        (void) rate_allows(m, key, now_monotonic_usec(), true, 0);
}

const char *manager_act(Manager *m, const Finding *f, Action action, const char *requested_by, bool manual, char *why,
                        size_t why_size) {
        return manager_act_async(m, f, action, requested_by, manual, why, why_size, NULL, NULL);
}

const char *manager_act_async(Manager *m, const Finding *f, Action action, const char *requested_by, bool manual,
                              char *why, size_t why_size, ManagerActDone done, void *userdata) {
        const PgTree *t = &m->engine->tree;
        LogEntry e = {};
        Finding logged = *f;
        logged.action = action;
        log_add_finding(&e, &logged);
        log_add(&e, "PGTREE_REQUESTED_BY", "%s", requested_by);
        log_add(&e, "PGTREE_REQUESTED_ACTION", "%s", action_to_string(action));

        if (action != ACTION_CANCEL && action != ACTION_TERMINATE) {
                m->counters.n[action][RESULT_REFUSED]++;
                RESULT("refused", MSGID_ACTION_REFUSED, LOG_WARNING, "only cancel (SIGINT) and terminate (SIGTERM) are carried out");
        }
        int idx = tree_find_finding(t, f); /* pids of managed servers repeat */
        char target_note[160] = "";
        if (f->kind == FINDING_FOREIGN_PROCESS) {
                /* cancel/terminate act on the PostgreSQL process it descends from (the session that
                 * runs it), with every check below; the foreign process itself is never signalled */
                idx = -1;
                for (size_t i = 0; i < t->n_procs && idx < 0 && f->via_pid > 0; i++)
                        if (t->procs[i].rec.pid == f->via_pid && t->procs[i].rec.start_ticks == f->via_start_ticks &&
                            t->procs[i].cluster >= 0)
                                idx = (int) i;
                if (idx < 0)
                        RESULT("gone", MSGID_ACTION_REFUSED, LOG_INFO,
                               "the PostgreSQL process foreign process %d descends from is gone (pgtree does not signal "
                               "the foreign process itself)",
                               (int) f->pid);
                snprintf(target_note, sizeof target_note, " (the backend that runs foreign process %d)", (int) f->pid);
                log_add(&e, "PGTREE_TARGET_PID", "%d", (int) t->procs[idx].rec.pid);
        }
        if (idx < 0 || f->kind == FINDING_STALE_ACTIVITY) {
                if (f->kind == FINDING_STALE_ACTIVITY) {
                        m->counters.n[action][RESULT_REFUSED]++;
                        RESULT("refused", MSGID_ACTION_REFUSED, LOG_WARNING, "a stale pg_stat_activity row has no process to signal");
                }
                RESULT("gone", MSGID_ACTION_REFUSED, LOG_INFO, "the process is gone already");
        }
        const PgProcess *p = &t->procs[idx];
        if (f->act_on_blocker) {
                /* the rule acts on the root of the chain that blocks this session: the same checks
                 * follow, on that process */
                if (f->blocker_pid <= 0) {
                        m->counters.n[action][RESULT_REFUSED]++;
                        RESULT("refused", MSGID_ACTION_REFUSED, LOG_WARNING, "%s",
                               f->lock_cycle ? "the session waits in a cycle of waiting sessions: there is no root blocker to act on"
                                             : "no root blocker of this session is known");
                }
                int bi = tree_find(t, f->blocker_pid);
                if (bi < 0 || t->procs[bi].rec.start_ticks != f->blocker_start_ticks || t->procs[bi].cluster != p->cluster)
                        RESULT("gone", MSGID_ACTION_REFUSED, LOG_INFO, "its root blocker %d is gone already", (int) f->blocker_pid);
                p = &t->procs[bi];
                snprintf(target_note, sizeof target_note, " (root blocker of lock-waiting pid %d)", (int) f->pid);
                log_add(&e, "PGTREE_TARGET_PID", "%d", (int) p->rec.pid);
                log_add(&e, "PGTREE_TARGET", "blocker");
        }
        if (p->title.backend_type == BACKEND_PARALLEL_WORKER) {
                if (p->leader < 0) {
                        m->counters.n[action][RESULT_REFUSED]++;
                        RESULT("refused", MSGID_ACTION_REFUSED, LOG_WARNING,
                               "a parallel worker is only acted on through its leader, and its leader %d is gone",
                               (int) p->title.leader_pid);
                }
                size_t l = strlen(target_note);
                snprintf(target_note + l, sizeof target_note - l, " (through leader %d of parallel worker %d)",
                         (int) t->procs[p->leader].rec.pid, (int) p->rec.pid);
                p = &t->procs[p->leader];
                log_add(&e, "PGTREE_TARGET_PID", "%d", (int) p->rec.pid);
        }
        /* only a process whose identity agrees with PostgreSQL's (uid, program, data directory) */
        for (const PgProcess *q = &t->procs[idx];; q = p) {
                /* a managed server's session has no /proc: the SQL statement re-checks pid and
                 * backend_start on the server itself */
                if (q->identity != PG_IDENTITY_VERIFIED && !pg_process_is_remote(t, q)) {
                        m->counters.n[action][RESULT_REFUSED]++;
                        RESULT("refused", MSGID_ACTION_REFUSED, LOG_WARNING, "pid %d is not verified to be PostgreSQL's: %s",
                               (int) q->rec.pid, q->identity_why[0] ? q->identity_why : "identity unknown");
                }
                if (q == p)
                        break;
        }
        if (engine_is_own_backend(m->engine, t, p)) {
                m->counters.n[action][RESULT_REFUSED]++;
                RESULT("refused", MSGID_ACTION_REFUSED, LOG_WARNING, "it is pgtree's own connection");
        }
        const char *bt = proc_backend_type(p);
        if ((p->depth == 0 && p->cluster >= 0) || strcmp(bt, "client backend") != 0) {
                m->counters.n[action][RESULT_REFUSED]++;
                RESULT("refused", MSGID_ACTION_REFUSED, LOG_WARNING,
                       "it is a %s: pgtree signals only client backends, never the postmaster or auxiliary processes",
                       p->depth == 0 && p->cluster >= 0 ? "postmaster" : bt);
        }
        char client[128];
        proc_client(p, client, sizeof client);
        Subject s = { .kind = f->kind, .user = proc_user(p), .database = proc_database(p),
                      .application_name = proc_application(p), .client = client, .backend_type = bt,
                      .state = proc_state(p), .cluster = cluster_key(t, p),
                      .cluster_name = p->cluster >= 0 && t->clusters[p->cluster].cluster_name_known &&
                                              strcmp(t->clusters[p->cluster].cluster_name, t->clusters[p->cluster].name) != 0
                                      ? t->clusters[p->cluster].cluster_name
                                      : NULL,
                      .container = p->cluster >= 0 && t->clusters[p->cluster].container.name[0]
                                           ? t->clusters[p->cluster].container.name
                                           : NULL };
        const char *prot;
        if (rules_protected(m->config, &s, &prot)) {
                m->counters.n[action][RESULT_REFUSED]++;
                RESULT("refused", MSGID_ACTION_REFUSED, LOG_NOTICE, "%s (%s)", prot,
                       !strcmp(prot, "protected user") ? s.user : !strcmp(prot, "protected database") ? s.database
                                                                                                   : s.application_name);
        }
        if (!enforcing(m, t, p)) {
                m->counters.n[action][RESULT_DRY_RUN]++;
                log_add(&e, "PGTREE_DRY_RUN", "yes");
                if (pg_process_is_remote(t, p))
                        RESULT("dry-run", MSGID_ACTION_DRY_RUN, LOG_NOTICE,
                               "dry run: would call %s(%d)%s on %s; enforcement is off for %s",
                               action == ACTION_CANCEL ? "pg_cancel_backend" : "pg_terminate_backend", (int) p->rec.pid,
                               target_note, t->clusters[p->cluster].remote_server, cluster_key(t, p));
                RESULT("dry-run", MSGID_ACTION_DRY_RUN, LOG_NOTICE,
                       "dry run: would send %s to pid %d%s; enforcement is off for %s", action == ACTION_CANCEL ? "SIGINT" : "SIGTERM",
                       (int) p->rec.pid, target_note, cluster_key(t, p));
        }
        if (action == ACTION_TERMINATE)
                for (size_t i = 0; i < m->n_terms; i++)
                        if (m->terms[i]->ref.pid == p->rec.pid && m->terms[i]->finding.start_ticks == p->rec.start_ticks) {
                                /* several waiters of one root blocker: it is signalled once */
                                snprintf(why, why_size, "SIGTERM was sent to pid %d already%s; waiting for it to exit",
                                         (int) p->rec.pid, target_note);
                                log_add(&e, "PGTREE_RESULT", "pending");
                                log_send(&e, LOG_INFO, NULL, "%s pid %d (%s): %s", action_to_string(action), (int) f->pid,
                                         requested_by, why);
                                return "pending";
                        }
        uint64_t now = now_monotonic_usec();
        size_t pending = pg_process_is_remote(t, p) ? remote_set_actions_pending(m->engine->remote, t->clusters[p->cluster].name) : 0;
        if (!rate_allows(m, cluster_key(t, p), now, false, pending)) {
                m->counters.n[action][RESULT_HELD]++;
                ActionState *a = NULL;
                for (size_t i = 0; i < m->n_actions && !a; i++)
                        if (m->actions[i].kind == f->kind && m->actions[i].pid == f->pid && m->actions[i].start_ticks == f->start_ticks)
                                a = &m->actions[i];
                snprintf(why, why_size, "held back: %u actions in the last minute on %s (max_actions_per_minute)",
                         m->config->max_actions_per_minute, cluster_key(t, p));
                if (manual || !a || !a->held_logged) {
                        log_add(&e, "PGTREE_RESULT", "held");
                        log_send(&e, LOG_WARNING, MSGID_ACTION_HELD_BACK, "%s pid %d (%s): %s", action_to_string(action),
                                 (int) f->pid, requested_by, why);
                } else
                        log_send(&e, LOG_DEBUG, NULL, "still held back");
                return "held";
        }
        test_act_gate(p->rec.pid);
        if (pg_process_is_remote(t, p)) {
                /* a managed server: one SQL statement re-checks the session and acts; no signal here
                 * and no waiting: the outcome is logged, counted (and the rate limit charged) when
                 * the server answered */
                return manager_act_remote(m, p, f, action, target_note[0] != 0, requested_by, cluster_key(t, p), &e, why,
                                          why_size, done, userdata);
        }
        PidRef ref;
        int r = pidref_open_verified(p->rec.pid, p->rec.start_ticks, p->rec.ppid, &ref);
        if (r == -ESRCH)
                RESULT("gone", MSGID_ACTION_REFUSED, LOG_INFO, "the process is gone already");
        if (r == -ESTALE) {
                m->counters.n[action][RESULT_REFUSED]++;
                RESULT("refused", MSGID_ACTION_REFUSED, LOG_WARNING,
                       "pid %d is not the process that was scanned any more (start time or parent changed: pid reused)",
                       (int) p->rec.pid);
        }
        if (r < 0) {
                m->counters.n[action][RESULT_FAILED]++;
                RESULT("failed", MSGID_ACTION_FAILED, LOG_ERR, "cannot open a pidfd for pid %d: %s", (int) p->rec.pid, strerror(-r));
        }
        int sig = action == ACTION_CANCEL ? SIGINT : SIGTERM;
        r = pidref_signal(&ref, sig);
        if (r < 0) {
                pidref_done(&ref);
                m->counters.n[action][RESULT_FAILED]++;
                RESULT("failed", MSGID_ACTION_FAILED, LOG_ERR, "%s to pid %d failed: %s", sig == SIGINT ? "SIGINT" : "SIGTERM",
                       (int) p->rec.pid, strerror(-r));
        }
        rate_allows(m, cluster_key(t, p), now, true, 0);
        m->counters.n[action][RESULT_SENT]++;
        log_add(&e, "PGTREE_SIGNAL", "%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
        log_add(&e, "PGTREE_DRY_RUN", "no");
        snprintf(why, why_size, "sent %s to pid %d%s", sig == SIGINT ? "SIGINT" : "SIGTERM", (int) p->rec.pid, target_note);
        if (f->kind == FINDING_FOREIGN_PROCESS && sig == SIGTERM) {
                /* a backend reading a program's output (COPY … FROM PROGRAM) takes its termination
                 * only once the program ends: the program gets SIGTERM too */
                size_t l = strlen(why);
                terminate_foreign(f, p, why + l, why_size - l);
        }
        log_add(&e, "PGTREE_RESULT", "sent");
        log_send(&e, LOG_NOTICE, MSGID_ACTION_SENT, "%s pid %d (%s): %s", action_to_string(action), (int) f->pid, requested_by, why);
        if (sig == SIGTERM) {
                Finding target = *f;
                target.pid = p->rec.pid;
                target.start_ticks = p->rec.start_ticks;
                target.action = action;
                watch_terminate(m, &ref, &target, requested_by);
        } else
                pidref_done(&ref);
        return "sent";
}
