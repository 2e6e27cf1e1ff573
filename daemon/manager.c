/* SPDX-License-Identifier: MIT */
/* pgtreed's one sd-event loop: the scan timer, libpq sockets, postmaster pidfds, alert
 * children, signals, watchdog, and the control socket. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "control.h"
#include "join.h"
#include "journal.h"
#include "macro.h"
#include "manager.h"
#include "remote-act.h"
#include "rules.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

static void start_cycle(Manager *m);
static void dir_watch_free(DirWatch *w);
static void arm_connections(Manager *m);

/* ---- setup ---- */

int manager_new(const char *config_path, Config *config, Manager **ret) {
        _cleanup_free_ Manager *m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->config = config;
        if (config_path && !(m->config_path = strdup(config_path)))
                return -ENOMEM;
        m->alerts.timeout_usec = config->alert_timeout_usec;
        m->alerts.max_running = config->max_concurrent_alerts;
        int r = engine_new(config, &m->engine);
        if (r < 0) {
                free(m->config_path);
                return r;
        }
        r = sd_event_default(&m->event);
        if (r < 0) {
                engine_free(m->engine);
                free(m->config_path);
                return r;
        }
        *ret = TAKE_PTR(m);
        return 0;
}

static void clear_conn_sources(Manager *m) {
        for (size_t i = 0; i < m->n_conn_sources; i++)
                sd_event_source_disable_unref(m->conn_sources[i]);
        m->n_conn_sources = 0;
        m->conn_timer = sd_event_source_disable_unref(m->conn_timer);
        m->conn_deadline = 0;
}

static void term_watch_free(TermWatch *w) {
        if (!w)
                return;
        sd_event_source_disable_unref(w->exit_source);
        sd_event_source_disable_unref(w->grace_source);
        pidref_done(&w->ref);
        free(w);
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        control_free(m->control);
        clear_conn_sources(m);
        sd_event_source_disable_unref(m->cycle_timer);
        sd_event_source_disable_unref(m->probe_timer);
        sd_event_source_disable_unref(m->socket_source);
        sd_event_source_disable_unref(m->alert_timer);
        for (size_t i = 0; i < m->n_alert_sources; i++)
                sd_event_source_disable_unref(m->alert_sources[i]);
        free(m->alert_sources);
        for (size_t i = 0; i < m->n_pm; i++) {
                sd_event_source_disable_unref(m->pm[i].source);
                if (m->pm[i].fd >= 0)
                        close(m->pm[i].fd);
        }
        free(m->pm);
        for (size_t i = 0; i < m->n_dir_watches; i++)
                dir_watch_free(m->dir_watches[i]);
        for (size_t i = 0; i < m->n_terms; i++)
                term_watch_free(m->terms[i]);
        free(m->terms);
        free(m->actions);
        rate_table_done(&m->rates);
        metrics_counters_done(&m->counters);
        rate_table_done(&m->alert_rates);
        rate_table_done(&m->owner_alert_rates);
        alert_runner_clear(&m->alerts);
        manager_remote_acts_free(m); /* before the engine reports the actions still pending */
        engine_free(m->engine);
        config_free(m->config);
        free(m->config_path);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

/* ---- notifications ---- */

static void notify_status(Manager *m) {
        const PgTree *t = &m->engine->tree;
        size_t backends = 0, unreachable = 0, orphans = 0;
        for (size_t i = 0; i < t->n_procs; i++) {
                if (pg_process_is_orphan(&t->procs[i]))
                        orphans++;
                else if (t->procs[i].title.backend_type == BACKEND_CLIENT)
                        backends++;
        }
        for (size_t i = 0; i < t->n_clusters; i++)
                unreachable += t->clusters[i].snapshot == NULL;
        sd_notifyf(false, "STATUS=%zu cluster%s (%zu unreachable), %zu client backend%s, %zu orphan%s, %zu open finding%s",
                   t->n_clusters, t->n_clusters == 1 ? "" : "s", unreachable, backends, backends == 1 ? "" : "s", orphans,
                   orphans == 1 ? "" : "s", m->engine->open.n, m->engine->open.n == 1 ? "" : "s");
}

/* ---- events of a cycle ---- */

static const char *event_message_id(FindingEventType t) {
        return t == FINDING_OPENED ? MSGID_FINDING_OPENED : t == FINDING_ESCALATED ? MSGID_FINDING_ESCALATED : MSGID_FINDING_RESOLVED;
}

static void log_finding_event(const FindingEvent *ev) {
        const Finding *f = &ev->finding;
        LogEntry e = {};
        log_add_finding(&e, f);
        log_add(&e, "PGTREE_EVENT", "%s", finding_event_type_to_string(ev->type));
        if (f->action >= ACTION_CANCEL)
                log_add(&e, "PGTREE_DRY_RUN", "%s", f->dry_run ? "yes" : "no");
        if (f->detail[0])
                log_add(&e, "PGTREE_DETAIL", "%s", f->detail);
        char who[300];
        snprintf(who, sizeof who, "%s%s%s", f->user[0] ? f->user : "?", f->application_name[0] ? ", " : "",
                 f->application_name);
        const char *kind = finding_kind_to_string(f->kind);
        const char *cluster = f->cluster[0] ? f->cluster : "?";
        if (ev->type == FINDING_RESOLVED) {
                log_send(&e, LOG_INFO, MSGID_FINDING_RESOLVED, "%s resolved: pid %d on %s (%s) after %llds", kind,
                         (int) f->pid, cluster, who, (long long) f->duration_s);
                return;
        }
        int prio = f->kind == FINDING_FOREIGN_PROCESS ? LOG_CRIT : f->kind <= FINDING_CLIENT_GONE ? LOG_WARNING : LOG_NOTICE;
        log_send(&e, prio, event_message_id(ev->type), "%s %s: pid %d on %s (%s) for %llds%s%s; %s%s%s → %s", kind,
                 ev->type == FINDING_OPENED ? "opened" : "escalated", (int) f->pid, cluster, who, (long long) f->duration_s,
                 f->detail[0] ? ": " : "", f->detail, f->rule[0] ? "rule " : "no rule", f->rule, "",
                 action_to_string(f->action));
}

static void on_reachability(const PgCluster *c, bool reachable, void *userdata) {
        LogEntry e = {};
        log_add(&e, "PGTREE_CLUSTER", "%s", c->name);
        if (c->data_directory[0])
                log_add(&e, "PGTREE_DATA_DIRECTORY", "%s", c->data_directory);
        if (reachable)
                log_send(&e, LOG_INFO, MSGID_CLUSTER_REACHABLE, "cluster %s: pg_stat_activity is available", c->name);
        else {
                log_add(&e, "PGTREE_REASON", "%s", c->activity);
                log_send(&e, LOG_WARNING, MSGID_CLUSTER_UNREACHABLE, "cluster %s: pg_stat_activity %s%s",
                         c->name, c->activity, c->remote ? "" : "; the process tree is still watched");
        }
}

/* ---- data directories awaiting a postmaster: postmaster.pid appearing triggers a full scan ---- */

static void dir_watch_free(DirWatch *w) {
        if (!w)
                return;
        sd_event_source_disable_unref(w->source);
        free(w->directory);
        free(w);
}

static int on_pmfile(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        DirWatch *w = userdata;
        Manager *m = w->manager;
        if (!(ev->mask & (IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE)) || ev->len == 0 || strcmp(ev->name, "postmaster.pid") != 0)
                return 0;
        log_plain(LOG_INFO, "postmaster.pid appeared in %s: scanning for its postmaster now", w->directory);
        /* every process read again: its postmaster may be an old process that exec'd postgres */
        char why[PATH_MAX + 64];
        snprintf(why, sizeof why, "postmaster.pid appeared in %s", w->directory);
        scanner_request_complete(m->engine->scanner, why);
        m->force_full = true;
        if (!m->cycle_running)
                sd_event_source_set_time_relative(m->cycle_timer, 0);
        return 0;
}

/* evict: when DIR_WATCHES_MAX are watched already, the oldest goes (else the new one is not
 * watched); discovery still finds what is not watched */
static void watch_in(Manager *m, DirWatch **v, size_t *n, const char *dir, sd_event_inotify_handler_t cb, bool evict) {
        if (!dir || dir[0] != '/')
                return;
        for (size_t i = 0; i < *n; i++)
                if (!strcmp(v[i]->directory, dir)) {
                        v[i]->wanted = true;
                        return;
                }
        if (*n >= DIR_WATCHES_MAX && !evict)
                return;
        if (*n >= DIR_WATCHES_MAX)
                dir_watch_free(v[0]), memmove(&v[0], &v[1], --*n * sizeof v[0]);
        DirWatch *w = calloc(1, sizeof *w);
        if (!w || !(w->directory = strdup(dir))) {
                free(w);
                return;
        }
        w->manager = m;
        w->wanted = true;
        if (sd_event_add_inotify(m->event, &w->source, dir, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ONLYDIR, cb,
                                 w) < 0) {
                dir_watch_free(w); /* gone, or not ours to read: the discovery interval finds it */
                return;
        }
        v[(*n)++] = w;
}

static void watch_directory(Manager *m, const char *dir) {
        watch_in(m, m->dir_watches, &m->n_dir_watches, dir, on_pmfile, true);
}

/* After each cycle: watch the directories of configured clusters that have no running
 * postmaster, and of postmasters that exited; stop watching those that run again once their
 * pg_stat_activity is read (a server found while it starts is not connected to before its
 * postmaster.pid says ready: that rewrite of the file starts the next cycle, not the interval). */
static void sync_dir_watches(Manager *m) {
        const PgTree *t = &m->engine->tree;
        for (size_t i = 0; i < m->n_pm; i++)
                if (!m->pm[i].seen && m->pm[i].data_directory[0])
                        watch_directory(m, m->pm[i].data_directory);
        for (size_t i = 0; i < m->config->n_clusters; i++)
                watch_directory(m, m->config->clusters[i].data_directory);
        /* servers still starting: not connected to before their postmaster.pid says ready */
        for (size_t c = 0; c < t->n_clusters; c++) {
                const PgCluster *cl = &t->clusters[c];
                bool starting = !cl->children_titled ||
                                (cl->pmfile_valid && cl->pmfile.status[0] && strcmp(cl->pmfile.status, "ready") != 0 &&
                                 strcmp(cl->pmfile.status, "standby") != 0);
                if (starting && !cl->snapshot && !cl->remote && !cl->container.root[0])
                        watch_directory(m, cl->data_directory);
        }
        for (size_t i = 0; i < m->n_dir_watches;) {
                bool running = false;
                for (size_t c = 0; c < t->n_clusters && !running; c++)
                        running = !strcmp(t->clusters[c].data_directory, m->dir_watches[i]->directory) &&
                                  t->clusters[c].snapshot;
                if (running) {
                        dir_watch_free(m->dir_watches[i]);
                        memmove(&m->dir_watches[i], &m->dir_watches[i + 1], (m->n_dir_watches - i - 1) * sizeof m->dir_watches[0]);
                        m->n_dir_watches--;
                } else
                        i++;
        }
}

/* ---- PostgreSQL sockets appearing (lib/scanner.h): a complete discovery at once ---- */

static int on_socket_created(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        Scanner *sc = m->engine->scanner;
        bool was = scanner_pending_complete(sc) != NULL;
        int due = scanner_socket_events(sc);
        const char *why = scanner_pending_complete(sc);
        if (!why || (due > 0 && m->force_full))
                return 0; /* nothing for it, or a discovery is coming already */
        if (due <= 0) { /* said once per request: a flood of such files is not a flood of lines */
                if (!was)
                        log_plain(LOG_INFO, "%s: discovering every process at the next cycle after the bound "
                                  "(one complete discovery per 10 s)", why);
                return 0;
        }
        log_plain(LOG_INFO, "%s: discovering every process now", why);
        m->force_full = true;
        if (!m->cycle_running)
                sd_event_source_set_time_relative(m->cycle_timer, 0);
        return 0;
}

/* ---- postmaster pidfds: a postmaster that exits triggers a full scan at once ---- */

static int on_pm_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        PmWatch *w = userdata;
        Manager *m = w->manager;
        LogEntry e = {};
        log_add(&e, "PGTREE_CLUSTER", "%s", w->cluster);
        if (w->data_directory[0])
                log_add(&e, "PGTREE_DATA_DIRECTORY", "%s", w->data_directory);
        log_add(&e, "PGTREE_PID", "%d", (int) w->pid);
        log_send(&e, LOG_WARNING, MSGID_POSTMASTER_EXITED, "postmaster %d of cluster %s exited: scanning for orphans now",
                 (int) w->pid, w->cluster);
        sd_event_source_set_enabled(s, SD_EVENT_OFF);
        m->force_full = true;
        if (!m->cycle_running)
                sd_event_source_set_time_relative(m->cycle_timer, 0);
        return 0;
}

static void sync_pm_watches(Manager *m) {
        const PgTree *t = &m->engine->tree;
        for (size_t i = 0; i < m->n_pm; i++)
                m->pm[i].seen = false;
        for (size_t c = 0; c < t->n_clusters; c++) {
                const PgProcess *pm = &t->procs[t->clusters[c].postmaster];
                bool have = false;
                for (size_t i = 0; i < m->n_pm && !have; i++)
                        if (m->pm[i].pid == pm->rec.pid && m->pm[i].start_ticks == pm->rec.start_ticks)
                                have = m->pm[i].seen = true;
                if (have)
                        continue;
                PidRef ref;
                if (pidref_open_verified(pm->rec.pid, pm->rec.start_ticks, 0, &ref) < 0)
                        continue;
                if (GROW(m->pm, m->pm_allocated, m->n_pm + 1) < 0) {
                        pidref_done(&ref);
                        continue;
                }
                PmWatch *w = &m->pm[m->n_pm];
                *w = (PmWatch){ .manager = m, .pid = pm->rec.pid, .start_ticks = pm->rec.start_ticks, .fd = ref.fd, .seen = true };
                snprintf(w->cluster, sizeof w->cluster, "%s", t->clusters[c].name);
                snprintf(w->data_directory, sizeof w->data_directory, "%s", t->clusters[c].data_directory);
                if (sd_event_add_io(m->event, &w->source, w->fd, EPOLLIN, on_pm_exit, w) < 0) {
                        close(w->fd);
                        continue;
                }
                m->n_pm++;
        }
        /* realloc may have moved the watches: re-point their userdata */
        sync_dir_watches(m);
        for (size_t i = 0; i < m->n_pm;) {
                if (!m->pm[i].seen) {
                        sd_event_source_disable_unref(m->pm[i].source);
                        close(m->pm[i].fd);
                        m->pm[i] = m->pm[--m->n_pm];
                        continue;
                }
                sd_event_source_set_userdata(m->pm[i].source, &m->pm[i]);
                i++;
        }
}

/* ---- alerts ---- */

/* The output an alert wrote, as journal fields and as a suffix of its message. */
static void add_alert_output(LogEntry *e, const char *name, const AlertOutput *o, char *suffix, size_t size) {
        if (o->len == 0 && o->dropped == 0)
                return;
        char text[ALERT_OUTPUT_MAX * 4 + 8];
        alert_output_escape(o, text, sizeof text);
        char field[64];
        snprintf(field, sizeof field, "PGTREE_ALERT_%s", name);
        log_add(e, field, "%s", text);
        if (o->dropped > 0) {
                snprintf(field, sizeof field, "PGTREE_ALERT_%s_DISCARDED", name);
                log_add(e, field, "%llu", (unsigned long long) o->dropped);
        }
        size_t used = strlen(suffix);
        if (o->dropped > 0)
                snprintf(suffix + used, size - used, "; %s \"%s\" (%llu more bytes discarded)", !strcmp(name, "STDOUT") ? "stdout" : "stderr",
                         text, (unsigned long long) o->dropped);
        else
                snprintf(suffix + used, size - used, "; %s \"%s\"", !strcmp(name, "STDOUT") ? "stdout" : "stderr", text);
}

static void on_alert_done(const AlertRun *run, AlertOutcome o, int status, void *userdata) {
        Manager *m = userdata;
        if (o == ALERT_EXITED && status == 0)
                m->counters.alerts_ok++;
        else if (o == ALERT_STUCK)
                m->counters.alerts_stuck++;
        else if (o != ALERT_TIMED_OUT) /* counted when it ends (or is given up on) */
                m->counters.alerts_failed++;
        LogEntry e = {};
        log_add(&e, "PGTREE_KIND", "%s", finding_kind_to_string(run->kind));
        log_add(&e, "PGTREE_PID", "%d", (int) run->target);
        log_add(&e, "PGTREE_RULE", "%s", run->rule);
        if (run->cluster[0])
                log_add(&e, "PGTREE_CLUSTER", "%s", run->cluster);
        log_add(&e, "PGTREE_ALERT_COMMAND", "%s", run->command);
        log_add(&e, "PGTREE_ALERT_PID", "%d", (int) run->pid);
        char out[2 * (ALERT_OUTPUT_MAX * 4 + 80)] = "";
        if (o != ALERT_TIMED_OUT) { /* ended, or given up on: what it wrote until then */
                m->counters.alert_output_discarded += run->out.dropped + run->err.dropped;
                add_alert_output(&e, "STDOUT", &run->out, out, sizeof out);
                add_alert_output(&e, "STDERR", &run->err, out, sizeof out);
        }
        switch (o) {
        case ALERT_EXITED:
                log_add(&e, "PGTREE_EXIT_STATUS", "%d", status);
                if (status == 0)
                        log_send(&e, LOG_INFO, MSGID_ALERT_RAN, "alert %s for %s pid %d ran%s", run->command,
                                 finding_kind_to_string(run->kind), (int) run->target, out);
                else
                        log_send(&e, LOG_ERR, MSGID_ALERT_FAILED, "alert %s for %s pid %d failed with exit status %d%s",
                                 run->command, finding_kind_to_string(run->kind), (int) run->target, status, out);
                break;
        case ALERT_KILLED:
                log_add(&e, "PGTREE_SIGNAL", "%d", status);
                log_send(&e, LOG_ERR, MSGID_ALERT_FAILED, "alert %s for %s pid %d was ended by signal %d%s", run->command,
                         finding_kind_to_string(run->kind), (int) run->target, status, out);
                break;
        case ALERT_TIMED_OUT:
                log_send(&e, LOG_ERR, MSGID_ALERT_FAILED, "alert %s for %s pid %d timed out; sent SIGTERM to it", run->command,
                         finding_kind_to_string(run->kind), (int) run->target);
                break;
        case ALERT_STUCK:
                log_send(&e, LOG_ERR, MSGID_ALERT_FAILED,
                         "alert %s (pid %d) does not exit after SIGTERM; no longer tracked (pgtreed never sends SIGKILL): "
                         "look at it by hand%s",
                         run->command, (int) run->pid, out);
                break;
        }
}

static void arm_alerts(Manager *m);

static int on_alert_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        alert_runner_check(&m->alerts, now_monotonic_usec(), on_alert_done, m);
        arm_alerts(m);
        return 0;
}

static int on_alert_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        return on_alert_event(s, -1, 0, userdata);
}

static void arm_alerts(Manager *m) {
        for (size_t i = 0; i < m->n_alert_sources; i++)
                sd_event_source_disable_unref(m->alert_sources[i]);
        m->n_alert_sources = 0;
        m->alert_timer = sd_event_source_disable_unref(m->alert_timer);
        if (m->alerts.n == 0 && m->alerts.n_abandoned == 0)
                return;
        /* the pidfd and both output pipes of each */
        sd_event_source **v = realloc(m->alert_sources, (3 * m->alerts.n + 1) * sizeof *v);
        if (!v)
                return;
        m->alert_sources = v;
        for (size_t i = 0; i < m->alerts.n; i++) {
                const AlertRun *run = m->alerts.items[i];
                int fds[] = { run->pidfd, run->out.fd, run->err.fd };
                for (size_t j = 0; j < ELEMENTSOF(fds); j++)
                        if (fds[j] >= 0 && sd_event_add_io(m->event, &v[m->n_alert_sources], fds[j], EPOLLIN, on_alert_event, m) >= 0)
                                m->n_alert_sources++;
        }
        uint64_t d = alert_runner_next_deadline(&m->alerts);
        /* also poll every second for alerts without a pidfd, and to reap abandoned ones */
        uint64_t poll_at = now_monotonic_usec() + USEC_PER_SEC;
        sd_event_add_time(m->event, &m->alert_timer, CLOCK_MONOTONIC, d < poll_at ? d : poll_at, 10000, on_alert_timer, m);
}

/* The OS user that owns the finding's cluster (its postmaster's uid; an orphan's own uid) as a
 * rate key, or false for a managed server's (configured by the operator, no uid of this host). */
static bool finding_owner_key(Manager *m, const Finding *f, char *key, size_t size) {
        const PgTree *t = &m->engine->tree;
        if (f->proc < 0 || f->proc >= (int) t->n_procs)
                return false;
        const PgProcess *p = &t->procs[f->proc];
        if (pg_process_is_remote(t, p))
                return false;
        if (p->cluster >= 0 && p->cluster < (int) t->n_clusters)
                p = &t->procs[t->clusters[p->cluster].postmaster];
        if (!p->rec.ident.ids_valid)
                return false;
        snprintf(key, size, "uid %u", (unsigned) p->rec.ident.euid);
        return true;
}

/* The alert rate limits: max_alerts_per_minute per cluster, and max_alerts_per_minute_per_owner
 * for all the clusters of one OS user together, so whoever can start clusters of their own on
 * the host cannot take the alerts of everyone else's by starting many. May one more alert run
 * for this finding now? Records it in both if so; *owner_limited says which one said no. */
static bool alert_rate_allows(Manager *m, const Finding *f, uint64_t now, bool *owner_limited) {
        const uint64_t minute = 60 * USEC_PER_SEC;
        *owner_limited = false;
        RateWindow *c = rate_table_get(&m->alert_rates, f->cluster[0] ? f->cluster : "orphans",
                                       m->config->max_alerts_per_minute, minute, now);
        if (!c || !rate_window_allows(c, now))
                return false;
        char key[32];
        if (finding_owner_key(m, f, key, sizeof key)) {
                /* the table may move when the owner's entry is made: look the cluster's up again */
                RateWindow *o = rate_table_get(&m->owner_alert_rates, key, m->config->max_alerts_per_minute_per_owner,
                                               minute, now);
                if (!o || !rate_window_allows(o, now)) {
                        *owner_limited = o != NULL;
                        return false;
                }
                rate_window_record(o, now);
        }
        return rate_window_record(c, now);
}

typedef struct AlertDrops {
        size_t busy, rate, owner;
} AlertDrops;

static void run_alert(Manager *m, const Finding *f, AlertDrops *drops) {
        const Rule *rule = NULL;
        for (size_t i = 0; i < m->config->n_rules && !rule; i++)
                if (!strcmp(m->config->rules[i].name, f->rule))
                        rule = &m->config->rules[i];
        if (!rule || !rule->alert_command)
                return;
        /* an alert per finding, not per attacker's wish: at most max_concurrent_alerts at once,
         * max_alerts_per_minute per cluster; the rest are dropped (counted, summed up per cycle) */
        if (!alert_runner_has_room(&m->alerts)) {
                m->counters.alerts_dropped_busy++;
                drops->busy++;
                return;
        }
        bool owner_limited;
        if (!alert_rate_allows(m, f, now_monotonic_usec(), &owner_limited)) {
                if (owner_limited) {
                        m->counters.alerts_dropped_owner++;
                        drops->owner++;
                } else {
                        m->counters.alerts_dropped_rate++;
                        drops->rate++;
                }
                return;
        }
        const AlertRun *run;
        int r = alert_spawn(&m->alerts, rule->alert_command, f, now_monotonic_usec(), &run);
        if (r < 0) {
                LogEntry e = {};
                log_add_finding(&e, f);
                log_add(&e, "PGTREE_ALERT_COMMAND", "%s", rule->alert_command);
                log_send(&e, LOG_ERR, MSGID_ALERT_FAILED, "alert %s for %s pid %d could not start: %s", rule->alert_command,
                         finding_kind_to_string(f->kind), (int) f->pid, strerror(-r));
                m->counters.alerts_failed++;
                return;
        }
        arm_alerts(m);
}

static void log_alert_drops(Manager *m, const AlertDrops *d) {
        size_t n = d->busy + d->rate + d->owner;
        if (n == 0)
                return;
        LogEntry e = {};
        log_add(&e, "PGTREE_ALERTS_DROPPED_CONCURRENCY", "%zu", d->busy);
        log_add(&e, "PGTREE_ALERTS_DROPPED_RATE", "%zu", d->rate);
        log_add(&e, "PGTREE_ALERTS_DROPPED_OWNER_RATE", "%zu", d->owner);
        log_add(&e, "PGTREE_ALERTS_RUNNING", "%zu", m->alerts.n);
        log_send(&e, LOG_WARNING, MSGID_ALERT_DROPPED,
                 "%zu alert%s not run: %zu with %zu running (max_concurrent_alerts = %u), %zu over max_alerts_per_minute = %u "
                 "of their cluster, %zu over max_alerts_per_minute_per_owner = %u of their clusters' OS user; the findings "
                 "are in the journal (dropped so far: %llu, %llu, %llu)",
                 n, n == 1 ? "" : "s", d->busy, m->alerts.n, m->config->max_concurrent_alerts, d->rate,
                 m->config->max_alerts_per_minute, d->owner, m->config->max_alerts_per_minute_per_owner,
                 (unsigned long long) m->counters.alerts_dropped_busy, (unsigned long long) m->counters.alerts_dropped_rate,
                 (unsigned long long) m->counters.alerts_dropped_owner);
}

/* ---- rule actions ---- */

static ActionState *action_state(Manager *m, const Finding *f) {
        for (size_t i = 0; i < m->n_actions; i++)
                if (m->actions[i].kind == f->kind && m->actions[i].pid == f->pid && m->actions[i].start_ticks == f->start_ticks)
                        return &m->actions[i];
        if (GROW(m->actions, m->actions_allocated, m->n_actions + 1) < 0)
                return NULL;
        ActionState *a = &m->actions[m->n_actions++];
        *a = (ActionState){ .kind = f->kind, .pid = f->pid, .start_ticks = f->start_ticks, .done = ACTION_LOG };
        return a;
}

static void apply_rule_actions(Manager *m) {
        for (size_t i = 0; i < m->n_actions; i++)
                m->actions[i].seen = false;
        Findings *open = &m->engine->open;
        AlertDrops drops = {};
        for (size_t i = 0; i < open->n; i++) {
                Finding *f = &open->items[i];
                ActionState *a = action_state(m, f);
                if (!a)
                        continue;
                a->seen = true;
                if (f->action <= a->done)
                        continue;
                char by[160], why[256];
                snprintf(by, sizeof by, "rule %s", f->rule);
                if (f->action == ACTION_ALERT) {
                        run_alert(m, f, &drops);
                        a->done = ACTION_ALERT;
                        continue;
                }
                const char *result = manager_act(m, f, f->action, by, false, why, sizeof why);
                if (!strcmp(result, "held")) {
                        a->held_logged = true;
                        continue; /* tried again next cycle */
                }
                a->done = f->action;
                f->dry_run = !strcmp(result, "dry-run");
                finding_store_set_dry_run(&m->engine->store, f, f->dry_run);
        }
        log_alert_drops(m, &drops);
        for (size_t i = 0; i < m->n_actions;) {
                if (!m->actions[i].seen)
                        m->actions[i] = m->actions[--m->n_actions];
                else
                        i++;
        }
}

/* ---- node_exporter's textfile ---- */

static void write_metrics_file(Manager *m) {
        if (!m->config->metrics_file)
                return;
        int r = metrics_write_file(m->config->metrics_file, m->engine, &m->counters, m->start_time);
        if (r < 0 && !m->metrics_failed) {
                LogEntry e = {};
                log_add(&e, "PGTREE_METRICS_FILE", "%s", m->config->metrics_file);
                log_send(&e, LOG_ERR, MSGID_METRICS_FAILED, "cannot write metrics to %s: %s (said once; retried every cycle)",
                         m->config->metrics_file, strerror(-r));
        }
        m->metrics_failed = r < 0;
}

/* ---- the cycle ---- */

/* When a long runner reaches a rule's threshold, on the monotonic clock (UINT64_MAX: none). The
 * engine's moment is on the clock its tree's time is read from (the realtime clock: durations are
 * measured against it when the cycle runs), a few ms late so that the cycle's tree, read after the
 * timer fires, has the threshold behind it. */
static uint64_t crossing_deadline(Manager *m, uint64_t now) {
        double at = m->engine->next_crossing;
        if (at <= 0)
                return UINT64_MAX;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double real = (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
        double wait = at - real;
        if (wait <= 0)
                return now;
        if (wait > 1e6)
                return UINT64_MAX;
        return now + (uint64_t) (wait * 1e6) + 5000;
}

#define EXTRA_TOKENS_MAX 2.0

static void refill_extra_tokens(Manager *m, uint64_t now) {
        if (m->extra_refilled && now > m->extra_refilled)
                m->extra_tokens += (double) (now - m->extra_refilled) / (double) m->config->interval_usec;
        if (!m->extra_refilled || m->extra_tokens > EXTRA_TOKENS_MAX)
                m->extra_tokens = m->extra_refilled ? EXTRA_TOKENS_MAX : 1.0;
        m->extra_refilled = now;
}

static void schedule_next(Manager *m) {
        uint64_t interval = m->config->interval_usec;
        uint64_t next = m->regular_started + interval;
        uint64_t now = now_monotonic_usec();
        if (m->force_full || next < now)
                next = now;
        m->extra_next = false;
        /* an extra cycle: a token for it when it is due (one per interval), a quarter of an
         * interval after the last cycle began, and none in a period's last tenth (the regular
         * cycle comes then) */
        uint64_t d = crossing_deadline(m, now);
        if (!m->force_full && d < next) {
                refill_extra_tokens(m, now);
                double need = 1.0 - m->extra_tokens;
                uint64_t have_token = now + (need > 0 ? (uint64_t) (need * (double) interval) : 0);
                if (d < have_token)
                        d = have_token;
                if (d < m->cycle_started + interval / 4)
                        d = m->cycle_started + interval / 4;
                if (d < next && next - d > interval / 10) {
                        next = d;
                        m->extra_next = true;
                }
        }
        sd_event_source_set_time(m->cycle_timer, next);
        sd_event_source_set_enabled(m->cycle_timer, SD_EVENT_ONESHOT);
}

/* A client found dead between cycles: a cycle now, if the bucket of extra cycles allows one and
 * the regular cycle is not due in a tenth of an interval anyway. */
static int on_probe_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t interval = m->config->interval_usec;
        uint64_t now = now_monotonic_usec();
        uint64_t mid = m->regular_started + interval / 2;
        if (m->probed_after == m->regular_started || now + interval / 20 < mid) {
                /* looked already in this interval, or too early: half way through this or the next */
                uint64_t at = m->probed_after == m->regular_started ? mid + interval : mid;
                sd_event_source_set_time(s, at > now ? at : now + interval / 2);
                sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                return 0;
        }
        m->probed_after = m->regular_started;
        sd_event_source_set_time(s, mid + interval);
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (m->cycle_running || m->extra_next || m->force_full)
                return 0;
        uint64_t next = m->regular_started + interval;
        if (next <= now || next - now <= interval / 10)
                return 0;
        refill_extra_tokens(m, now);
        if (m->extra_tokens < 1.0)
                return 0;
        m->client_probes++;
        if (!engine_clients_died(m->engine))
                return 0;
        m->extra_next = true;
        sd_event_source_set_time(m->cycle_timer, now);
        sd_event_source_set_enabled(m->cycle_timer, SD_EVENT_ONESHOT);
        return 0;
}

static void finish_cycle(Manager *m) {
        clear_conn_sources(m);
        FindingEvents events = {};
        manager_remote_acts_release(m); /* a server that changed drops its action connection */
        int r = engine_finish_cycle(m->engine, &events);
        m->cycle_running = false;
        if (r < 0) {
                LogEntry e = {};
                log_send(&e, LOG_ERR, MSGID_SCAN_FAILED, "cycle failed: %s", strerror(-r));
        } else {
                engine_report_reachability(m->engine, on_reachability, m);
                for (size_t i = 0; i < events.n; i++)
                        log_finding_event(&events.items[i]);
                apply_rule_actions(m);
                sync_pm_watches(m);
                control_cycle_done(m->control);
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                (void) metrics_observe_cycle(&m->counters, m->engine, (double) ts.tv_sec + (double) ts.tv_nsec / 1e9);
                write_metrics_file(m);
        }
        finding_events_clear(&events);
        manager_remote_acts_arm(m);
        notify_status(m);
        if (!m->ready) {
                m->ready = true;
                sd_notify(false, "READY=1");
                char enforcing[512] = "";
                size_t used = 0;
                for (size_t i = 0; i < m->engine->tree.n_clusters; i++) {
                        const PgCluster *c = &m->engine->tree.clusters[i];
                        if (c->enforce && used < sizeof enforcing) {
                                int w = snprintf(enforcing + used, sizeof enforcing - used, "%s%s", used ? ", " : "", c->name);
                                used += w > 0 ? (size_t) w : 0;
                        }
                }
                LogEntry e = {};
                log_add(&e, "PGTREE_CLUSTERS", "%zu", m->engine->tree.n_clusters);
                log_add(&e, "PGTREE_CONFIG", "%s", m->config_path ? m->config_path : "(built-in defaults)");
                log_send(&e, LOG_INFO, MSGID_STARTED, "pgtreed %s started: %zu cluster%s, config %s, enforcement %s%s%s",
                         PGTREE_VERSION, m->engine->tree.n_clusters, m->engine->tree.n_clusters == 1 ? "" : "s",
                         m->config_path ? m->config_path : "(built-in defaults)",
                         m->config->enforce ? "on" : "off (dry run)", *enforcing ? "; enforcing on " : "", enforcing);
        }
        schedule_next(m);
}

static bool any_busy(Manager *m) {
        return engine_waiting(m->engine, now_monotonic_usec()); /* remote servers: within their budget */
}

/* A connection's socket is ready: only that connection moves on (the others wait for their own
 * events or deadlines), and the sources stay armed while what they wait for is unchanged — a
 * result arriving in many chunks costs one read per wake-up, not a re-arm of everything. */
static int on_conn_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        uint64_t now = now_monotonic_usec();
        for (size_t i = 0; i < m->n_conn_sources; i++)
                if (m->conn_sources[i] == s)
                        activity_conn_process(m->conn_owners[i], now);
        arm_connections(m);
        return 0;
}

/* A deadline passed (a connection's timeout, or remote servers' budget): everyone moves on. */
static int on_conn_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        ActivityConn *conns[64];
        size_t n = engine_connections(m->engine, conns, ELEMENTSOF(conns));
        uint64_t now = now_monotonic_usec();
        for (size_t i = 0; i < n; i++)
                activity_conn_process(conns[i], now);
        arm_connections(m);
        return 0;
}

static void arm_connections(Manager *m) {
        if (!any_busy(m)) {
                finish_cycle(m); /* clears the sources */
                return;
        }
        ActivityConn *conns[64];
        size_t n = engine_connections(m->engine, conns, ELEMENTSOF(conns));
        uint64_t deadline = UINT64_MAX;
        int fds[64];
        uint32_t events[64];
        ActivityConn *owners[64];
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                int fd;
                short ev;
                uint64_t d;
                if (!activity_conn_wants(conns[i], &fd, &ev, &d))
                        continue;
                if (d < deadline)
                        deadline = d;
                if (fd < 0)
                        continue;
                fds[k] = fd;
                events[k] = ((ev & POLLIN) ? EPOLLIN : 0) | ((ev & POLLOUT) ? EPOLLOUT : 0);
                owners[k++] = conns[i];
        }
        /* (a connection that is still connecting may have a new socket under the same number) */
        bool same = k == m->n_conn_sources;
        for (size_t i = 0; same && i < k; i++)
                same = fds[i] == m->conn_fds[i] && events[i] == m->conn_events[i] && owners[i] == m->conn_owners[i] &&
                       !activity_conn_connecting(owners[i]);
        if (!same) {
                /* per connection: a source that watches the same socket of the same connection is
                 * kept (its events changed if need be), the others go, new ones come (rebuilding
                 * them all whenever one of many connections finished cost epoll_ctl calls per
                 * connection squared, per cycle). Only a source added once the connection was up
                 * and still on that connection (libpq may open another socket under the same
                 * number while it connects: an epoll registration of the closed one is gone). */
                sd_event_source *src[64];
                int sfd[64];
                uint32_t sev[64];
                ActivityConn *sown[64];
                unsigned sgen[64];
                bool used[64] = {};
                size_t ns = 0;
                sd_event_source *kept[64] = {};
                unsigned gen[64];
                for (size_t i = 0; i < k; i++) {
                        gen[i] = activity_conn_connecting(owners[i]) ? ~0u : activity_conn_connects(owners[i]);
                        for (size_t j = 0; !kept[i] && gen[i] != ~0u && j < m->n_conn_sources; j++)
                                if (!used[j] && m->conn_fds[j] == fds[i] && m->conn_owners[j] == owners[i] &&
                                    m->conn_gen[j] == gen[i] &&
                                    (m->conn_events[j] == events[i] ||
                                     sd_event_source_set_io_events(m->conn_sources[j], events[i]) >= 0)) {
                                        used[j] = true;
                                        kept[i] = m->conn_sources[j];
                                }
                }
                /* the others go first: epoll refuses a second registration of the same descriptor */
                for (size_t j = 0; j < m->n_conn_sources; j++)
                        if (!used[j])
                                sd_event_source_disable_unref(m->conn_sources[j]);
                for (size_t i = 0; i < k; i++) {
                        sd_event_source *src_i = kept[i];
                        if (!src_i && sd_event_add_io(m->event, &src_i, fds[i], events[i], on_conn_event, m) < 0)
                                continue;
                        src[ns] = src_i;
                        sfd[ns] = fds[i];
                        sev[ns] = events[i];
                        sgen[ns] = gen[i];
                        sown[ns++] = owners[i];
                }
                memcpy(m->conn_sources, src, ns * sizeof *src);
                memcpy(m->conn_fds, sfd, ns * sizeof *sfd);
                memcpy(m->conn_events, sev, ns * sizeof *sev);
                memcpy(m->conn_owners, sown, ns * sizeof *sown);
                memcpy(m->conn_gen, sgen, ns * sizeof *sgen);
                m->n_conn_sources = ns;
        }
        uint64_t remote = engine_remote_deadline(m->engine);
        if (remote < deadline)
                deadline = remote;
        if (m->conn_timer && deadline == m->conn_deadline)
                return;
        m->conn_timer = sd_event_source_disable_unref(m->conn_timer);
        m->conn_deadline = deadline;
        sd_event_add_time(m->event, &m->conn_timer, CLOCK_MONOTONIC, deadline, 1000, on_conn_timer, m);
}

static void start_cycle(Manager *m) {
        if (m->cycle_running)
                return;
        m->cycle_started = now_monotonic_usec();
        if (m->extra_next && !m->force_full) {
                refill_extra_tokens(m, m->cycle_started);
                m->extra_tokens = m->extra_tokens >= 1.0 ? m->extra_tokens - 1.0 : 0;
                m->extra_cycles++;
        } else
                m->regular_started = m->cycle_started;
        m->extra_next = false;
        bool full = m->force_full;
        m->force_full = false;
        manager_remote_acts_release(m); /* a server removed by a reload closes its action connection */
        int r = engine_begin_cycle(m->engine, full);
        manager_remote_acts_arm(m);
        if (r < 0) {
                LogEntry e = {};
                log_send(&e, LOG_ERR, MSGID_SCAN_FAILED, "scan of /proc failed: %s", strerror(-r));
                schedule_next(m);
                return;
        }
        m->cycle_running = true;
        arm_connections(m);
}

static int on_cycle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        start_cycle(userdata);
        return 0;
}

/* ---- reload, signals ---- */

int manager_reload(Manager *m, char ***errors) {
        sd_notifyf(false, "RELOADING=1\nSTATUS=reloading %s", m->config_path ? m->config_path : "(defaults)");
        Config *c = NULL;
        ConfigErrors errs = {};
        int r = m->config_path ? config_parse_file(m->config_path, &c, &errs) : config_new_default(&c);
        if (r < 0) {
                for (size_t i = 0; i < errs.n; i++) {
                        LogEntry e = {};
                        log_add(&e, "PGTREE_CONFIG", "%s", errs.items[i].file);
                        log_add(&e, "PGTREE_CONFIG_LINE", "%u", errs.items[i].line);
                        log_send(&e, LOG_ERR, MSGID_CONFIG_INVALID, "%s:%u: %s", errs.items[i].file, errs.items[i].line,
                                 errs.items[i].message);
                }
                if (errors && (*errors = calloc(errs.n + 1, sizeof(char *))))
                        for (size_t i = 0; i < errs.n; i++)
                                if (asprintf(&(*errors)[i], "%s:%u: %s", errs.items[i].file, errs.items[i].line,
                                             errs.items[i].message) < 0)
                                        (*errors)[i] = NULL;
                LogEntry e = {};
                log_add(&e, "PGTREE_CONFIG", "%s", m->config_path ? m->config_path : "");
                log_add(&e, "PGTREE_ERRORS", "%zu", errs.n);
                log_send(&e, LOG_ERR, MSGID_CONFIG_INVALID, "reload refused: %s has %zu error%s; the running configuration stays in force",
                         m->config_path, errs.n, errs.n == 1 ? "" : "s");
                config_errors_clear(&errs);
                sd_notify(false, "READY=1");
                notify_status(m);
                return -EINVAL;
        }
        Config *old = m->config;
        m->config = c;
        engine_set_config(m->engine, c);
        m->alerts.timeout_usec = c->alert_timeout_usec;
        m->alerts.max_running = c->max_concurrent_alerts;
        control_config_changed(m->control);
        config_free(old);
        LogEntry e = {};
        log_add(&e, "PGTREE_CONFIG", "%s", m->config_path ? m->config_path : "(built-in defaults)");
        log_add(&e, "PGTREE_RULES", "%zu", c->n_rules);
        log_send(&e, LOG_INFO, MSGID_RELOADED, "configuration reloaded: %zu rule%s, enforcement %s; %zu open finding%s kept",
                 c->n_rules, c->n_rules == 1 ? "" : "s", c->enforce ? "on" : "off", m->engine->open.n,
                 m->engine->open.n == 1 ? "" : "s");
        sd_notify(false, "READY=1");
        notify_status(m);
        schedule_next(m);
        return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        manager_reload(userdata, NULL);
        return 0;
}

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        sd_notify(false, "STOPPING=1\nSTATUS=stopping");
        LogEntry e = {};
        log_add(&e, "PGTREE_SIGNAL", "%s", si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        log_send(&e, LOG_INFO, MSGID_STOPPED, "pgtreed stopping on %s", si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        return sd_event_exit(m->event, 0);
}

/* Test hook, reachable only through the environment of the test harness (never the config):
 * PGTREED_TEST_HOOKS=1 makes SIGUSR2 stall the loop, so that a test can see the watchdog act. */
static int on_test_stall(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        log_plain(LOG_WARNING, "test hook: stalling the event loop");
        for (;;)
                pause();
        return 0;
}

/* Test hook, same gate: SIGUSR1 makes pgtreed itself try to SIGKILL the process named by
 * PGTREED_TEST_KILL_TARGET (a sacrificial process of the test — never a PostgreSQL one: refused
 * by comm) by three routes, and log what each returned. Under the seccomp filter each must fail
 * with EPERM and the target live; a test reads that from the log and /proc. */
/* The test hook below may only run where it cannot succeed: under pgtreed's own seccomp filter. */
static bool seccomp_filter_active(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        bool mode = false;
        unsigned long filters = 0;
        while (f && fgets(line, sizeof line, f)) {
                if (!strcmp(line, "Seccomp:\t2\n"))
                        mode = true;
                else if (!strncmp(line, "Seccomp_filters:\t", 17))
                        filters = strtoul(line + 17, NULL, 10);
        }
        return mode && filters >= 1;
}

static int on_test_kill(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        if (!seccomp_filter_active()) {
                log_plain(LOG_WARNING, "test hook: the seccomp filter is not in force (Seccomp: 2 in /proc/self/status): refused");
                return 0;
        }
        const char *v = getenv("PGTREED_TEST_KILL_TARGET");
        char *end = NULL;
        long pid = v ? strtol(v, &end, 10) : 0;
        if (!v || end == v || *end || pid <= 1 || pid == getpid()) {
                log_plain(LOG_WARNING, "test hook: PGTREED_TEST_KILL_TARGET is not a usable pid");
                return 0;
        }
        char path[64], comm[64] = "";
        snprintf(path, sizeof path, "/proc/%ld/comm", pid);
        FILE *f = fopen(path, "re");
        if (f) {
                if (!fgets(comm, sizeof comm, f))
                        comm[0] = 0;
                fclose(f);
        }
        if (!strncmp(comm, "postgres", 8) || !strncmp(comm, "postmaster", 10) || tree_find(&m->engine->tree, (pid_t) pid) >= 0) {
                log_plain(LOG_WARNING, "test hook: pid %ld is a PostgreSQL process: refused", pid);
                return 0;
        }
        int r = kill((pid_t) pid, SIGKILL);
        log_plain(LOG_WARNING, "test hook: kill(%ld, SIGKILL): %s", pid, r < 0 ? strerror(errno) : "sent");
        int fd = (int) syscall(SYS_pidfd_open, (pid_t) pid, 0);
        r = fd < 0 ? -1 : (int) syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
        log_plain(LOG_WARNING, "test hook: pidfd_send_signal(%ld, SIGKILL): %s", pid, r < 0 ? strerror(errno) : "sent");
        if (fd >= 0)
                close(fd);
        int p[2];
        if (pipe2(p, O_CLOEXEC) == 0) {
                r = fcntl(p[0], F_SETOWN, (pid_t) pid) < 0 ? -1 : fcntl(p[0], F_SETSIG, SIGKILL);
                log_plain(LOG_WARNING, "test hook: fcntl(F_SETSIG, SIGKILL) owned by %ld: %s", pid,
                          r < 0 ? strerror(errno) : "accepted");
                close(p[0]);
                close(p[1]);
        }
        return 0;
}

int manager_run(Manager *m) {
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        bool hooks = getenv("PGTREED_TEST_HOOKS") && !strcmp(getenv("PGTREED_TEST_HOOKS"), "1");
        if (hooks) {
                sigaddset(&mask, SIGUSR2);
                sigaddset(&mask, SIGUSR1);
        }
        sigprocmask(SIG_BLOCK, &mask, NULL);
        int r;
        if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_sigterm, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGINT, on_sigterm, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m)) < 0 ||
            (hooks && (r = sd_event_add_signal(m->event, NULL, SIGUSR2, on_test_stall, m)) < 0) ||
            (hooks && (r = sd_event_add_signal(m->event, NULL, SIGUSR1, on_test_kill, m)) < 0))
                return r;
        /* SIGCHLD of alert commands is handled through their pidfds; keep it from interrupting */
        signal(SIGPIPE, SIG_IGN);
        if ((r = sd_event_set_watchdog(m->event, true)) < 0)
                return r;
        if ((r = sd_event_add_time(m->event, &m->cycle_timer, CLOCK_MONOTONIC, 0, 1000, on_cycle_timer, m)) < 0)
                return r;
        sd_event_source_set_enabled(m->cycle_timer, SD_EVENT_ONESHOT);
        if ((r = sd_event_add_time_relative(m->event, &m->probe_timer, CLOCK_MONOTONIC, m->config->interval_usec / 2, 1000,
                                            on_probe_timer, m)) < 0)
                return r;
        sd_event_source_set_enabled(m->probe_timer, SD_EVENT_ONESHOT);
        int fd = scanner_socket_fd(m->engine->scanner);
        if (fd >= 0 && (r = sd_event_add_io(m->event, &m->socket_source, fd, EPOLLIN, on_socket_created, m)) < 0)
                return r;
        if (hooks && getenv("PGTREED_TEST_YOUNG_WINDOW")) {
                /* tests: how long a process counts as young for discovery (lib/proc-scan.c),
                 * seconds; an integration test cannot wait minutes for a process to be old */
                char *end;
                unsigned long v = strtoul(getenv("PGTREED_TEST_YOUNG_WINDOW"), &end, 10);
                if (*end == 0 && v <= 3600)
                        scanner_set_recheck(m->engine->scanner, 0, v * 1000000ULL);
        }
        if ((r = control_new(m, &m->control)) < 0)
                return r;
        m->force_full = true;
        r = sd_event_loop(m->event);
        return r;
}
