/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libproc2/pids.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "proc-scan.h"
#include "proc-stat.h"

enum {
        I_PID,
        I_PPID,
        I_EUID,
        I_STATE,
        I_BEGAN,
        I_TICS,
        I_RSS,
        I_CMD,
        N_ITEMS,
};

static enum pids_item items[N_ITEMS] = {
        [I_PID] = PIDS_ID_PID,
        [I_PPID] = PIDS_ID_PPID,
        [I_EUID] = PIDS_ID_EUID,
        [I_STATE] = PIDS_STATE,
        [I_BEGAN] = PIDS_TICS_BEGAN,
        [I_TICS] = PIDS_TICS_ALL,
        [I_RSS] = PIDS_RSS,
        [I_CMD] = PIDS_CMD,
};

/* libproc2 reads at most this many pids per procps_pids_select() call */
#define SELECT_MAX 255

/* Discovery is incremental (issue 10). Every process of the host is listed at every discovery
 * (getdents of /proc: enumeration, no file of a process is read), but a process's data (read
 * through libproc2) is read again only when it may have changed in a way that matters:
 *   - its /proc/PID entry is another (a new process, or a reused pid: procfs drops a process's
 *     entries when it is reaped and gives the next process on that pid a new inode number);
 *   - it is younger than HOST_YOUNG_USEC: a shell or an entrypoint about to exec postgres;
 *   - its parent is gone or is another process now (it was re-parented: its ppid changed);
 *   - it is the parent of a PostgreSQL process (an old process that exec'd postgres has forked
 *     its children by the next discovery);
 *   - once per HOST_RECHECK_USEC, staggered by pid (what an old process can change without any
 *     of the above: exec of a lone postgres, setuid, its comm);
 *   - at a complete discovery (the first, and when asked: a PostgreSQL socket appeared), which
 *     reads every process again (one libproc2 reap).
 * Processes that can be PostgreSQL (candidates) are read in full at every discovery as before. */
#define HOST_YOUNG_USEC (120 * 1000000ULL)
#define HOST_RECHECK_USEC (30 * 60 * 1000000ULL)

typedef struct HostProc {
        pid_t pid;
        pid_t ppid;
        uid_t uid;
        char state;
        char comm[16];
        uint64_t start_ticks;
        uint64_t cpu_ticks;     /* as last read: no one uses them of a process that cannot be */
        uint64_t rss_kb;        /*   PostgreSQL (candidates are read in full) */
        uint64_t ino;           /* of /proc/PID, listed before the data was read; 0 unknown */
        uint64_t read_usec;     /* CLOCK_BOOTTIME µs when its data was read */
        bool pg;                /* its comm is postgres or postmaster */
        bool read_now;          /* read by the last discovery */
        bool gone;              /* listed, but gone when read */
} HostProc;

/* Titles longer than this are cut (PostgreSQL's own title area is rarely above a few KiB). */
#define TITLE_READ_MAX 4096

/* Discovery enumerates every process with libproc2 (stat only); the processes that can be
 * PostgreSQL are then read one by one (read_record). */
/* An open /proc/PID/stat per watched process: re-read with pread(), it is regenerated on every
 * read, and it stays bound to that very process (a reused pid gets a new one) — a refresh then
 * costs one read per process instead of open + read + close. */
enum { KEPT_STAT, KEPT_STATM, KEPT_IO, KEPT_CHILDREN, _KEPT_MAX };
static const char *const kept_names[_KEPT_MAX] = { "stat", "statm", "io", "children" };

typedef struct StatFd {
        pid_t pid;
        int fd[_KEPT_MAX];      /* −1 until first needed */
        uint64_t used;          /* the refresh that last wanted it */
} StatFd;

struct ProcScan;
static void drop_fd(struct ProcScan *s, StatFd *f);

struct ProcScan {
        struct pids_info *base;
        int proc_fd;
        long page_kb;
        uid_t euid;
        StatFd *fds;            /* sorted by pid */
        size_t n_fds, fds_allocated, max_fds;
        uint64_t generation;
        ProcIdentityLookup ident_lookup;
        void *ident_userdata;
        ProcKnownLookup known_lookup;
        void *known_userdata;
        DIR *proc_dir;          /* /proc, listed again (rewinddir) at each discovery */
        HostProc *host;         /* every process of the last discovery, sorted by pid */
        size_t n_host;
        uint64_t young_usec, recheck_usec;
        unsigned long hz;
        ProcScanStats stats;
};

void proc_scan_set_recheck(ProcScan *s, uint64_t recheck_usec, uint64_t young_usec) {
        s->recheck_usec = recheck_usec > 0 ? recheck_usec : HOST_RECHECK_USEC;
        s->young_usec = young_usec;
}

ProcScanStats proc_scan_stats(const ProcScan *s) {
        return s->stats;
}

void proc_scan_set_known_lookup(ProcScan *s, ProcKnownLookup lookup, void *userdata) {
        s->known_lookup = lookup;
        s->known_userdata = userdata;
}

void proc_scan_set_identity_lookup(ProcScan *s, ProcIdentityLookup lookup, void *userdata) {
        s->ident_lookup = lookup;
        s->ident_userdata = userdata;
}

int proc_scan_new(ProcScan **ret) {
        _cleanup_free_ ProcScan *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->proc_fd < 0)
                return negative_errno();
        int r = procps_pids_new(&s->base, items, N_ITEMS);
        if (r < 0) {
                close(s->proc_fd);
                return r;
        }
        s->euid = geteuid();
        long hz = sysconf(_SC_CLK_TCK);
        s->hz = hz > 0 ? (unsigned long) hz : 100;
        proc_scan_set_recheck(s, HOST_RECHECK_USEC, HOST_YOUNG_USEC);
        struct rlimit rl;
        /* entries of three descriptors; a third of the limit stays for pidfds and the rest */
        s->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 256 ? (rl.rlim_cur - 128) / 8 : 0; /* up to _KEPT_MAX each, and the scanner's pidfds */
        if (s->max_fds > 65536)
                s->max_fds = 65536;
        long ps = sysconf(_SC_PAGESIZE);
        s->page_kb = ps > 0 ? ps / 1024 : 4;
        *ret = TAKE_PTR(s);
        return 0;
}

ProcScan *proc_scan_free(ProcScan *s) {
        if (!s)
                return NULL;
        procps_pids_unref(&s->base);
        if (s->proc_dir)
                closedir(s->proc_dir);
        free(s->host);
        if (s->proc_fd >= 0)
                close(s->proc_fd);
        while (s->n_fds > 0)
                drop_fd(s, &s->fds[s->n_fds - 1]);
        free(s->fds);
        free(s);
        return NULL;
}

static void fill_host(ProcScan *s, struct pids_stack *st, HostProc *h) {
        h->pid = PIDS_VAL(I_PID, s_int, st, NULL);
        h->ppid = PIDS_VAL(I_PPID, s_int, st, NULL);
        h->uid = PIDS_VAL(I_EUID, u_int, st, NULL);
        h->state = PIDS_VAL(I_STATE, s_ch, st, NULL);
        h->start_ticks = PIDS_VAL(I_BEGAN, ull_int, st, NULL);
        h->cpu_ticks = PIDS_VAL(I_TICS, ull_int, st, NULL);
        h->rss_kb = PIDS_VAL(I_RSS, ul_int, st, NULL) * (unsigned long) s->page_kb;
        const char *comm = PIDS_VAL(I_CMD, str, st, NULL);
        snprintf(h->comm, sizeof h->comm, "%s", comm ? comm : "");
        h->pg = proc_comm_is_postgres(h->comm);
        h->gone = false;
}

static int cmp_record_pid(const void *a, const void *b) {
        pid_t x = ((const ProcRecord *) a)->pid, y = ((const ProcRecord *) b)->pid;
        return (x > y) - (x < y);
}

static int cmp_pid(const void *a, const void *b) {
        pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;
        return (x > y) - (x < y);
}

static ssize_t read_at(int dirfd, const char *path, char *buf, size_t size) {
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        size_t len = 0;
        while (len < size) {
                ssize_t k = read(fd, buf + len, size - len);
                if (k < 0)
                        return negative_errno();
                if (k == 0)
                        break;
                len += (size_t) k;
        }
        return (ssize_t) len;
}

static StatFd *find_fd(ProcScan *s, pid_t pid, size_t *at) {
        size_t lo = 0, hi = s->n_fds;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (s->fds[mid].pid == pid)
                        return &s->fds[mid];
                if (s->fds[mid].pid < pid)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *at = lo;
        return NULL;
}

static void drop_fd(ProcScan *s, StatFd *f) {
        size_t i = (size_t) (f - s->fds);
        for (int k = 0; k < _KEPT_MAX; k++)
                if (f->fd[k] >= 0)
                        close(f->fd[k]);
        memmove(&s->fds[i], &s->fds[i + 1], (s->n_fds - i - 1) * sizeof *s->fds);
        s->n_fds--;
}

/* The kept entry of a pid, created on first use (NULL when the descriptor budget is spent). */
static StatFd *kept_entry(ProcScan *s, pid_t pid) {
        size_t at = 0;
        StatFd *f = find_fd(s, pid, &at);
        if (f || s->n_fds >= s->max_fds || GROW(s->fds, s->fds_allocated, s->n_fds + 1) < 0)
                return f;
        memmove(&s->fds[at + 1], &s->fds[at], (s->n_fds - at) * sizeof *s->fds);
        s->fds[at] = (StatFd){ .pid = pid };
        for (int k = 0; k < _KEPT_MAX; k++)
                s->fds[at].fd[k] = -1;
        s->n_fds++;
        return &s->fds[at];
}

/* Reads /proc/PID/<which> through its kept descriptor (opening it on first use). */
static ssize_t read_kept(ProcScan *s, pid_t pid, int which, char *buf, size_t size) {
        char path[64];
        if (which == KEPT_CHILDREN)
                snprintf(path, sizeof path, "%d/task/%d/children", (int) pid, (int) pid);
        else
                snprintf(path, sizeof path, "%d/%s", (int) pid, kept_names[which]);
        StatFd *f = kept_entry(s, pid);
        if (!f)
                return read_at(s->proc_fd, path, buf, size);
        f->used = s->generation;
        if (f->fd[which] < 0 && (f->fd[which] = openat(s->proc_fd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
                int r = negative_errno();
                if (which == KEPT_STAT)
                        drop_fd(s, f);
                return r;
        }
        ssize_t k = pread(f->fd[which], buf, size, 0);
        if (k == 0 && which == KEPT_CHILDREN)
                return 0; /* no children (or gone: its stat tells) */
        if (k <= 0) { /* the process is gone: its descriptors read nothing (or ESRCH) */
                int r = k == 0 ? -ESRCH : negative_errno();
                drop_fd(s, f);
                return r;
        }
        return k;
}

void proc_scan_touch(ProcScan *s, pid_t pid) {
        size_t at;
        StatFd *f = find_fd(s, pid, &at);
        if (f)
                f->used = s->generation;
}

void proc_scan_begin(ProcScan *s) {
        s->generation++;
}

void proc_scan_end(ProcScan *s) {
        for (size_t i = 0; i < s->n_fds;) {
                if (s->fds[i].used != s->generation)
                        drop_fd(s, &s->fds[i]);
                else
                        i++;
        }
}

int proc_read_stat_record(ProcScan *s, pid_t pid, ProcRecord *r) {
        char buf[1024];
        *r = (ProcRecord){ .cpu_percent = -1 };
        ssize_t k = read_kept(s, pid, KEPT_STAT, buf, sizeof buf);
        if (k < 0)
                return k == -ENOENT ? -ESRCH : (int) k;
        ProcStat st;
        if (proc_stat_parse(buf, (size_t) k, &st) < 0)
                return -EBADMSG;
        r->pid = st.pid;
        r->ppid = st.ppid;
        r->state = st.state;
        r->start_ticks = st.start_ticks;
        r->cpu_ticks = st.utime + st.stime;
        r->rss_kb = st.rss_pages * (uint64_t) s->page_kb;
        memcpy(r->comm, st.comm, sizeof r->comm);
        return 0;
}

static void read_identity(ProcScan *s, pid_t pid, ProcIdentity *id);

int proc_read_details(ProcScan *s, ProcRecord *r, unsigned what) {
        char path[64], buf[TITLE_READ_MAX + 1];
        ssize_t k;
        pid_t pid = r->pid;

        if (what & PROC_DETAIL_UID) {
                struct stat sb;
                snprintf(path, sizeof path, "%d", (int) pid);
                if (fstatat(s->proc_fd, path, &sb, 0) == 0)
                        r->uid = sb.st_uid;
        }
        if (what & PROC_DETAIL_STATM) {
                k = read_kept(s, pid, KEPT_STATM, buf, 256);
                unsigned long long size, res, shr;
                if (k > 0) {
                        buf[k] = 0;
                        if (sscanf(buf, "%llu %llu %llu", &size, &res, &shr) == 3)
                                r->rss_anon_kb = (res > shr ? res - shr : 0) * (uint64_t) s->page_kb;
                }
        }
        /* I/O counters: readable by root and the process's owner only */
        if ((what & PROC_DETAIL_IO) && (s->euid == 0 || r->uid == s->euid)) {
                k = read_kept(s, pid, KEPT_IO, buf, 512);
                if (k > 0) {
                        buf[k] = 0;
                        const char *rb = strstr(buf, "\nread_bytes: "), *wb = strstr(buf, "\nwrite_bytes: ");
                        if (rb && wb) {
                                r->read_bytes = strtoull(rb + 13, NULL, 10);
                                r->write_bytes = strtoull(wb + 14, NULL, 10);
                                r->io_valid = true;
                        }
                }
        }
        if (what & PROC_DETAIL_IDENTITY)
                read_identity(s, pid, &r->ident);
        if (what & PROC_DETAIL_TITLE) {
                free(r->title);
                r->title = NULL;
                snprintf(path, sizeof path, "%d/cmdline", (int) pid);
                k = read_at(s->proc_fd, path, buf, TITLE_READ_MAX);
                if (k <= 0)
                        return 0; /* zombie, kernel thread, or exiting: no title */
                size_t len = (size_t) k;
                while (len > 0 && buf[len - 1] == 0)
                        len--;
                buf[len] = 0;
                size_t first = strlen(buf);
                if (first == 0)
                        return 0;
                if (strncmp(buf, "postgres:", 9) != 0)
                        for (size_t i = first; i < len; i++) /* an untouched command line: keep its arguments */
                                if (buf[i] == 0)
                                        buf[i] = ' ';
                if (!(r->title = strdup(buf)))
                        return -ENOMEM;
        }
        return 0;
}

bool proc_exe_trusted(const char *path, const struct stat *st, uid_t uid) {
        return proc_exe_trusted_in(NULL, path, st, uid);
}

bool proc_exe_trusted_in(const char *root, const char *path, const struct stat *st, uid_t uid) {
        if (!path || path[0] != '/' || !S_ISREG(st->st_mode))
                return false;
        if ((st->st_uid != 0 && st->st_uid != uid) || (st->st_mode & 022))
                return false;
        const char *base = strrchr(path, '/') + 1;
        if (strcmp(base, "postgres") != 0 && strcmp(base, "postmaster") != 0)
                return false;
        char dir[PATH_MAX];
        size_t len = (size_t) (base - path), rl = root ? strlen(root) : 0;
        if (rl + len >= sizeof dir)
                return false;
        if (rl > 0)
                memcpy(dir, root, rl);
        memcpy(dir + rl, path, len);
        dir[rl + len] = 0;
        struct stat ds;
        if (stat(dir, &ds) < 0 || !S_ISDIR(ds.st_mode))
                return false;
        return (ds.st_uid == 0 || ds.st_uid == uid) && !(ds.st_mode & 022);
}

pid_t proc_status_ns_pid(const char *status, pid_t pid) {
        const char *ns = status ? strstr(status, "\nNSpid:") : NULL;
        if (!ns)
                return 0;
        ns += 7;
        long first = -1, last = -1;
        for (;;) {
                while (*ns == ' ' || *ns == '\t')
                        ns++;
                if (*ns < '0' || *ns > '9')
                        break;
                char *e;
                errno = 0;
                long v = strtol(ns, &e, 10);
                if (errno || v <= 0 || v > INT_MAX)
                        return 0;
                if (first < 0)
                        first = v;
                last = v;
                ns = e;
        }
        if (*ns != '\n' && *ns != 0)
                return 0;
        /* the first field is the pid in the reader's namespace: it must be this process's */
        return first == (long) pid && last != first ? (pid_t) last : 0;
}

/* Real and effective uid, the executable, and whether the working directory is a data directory. */
static void read_identity(ProcScan *s, pid_t pid, ProcIdentity *id) {
        char path[64], buf[2048];
        *id = (ProcIdentity){};
        snprintf(path, sizeof path, "%d/status", (int) pid);
        ssize_t k = read_at(s->proc_fd, path, buf, sizeof buf - 1);
        if (k > 0) {
                buf[k] = 0;
                const char *u = strstr(buf, "\nUid:");
                unsigned long r, e;
                if (u && sscanf(u + 5, "%lu %lu", &r, &e) == 2) {
                        id->ids_valid = true;
                        id->ruid = (uid_t) r;
                        id->euid = (uid_t) e;
                }
                id->ns_pid = proc_status_ns_pid(buf, pid);
        }
        struct stat st;
        char target[PATH_MAX];
        snprintf(path, sizeof path, "%d/exe", (int) pid);
        ssize_t l = readlinkat(s->proc_fd, path, target, sizeof target - 1);
        if (l < 0 || fstatat(s->proc_fd, path, &st, 0) < 0)
                id->exe_error = errno;
        else {
                target[l] = 0;
                /* a binary replaced by an upgrade since: the running one is still its inode */
                if ((size_t) l > 10 && strcmp(target + l - 10, " (deleted)") == 0)
                        target[l - 10] = 0;
                id->exe_valid = true;
                id->exe_dev = (uint64_t) st.st_dev;
                id->exe_ino = (uint64_t) st.st_ino;
                /* a container's binary (its image's path, not the host's): its directory is seen
                 * through its root */
                char root[64] = "";
                if (id->ns_pid > 0)
                        snprintf(root, sizeof root, "/proc/%d/root", (int) pid);
                id->exe_trusted = proc_exe_trusted_in(root, target, &st, id->ids_valid ? id->euid : (uid_t) -1);
        }
        snprintf(path, sizeof path, "%d/cwd", (int) pid);
        if (fstatat(s->proc_fd, path, &st, 0) < 0)
                id->dir_error = errno;
        else {
                id->dir_valid = true;
                id->dir_uid = st.st_uid;
                snprintf(path, sizeof path, "%d/cwd/PG_VERSION", (int) pid);
                id->dir_pg = fstatat(s->proc_fd, path, &st, 0) == 0 && S_ISREG(st.st_mode);
        }
}

/* One process's record, read directly: stat (through the pure parser), the owner of /proc/PID,
 * statm, io and cmdline. Cheaper per process than libproc2's pids_select, which also reads
 * status. Returns -ESRCH if gone. */
static int read_record(ProcScan *s, pid_t pid, ProcRecord *r) {
        int k = proc_read_stat_record(s, pid, r);
        if (k < 0)
                return k;
        if (s->known_lookup && s->known_lookup(s->known_userdata, r))
                return 0;
        unsigned what = PROC_DETAIL_ALL;
        if (s->ident_lookup && s->ident_lookup(s->ident_userdata, r->pid, r->start_ticks, r->comm, &r->ident))
                what &= ~(unsigned) PROC_DETAIL_IDENTITY;
        return proc_read_details(s, r, what);
}

int proc_scan_pids(ProcScan *s, const pid_t *pids, size_t n, ProcRecord **ret, size_t *n_ret) {
        *ret = NULL;
        *n_ret = 0;
        if (n == 0)
                return 0;
        ProcRecord *recs = calloc(n, sizeof *recs);
        if (!recs)
                return -ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                int r = read_record(s, pids[i], &recs[k]);
                if (r == -ESRCH || r == -EBADMSG || r == -EACCES || r == -EPERM) {
                        proc_record_clear(&recs[k]);
                        continue; /* gone, or odd: not ours to show */
                }
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

static int cmp_size(const void *a, const void *b) {
        size_t x = *(const size_t *) a, y = *(const size_t *) b;
        return (x > y) - (x < y);
}

static int cmp_host(const void *a, const void *b) {
        pid_t x = ((const HostProc *) a)->pid, y = ((const HostProc *) b)->pid;
        return (x > y) - (x < y);
}

static HostProc *find_host(HostProc *h, size_t n, pid_t pid) {
        HostProc key = { .pid = pid };
        return n ? bsearch(&key, h, n, sizeof key, cmp_host) : NULL;
}

static uint64_t boot_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

/* Every pid of /proc and its entry's inode number, sorted by pid (a plain listing: getdents). */
static int list_proc(ProcScan *s, HostProc **ret, size_t *n_ret) {
        if (!s->proc_dir) {
                int fd = openat(s->proc_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                        return negative_errno();
                if (!(s->proc_dir = fdopendir(fd))) {
                        int r = negative_errno();
                        close(fd);
                        return r;
                }
        } else
                rewinddir(s->proc_dir);
        _cleanup_free_ HostProc *v = NULL;
        size_t n = 0, allocated = 0;
        bool sorted = true;
        struct dirent *e;
        while ((errno = 0, e = readdir(s->proc_dir))) {
                if (e->d_name[0] < '1' || e->d_name[0] > '9')
                        continue;
                char *end;
                long pid = strtol(e->d_name, &end, 10);
                if (*end || pid <= 0 || pid > INT_MAX)
                        continue;
                if (GROW(v, allocated, n + 1) < 0)
                        return -ENOMEM;
                v[n] = (HostProc){ .pid = (pid_t) pid, .ino = (uint64_t) e->d_ino };
                sorted &= n == 0 || v[n - 1].pid < v[n].pid;
                n++;
        }
        if (errno)
                return negative_errno();
        if (!sorted)
                qsort(v, n, sizeof *v, cmp_host);
        *ret = TAKE_PTR(v);
        *n_ret = n;
        return 0;
}

/* Reads the data of the processes host[idx[0..n)] through libproc2 (a select of just those pids);
 * those gone are marked so. */
static int read_selected(ProcScan *s, HostProc *host, size_t n_host, const size_t *idx, size_t n, uint64_t now) {
        unsigned pids[SELECT_MAX];
        for (size_t i = 0; i < n; i += SELECT_MAX) {
                size_t m = n - i < SELECT_MAX ? n - i : SELECT_MAX;
                for (size_t k = 0; k < m; k++) {
                        HostProc *h = &host[idx[i + k]];
                        pids[k] = (unsigned) h->pid;
                        h->gone = true; /* until read */
                }
                errno = 0;
                struct pids_fetch *f = procps_pids_select(s->base, pids, (int) m, PIDS_SELECT_PID);
                if (!f) {
                        if (errno == ENOMEM)
                                return -ENOMEM;
                        continue; /* none of them readable: gone */
                }
                for (int k = 0; k < f->counts->total; k++) {
                        HostProc *h = find_host(host, n_host, PIDS_VAL(I_PID, s_int, f->stacks[k], NULL));
                        if (!h || !h->gone)
                                continue;
                        uint64_t ino = h->ino;
                        fill_host(s, f->stacks[k], h);
                        h->ino = ino;
                        h->read_usec = now;
                        h->read_now = true;
                        s->stats.read++;
                }
        }
        return 0;
}

/* A complete read: every process through one libproc2 reap; the inode numbers are the listing's
 * (taken before: a pid reused between the two has another inode by the next listing). */
static int read_all(ProcScan *s, HostProc *listed, size_t n_listed, HostProc **ret, size_t *n_ret, uint64_t now) {
        struct pids_fetch *f = procps_pids_reap(s->base, PIDS_FETCH_TASKS_ONLY);
        if (!f)
                return negative_errno();
        int total = f->counts->total;
        _cleanup_free_ HostProc *v = calloc(total > 0 ? (size_t) total : 1, sizeof *v);
        if (!v)
                return -ENOMEM;
        for (int i = 0; i < total; i++) {
                fill_host(s, f->stacks[i], &v[i]);
                HostProc *l = find_host(listed, n_listed, v[i].pid);
                v[i].ino = l ? l->ino : 0; /* started since the listing: read again next time */
                v[i].read_usec = now;
                v[i].read_now = true;
        }
        qsort(v, (size_t) total, sizeof *v, cmp_host);
        s->stats.read = (size_t) total;
        *ret = TAKE_PTR(v);
        *n_ret = (size_t) total;
        return 0;
}

/* Is this process, as known from the scan before, due for a read (see HOST_RECHECK_USEC)? Each
 * pid has its own phase in the period: a fraction of the old processes is read at each scan. */
static bool recheck_due(const ProcScan *s, const HostProc *h, uint64_t now) {
        uint64_t phase = ((uint64_t) (uint32_t) h->pid * 2654435761ULL) % s->recheck_usec;
        return (now + phase) / s->recheck_usec != (h->read_usec + phase) / s->recheck_usec;
}

/* An incremental read: what the scan before knew, read again only where it may have changed. */
static int read_changed(ProcScan *s, HostProc *v, size_t n, uint64_t now) {
        _cleanup_free_ size_t *idx = calloc(n ? n : 1, sizeof *idx);
        if (!idx)
                return -ENOMEM;
        uint64_t now_ticks = now / (1000000ULL / s->hz), young_ticks = s->young_usec / (1000000ULL / s->hz);
        size_t k = 0, o = 0;
        for (size_t i = 0; i < n; i++) {
                HostProc *h = &v[i];
                /* both sorted by pid: one walk */
                while (o < s->n_host && s->host[o].pid < h->pid)
                        o++;
                const HostProc *old = o < s->n_host && s->host[o].pid == h->pid ? &s->host[o] : NULL;
                if (old && old->ino == h->ino && h->ino != 0 && !old->gone) {
                        uint64_t ino = h->ino;
                        *h = *old;
                        h->ino = ino;
                        h->read_now = false;
                        if (now_ticks >= h->start_ticks + young_ticks && !recheck_due(s, h, now))
                                continue;
                }
                idx[k++] = i;
        }
        if (k > n / 2)
                return 1; /* most of them: one reap of every process costs less */
        int r = read_selected(s, v, n, idx, k, now);
        if (r < 0)
                return r;
        /* Re-parented processes: a parent that is gone (or is another process now: it started after
         * its child) left its children to a subreaper or init, and their ppid changed. */
        k = 0;
        for (size_t i = 0; i < n; i++) {
                HostProc *h = &v[i];
                if (h->read_now || h->gone || h->ppid <= 0)
                        continue;
                const HostProc *p = find_host(v, n, h->ppid);
                if (!p || p->gone || p->start_ticks > h->start_ticks)
                        idx[k++] = i;
        }
        if ((r = read_selected(s, v, n, idx, k, now)) < 0)
                return r;
        /* The parent of a PostgreSQL process is read (unless it is one: candidates are read in
         * full anyway): an old process that exec'd postgres has forked its children by now, and
         * they must not look like orphans of a postmaster that is not one. Up the chain while that
         * finds more (bounded). */
        for (int round = 0; round < 8; round++) {
                k = 0;
                for (size_t i = 0; i < n; i++) {
                        const HostProc *h = &v[i];
                        if (h->gone || h->ppid <= 0 || !h->pg)
                                continue;
                        HostProc *p = find_host(v, n, h->ppid);
                        if (p && !p->gone && !p->read_now && !p->pg && (!k || idx[k - 1] != (size_t) (p - v)))
                                idx[k++] = (size_t) (p - v);
                }
                if (k == 0)
                        break;
                /* one index per parent (children of one parent are mostly next to each other) */
                qsort(idx, k, sizeof *idx, cmp_size);
                size_t u = 0;
                for (size_t i = 0; i < k; i++)
                        if (u == 0 || idx[u - 1] != idx[i])
                                idx[u++] = idx[i];
                if ((r = read_selected(s, v, n, idx, u, now)) < 0)
                        return r;
        }
        return 0;
}

int proc_scan_discover(ProcScan *s, bool complete, ProcRecord **ret, size_t *n_ret) {
        *ret = NULL;
        *n_ret = 0;
        s->stats = (ProcScanStats){ .complete = complete || !s->host };
        uint64_t now = boot_usec();
        _cleanup_free_ HostProc *listed = NULL, *host = NULL;
        size_t n_listed = 0, n_host = 0;
        int r = list_proc(s, &listed, &n_listed);
        if (r < 0)
                return r;
        s->stats.listed = n_listed;
        if (!s->stats.complete) {
                r = read_changed(s, listed, n_listed, now);
                if (r < 0)
                        return r;
                if (r == 0) {
                        host = TAKE_PTR(listed);
                        n_host = n_listed;
                } else { /* most processes are due: the complete read instead */
                        s->stats = (ProcScanStats){ .complete = true, .listed = n_listed };
                        for (size_t i = 0; i < n_listed; i++)
                                listed[i].gone = false;
                }
        }
        if (s->stats.complete && (r = read_all(s, listed, n_listed, &host, &n_host, now)) < 0)
                return r;
        size_t total = 0;
        for (size_t i = 0; i < n_host; i++) /* the processes gone since they were listed */
                if (!host[i].gone)
                        host[total++] = host[i];
        free(s->host);
        s->host = TAKE_PTR(host);
        s->n_host = total;

        _cleanup_free_ ProcRecord *all = calloc(total ? total : 1, sizeof *all);
        if (!all)
                return -ENOMEM;
        for (size_t i = 0; i < total; i++) {
                const HostProc *h = &s->host[i];
                all[i] = (ProcRecord){ .pid = h->pid, .ppid = h->ppid, .uid = h->uid, .state = h->state,
                                       .start_ticks = h->start_ticks, .cpu_ticks = h->cpu_ticks, .rss_kb = h->rss_kb,
                                       .cpu_percent = -1 };
                memcpy(all[i].comm, h->comm, sizeof all[i].comm);
        }

        /* Candidates: postgres/postmaster, and any child of one (a postmaster's children are all
         * listed even when their comm is something else). */
        _cleanup_free_ pid_t *pg = malloc((total ? total : 1) * sizeof(pid_t));
        _cleanup_free_ pid_t *want = malloc((total ? total : 1) * sizeof(pid_t));
        if (!pg || !want)
                return -ENOMEM;
        size_t n_pg = 0, n_want = 0;
        for (size_t i = 0; i < total; i++)
                if (s->host[i].pg)
                        pg[n_pg++] = all[i].pid;
        for (size_t i = 0; i < total; i++)
                if (s->host[i].pg || (all[i].ppid > 0 && n_pg > 0 && bsearch(&all[i].ppid, pg, n_pg, sizeof(pid_t), cmp_pid)))
                        want[n_want++] = all[i].pid;

        ProcRecord *detail = NULL;
        size_t n_detail = 0;
        r = proc_scan_pids(s, want, n_want, &detail, &n_detail);
        if (r < 0)
                return r;
        /* Replace the candidates' base records by the detailed ones; a candidate that exited in
         * between keeps its base record (no title: it cannot be placed, and is dead by now). */
        size_t d = 0;
        for (size_t i = 0; i < total && d < n_detail; i++) {
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
        *n_ret = total;
        return 0;
}

int proc_scan_all(ProcScan *s, ProcRecord **ret, size_t *n_ret) {
        return proc_scan_discover(s, true, ret, n_ret);
}

bool proc_scan_was_read(const ProcScan *s, pid_t pid) {
        const HostProc *h = find_host(s->host, s->n_host, pid);
        return h && h->read_now;
}

/* The pids of a children file's text. */
static int parse_children(const char *text, pid_t **ret, size_t *n_ret) {
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

/* Read in large pieces: each read() of a children file walks the list again from its start. */
int proc_read_children(const char *proc_root, pid_t pid, pid_t **ret, size_t *n_ret) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%d/task/%d/children", proc_root ? proc_root : "/proc", (int) pid, (int) pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : negative_errno();
        _cleanup_free_ char *text = NULL;
        size_t len = 0, text_allocated = 0;
        for (;;) {
                if (GROW(text, text_allocated, len + 65536 + 1) < 0)
                        return -ENOMEM;
                ssize_t k = read(fd, text + len, 65536);
                if (k < 0)
                        return negative_errno();
                if (k == 0)
                        break;
                len += (size_t) k;
        }
        if (!text && GROW(text, text_allocated, 1) < 0)
                return -ENOMEM;
        text[len] = 0;

        return parse_children(text, ret, n_ret);
}

int proc_scan_children(ProcScan *s, pid_t pid, pid_t **ret, size_t *n_ret) {
        char buf[4096];
        ssize_t k = read_kept(s, pid, KEPT_CHILDREN, buf, sizeof buf - 1);
        if (k == -ESRCH || k == -ENOENT)
                return -ESRCH;
        if (k < 0 || (size_t) k >= sizeof buf - 1) /* unreadable that way, or more than a page */
                return proc_read_children(NULL, pid, ret, n_ret);
        buf[k] = 0;
        return parse_children(buf, ret, n_ret);
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
