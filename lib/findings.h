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
int finding_kind_from_string(const char *s); /* −EINVAL if unknown */
const char *action_to_string(Action a);
int action_from_string(const char *s);      /* −EINVAL if unknown */

typedef struct Finding {
        FindingKind kind;
        pid_t pid;
        uint64_t start_ticks;   /* with pid and kind: the finding's identity */
        int proc;               /* index in the tree it was found in, −1 if none */
        char cluster[PATH_MAX]; /* cluster name, or the orphan's data directory */
        char rule[128];         /* the rule that matched, "" if none (then action is log) */
        Action action;
        bool dry_run;
        double duration_s;
        char detail[256];
} Finding;

typedef struct Findings {
        Finding *items;
        size_t n;
        size_t allocated;
} Findings;

/* Findings that the process tree alone shows: orphan_backend (a PostgreSQL process with no live
 * postmaster) and orphan_parallel_worker (a parallel worker whose leader is gone). Pure. */
int findings_from_tree(const PgTree *t, Findings *ret);
void findings_free(Findings *f);
