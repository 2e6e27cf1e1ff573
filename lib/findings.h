/* SPDX-License-Identifier: MIT */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tree.h"

typedef enum FindingKind {
        FINDING_ORPHAN_BACKEND,
        FINDING_STALE_ACTIVITY,
        FINDING_UNLISTED_PROCESS,
        FINDING_ORPHAN_PARALLEL_WORKER,
        FINDING_CLIENT_GONE,
        FINDING_LONG_QUERY,
        FINDING_IDLE_IN_TRANSACTION,
        FINDING_LONG_TRANSACTION,
        FINDING_LOCK_WAIT,
        FINDING_FOREIGN_PROCESS,        /* a process below a cluster's that is not PostgreSQL */
        _FINDING_KIND_MAX,
} FindingKind;

typedef enum Action {
        ACTION_LOG,
        ACTION_ALERT,
        ACTION_CANCEL,
        ACTION_TERMINATE,
        _ACTION_MAX,
} Action;

const char *finding_kind_to_string(FindingKind k);
/* Kinds reported whatever the rules (a rule only raises the action): orphans, foreign processes.
 * They are what `pgtree orphans` lists. */
static inline bool finding_kind_always_open(FindingKind k) {
        return k <= FINDING_CLIENT_GONE || k == FINDING_FOREIGN_PROCESS;
}
int finding_kind_from_string(const char *s); /* −EINVAL if unknown */
const char *action_to_string(Action a);
int action_from_string(const char *s);      /* −EINVAL if unknown */

typedef struct Finding {
        FindingKind kind;
        pid_t pid;
        pid_t ns_pid;           /* its pid in its container's PID namespace, 0 if the same as pid */
        uint64_t start_ticks;   /* with pid and kind: the finding's identity (stale_activity:
                                 * backend_start in centiseconds) */
        int proc;               /* index in the tree it was found in, −1 if none */
        char cluster[PATH_MAX]; /* cluster name, or the orphan's data directory */
        /* its cluster_name when the name above was made unique (main:5432): rules that name the
         * cluster match either, so a lookalike cluster of the same name cannot switch them off */
        char cluster_name[256];
        char container[256];    /* the cluster's container (ContainerInfo.name), "" if none */
        /* who it is about, for rules and logs ("" unknown) */
        char user[128];
        char database[128];
        char application_name[128];
        char client[128];
        char backend_type[64];
        char state[64];
        long long xmin_age;     /* age(backend_xmin), −1 unknown */
        double since;           /* when the condition began (epoch s), 0 unknown: then it counts
                                 * from first_seen */
        double first_seen;      /* set by the finding store */
        double duration_s;
        char rule[128];         /* the rule that decided, "" if none (then the action is log) */
        Action action;
        bool dry_run;
        char detail[512];
        /* lock_wait: the root of the chain of sessions that blocks it (blocker_pid 0: not known, or
         * a cycle of waiters with no root: lock_cycle) */
        pid_t blocker_pid;
        uint64_t blocker_start_ticks;
        unsigned blocker_depth;         /* 1: it blocks the waiter directly */
        bool lock_cycle;
        char blocker_user[128];
        char blocker_database[128];
        char blocker_application_name[128];
        char blocker_client[128];
        char blocker_backend_type[64];
        char blocker_state[64];
        double blocker_state_change;    /* epoch s, 0 unknown */
        double blocker_xact_start;
        bool act_on_blocker;            /* the deciding rule has target = blocker */
        /* foreign_process: the process, and the PostgreSQL process it descends from (the finding's
         * user, database, client, application and query are that backend's, kept once it is gone) */
        char command[512];      /* its command line */
        char exe[256];          /* its executable, "" unknown */
        long long uid;          /* its effective uid, −1 unknown */
        double cpu_percent;
        pid_t ppid;             /* its parent when found (checked again before it is signalled) */
        pid_t via_pid;          /* 0 unknown */
        uint64_t via_start_ticks;
        bool detached;          /* it left the backend's tree (daemonized) */
        char query[1024];       /* that backend's query when last seen (policy on the socket) */
} Finding;

typedef struct Findings {
        Finding *items;
        size_t n;
        size_t allocated;
} Findings;

/* Candidates of one cycle, from the tree (with pg_stat_activity joined where available) and the
 * pids whose client connection is gone (sorted). Pure. Every orphan kind and every long-runner
 * condition is a candidate; thresholds, grace periods and rules are the finding store's job.
 *   orphan_backend          a PostgreSQL process with no live postmaster
 *   orphan_parallel_worker  a parallel worker whose leader is gone
 *   stale_activity          a pg_stat_activity row with no live process of that pid and start
 *   unlisted_process        a child that pg_stat_activity should list but does not
 *   client_gone             a backend whose client connection is dead
 *   long_query / idle_in_transaction / long_transaction / lock_wait  from activity (or, when
 *                           it is unavailable, from the title with the time unknown) */
int findings_detect(const PgTree *t, const pid_t *client_gone, size_t n_client_gone, Findings *ret);
/* The same, without the long runners that no rule can open yet: min_after_usec[kind] is the
 * lowest threshold of the rules that cover the kind (UINT64_MAX: none does; see
 * rules_min_after()). A session below it costs no candidate (and no copying, sorting and
 * formatting of one) each cycle. NULL: every candidate. */
int findings_detect_filtered(const PgTree *t, const pid_t *client_gone, size_t n_client_gone,
                             const uint64_t *min_after_usec, Findings *ret);

Finding *findings_add(Findings *f);
void findings_free(Findings *f);
