/* SPDX-License-Identifier: MIT */
/* Cancel and terminate on managed servers: through SQL, never through a signal of this host, and
 * never waited for: the statement runs on the server's action connection, driven by the event
 * loop like the activity queries, while the daemon goes on with its cycles and clients. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "macro.h"
#include "remote-act.h"
#include "remote.h"

#define ACT_SOURCES_MAX 64

struct RemoteActLoop {
        sd_event_source *io[ACT_SOURCES_MAX];
        size_t n_io;
        sd_event_source *timer;
        bool stopping;
};

/* What the outcome of one queued action is logged and reported with. */
typedef struct RemoteActCtx {
        Manager *manager;
        LogEntry e;
        Action action;
        pid_t pid;                      /* the session acted on */
        pid_t finding_pid;              /* the finding's (a parallel worker's, a waiter's) */
        bool through_leader;
        char cluster[256];
        char server[256];
        char rate_key[256];
        char requested_by[160];
        ManagerActDone done;
        void *userdata;
} RemoteActCtx;

static const ClusterConf *cluster_conf(const Config *c, const char *name) {
        for (size_t i = 0; i < c->n_clusters; i++)
                if (c->clusters[i].host == CLUSTER_HOST_REMOTE && !strcmp(c->clusters[i].name, name))
                        return &c->clusters[i];
        return NULL;
}

static struct RemoteActLoop *loop_of(Manager *m) {
        if (!m->remote_acts && !(m->remote_acts = calloc(1, sizeof *m->remote_acts)))
                return NULL;
        return m->remote_acts;
}

/* Logs the outcome (consuming e), counts it, and fills why; returns the result word. */
static const char *report(Manager *m, LogEntry *e, Action action, pid_t pid, pid_t finding_pid, bool through_leader,
                          const char *cluster, const char *server, const char *requested_by, int r, RemoteOutcome o,
                          const char *msg, char *why, size_t why_size) {
        const char *fn = action == ACTION_CANCEL ? "pg_cancel_backend" : "pg_terminate_backend";
        const char *word, *msgid;
        int prio;
        if (r == -EBUSY) {
                /* REMOTE_ACTIONS_PENDING_MAX in flight and queued: not sent, msg names the limit */
                m->counters.n[action][RESULT_REFUSED]++;
                snprintf(why, why_size, "%s(%d) on %s refused: %s", fn, (int) pid, server, msg);
                word = "refused", msgid = MSGID_ACTION_REFUSED, prio = LOG_WARNING;
        } else if (r < 0) {
                m->counters.n[action][RESULT_FAILED]++;
                snprintf(why, why_size, "%s(%d) on %s failed: %s", fn, (int) pid, server, msg);
                word = "failed", msgid = MSGID_ACTION_FAILED, prio = LOG_ERR;
        } else if (o == REMOTE_SENT) {
                m->counters.n[action][RESULT_SENT]++;
                snprintf(why, why_size, "%s(%d) on %s: the server accepted it%s", fn, (int) pid, server,
                         through_leader ? " (through the parallel workers' leader)" : "");
                log_add(e, "PGTREE_DRY_RUN", "no");
                word = "sent", msgid = MSGID_ACTION_SENT, prio = LOG_NOTICE;
        } else if (o == REMOTE_GONE) {
                snprintf(why, why_size, "%s", remote_outcome_explain(o));
                word = "gone", msgid = MSGID_ACTION_REFUSED, prio = LOG_INFO;
        } else {
                m->counters.n[action][RESULT_REFUSED]++;
                snprintf(why, why_size, "%s(%d) not called on %s: %s", fn, (int) pid, server, remote_outcome_explain(o));
                word = "refused", msgid = MSGID_ACTION_REFUSED;
                prio = o == REMOTE_SUPERUSER || o == REMOTE_NO_PRIVILEGE || o == REMOTE_HIDDEN ? LOG_ERR : LOG_WARNING;
        }
        log_add(e, "PGTREE_REMOTE_OUTCOME", "%s", r < 0 ? "error" : remote_outcome_to_string(o));
        log_add(e, "PGTREE_RESULT", "%s", word);
        log_send(e, prio, msgid, "%s pid %d on %s (%s): %s", action_to_string(action), (int) finding_pid, cluster,
                 requested_by, why);
        return word;
}

static void schedule(Manager *m) {
        struct RemoteActLoop *l = m->remote_acts;
        if (!l || l->stopping || !l->timer)
                return;
        /* the timer moves every connection on and arms the sources again, outside whatever
         * reported (a cycle's begin, a reload, another action's outcome) */
        sd_event_source_set_time(l->timer, 0);
        sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
}

static void on_remote_done(int r, RemoteOutcome o, const char *msg, void *userdata) {
        RemoteActCtx *x = userdata;
        Manager *m = x->manager;
        char why[768];
        const char *word = report(m, &x->e, x->action, x->pid, x->finding_pid, x->through_leader, x->cluster, x->server,
                                  x->requested_by, r, o, msg, why, sizeof why);
        if (!strcmp(word, "sent"))
                manager_rate_record(m, x->rate_key);
        if (x->done)
                x->done(word, why, x->userdata);
        free(x);
        schedule(m);
}

const char *manager_act_remote(Manager *m, const PgProcess *p, const Finding *f, Action action, bool through_leader,
                               const char *requested_by, const char *rate_key, LogEntry *e, char *why, size_t why_size,
                               ManagerActDone done, void *userdata) {
        const PgTree *t = &m->engine->tree;
        const PgCluster *c = &t->clusters[p->cluster];
        const char *fn = action == ACTION_CANCEL ? "pg_cancel_backend" : "pg_terminate_backend";
        const ClusterConf *cc = cluster_conf(m->config, c->name);
        RemoteTarget target;
        remote_target_from_process(p, through_leader ? _FINDING_KIND_MAX : f->kind, &target);
        log_add(e, "PGTREE_VIEW", "remote");
        log_add(e, "PGTREE_REMOTE_SERVER", "%s", c->remote_server);
        log_add(e, "PGTREE_SQL_FUNCTION", "%s", fn);
        log_add(e, "PGTREE_TARGET_PID", "%d", (int) p->rec.pid);
        log_add(e, "PGTREE_BACKEND_START", "%.6f", target.backend_start);
        char msg[400] = "";
        int r = -ENOENT;
        RemoteActCtx *x = calloc(1, sizeof *x);
        if (!x)
                snprintf(msg, sizeof msg, "out of memory");
        else if (!cc || !p->act || !loop_of(m))
                snprintf(msg, sizeof msg, "the server is not configured any more");
        else {
                *x = (RemoteActCtx){ .manager = m, .action = action, .pid = p->rec.pid, .finding_pid = f->pid,
                                     .through_leader = through_leader, .done = done, .userdata = userdata };
                snprintf(x->cluster, sizeof x->cluster, "%.255s", c->name);
                snprintf(x->server, sizeof x->server, "%.255s", c->remote_server);
                snprintf(x->rate_key, sizeof x->rate_key, "%.255s", rate_key);
                snprintf(x->requested_by, sizeof x->requested_by, "%.159s", requested_by);
                r = remote_set_act_start(m->engine->remote, c->name, &target, action, cc->action_timeout_usec,
                                         now_monotonic_usec(), on_remote_done, x, msg, sizeof msg);
        }
        if (r < 0) {
                free(x);
                return report(m, e, action, p->rec.pid, f->pid, through_leader, c->name, c->remote_server, requested_by, r,
                              REMOTE_GONE, msg, why, why_size);
        }
        /* the entry goes with the action; it is logged when the outcome is known */
        x->e = *e;
        *e = (LogEntry){};
        snprintf(why, why_size, "%s(%d) on %s: sent to the server, outcome pending (at most %.1fs)", fn, (int) p->rec.pid,
                 c->remote_server, (double) cc->action_timeout_usec / 1e6);
        schedule(m);
        return "pending";
}

/* ---- the event sources ---- */

void manager_remote_acts_release(Manager *m) {
        struct RemoteActLoop *l = m->remote_acts;
        if (!l)
                return;
        for (size_t i = 0; i < l->n_io; i++)
                sd_event_source_disable_unref(l->io[i]);
        l->n_io = 0;
}

static int on_act_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        manager_remote_acts_release(m); /* before any socket closes */
        remote_set_actions_process(m->engine->remote, fd, now_monotonic_usec());
        manager_remote_acts_arm(m);
        return 0;
}

static int on_act_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        manager_remote_acts_release(m);
        remote_set_actions_process(m->engine->remote, -1, now_monotonic_usec());
        manager_remote_acts_arm(m);
        return 0;
}

void manager_remote_acts_arm(Manager *m) {
        if (!m->remote_acts && !m->engine->remote)
                return; /* no managed server, no action on one yet */
        struct RemoteActLoop *l = loop_of(m);
        if (!l || l->stopping)
                return;
        manager_remote_acts_release(m);
        if (!l->timer) {
                if (sd_event_add_time(m->event, &l->timer, CLOCK_MONOTONIC, UINT64_MAX, 1000, on_act_timer, m) < 0)
                        return;
                sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
        }
        RemoteSet *s = m->engine->remote;
        RemoteActWait w[ACT_SOURCES_MAX];
        size_t n = remote_set_actions_wants(s, w, ELEMENTSOF(w));
        for (size_t i = 0; i < n; i++) {
                uint32_t ev = ((w[i].events & POLLIN) ? EPOLLIN : 0) | ((w[i].events & POLLOUT) ? EPOLLOUT : 0);
                if (sd_event_add_io(m->event, &l->io[l->n_io], w[i].fd, ev, on_act_io, m) >= 0)
                        l->n_io++;
        }
        uint64_t d = remote_set_actions_deadline(s);
        if (d == UINT64_MAX)
                sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
        else {
                sd_event_source_set_time(l->timer, d);
                sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
        }
}

void manager_remote_acts_free(Manager *m) {
        struct RemoteActLoop *l = m->remote_acts;
        if (!l)
                return;
        manager_remote_acts_release(m);
        sd_event_source_disable_unref(l->timer);
        free(l);
        m->remote_acts = NULL;
}
