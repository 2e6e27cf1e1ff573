/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "tree.h"

/* Keeps the host's PostgreSQL forest up to date at a cost that does not grow with the host's
 * process count: a full discovery scan of /proc now and then (and at once when a known
 * postmaster is gone), and in between a refresh that reads only the known postmasters'
 * children (/proc/PM/task/PM/children) and the known orphans. */
typedef struct Scanner Scanner;

typedef struct ScanStats {
        bool full;              /* this refresh was a discovery scan */
        const char *full_reason;/* why: "first", "interval", "postmaster gone", "forced", … */
        bool complete;          /* this discovery read every process of the host (else only what
                                 * may have changed since the last one: lib/proc-scan.h) */
        size_t read;            /* processes of the host whose data the discovery read */
        size_t examined;        /* process records read */
        double seconds;         /* wall time of the refresh */
} ScanStats;

int scanner_new(Scanner **ret);
Scanner *scanner_free(Scanner *s);

/* How often a full discovery scan runs (default 30 s). */
void scanner_set_discovery_interval(Scanner *s, uint64_t usec);

/* How long refreshes keep discovering after a postmaster went away, waiting for it to run again
 * (default 120 s; 0: the default). */
void scanner_set_eager_window(Scanner *s, uint64_t usec);
/* Whether refreshes look below the clusters' processes for foreign processes (default yes; no
 * only for benchmarks that measure what that costs). */
void scanner_set_descendants(Scanner *s, bool on);

/* Discovery is incremental (proc_scan_discover): an old process that execs postgres is seen by a
 * complete discovery, which runs first, when a PostgreSQL socket (.s.PGSQL.*) appears in a watched
 * directory (the socket directories of the clusters found, and those added here), and when asked
 * — at most once per 10 s (the request waits). A directory missing now is watched once made. */
int scanner_watch_socket_dir(Scanner *s, const char *dir);
/* /run/postgresql, /var/run/postgresql and /tmp (where servers put their sockets by default). */
int scanner_watch_default_socket_dirs(Scanner *s);
/* The inotify descriptor of those directories (−1 if none): readable when something was created
 * there; then call scanner_socket_events. */
int scanner_socket_fd(const Scanner *s);
/* Reads the pending events. Returns 1 if the next refresh is to be a complete discovery, due now
 * (a socket appeared, and the last complete discovery was long enough ago). Refreshes call it too. */
int scanner_socket_events(Scanner *s);
/* The next refresh discovers completely (or the first one after the 10 s bound). */
void scanner_request_complete(Scanner *s, const char *why);
/* Why a complete discovery is pending, or NULL. */
const char *scanner_pending_complete(const Scanner *s);
/* The bound between complete discoveries (default 10 s; 0: the default). */
void scanner_set_complete_min_interval(Scanner *s, uint64_t usec);
/* See proc_scan_set_recheck. */
void scanner_set_recheck(Scanner *s, uint64_t recheck_usec, uint64_t young_usec);

/* Is it discovering at every refresh, waiting for a postmaster that went away to run again? */
bool scanner_discovering(const Scanner *s);
/* Is it waiting for a postmaster to run again in this data directory? */
bool scanner_awaiting(const Scanner *s, const char *data_directory);

/* One refresh into *ret (which the caller frees with tree_free). force_full: discover now. */
int scanner_refresh(Scanner *s, bool force_full, PgTree *ret, ScanStats *stats);

/* The process's title need not be read again next time: pg_stat_activity tells its state (the
 * engine says so for every joined process that is not active). */
void scanner_title_stable(Scanner *s, pid_t pid, uint64_t start_ticks);

/* The title read by the last refresh stays the process's title for the next one (the engine
 * says so for an active session that pg_stat_activity shows running the same statement before
 * and after that read): only its stat is read. Every SLOW_EVERY refreshes (staggered by pid) the
 * title is read anyway: a multi-statement query string changes titles under one query_start. */
void scanner_title_keep(Scanner *s, pid_t pid, uint64_t start_ticks);

/* Reads what identifies a cluster: its data directory (/proc/PM/cwd, else -D on the command
 * line) and postmaster.pid there, valid only if its pid and start time are the postmaster's
 * (pm_start: epoch seconds, 0 unknown); else pmfile_why says why. Missing pieces stay empty. */
void cluster_identify(const char *proc_root, PgCluster *c, const PgProcess *pm, double pm_start);

/* The major version in DIR/PG_VERSION (12, …), or −errno. */
int pg_version_read(const char *data_directory);
/* The same, the path read below root (a container's /proc/PID/root; NULL or "": ours). */
int pg_version_read_in(const char *root, const char *data_directory);
