/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* What tells whether a process really is PostgreSQL (read once per process by the scanner; a
 * tree built from literal records has none of it: every fact unknown). */
typedef struct ProcIdentity {
        bool ids_valid;         /* /proc/PID/status Uid: read */
        uid_t ruid, euid;       /* real and effective uid */
        bool exe_valid;         /* /proc/PID/exe could be read (root or the owner) */
        bool exe_trusted;       /* a PostgreSQL server binary of the host (see proc-scan.c) */
        uint64_t exe_dev, exe_ino;
        int exe_error;          /* errno when !exe_valid */
        bool dir_valid;         /* /proc/PID/cwd could be read */
        bool dir_pg;            /* it holds PG_VERSION: a data directory */
        uid_t dir_uid;          /* its owner */
        int dir_error;          /* errno when !dir_valid */
        pid_t ns_pid;           /* its pid in its own PID namespace (a container's: NSpid's last
                                 * field, what pg_stat_activity shows), 0 if it is in ours */
} ProcIdentity;

/* One process as seen in /proc, as plain data. The scanner fills it from libproc2; tests build
 * literal arrays of it. title is only set for processes that can be PostgreSQL. */
typedef struct ProcRecord {
        pid_t pid;
        pid_t ppid;
        uid_t uid;
        char state;             /* R S D Z T t X I P …; Z and X are dead */
        uint64_t start_ticks;   /* clock ticks since boot (stat field 22) */
        uint64_t cpu_ticks;     /* utime + stime */
        uint64_t rss_kb;
        uint64_t rss_anon_kb;   /* private memory: statm resident − shared */
        char comm[16];
        char *title;            /* cmdline up to the first NUL, owned; NULL if not read */
        double cpu_percent;     /* over the last interval (or since start on first sight); < 0 unknown */
        bool io_valid;          /* /proc/PID/io was readable (root or the owner) */
        bool from_cache;        /* not read this time: an idle process known alive through its pidfd */
        uint64_t read_bytes, write_bytes;
        ProcIdentity ident;
} ProcRecord;

static inline bool proc_state_is_dead(char state) {
        return state == 'Z' || state == 'X' || state == 'x';
}

/* Is this comm one that a PostgreSQL server process carries? */
bool proc_comm_is_postgres(const char *comm);

void proc_record_clear(ProcRecord *r);
void proc_records_free(ProcRecord *r, size_t n);
