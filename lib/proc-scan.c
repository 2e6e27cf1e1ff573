/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <libproc2/pids.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "proc-scan.h"

enum {
        I_PID,
        I_PPID,
        I_EUID,
        I_STATE,
        I_BEGAN,
        I_TICS,
        I_RSS,
        I_CMD,
        N_BASE,
        /* only for the processes that can be PostgreSQL */
        I_CMDLINE_V = N_BASE,
        I_MEM_RES,
        I_MEM_SHR,
        N_FULL,
};

static enum pids_item items_full[N_FULL] = {
        [I_PID] = PIDS_ID_PID,
        [I_PPID] = PIDS_ID_PPID,
        [I_EUID] = PIDS_ID_EUID,
        [I_STATE] = PIDS_STATE,
        [I_BEGAN] = PIDS_TICS_BEGAN,
        [I_TICS] = PIDS_TICS_ALL,
        [I_RSS] = PIDS_RSS,
        [I_CMD] = PIDS_CMD,
        [I_CMDLINE_V] = PIDS_CMDLINE_V,
        [I_MEM_RES] = PIDS_MEM_RES,
        [I_MEM_SHR] = PIDS_MEM_SHR,
};

struct ProcScan {
        struct pids_info *base;  /* stat only: cheap, for every process */
        struct pids_info *full;  /* stat, statm, cmdline: PostgreSQL candidates */
        long page_kb;
};

int proc_scan_new(ProcScan **ret) {
        _cleanup_free_ ProcScan *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        int r = procps_pids_new(&s->base, items_full, N_BASE);
        if (r < 0)
                return r;
        r = procps_pids_new(&s->full, items_full, N_FULL);
        if (r < 0) {
                procps_pids_unref(&s->base);
                return r;
        }
        long ps = sysconf(_SC_PAGESIZE);
        s->page_kb = ps > 0 ? ps / 1024 : 4;
        *ret = TAKE_PTR(s);
        return 0;
}

ProcScan *proc_scan_free(ProcScan *s) {
        if (!s)
                return NULL;
        procps_pids_unref(&s->base);
        procps_pids_unref(&s->full);
        free(s);
        return NULL;
}

static void fill_base(ProcScan *s, struct pids_stack *st, ProcRecord *r) {
        *r = (ProcRecord){ .cpu_percent = -1 };
        r->pid = PIDS_VAL(I_PID, s_int, st, NULL);
        r->ppid = PIDS_VAL(I_PPID, s_int, st, NULL);
        r->uid = PIDS_VAL(I_EUID, u_int, st, NULL);
        r->state = PIDS_VAL(I_STATE, s_ch, st, NULL);
        r->start_ticks = PIDS_VAL(I_BEGAN, ull_int, st, NULL);
        r->cpu_ticks = PIDS_VAL(I_TICS, ull_int, st, NULL);
        r->rss_kb = PIDS_VAL(I_RSS, ul_int, st, NULL) * (unsigned long) s->page_kb;
        const char *comm = PIDS_VAL(I_CMD, str, st, NULL);
        snprintf(r->comm, sizeof r->comm, "%s", comm ? comm : "");
}

/* libproc2 gives an empty cmdline (a zombie, a process tearing down its memory) as "[comm]"; that
 * is no title. */
static int fill_full(ProcScan *s, struct pids_stack *st, ProcRecord *r) {
        fill_base(s, st, r);
        unsigned long res = PIDS_VAL(I_MEM_RES, ul_int, st, NULL);
        unsigned long shr = PIDS_VAL(I_MEM_SHR, ul_int, st, NULL);
        r->rss_kb = res;
        r->rss_anon_kb = res > shr ? res - shr : 0;
        char **v = PIDS_VAL(I_CMDLINE_V, strv, st, NULL);
        if (!v || !v[0] || !v[0][0])
                return 0;
        size_t l0 = strlen(v[0]);
        if (!v[1] && l0 >= 2 && v[0][0] == '[' && v[0][l0 - 1] == ']' &&
            strncmp(v[0] + 1, r->comm, l0 - 2) == 0)
                return 0;
        if (strncmp(v[0], "postgres:", 9) == 0 || !v[1]) {
                r->title = strndup(v[0], 4096);
                return r->title ? 0 : -ENOMEM;
        }
        /* An untouched command line (the postmaster's): keep the arguments. */
        size_t len = 0;
        for (size_t i = 0; v[i] && len < 4096; i++)
                len += strlen(v[i]) + 1;
        char *t = malloc(len + 1), *p = t;
        if (!t)
                return -ENOMEM;
        for (size_t i = 0; v[i] && (size_t) (p - t) < len; i++) {
                size_t k = strlen(v[i]);
                if ((size_t) (p - t) + k + 1 > len)
                        k = len - (size_t) (p - t) - 1;
                if (i > 0)
                        *p++ = ' ';
                memcpy(p, v[i], k);
                p += k;
        }
        *p = 0;
        r->title = t;
        return 0;
}

static int cmp_record_pid(const void *a, const void *b) {
        pid_t x = ((const ProcRecord *) a)->pid, y = ((const ProcRecord *) b)->pid;
        return (x > y) - (x < y);
}

static int cmp_pid(const void *a, const void *b) {
        pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;
        return (x > y) - (x < y);
}

int proc_scan_pids(ProcScan *s, const pid_t *pids, size_t n, ProcRecord **ret, size_t *n_ret) {
        *ret = NULL;
        *n_ret = 0;
        if (n == 0)
                return 0;
        if (n > INT_MAX)
                return -E2BIG;
        _cleanup_free_ unsigned *these = malloc(n * sizeof(unsigned));
        if (!these)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                these[i] = (unsigned) pids[i];
        struct pids_fetch *f = procps_pids_select(s->full, these, (int) n, PIDS_SELECT_PID);
        if (!f)
                return negative_errno();
        int total = f->counts->total;
        ProcRecord *recs = calloc(total > 0 ? (size_t) total : 1, sizeof *recs);
        if (!recs)
                return -ENOMEM;
        size_t k = 0;
        for (int i = 0; i < total; i++) {
                int r = fill_full(s, f->stacks[i], &recs[k]);
                if (r < 0) {
                        proc_records_free(recs, k + 1);
                        return r;
                }
                k++;
        }
        qsort(recs, k, sizeof *recs, cmp_record_pid);
        *ret = recs;
        *n_ret = k;
        return 0;
}

int proc_scan_all(ProcScan *s, ProcRecord **ret, size_t *n_ret) {
        *ret = NULL;
        *n_ret = 0;
        struct pids_fetch *f = procps_pids_reap(s->base, PIDS_FETCH_TASKS_ONLY);
        if (!f)
                return negative_errno();
        int total = f->counts->total;
        _cleanup_free_ ProcRecord *all = calloc(total > 0 ? (size_t) total : 1, sizeof *all);
        if (!all)
                return -ENOMEM;
        for (int i = 0; i < total; i++)
                fill_base(s, f->stacks[i], &all[i]);
        qsort(all, (size_t) total, sizeof *all, cmp_record_pid);

        /* Candidates: postgres/postmaster, and any child of one (a postmaster's children are all
         * listed even when their comm is something else). */
        _cleanup_free_ pid_t *pg = malloc((total > 0 ? (size_t) total : 1) * sizeof(pid_t));
        _cleanup_free_ pid_t *want = malloc((total > 0 ? (size_t) total : 1) * sizeof(pid_t));
        if (!pg || !want)
                return -ENOMEM;
        size_t n_pg = 0, n_want = 0;
        for (int i = 0; i < total; i++)
                if (proc_comm_is_postgres(all[i].comm))
                        pg[n_pg++] = all[i].pid;
        for (int i = 0; i < total; i++)
                if (proc_comm_is_postgres(all[i].comm) ||
                    (all[i].ppid > 0 && bsearch(&all[i].ppid, pg, n_pg, sizeof(pid_t), cmp_pid)))
                        want[n_want++] = all[i].pid;

        ProcRecord *detail = NULL;
        size_t n_detail = 0;
        int r = proc_scan_pids(s, want, n_want, &detail, &n_detail);
        if (r < 0)
                return r;
        /* Replace the candidates' base records by the detailed ones; a candidate that exited in
         * between keeps its base record (no title: it cannot be placed, and is dead by now). */
        size_t d = 0;
        for (int i = 0; i < total && d < n_detail; i++) {
                if (all[i].pid < detail[d].pid)
                        continue;
                while (d < n_detail && detail[d].pid < all[i].pid) {
                        proc_record_clear(&detail[d]);
                        d++;
                }
                if (d < n_detail && detail[d].pid == all[i].pid) {
                        if (detail[d].start_ticks == all[i].start_ticks)
                                all[i] = detail[d];
                        else
                                proc_record_clear(&detail[d]);
                        d++;
                }
        }
        for (; d < n_detail; d++)
                proc_record_clear(&detail[d]);
        free(detail);
        *ret = TAKE_PTR(all);
        *n_ret = (size_t) total;
        return 0;
}

int proc_read_children(const char *proc_root, pid_t pid, pid_t **ret, size_t *n_ret) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%d/task/%d/children", proc_root ? proc_root : "/proc", (int) pid, (int) pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : negative_errno();
        _cleanup_free_ char *text = NULL;
        size_t len = 0, text_allocated = 0;
        for (;;) {
                if (GROW(text, text_allocated, len + 4096 + 1) < 0)
                        return -ENOMEM;
                ssize_t k = read(fd, text + len, 4096);
                if (k < 0)
                        return negative_errno();
                if (k == 0)
                        break;
                len += (size_t) k;
        }
        if (!text && GROW(text, text_allocated, 1) < 0)
                return -ENOMEM;
        text[len] = 0;

        _cleanup_free_ pid_t *pids = NULL;
        size_t n = 0, allocated = 0;
        for (const char *p = text; *p;) {
                if (*p == ' ' || *p == '\n') {
                        p++;
                        continue;
                }
                char *e;
                errno = 0;
                long v = strtol(p, &e, 10);
                if (errno || e == p || v <= 0 || v > INT_MAX || (*e && *e != ' ' && *e != '\n'))
                        return -EINVAL;
                if (GROW(pids, allocated, n + 1) < 0)
                        return -ENOMEM;
                pids[n++] = (pid_t) v;
                p = e;
        }
        *ret = TAKE_PTR(pids);
        *n_ret = n;
        return 0;
}

int proc_read_cwd(const char *proc_root, pid_t pid, char *buf, size_t size) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%d/cwd", proc_root ? proc_root : "/proc", (int) pid);
        ssize_t k = readlink(path, buf, size - 1);
        if (k < 0)
                return negative_errno();
        if ((size_t) k >= size - 1)
                return -ENAMETOOLONG;
        buf[k] = 0;
        return 0;
}

int proc_read_cmdline(const char *proc_root, pid_t pid, char *buf, size_t size) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%d/cmdline", proc_root ? proc_root : "/proc", (int) pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        ssize_t k = read(fd, buf, size - 1);
        if (k < 0)
                return negative_errno();
        while (k > 0 && buf[k - 1] == 0)
                k--;
        for (ssize_t i = 0; i < k; i++)
                if (buf[i] == 0)
                        buf[i] = ' ';
        buf[k] = 0;
        return 0;
}
