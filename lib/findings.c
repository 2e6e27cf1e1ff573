/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "findings.h"
#include "macro.h"

static const char *const kind_names[_FINDING_KIND_MAX] = {
        [FINDING_ORPHAN_BACKEND] = "orphan_backend",
        [FINDING_STALE_ACTIVITY] = "stale_activity",
        [FINDING_UNLISTED_PROCESS] = "unlisted_process",
        [FINDING_ORPHAN_PARALLEL_WORKER] = "orphan_parallel_worker",
        [FINDING_CLIENT_GONE] = "client_gone",
        [FINDING_LONG_QUERY] = "long_query",
        [FINDING_IDLE_IN_TRANSACTION] = "idle_in_transaction",
        [FINDING_LONG_TRANSACTION] = "long_transaction",
        [FINDING_LOCK_WAIT] = "lock_wait",
};

static const char *const action_names[_ACTION_MAX] = {
        [ACTION_LOG] = "log",
        [ACTION_ALERT] = "alert",
        [ACTION_CANCEL] = "cancel",
        [ACTION_TERMINATE] = "terminate",
};

const char *finding_kind_to_string(FindingKind k) {
        return (unsigned) k < _FINDING_KIND_MAX ? kind_names[k] : "unknown";
}

int finding_kind_from_string(const char *s) {
        for (unsigned i = 0; s && i < _FINDING_KIND_MAX; i++)
                if (strcmp(s, kind_names[i]) == 0)
                        return (int) i;
        return -EINVAL;
}

const char *action_to_string(Action a) {
        return (unsigned) a < _ACTION_MAX ? action_names[a] : "unknown";
}

int action_from_string(const char *s) {
        for (unsigned i = 0; s && i < _ACTION_MAX; i++)
                if (strcmp(s, action_names[i]) == 0)
                        return (int) i;
        return -EINVAL;
}

static Finding *add(Findings *f) {
        if (GROW(f->items, f->allocated, f->n + 1) < 0)
                return NULL;
        Finding *x = &f->items[f->n++];
        *x = (Finding){ .proc = -1, .action = ACTION_LOG };
        return x;
}

int findings_from_tree(const PgTree *t, Findings *ret) {
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                FindingKind kind;
                if (pg_process_is_orphan(p))
                        kind = FINDING_ORPHAN_BACKEND;
                else if (p->title.backend_type == BACKEND_PARALLEL_WORKER && p->leader_missing)
                        kind = FINDING_ORPHAN_PARALLEL_WORKER;
                else
                        continue;
                Finding *x = add(ret);
                if (!x)
                        return -ENOMEM;
                x->kind = kind;
                x->pid = p->rec.pid;
                x->start_ticks = p->rec.start_ticks;
                x->proc = (int) i;
                if (kind == FINDING_ORPHAN_BACKEND) {
                        snprintf(x->cluster, sizeof x->cluster, "%s", p->cwd ? p->cwd : "");
                        snprintf(x->detail, sizeof x->detail,
                                 "%s has no live postmaster (parent now %d); it keeps the shared memory "
                                 "of a dead server in use and blocks its restart",
                                 backend_type_to_string(p->title.backend_type), (int) p->rec.ppid);
                } else {
                        snprintf(x->cluster, sizeof x->cluster, "%s", t->clusters[p->cluster].name);
                        snprintf(x->detail, sizeof x->detail, "leader %d is gone",
                                 (int) p->title.leader_pid);
                }
        }
        return 0;
}

void findings_free(Findings *f) {
        if (!f)
                return;
        free(f->items);
        *f = (Findings){};
}
