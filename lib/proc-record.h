/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

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
} ProcRecord;

static inline bool proc_state_is_dead(char state) {
        return state == 'Z' || state == 'X' || state == 'x';
}

/* Is this comm one that a PostgreSQL server process carries? */
bool proc_comm_is_postgres(const char *comm);

void proc_record_clear(ProcRecord *r);
void proc_records_free(ProcRecord *r, size_t n);
