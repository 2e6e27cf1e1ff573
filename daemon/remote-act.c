/* SPDX-License-Identifier: MIT */
/* Cancel and terminate on managed servers: through SQL, never through a signal of this host. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "remote-act.h"
#include "remote.h"

static const ClusterConf *cluster_conf(const Config *c, const char *name) {
        for (size_t i = 0; i < c->n_clusters; i++)
                if (c->clusters[i].host == CLUSTER_HOST_REMOTE && !strcmp(c->clusters[i].name, name))
                        return &c->clusters[i];
        return NULL;
}

const char *manager_act_remote(Manager *m, const PgProcess *p, const Finding *f, Action action, bool through_leader,
                               const char *requested_by, LogEntry *e, char *why, size_t why_size) {
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
        RemoteOutcome o = REMOTE_GONE;
        char msg[400] = "";
        int r = -ENOENT;
        if (cc && p->act)
                r = remote_set_act(m->engine->remote, c->name, &target, action, cc->action_timeout_usec, &o, msg, sizeof msg);
        else
                snprintf(msg, sizeof msg, "the server is not configured any more");
        const char *word, *msgid;
        int prio;
        if (r < 0) {
                m->counters.n[action][RESULT_FAILED]++;
                snprintf(why, why_size, "%s(%d) on %s failed: %s", fn, (int) p->rec.pid, c->remote_server, msg);
                word = "failed", msgid = MSGID_ACTION_FAILED, prio = LOG_ERR;
        } else if (o == REMOTE_SENT) {
                m->counters.n[action][RESULT_SENT]++;
                snprintf(why, why_size, "%s(%d) on %s: the server accepted it%s", fn, (int) p->rec.pid, c->remote_server,
                         through_leader ? " (through the parallel workers' leader)" : "");
                log_add(e, "PGTREE_DRY_RUN", "no");
                word = "sent", msgid = MSGID_ACTION_SENT, prio = LOG_NOTICE;
        } else if (o == REMOTE_GONE) {
                snprintf(why, why_size, "%s", remote_outcome_explain(o));
                word = "gone", msgid = MSGID_ACTION_REFUSED, prio = LOG_INFO;
        } else {
                m->counters.n[action][RESULT_REFUSED]++;
                snprintf(why, why_size, "%s(%d) not called on %s: %s", fn, (int) p->rec.pid, c->remote_server,
                         remote_outcome_explain(o));
                word = "refused", msgid = MSGID_ACTION_REFUSED, prio = o == REMOTE_SUPERUSER || o == REMOTE_NO_PRIVILEGE ||
                                                                               o == REMOTE_HIDDEN
                                                                       ? LOG_ERR
                                                                       : LOG_WARNING;
        }
        log_add(e, "PGTREE_REMOTE_OUTCOME", "%s", r < 0 ? "error" : remote_outcome_to_string(o));
        log_add(e, "PGTREE_RESULT", "%s", word);
        log_send(e, prio, msgid, "%s pid %d on %s (%s): %s", action_to_string(action), (int) f->pid, c->name, requested_by, why);
        return word;
}
