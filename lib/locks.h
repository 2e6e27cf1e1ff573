/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "activity.h"

/* Lock chains of one cluster, from its pg_stat_activity snapshot: each session waiting for a
 * lock carries pg_blocking_pids() (ActivityRow.blocked_by). Pure; nothing here loops on a cycle
 * of waiters (a deadlock before the deadlock detector runs, or pg_blocking_pids() answers taken
 * at slightly different moments). */

/* Does the session wait for sessions (pg_blocking_pids() named at least one)? */
static inline bool activity_row_blocked(const ActivityRow *r) {
        return r && r->n_blocked_by > 0;
}

/* The root blocker of a waiting session: following who blocks whom, a session that blocks and does
 * not wait itself. Among several, the one with the oldest transaction (then the lowest pid); one
 * the snapshot lists is preferred to one it does not. *depth: 1 when it blocks the waiter directly.
 * Returns 0; -ENOENT if the session is not blocked; -ELOOP if every session it waits for waits in
 * turn (a cycle of waiters); -ENOMEM. */
int lock_root_blocker(const ActivitySnapshot *s, pid_t waiter, pid_t *ret_root, unsigned *ret_depth);

/* One line of the blocking forest: root blockers at depth 0, the sessions they block below them. */
typedef struct LockLine {
        pid_t pid;
        const ActivityRow *row; /* NULL: a pid the snapshot does not list */
        unsigned depth;
        bool repeat;            /* blocked by several: shown in full under the first, named here */
        bool cycle;             /* a root that waits itself: a cycle of waiters with no root outside */
} LockLine;

/* The blocking forest, in display order (roots by pid, each followed by what it blocks). Empty
 * when no session is blocked. */
int lock_forest(const ActivitySnapshot *s, LockLine **ret, size_t *ret_n);

/* How many sessions a pid blocks directly. */
size_t lock_count_blocked(const ActivitySnapshot *s, pid_t pid);
