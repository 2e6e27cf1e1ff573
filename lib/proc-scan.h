/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "proc-record.h"

/* The one adapter over libproc2 (procps-ng 4). libproc2 always reads /proc. */
typedef struct ProcScan ProcScan;

int proc_scan_new(ProcScan **ret);
ProcScan *proc_scan_free(ProcScan *s);

/* Every process on the host: pid, ppid, uid, state, times, rss, comm for all of them, title and
 * private memory only for those that can be PostgreSQL (comm postgres/postmaster, or a child of
 * one). The records are sorted by pid.
 * complete: every process is read now (a libproc2 reap). Else (incremental) every process is
 * listed, but the data of one the last discovery read is taken from it unless its /proc entry is
 * another (a reused pid), it is young, its parent is gone, it is the parent of a postgres process,
 * or it is due for its periodic re-read (see proc_scan_set_recheck); candidates are read in full
 * either way. The first is complete, and so is one where most processes are to be read. */
int proc_scan_discover(ProcScan *s, bool complete, ProcRecord **ret, size_t *n_ret);
/* A complete discovery. */
int proc_scan_all(ProcScan *s, ProcRecord **ret, size_t *n_ret);

/* Incremental discovery: a process is read again at every discovery while younger than young_usec
 * (default 2 min), and at least once every recheck_usec (default 30 min, staggered by pid; 0: the default). */
void proc_scan_set_recheck(ProcScan *s, uint64_t recheck_usec, uint64_t young_usec);

typedef struct ProcScanStats {
        bool complete;          /* the last discovery read every process */
        size_t listed;          /* entries of /proc it listed */
        size_t read;            /* processes whose data it read (libproc2) */
} ProcScanStats;
ProcScanStats proc_scan_stats(const ProcScan *s);
/* Did the last discovery read this process's data (not take it from the discovery before)? */
bool proc_scan_was_read(const ProcScan *s, pid_t pid);

/* The same fields, title included, for the given pids only. Processes that are gone are missing
 * from the result. */
int proc_scan_pids(ProcScan *s, const pid_t *pids, size_t n, ProcRecord **ret, size_t *n_ret);

/* The pieces of a record: stat alone is cheap; the rest can be read at a slower cadence. */
enum {
        PROC_DETAIL_UID = 1 << 0,       /* owner of /proc/PID */
        PROC_DETAIL_STATM = 1 << 1,     /* private memory */
        PROC_DETAIL_IO = 1 << 2,        /* read/write bytes (root or owner) */
        PROC_DETAIL_TITLE = 1 << 3,     /* cmdline */
        PROC_DETAIL_IDENTITY = 1 << 4,  /* real/effective uid, executable, working directory */
        PROC_DETAIL_ALL = 0x1f,
};

/* Facts already known of a process (pid, start time, comm) spare reading them again: a scan asks
 * this before reading a process's identity. Returns true and fills *ret if known. */
typedef bool (*ProcIdentityLookup)(void *userdata, pid_t pid, uint64_t start_ticks, const char *comm, ProcIdentity *ret);
void proc_scan_set_identity_lookup(ProcScan *s, ProcIdentityLookup lookup, void *userdata);
/* A discovery scan's shortcut for a process already known in full (same pid, start and comm,
 * title not expected to change): the lookup fills r's details (title, uid, identity, memory,
 * I/O) from what is known and returns true; then nothing more of it is read. */
typedef bool (*ProcKnownLookup)(void *userdata, ProcRecord *r);
void proc_scan_set_known_lookup(ProcScan *s, ProcKnownLookup lookup, void *userdata);

/* Brackets one refresh: descriptors kept for processes not read in between are closed. */
void proc_scan_begin(ProcScan *s);
void proc_scan_end(ProcScan *s);
/* The process is still watched though nothing of it was read: keep its descriptors. */
void proc_scan_touch(ProcScan *s, pid_t pid);

/* /proc/PID/stat only: pid, ppid, state, start, CPU ticks, RSS, comm. -ESRCH if gone. */
int proc_read_stat_record(ProcScan *s, pid_t pid, ProcRecord *r);
/* Adds the chosen details to a record read by proc_read_stat_record. */
int proc_read_details(ProcScan *s, ProcRecord *r, unsigned what);

/* Is this executable a PostgreSQL server binary of the host? Its name is postgres or postmaster
 * (the link /proc/PID/exe resolved: a symlink named postgres does not count), and neither the file
 * nor its directory can be changed by anyone but root or uid (the process's own user: a build in
 * its home). An unprivileged user cannot make such a file of another program. Pure but for the
 * stat of the directory. */
bool proc_exe_trusted(const char *path, const struct stat *st, uid_t uid);
/* The same for a process in another mount namespace (a container's): path is as it sees it, its
 * directory is looked at through root ("/proc/PID/root"; NULL or "": ours). */
bool proc_exe_trusted_in(const char *root, const char *path, const struct stat *st, uid_t uid);

/* The children of a (single-threaded) process, from /proc/PID/task/PID/children. That file can
 * miss or add children that fork or exit while it is read: callers cross-check ppid. */
int proc_read_children(const char *proc_root, pid_t pid, pid_t **ret, size_t *n_ret);
/* The same, through a descriptor kept open for the process (re-read with pread() each refresh,
 * as its stat is): a refresh that looks below hundreds of active sessions opens nothing. */
int proc_scan_children(ProcScan *s, pid_t pid, pid_t **ret, size_t *n_ret);

/* From the text of /proc/PID/status: the process's pid in the innermost PID namespace it is in
 * (NSpid's last field) if that is not ours, else 0 (also when the line is missing or malformed,
 * or its first field is not pid). Pure. */
pid_t proc_status_ns_pid(const char *status, pid_t pid);

/* readlink /proc/PID/cwd: a backend's or postmaster's data directory. Root or the owner only. */
int proc_read_cwd(const char *proc_root, pid_t pid, char *buf, size_t size);

/* The whole command line, NULs as spaces (the postmaster's -D lives after argv[0]). */
int proc_read_cmdline(const char *proc_root, pid_t pid, char *buf, size_t size);
