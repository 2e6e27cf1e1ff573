/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Backend types in pg_stat_activity's vocabulary, plus the ones it never shows. */
typedef enum BackendType {
        BACKEND_UNKNOWN,
        BACKEND_POSTMASTER,
        BACKEND_CLIENT,
        BACKEND_AUTOVACUUM_LAUNCHER,
        BACKEND_AUTOVACUUM_WORKER,
        BACKEND_BACKGROUND_WRITER,
        BACKEND_CHECKPOINTER,
        BACKEND_WALWRITER,
        BACKEND_WALSENDER,
        BACKEND_WALRECEIVER,
        BACKEND_WALSUMMARIZER,
        BACKEND_STARTUP,
        BACKEND_ARCHIVER,
        BACKEND_LOGGER,
        BACKEND_STATS_COLLECTOR,
        BACKEND_PARALLEL_WORKER,
        BACKEND_LOGICAL_REPLICATION_LAUNCHER,
        BACKEND_LOGICAL_REPLICATION_WORKER,          /* PG 10–16 */
        BACKEND_LOGICAL_REPLICATION_APPLY_WORKER,    /* PG 17 */
        BACKEND_LOGICAL_REPLICATION_TABLESYNC_WORKER,
        BACKEND_LOGICAL_REPLICATION_PARALLEL_WORKER,
        BACKEND_SLOTSYNC_WORKER,
        BACKEND_IO_WORKER,                           /* PG 18: "io worker N" */
        BACKEND_LOGICAL_REPLICATION_SEQUENCESYNC_WORKER, /* PG 19 */
        BACKEND_DATACHECKSUMS_LAUNCHER,              /* PG 19 */
        BACKEND_DATACHECKSUMS_WORKER,                /* PG 19 */
        BACKEND_BACKGROUND_WORKER,                   /* any other bgworker; name in TitleInfo.worker */
        _BACKEND_TYPE_MAX,
} BackendType;

const char *backend_type_to_string(BackendType t);
/* The name a server of this major version (10, 11, …, 19; 0 = unknown) gives the type in
 * pg_stat_activity.backend_type: 10 calls parallel workers and logical replication processes
 * "background worker", 11–16 call every logical replication worker but 16's parallel apply one
 * "logical replication worker". Unknown version: backend_type_to_string(). */
const char *backend_type_name(BackendType t, int major);
/* Does pg_stat_activity of this major version list processes of this type? (0 = unknown
 * version: only the types that every version lists.) Never: the logger, the stats collector, the
 * archiver before 14, and other background workers, which are listed only if they connect to a
 * database (pg_prewarm's autoprewarm leader does not). */
bool backend_type_listed(BackendType t, int major);
/* Is a process of this type attached to the server's shared memory (so that, left behind by a
 * dead postmaster, it keeps the server from starting again)? Not the logger, the stats collector
 * (≤ 14) and the archiver before 14: they detach at start. */
bool backend_type_holds_shared_memory(BackendType t, int major);
BackendType backend_type_from_string(const char *s);
/* Auxiliary processes and the postmaster: never signalled, whatever a rule says. */
bool backend_type_is_auxiliary(BackendType t);

#define TITLE_MAX 2048          /* longer titles are cut here and flagged truncated */
#define TITLE_NAME_MAX 256

typedef enum TitleFlags {
        TITLE_TRUNCATED = 1 << 0,      /* ends inside a field: the server's title area was too small */
        TITLE_NO_STATUS = 1 << 1,      /* fixed part only (update_process_title=off, or not yet set) */
        TITLE_WAITING = 1 << 2,        /* " waiting": a heavyweight lock wait */
        TITLE_NAMES_AMBIGUOUS = 1 << 3,/* user and database could split at more than one space */
} TitleFlags;

typedef struct TitleInfo {
        BackendType backend_type;
        unsigned flags;
        char cluster_name[TITLE_NAME_MAX]; /* "" if none seen */
        char user[TITLE_NAME_MAX];
        char database[TITLE_NAME_MAX];
        char client[TITLE_NAME_MAX];       /* "10.0.0.5:50156", "[::1]:5432", "local", or "" */
        char status[TITLE_NAME_MAX];       /* raw activity word(s) without " waiting": "idle", "SELECT", … */
        char state[32];                    /* pg_stat_activity.state derived from status, or "" */
        char worker[TITLE_NAME_MAX];       /* bgworker name, archiver/startup/walreceiver detail, av db */
        pid_t leader_pid;                  /* parallel worker's leader, else 0 */
} TitleInfo;

/* Parses a process title: the bytes of /proc/PID/cmdline (NUL padding and all). cluster_hint is
 * the cluster_name the caller knows this server uses ("" = none), or NULL if unknown, in which
 * case it is guessed. Never fails: what cannot be recognised is BACKEND_UNKNOWN. A title that
 * does not start with "postgres: " is reported as BACKEND_POSTMASTER (an untouched command line).
 */
void title_parse(const char *buf, size_t len, const char *cluster_hint, TitleInfo *ret);

/* The cluster_name prefix of an auxiliary title (e.g. "lab15" from "postgres: lab15: checkpointer"),
 * which names every title of that server. Returns true and fills ret (possibly "") if the title is
 * one that tells, false if it cannot tell. */
bool title_cluster_name(const char *buf, size_t len, char ret[TITLE_NAME_MAX]);
