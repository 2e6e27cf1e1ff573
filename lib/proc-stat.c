/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "proc-stat.h"

static int parse_u64(const char **p, const char *end, uint64_t *ret) {
        const char *s = *p;
        while (s < end && *s == ' ')
                s++;
        if (s >= end || *s < '0' || *s > '9')
                return -EINVAL;
        uint64_t v = 0;
        for (; s < end && *s >= '0' && *s <= '9'; s++) {
                unsigned d = (unsigned) (*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -EINVAL;
                v = v * 10 + d;
        }
        if (s < end && *s != ' ' && *s != '\n')
                return -EINVAL;
        *ret = v;
        *p = s;
        return 0;
}

static int parse_i64(const char **p, const char *end, int64_t *ret) {
        const char *s = *p;
        while (s < end && *s == ' ')
                s++;
        bool neg = s < end && *s == '-';
        if (neg)
                s++;
        uint64_t u;
        int r = parse_u64(&s, end, &u);
        if (r < 0)
                return r;
        if (u > (uint64_t) INT64_MAX)
                return -EINVAL;
        *ret = neg ? -(int64_t) u : (int64_t) u;
        *p = s;
        return 0;
}

static int skip_field(const char **p, const char *end) {
        const char *s = *p;
        while (s < end && *s == ' ')
                s++;
        if (s >= end)
                return -EINVAL;
        while (s < end && *s != ' ' && *s != '\n')
                s++;
        *p = s;
        return 0;
}

int proc_stat_parse(const char *buf, size_t len, ProcStat *ret) {
        if (!buf || !ret)
                return -EINVAL;
        const char *end = buf + len;
        const char *open = memchr(buf, '(', len);
        if (!open)
                return -EINVAL;
        /* comm may contain ')' itself: the real end of comm is the last ')'. */
        const char *close = memrchr(open, ')', (size_t) (end - open));
        if (!close)
                return -EINVAL;

        ProcStat st = {};
        const char *p = buf;
        int64_t pid;
        if (parse_i64(&p, open, &pid) < 0 || pid <= 0 || pid > INT_MAX)
                return -EINVAL;
        while (p < open && *p == ' ')
                p++;
        if (p != open)
                return -EINVAL;
        st.pid = (pid_t) pid;

        size_t clen = (size_t) (close - open - 1);
        if (clen >= sizeof(st.comm))
                clen = sizeof(st.comm) - 1;
        memcpy(st.comm, open + 1, clen);
        st.comm[clen] = 0;

        p = close + 1;
        if (p >= end || *p != ' ')
                return -EINVAL;
        p++;
        if (p >= end || *p == ' ' || *p == '\n')
                return -EINVAL;
        st.state = *p++;
        if (p < end && *p != ' ')
                return -EINVAL;

        /* Fields from 4 (ppid) on, numbered as in proc(5). */
        int64_t v;
        if (parse_i64(&p, end, &v) < 0 || v < 0 || v > INT_MAX)
                return -EINVAL;
        st.ppid = (pid_t) v;
        if (skip_field(&p, end) < 0) /* 5 pgrp */
                return -EINVAL;
        if (parse_i64(&p, end, &v) < 0 || v < 0 || v > INT_MAX) /* 6 session */
                return -EINVAL;
        st.session = (pid_t) v;
        if (parse_i64(&p, end, &v) < 0 || v < INT_MIN || v > INT_MAX) /* 7 tty_nr */
                return -EINVAL;
        st.tty_nr = (int) v;
        for (int field = 8; field <= 13; field++)
                if (skip_field(&p, end) < 0)
                        return -EINVAL;
        if (parse_u64(&p, end, &st.utime) < 0 || parse_u64(&p, end, &st.stime) < 0)
                return -EINVAL;
        for (int field = 16; field <= 21; field++)
                if (skip_field(&p, end) < 0)
                        return -EINVAL;
        if (parse_u64(&p, end, &st.start_ticks) < 0)
                return -EINVAL;
        if (skip_field(&p, end) < 0) /* 23 vsize */
                return -EINVAL;
        if (parse_i64(&p, end, &v) < 0)
                return -EINVAL;
        st.rss_pages = v > 0 ? (uint64_t) v : 0;

        *ret = st;
        return 0;
}

int proc_stat_read(const char *proc_root, pid_t pid, ProcStat *ret) {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof path, "%s/%d/stat", proc_root ? proc_root : "/proc", (int) pid);
        if (n < 0 || (size_t) n >= sizeof path)
                return -ENAMETOOLONG;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : negative_errno();
        char buf[1024];
        ssize_t k = read(fd, buf, sizeof buf);
        if (k < 0)
                return errno == ESRCH ? -ESRCH : negative_errno();
        return proc_stat_parse(buf, (size_t) k, ret);
}
