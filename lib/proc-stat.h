/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The fields of /proc/PID/stat that pgtree uses. */
typedef struct ProcStat {
        pid_t pid;
        char comm[16];          /* at most TASK_COMM_LEN−1 bytes; hostile bytes kept as they are */
        char state;
        pid_t ppid;
        pid_t session;          /* its session id (a daemon's own pid after setsid) */
        int tty_nr;             /* its controlling terminal, 0 none */
        uint64_t utime, stime;
        uint64_t start_ticks;
        uint64_t rss_pages;
} ProcStat;

/* Parses the text of /proc/PID/stat. comm is whatever lies between the first '(' and the *last*
 * ')': it may hold spaces, parentheses and newlines. Returns 0, or -EINVAL for malformed input. */
int proc_stat_parse(const char *buf, size_t len, ProcStat *ret);

/* Reads and parses /proc/PID/stat under the given /proc root (NULL: "/proc"). -ENOENT/-ESRCH if
 * the process is gone. */
int proc_stat_read(const char *proc_root, pid_t pid, ProcStat *ret);
