/* SPDX-License-Identifier: MIT */
/* The /proc reads no watcher of a cluster can skip, for the floor benchmarks: the postmaster's
 * children, read to the end, and each one's stat. Returns how many stat files were read, -1 if
 * the children could not be listed. */
#pragma once

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static inline int floor_proc_reads(pid_t pm) {
        static char buf[1 << 16];
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int) pm, (int) pm);
        /* the kernel hands the list out a page at a time: read to the end (one read() of a
         * 2,000-child list returned about 1,000 of them) */
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        size_t k = 0;
        ssize_t got = 0;
        while (fd >= 0 && k < sizeof buf - 1 && (got = read(fd, buf + k, sizeof buf - 1 - k)) > 0)
                k += (size_t) got;
        if (fd >= 0)
                close(fd);
        if (k == 0 || got < 0)
                return -1;
        buf[k] = 0;
        int n = 0;
        for (char *p = buf; *p;) {
                char *e;
                long pid = strtol(p, &e, 10);
                if (e == p)
                        break;
                char sp[64], st[1024];
                snprintf(sp, sizeof sp, "/proc/%ld/stat", pid);
                int f = open(sp, O_RDONLY | O_CLOEXEC);
                if (f >= 0) {
                        if (read(f, st, sizeof st) > 0)
                                n++;
                        close(f);
                }
                p = e;
                while (*p == ' ' || *p == '\n')
                        p++;
        }
        return n;
}
