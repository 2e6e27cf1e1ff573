/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include "activity.h"
#include "tree.h"

/* How far apart a row's backend_start and its process's start may be and still be the same
 * session. A reused pid is a process started long after the row's session. */
#define JOIN_START_TOLERANCE_S 2.0

typedef struct JoinStats {
        size_t joined;          /* processes with their row */
        size_t mismatched;      /* rows whose pid now belongs to another process */
        size_t rows_without_process;
} JoinStats;

/* Attaches each process of cluster ci to its pg_stat_activity row (same pid, backend_start
 * within JOIN_START_TOLERANCE_S of the process's start). Pure. snap must outlive the tree's use. */
void join_activity(PgTree *t, size_t ci, const ActivitySnapshot *snap, JoinStats *stats);

/* The process as the operator should see it: pg_stat_activity's values when joined, else what
 * the title says. NULL when unknown. */
const char *proc_user(const PgProcess *p);
const char *proc_database(const PgProcess *p);
const char *proc_application(const PgProcess *p);
const char *proc_state(const PgProcess *p);
const char *proc_backend_type(const PgProcess *p);
/* "10.0.0.5:50156", "[::1]:5432", "local", or "" */
void proc_client(const PgProcess *p, char *buf, size_t size);
/* Is it this pgtreed's own connection (the backend its libpq connection reported)?
 * Session listings leave it out unless asked. */
bool pg_process_is_pgtree(const PgProcess *p);
/* Is the process a session that pgtree may act on (client backend, not its own)? */
bool proc_is_client_backend(const PgProcess *p);
