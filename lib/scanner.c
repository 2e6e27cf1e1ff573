/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include "macro.h"
#include "proc-scan.h"
#include "proc-stat.h"
#include "scanner.h"
#include "title.h"

#define USEC_PER_SEC 1000000ULL
#define DEFAULT_DISCOVERY_USEC (30 * USEC_PER_SEC)
/* After a postmaster is gone, every refresh discovers until one runs again in its data directory
 * (a restart), for at most this long. */
#define EAGER_USEC (120 * USEC_PER_SEC)
/* Discovery is incremental (lib/proc-scan.c): an old process that execs postgres is seen by a
 * complete one. Every postmaster creates its Unix socket (.s.PGSQL.PORT and its .lock): one
 * appearing in a watched directory makes the next refresh a complete discovery — at most one per
 * COMPLETE_MIN_USEC (a local user creating such files by the thousand costs one complete
 * discovery per that time; the request is kept, not dropped, while it waits). */
#define COMPLETE_MIN_USEC (10 * USEC_PER_SEC)
#define SOCKET_PREFIX ".s.PGSQL."
#define SOCKET_WATCHES_MAX 64

typedef struct SocketWatch {
        char *path;
        int wd;                 /* −1 once the kernel dropped it (directory removed) */
        bool fixed;             /* a default or one asked for: kept */
        bool wanted;
} SocketWatch;

typedef struct PmDir {
        pid_t pid;
        uint64_t start_ticks;
        char *data_directory;   /* NULL if unknown */
} PmDir;

typedef struct Known {
        pid_t pid;
        uint64_t start_ticks;
        uint64_t cpu_ticks;     /* for CPU % */
} Known;

/* What the last refresh learnt of each process, so that the next one reads only what changes:
 * the title unless pg_stat_activity covers the process; private memory and I/O every SLOW_EVERY
 * refreshes (staggered by pid); the owner once; and stat every time, except for sessions that
 * pg_stat_activity shows idle: a pidfd per process tells, in one poll(), that they are still the
 * same live processes, and their stat, memory and I/O are read every IDLE_EVERY refreshes
 * (staggered by pid). An idle session uses no CPU and its title is "idle": the numbers read
 * then are its memory (which grows slowly, if at all) and the proof it is still itself; at
 * 2,000 sessions, 80 % of them idle, reading a fifth of those each time was a tenth of a cycle.
 * A session that turns active shows it in pg_stat_activity and is read at the next refresh. */
typedef struct Cached {
        pid_t pid;
        pid_t ppid;
        char state;
        char comm[16];
        uint64_t start_ticks;
        uint64_t cpu_ticks;
        uint64_t cpu_at;        /* monotonic µs when cpu_ticks was read */
        double cpu_percent;
        uint64_t rss_kb;
        int pidfd;              /* −1 if none */
        uid_t uid;
        ProcIdentity ident;     /* read once: a process's uids, program and data directory stay */
        char *title;
        uint64_t rss_anon_kb;
        bool io_valid;
        uint64_t read_bytes, write_bytes;
        bool title_stable;
        bool title_keep;        /* for the next refresh only (scanner_title_keep) */
} Cached;

#define SLOW_EVERY 5
#define IDLE_EVERY 20

/* A postmaster's server version, read once (PG_VERSION in its data directory). */
typedef struct KnownVersion {
        pid_t pid;
        uint64_t start_ticks;
        int major;              /* 0: unreadable */
        ContainerInfo container;        /* where it runs (probed once) */
} KnownVersion;

/* A foreign process of the last refresh: found again even once it left the tree (daemonized). */
typedef struct KnownForeign {
        pid_t pid;
        uint64_t start_ticks;
        pid_t via_pid;
        uint64_t via_start_ticks;
        pid_t pm_pid;           /* its cluster's postmaster */
        uint64_t pm_start_ticks;
        int depth;
} KnownForeign;

struct Scanner {
        ProcScan *ps;
        KnownForeign *foreign;
        size_t n_foreign;
        KnownVersion *versions;
        size_t n_versions;
        uint64_t discovery_usec;
        bool no_descendants;    /* benchmarks only: no foreign process scan */
        uint64_t last_full;     /* monotonic µs, 0 = never */
        Known *pms;             /* postmasters found by the last full scan */
        size_t n_pms;
        Known *orphans;
        size_t n_orphans;
        Cached *cache;          /* every process of the last tree, sorted by pid */
        size_t n_cache;
        size_t n_pidfds, max_pidfds;
        uint64_t cache_at;      /* monotonic µs */
        uint64_t refreshes;
        unsigned long hz;
        PmDir *pm_dirs;         /* the clusters of the last full scan */
        size_t n_pm_dirs;
        char **awaited;         /* data directories whose postmaster went away */
        size_t n_awaited;
        bool awaited_unknown;   /* a postmaster whose data directory is unknown went away */
        uint64_t eager_usec;    /* how long after a postmaster went away (EAGER_USEC) */
        uint64_t eager_until;   /* monotonic µs: discover at every refresh until then */
        int watch_fd;           /* inotify for PostgreSQL sockets appearing, −1 if none */
        SocketWatch *watches;
        size_t n_watches;
        bool complete_pending;  /* a complete discovery is wanted */
        char complete_why[PATH_MAX + 64];
        uint64_t last_complete; /* monotonic µs: the last complete discovery a socket asked for */
        uint64_t complete_min_usec;
};

static uint64_t now_usec(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

static int cmp_known_cached(const void *a, const void *b);

/* A discovery scan re-reads every candidate, but not what is known of a process already seen. */
static bool cached_identity(void *userdata, pid_t pid, uint64_t start_ticks, const char *comm, ProcIdentity *ret) {
        Scanner *s = userdata;
        Cached key = { .pid = pid };
        Cached *c = s->n_cache ? bsearch(&key, s->cache, s->n_cache, sizeof key, cmp_known_cached) : NULL;
        if (!c || c->start_ticks != start_ticks || strcmp(c->comm, comm) != 0)
                return false;
        *ret = c->ident;
        return true;
}

/* ... and nothing at all of an idle session already known: its title, memory and I/O are what
 * the last refreshes read (they keep reading a twentieth of them each time). */
static bool cached_known(void *userdata, ProcRecord *r) {
        Scanner *s = userdata;
        Cached key = { .pid = r->pid };
        Cached *c = s->n_cache ? bsearch(&key, s->cache, s->n_cache, sizeof key, cmp_known_cached) : NULL;
        if (!c || c->start_ticks != r->start_ticks || strcmp(c->comm, r->comm) != 0 || !c->title_stable || !c->title ||
            c->ppid != r->ppid)
                return false;
        free(r->title);
        if (!(r->title = strdup(c->title)))
                return false;
        r->uid = c->uid;
        r->ident = c->ident;
        r->rss_anon_kb = c->rss_anon_kb;
        r->io_valid = c->io_valid;
        r->read_bytes = c->read_bytes;
        r->write_bytes = c->write_bytes;
        return true;
}

int scanner_new(Scanner **ret) {
        _cleanup_free_ Scanner *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        int r = proc_scan_new(&s->ps);
        if (r < 0)
                return r;
        s->discovery_usec = DEFAULT_DISCOVERY_USEC;
        s->eager_usec = EAGER_USEC;
        s->complete_min_usec = COMPLETE_MIN_USEC;
        s->watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC); /* none: only the interval discovers */
        proc_scan_set_identity_lookup(s->ps, cached_identity, s);
        proc_scan_set_known_lookup(s->ps, cached_known, s);
        struct rlimit rl;
        s->max_pidfds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 256 ? (rl.rlim_cur - 128) / 3 : 0;
        long hz = sysconf(_SC_CLK_TCK);
        s->hz = hz > 0 ? (unsigned long) hz : 100;
        *ret = TAKE_PTR(s);
        return 0;
}

Scanner *scanner_free(Scanner *s) {
        if (!s)
                return NULL;
        proc_scan_free(s->ps);
        free(s->foreign);
        free(s->versions);
        free(s->pms);
        free(s->orphans);
        for (size_t i = 0; i < s->n_cache; i++) {
                free(s->cache[i].title);
                if (s->cache[i].pidfd >= 0)
                        close(s->cache[i].pidfd);
        }
        free(s->cache);
        for (size_t i = 0; i < s->n_pm_dirs; i++)
                free(s->pm_dirs[i].data_directory);
        free(s->pm_dirs);
        for (size_t i = 0; i < s->n_awaited; i++)
                free(s->awaited[i]);
        free(s->awaited);
        for (size_t i = 0; i < s->n_watches; i++)
                free(s->watches[i].path);
        free(s->watches);
        if (s->watch_fd >= 0)
                close(s->watch_fd);
        free(s);
        return NULL;
}

/* ---- PostgreSQL sockets appearing: a complete discovery ---- */

static int add_socket_watch(Scanner *s, const char *dir, bool fixed) {
        if (s->watch_fd < 0 || !dir || dir[0] != '/')
                return 0;
        for (size_t i = 0; i < s->n_watches; i++)
                if (!strcmp(s->watches[i].path, dir)) {
                        s->watches[i].wanted = true;
                        s->watches[i].fixed |= fixed;
                        if (s->watches[i].wd >= 0)
                                return 0;
                        /* dropped (the directory was removed): it may be there again */
                        s->watches[i].wd = inotify_add_watch(s->watch_fd, dir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
                        return s->watches[i].wd >= 0 ? 0 : negative_errno();
                }
        if (s->n_watches >= SOCKET_WATCHES_MAX)
                return -ENOSPC;
        int wd = inotify_add_watch(s->watch_fd, dir, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
        char *path = strdup(dir);
        SocketWatch *v = path ? realloc(s->watches, (s->n_watches + 1) * sizeof *v) : NULL;
        if (!v) {
                free(path);
                return -ENOMEM;
        }
        s->watches = v;
        v[s->n_watches++] = (SocketWatch){ .path = path, .wd = wd, .fixed = fixed, .wanted = true };
        return wd >= 0 ? 0 : -ENOENT;
}

int scanner_watch_socket_dir(Scanner *s, const char *dir) {
        return add_socket_watch(s, dir, true);
}

int scanner_watch_default_socket_dirs(Scanner *s) {
        static const char *const defaults[] = { "/run/postgresql", "/var/run/postgresql", "/tmp" };
        for (size_t i = 0; i < ELEMENTSOF(defaults); i++)
                if (scanner_watch_socket_dir(s, defaults[i]) == -ENOMEM)
                        return -ENOMEM;
        return 0;
}

int scanner_socket_fd(const Scanner *s) {
        return s->watch_fd;
}

void scanner_request_complete(Scanner *s, const char *why) {
        if (!s->complete_pending)
                snprintf(s->complete_why, sizeof s->complete_why, "%s", why);
        s->complete_pending = true;
}

const char *scanner_pending_complete(const Scanner *s) {
        return s->complete_pending ? s->complete_why : NULL;
}

void scanner_set_complete_min_interval(Scanner *s, uint64_t usec) {
        s->complete_min_usec = usec > 0 ? usec : COMPLETE_MIN_USEC;
}

void scanner_set_recheck(Scanner *s, uint64_t recheck_usec, uint64_t young_usec) {
        proc_scan_set_recheck(s->ps, recheck_usec, young_usec);
}

static bool complete_due(const Scanner *s, uint64_t now) {
        return s->complete_pending && (s->last_complete == 0 || now - s->last_complete >= s->complete_min_usec);
}

static const SocketWatch *watch_of(const Scanner *s, int wd) {
        for (size_t i = 0; i < s->n_watches; i++)
                if (s->watches[i].wd == wd)
                        return &s->watches[i];
        return NULL;
}

int scanner_socket_events(Scanner *s) {
        if (s->watch_fd < 0)
                return 0;
        _Alignas(struct inotify_event) char buf[4096];
        for (;;) {
                ssize_t k = read(s->watch_fd, buf, sizeof buf);
                if (k <= 0)
                        break; /* EAGAIN: all read */
                for (ssize_t off = 0; off + (ssize_t) sizeof(struct inotify_event) <= k;) {
                        const struct inotify_event *ev = (const struct inotify_event *) (buf + off);
                        off += (ssize_t) (sizeof *ev + ev->len);
                        if (off > k)
                                break;
                        if (ev->mask & IN_Q_OVERFLOW) {
                                scanner_request_complete(s, "socket directory events overflowed");
                                continue;
                        }
                        const SocketWatch *w = watch_of(s, ev->wd);
                        if (ev->mask & IN_IGNORED) {
                                for (size_t i = 0; i < s->n_watches; i++)
                                        if (s->watches[i].wd == ev->wd)
                                                s->watches[i].wd = -1;
                                continue;
                        }
                        if (!(ev->mask & (IN_CREATE | IN_MOVED_TO)) || ev->len == 0 ||
                            strncmp(ev->name, SOCKET_PREFIX, strlen(SOCKET_PREFIX)) != 0)
                                continue;
                        char why[PATH_MAX + 64];
                        snprintf(why, sizeof why, "PostgreSQL socket %.*s created in %s", (int) strnlen(ev->name, 64),
                                 ev->name, w ? w->path : "a watched directory");
                        scanner_request_complete(s, why);
                }
        }
        return complete_due(s, now_usec(CLOCK_MONOTONIC)) ? 1 : 0;
}

/* After a discovery: the defaults and the socket directories of the clusters found are watched;
 * the directories of clusters that are gone are not any more. */
static void sync_socket_watches(Scanner *s, const PgTree *t) {
        if (s->watch_fd < 0)
                return;
        for (size_t i = 0; i < s->n_watches; i++) {
                s->watches[i].wanted = s->watches[i].fixed;
                if (s->watches[i].fixed && s->watches[i].wd < 0) /* missing before: made since? */
                        (void) add_socket_watch(s, s->watches[i].path, true);
        }
        for (size_t c = 0; c < t->n_clusters; c++) {
                const PgCluster *cl = &t->clusters[c];
                if (cl->remote || !cl->pmfile_valid || cl->pmfile.socket_dir[0] != '/')
                        continue;
                char path[PATH_MAX + 64];
                snprintf(path, sizeof path, "%s%s", cl->container.root, cl->pmfile.socket_dir);
                (void) add_socket_watch(s, path, false);
        }
        for (size_t i = 0; i < s->n_watches;) {
                SocketWatch *w = &s->watches[i];
                if (w->wanted) {
                        i++;
                        continue;
                }
                bool shared = false; /* two paths of one directory share one watch */
                for (size_t k = 0; k < s->n_watches && !shared; k++)
                        shared = k != i && s->watches[k].wanted && s->watches[k].wd == w->wd;
                if (w->wd >= 0 && !shared)
                        inotify_rm_watch(s->watch_fd, w->wd);
                free(w->path);
                *w = s->watches[--s->n_watches];
        }
}

void scanner_set_descendants(Scanner *s, bool on) {
        s->no_descendants = !on;
}

void scanner_set_discovery_interval(Scanner *s, uint64_t usec) {
        s->discovery_usec = usec > 0 ? usec : DEFAULT_DISCOVERY_USEC;
}

void scanner_set_eager_window(Scanner *s, uint64_t usec) {
        s->eager_usec = usec > 0 ? usec : EAGER_USEC;
}

static int cmp_pid(const void *a, const void *b) {
        pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;
        return (x > y) - (x < y);
}

static int cmp_known(const void *a, const void *b) {
        return cmp_pid(&((const Known *) a)->pid, &((const Known *) b)->pid);
}

static int cmp_known_cached(const void *a, const void *b) {
        pid_t x = ((const Cached *) a)->pid, y = ((const Cached *) b)->pid;
        return (x > y) - (x < y);
}

static int cmp_record_pid(const void *a, const void *b) {
        pid_t x = ((const ProcRecord *) a)->pid, y = ((const ProcRecord *) b)->pid;
        return (x > y) - (x < y);
}

typedef struct Listed {
        pid_t pid;
        pid_t owner;    /* 0 postmaster, > 0 its postmaster, −1 orphan */
} Listed;

static int cmp_listed(const void *a, const void *b) {
        pid_t x = ((const Listed *) a)->pid, y = ((const Listed *) b)->pid;
        return (x > y) - (x < y);
}

static const ProcRecord *find_record(const ProcRecord *recs, size_t n, pid_t pid) {
        ProcRecord key = { .pid = pid };
        return bsearch(&key, recs, n, sizeof *recs, cmp_pid);
}

/* Refresh of the known clusters only. Returns 0 with the records, or 1 if a full scan is needed
 * (a postmaster is gone or changed), or −errno. */
static int refresh_known(Scanner *s, ProcRecord **ret, size_t *n_ret, const char **why) {
        _cleanup_free_ pid_t *want = NULL;
        _cleanup_free_ pid_t *owner = NULL; /* the postmaster each wanted pid was listed under */
        size_t n = 0, allocated = 0, o_allocated = 0;

        for (size_t i = 0; i < s->n_pms; i++) {
                _cleanup_free_ pid_t *children = NULL;
                size_t n_children = 0;
                int r = proc_read_children(NULL, s->pms[i].pid, &children, &n_children);
                if (r == -ESRCH) {
                        *why = "postmaster gone";
                        return 1;
                }
                if (r < 0) {
                        *why = "children unreadable";
                        return 1;
                }
                if (GROW(want, allocated, n + n_children + 1) < 0 ||
                    GROW(owner, o_allocated, n + n_children + 1) < 0)
                        return -ENOMEM;
                want[n] = s->pms[i].pid;
                owner[n++] = 0;
                for (size_t k = 0; k < n_children; k++) {
                        want[n] = children[k];
                        owner[n++] = s->pms[i].pid;
                }
        }
        for (size_t i = 0; i < s->n_orphans; i++) {
                if (GROW(want, allocated, n + 1) < 0 || GROW(owner, o_allocated, n + 1) < 0)
                        return -ENOMEM;
                want[n] = s->orphans[i].pid;
                owner[n++] = -1;
        }

        ProcRecord *recs = calloc(n ? n : 1, sizeof *recs);
        _cleanup_free_ bool *exited = calloc(s->n_cache ? s->n_cache : 1, sizeof(bool));
        _cleanup_free_ struct pollfd *pfd = calloc(s->n_cache ? s->n_cache : 1, sizeof(struct pollfd));
        _cleanup_free_ size_t *pfd_at = calloc(s->n_cache ? s->n_cache : 1, sizeof(size_t));
        if (!recs || !exited || !pfd || !pfd_at) {
                free(recs);
                return -ENOMEM;
        }
        /* which of the processes we could skip exited since: one poll() over their pidfds */
        size_t np = 0;
        for (size_t c = 0; c < s->n_cache; c++)
                if (s->cache[c].pidfd >= 0 && s->cache[c].title_stable) {
                        pfd[np] = (struct pollfd){ .fd = s->cache[c].pidfd, .events = POLLIN };
                        pfd_at[np++] = c;
                }
        if (np > 0 && poll(pfd, np, 0) < 0)
                for (size_t k = 0; k < np; k++)
                        exited[pfd_at[k]] = true; /* cannot tell: read them all */
        for (size_t k = 0; k < np; k++)
                if (pfd[k].revents)
                        exited[pfd_at[k]] = true;

        size_t n_recs = 0;
        for (size_t i = 0; i < n; i++) {
                ProcRecord *rec = &recs[n_recs];
                Cached key0 = { .pid = want[i] };
                Cached *c0 = s->n_cache ? bsearch(&key0, s->cache, s->n_cache, sizeof key0, cmp_known_cached) : NULL;
                if (c0 && owner[i] > 0 && c0->ppid == owner[i] && c0->title_stable && c0->title && c0->pidfd >= 0 &&
                    !exited[c0 - s->cache] && (s->refreshes + (uint64_t) want[i]) % IDLE_EVERY != 0) {
                        /* an idle session, still the same live process: nothing to read */
                        *rec = (ProcRecord){
                                .pid = c0->pid, .ppid = c0->ppid, .uid = c0->uid, .state = c0->state,
                                .start_ticks = c0->start_ticks, .cpu_ticks = c0->cpu_ticks, .rss_kb = c0->rss_kb,
                                .rss_anon_kb = c0->rss_anon_kb, .cpu_percent = c0->cpu_percent, .io_valid = c0->io_valid,
                                .read_bytes = c0->read_bytes, .write_bytes = c0->write_bytes, .from_cache = true,
                                .ident = c0->ident,
                        };
                        memcpy(rec->comm, c0->comm, sizeof rec->comm);
                        if (!(rec->title = strdup(c0->title))) {
                                proc_records_free(recs, n_recs);
                                return -ENOMEM;
                        }
                        proc_scan_touch(s->ps, want[i]);
                        n_recs++;
                        continue;
                }
                int r = proc_read_stat_record(s->ps, want[i], rec);
                if (r < 0)
                        continue; /* gone (or unreadable): not ours to show */
                Cached key = { .pid = rec->pid };
                Cached *c = s->n_cache ? bsearch(&key, s->cache, s->n_cache, sizeof key, cmp_known_cached) : NULL;
                unsigned what = PROC_DETAIL_ALL;
                if (c && c->start_ticks == rec->start_ticks) {
                        what = 0;
                        rec->uid = c->uid;
                        rec->ident = c->ident;
                        if (strcmp(c->comm, rec->comm) != 0) /* it exec'd another program */
                                what |= PROC_DETAIL_IDENTITY;
                        bool keep = c->title_keep && strcmp(c->comm, rec->comm) == 0 &&
                                    (s->refreshes + (uint64_t) rec->pid) % SLOW_EVERY != 0;
                        if ((c->title_stable || keep) && c->title) {
                                if (!(rec->title = strdup(c->title))) {
                                        proc_records_free(recs, n_recs + 1);
                                        return -ENOMEM;
                                }
                        } else
                                what |= PROC_DETAIL_TITLE;
                        /* a fifth of the processes each time, not all of them every fifth time */
                        if ((s->refreshes + (uint64_t) rec->pid) % SLOW_EVERY == 0)
                                what |= PROC_DETAIL_STATM | PROC_DETAIL_IO;
                        else {
                                rec->rss_anon_kb = c->rss_anon_kb;
                                rec->io_valid = c->io_valid;
                                rec->read_bytes = c->read_bytes;
                                rec->write_bytes = c->write_bytes;
                        }
                }
                if (what && (r = proc_read_details(s->ps, rec, what)) < 0) {
                        proc_records_free(recs, n_recs + 1);
                        return r;
                }
                n_recs++;
        }
        qsort(recs, n_recs, sizeof *recs, cmp_record_pid);

        for (size_t i = 0; i < s->n_pms; i++) {
                const ProcRecord *pm = find_record(recs, n_recs, s->pms[i].pid);
                if (!pm || pm->start_ticks != s->pms[i].start_ticks || proc_state_is_dead(pm->state)) {
                        proc_records_free(recs, n_recs);
                        *why = "postmaster gone";
                        return 1;
                }
        }
        /* Cross-check: keep a child only if its parent is still the postmaster that listed it (the
         * pid may have been reused in between), an orphan only if it is the same process. */
        Listed *listed = malloc((n ? n : 1) * sizeof *listed);
        if (!listed) {
                proc_records_free(recs, n_recs);
                return -ENOMEM;
        }
        for (size_t j = 0; j < n; j++)
                listed[j] = (Listed){ .pid = want[j], .owner = owner[j] };
        qsort(listed, n, sizeof *listed, cmp_listed);
        size_t k = 0;
        for (size_t i = 0; i < n_recs; i++) {
                ProcRecord *rec = &recs[i];
                Listed key = { .pid = rec->pid };
                const Listed *l = bsearch(&key, listed, n, sizeof key, cmp_listed);
                bool keep = false;
                if (l && l->owner == 0)
                        keep = true;
                else if (l && l->owner > 0)
                        keep = rec->ppid == l->owner;
                else if (l) {
                        Known kk = { .pid = rec->pid };
                        Known *o = bsearch(&kk, s->orphans, s->n_orphans, sizeof *o, cmp_known);
                        keep = o && o->start_ticks == rec->start_ticks;
                }
                if (keep)
                        recs[k++] = *rec;
                else
                        proc_record_clear(rec);
        }
        free(listed);
        *ret = recs;
        *n_ret = k;
        return 0;
}

static int remember(Known **arr, size_t *n, const PgTree *t, bool postmasters) {
        size_t count = 0;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (postmasters ? (p->cluster >= 0 && p->depth == 0) : pg_process_is_orphan(p))
                        count++;
        }
        Known *k = calloc(count ? count : 1, sizeof *k);
        if (!k)
                return -ENOMEM;
        size_t j = 0;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (postmasters ? (p->cluster >= 0 && p->depth == 0) : pg_process_is_orphan(p))
                        k[j++] = (Known){ .pid = p->rec.pid, .start_ticks = p->rec.start_ticks };
        }
        qsort(k, j, sizeof *k, cmp_known);
        free(*arr);
        *arr = k;
        *n = j;
        return 0;
}

/* A pidfd for a process just read, checked against the start time read (the pid could have
 * been reused in between). */
static int open_pidfd(pid_t pid, uint64_t start_ticks) {
        int fd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0)
                return -1;
        ProcStat st;
        if (proc_stat_read(NULL, pid, &st) < 0 || st.start_ticks != start_ticks || proc_state_is_dead(st.state)) {
                close(fd);
                return -1;
        }
        return fd;
}

/* CPU % over the interval since the process's stat was last read (or since it started), and
 * the cache for the next refresh. */
static int update_cache(Scanner *s, PgTree *t, uint64_t mono_now, double uptime, bool full) {
        Cached *next = calloc(t->n_procs ? t->n_procs : 1, sizeof *next);
        if (!next)
                return -ENOMEM;
        for (size_t i = 0; i < t->n_procs; i++) {
                PgProcess *p = &t->procs[i];
                ProcRecord *r = &p->rec;
                Cached key = { .pid = r->pid };
                Cached *prev = s->n_cache ? bsearch(&key, s->cache, s->n_cache, sizeof key, cmp_known_cached) : NULL;
                if (prev && prev->start_ticks != r->start_ticks)
                        prev = NULL;
                uint64_t cpu_at = mono_now;
                if (r->from_cache && prev) {
                        r->cpu_percent = prev->cpu_percent; /* idle; read again within IDLE_EVERY */
                        cpu_at = prev->cpu_at;
                } else {
                        double dt = prev ? (double) (mono_now - prev->cpu_at) / USEC_PER_SEC : 0;
                        double secs = (double) r->cpu_ticks / (double) s->hz;
                        if (prev && dt > 0.001 && r->cpu_ticks >= prev->cpu_ticks)
                                r->cpu_percent = 100.0 * ((double) (r->cpu_ticks - prev->cpu_ticks) / (double) s->hz) / dt;
                        else {
                                double age = uptime - (double) r->start_ticks / (double) s->hz;
                                r->cpu_percent = age > 0.01 ? 100.0 * secs / age : 0;
                        }
                }
                next[i] = (Cached){
                        .pid = r->pid, .ppid = r->ppid, .state = r->state, .start_ticks = r->start_ticks,
                        .cpu_ticks = r->cpu_ticks, .cpu_at = cpu_at, .cpu_percent = r->cpu_percent, .rss_kb = r->rss_kb,
                        .uid = r->uid, .rss_anon_kb = r->rss_anon_kb, .io_valid = r->io_valid,
                        .read_bytes = r->read_bytes, .write_bytes = r->write_bytes, .pidfd = -1, .ident = r->ident,
                        /* a postmaster's title is its command line: it never changes */
                        .title_stable = p->depth == 0 && p->cluster >= 0,
                };
                memcpy(next[i].comm, r->comm, sizeof next[i].comm);
                if (prev && prev->pidfd >= 0) {
                        next[i].pidfd = prev->pidfd; /* moved */
                        prev->pidfd = -1;
                } else if (p->cluster >= 0 && p->depth == 1 && s->n_pidfds < s->max_pidfds &&
                           (next[i].pidfd = open_pidfd(r->pid, r->start_ticks)) >= 0)
                        s->n_pidfds++;
                if (r->title && !(next[i].title = strdup(r->title))) {
                        for (size_t k = 0; k <= i; k++) {
                                free(next[k].title);
                                if (next[k].pidfd >= 0) {
                                        close(next[k].pidfd);
                                        s->n_pidfds--;
                                }
                        }
                        free(next);
                        return -ENOMEM;
                }
        }
        (void) full;
        qsort(next, t->n_procs, sizeof *next, cmp_known_cached);
        for (size_t i = 0; i < s->n_cache; i++) {
                free(s->cache[i].title);
                if (s->cache[i].pidfd >= 0) { /* its process is gone */
                        close(s->cache[i].pidfd);
                        s->n_pidfds--;
                }
        }
        free(s->cache);
        s->cache = next;
        s->n_cache = t->n_procs;
        s->cache_at = mono_now;
        return 0;
}

void scanner_title_keep(Scanner *s, pid_t pid, uint64_t start_ticks) {
        Cached key = { .pid = pid };
        Cached *c = s->n_cache ? bsearch(&key, s->cache, s->n_cache, sizeof key, cmp_known_cached) : NULL;
        if (c && c->start_ticks == start_ticks)
                c->title_keep = true;
}

void scanner_title_stable(Scanner *s, pid_t pid, uint64_t start_ticks) {
        Cached key = { .pid = pid };
        Cached *c = s->n_cache ? bsearch(&key, s->cache, s->n_cache, sizeof key, cmp_known_cached) : NULL;
        if (c && c->start_ticks == start_ticks)
                c->title_stable = true;
}

static int read_small_file(const char *path, char *buf, size_t size, size_t *len) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        ssize_t k = read(fd, buf, size - 1);
        if (k < 0)
                return negative_errno();
        buf[k] = 0;
        *len = (size_t) k;
        return 0;
}

/* -D DIR, -DDIR or --pgdata=DIR on the postmaster's command line, if absolute. */
static void data_dir_from_cmdline(const char *cmdline, char *buf, size_t size) {
        const char *p = cmdline;
        while (p && *p) {
                const char *arg = NULL;
                if (strncmp(p, "-D ", 3) == 0)
                        arg = p + 3;
                else if (strncmp(p, "-D", 2) == 0)
                        arg = p + 2;
                else if (strncmp(p, "--pgdata=", 9) == 0)
                        arg = p + 9;
                if (arg && *arg == '/') {
                        size_t k = strcspn(arg, " ");
                        snprintf(buf, size, "%.*s", (int) k, arg);
                        return;
                }
                p = strchr(p, ' ');
                if (p)
                        p++;
        }
}

void cluster_identify(const char *proc_root, PgCluster *c, const PgProcess *pm, double pm_start) {
        /* a container's postmaster: its files are where its mount namespace has them (known
         * already when the caller kept what it probed for this postmaster) */
        if (!c->container.probed)
                container_probe(proc_root, pm->rec.pid, pm->rec.ident.ns_pid, &c->container);
        int r = proc_read_cwd(proc_root, pm->rec.pid, c->data_directory, sizeof c->data_directory);
        if (r < 0) {
                c->data_directory[0] = 0;
                data_dir_from_cmdline(pm->rec.title, c->data_directory, sizeof c->data_directory);
        }
        c->pmfile_valid = false;
        if (c->data_directory[0]) {
                char path[PATH_MAX + 32], buf[4096];
                size_t len;
                int k = snprintf(path, sizeof path, "%s%s/postmaster.pid", c->container.root, c->data_directory);
                if (k < 0 || (size_t) k >= sizeof path)
                        k = -ENAMETOOLONG;
                else
                        k = read_small_file(path, buf, sizeof buf, &len);
                if (k < 0)
                        snprintf(c->pmfile_why, sizeof c->pmfile_why, "postmaster.pid not readable: %s", strerror(-k));
                else if (pmfile_parse(buf, len, &c->pmfile) < 0)
                        snprintf(c->pmfile_why, sizeof c->pmfile_why, "postmaster.pid is malformed (or still being written)");
                else
                        /* a container's postmaster.pid holds its pid in the container */
                        c->pmfile_valid = pmfile_matches(&c->pmfile, pg_process_ns_pid(pm), pm_start, c->pmfile_why,
                                                         sizeof c->pmfile_why);
        } else
                snprintf(c->pmfile_why, sizeof c->pmfile_why, "data directory unknown (/proc/%d/cwd: %s)", (int) pm->rec.pid,
                         strerror(-r));
        if (c->pmfile_valid)
                c->pmfile_why[0] = 0;
        cluster_derive_name(c, pm->rec.pid);
}

int pg_version_read(const char *data_directory) {
        return pg_version_read_in(NULL, data_directory);
}

int pg_version_read_in(const char *root, const char *data_directory) {
        char path[PATH_MAX + 80], buf[32];
        size_t len;
        if (!data_directory || data_directory[0] != '/')
                return -EINVAL;
        snprintf(path, sizeof path, "%s%s/PG_VERSION", root ? root : "", data_directory);
        int r = read_small_file(path, buf, sizeof buf, &len);
        return r < 0 ? r : pg_version_parse(buf, len);
}

/* Each cluster's server version: known postmasters keep theirs, new ones are read. */
static int set_versions(Scanner *s, PgTree *t) {
        KnownVersion *next = calloc(t->n_clusters ? t->n_clusters : 1, sizeof *next);
        if (!next)
                return -ENOMEM;
        for (size_t i = 0; i < t->n_clusters; i++) {
                const PgProcess *pm = &t->procs[t->clusters[i].postmaster];
                int major = -1;
                for (size_t k = 0; k < s->n_versions && major < 0; k++)
                        if (s->versions[k].pid == pm->rec.pid && s->versions[k].start_ticks == pm->rec.start_ticks)
                                major = s->versions[k].major;
                if (major < 0) {
                        major = pg_version_read_in(t->clusters[i].container.root, t->clusters[i].data_directory);
                        if (major < 0)
                                major = 0;
                }
                next[i] = (KnownVersion){ .pid = pm->rec.pid, .start_ticks = pm->rec.start_ticks, .major = major,
                                          .container = t->clusters[i].container };
                tree_set_server_major(t, i, major);
        }
        free(s->versions);
        s->versions = next;
        s->n_versions = t->n_clusters;
        return 0;
}

static bool have_cluster_in(const PgTree *t, const char *dir) {
        for (size_t i = 0; i < t->n_clusters; i++)
                if (strcmp(t->clusters[i].data_directory, dir) == 0)
                        return true;
        return false;
}

/* Follows postmasters across restarts: one that is gone makes its data directory awaited, and
 * refreshes discover until a postmaster runs there again (or EAGER_USEC passed). */
static int track_restarts(Scanner *s, const PgTree *t, bool full, uint64_t now) {
        if (full) {
                for (size_t i = 0; i < s->n_pm_dirs; i++) {
                        const PmDir *d = &s->pm_dirs[i];
                        bool alive = false;
                        for (size_t c = 0; c < t->n_clusters && !alive; c++) {
                                const PgProcess *pm = &t->procs[t->clusters[c].postmaster];
                                alive = pm->rec.pid == d->pid && pm->rec.start_ticks == d->start_ticks;
                        }
                        if (alive)
                                continue;
                        s->eager_until = now + s->eager_usec;
                        if (!d->data_directory) {
                                s->awaited_unknown = true;
                                continue;
                        }
                        bool have = false;
                        for (size_t k = 0; k < s->n_awaited && !have; k++)
                                have = strcmp(s->awaited[k], d->data_directory) == 0;
                        if (have)
                                continue;
                        char **v = realloc(s->awaited, (s->n_awaited + 1) * sizeof *v);
                        if (!v)
                                return -ENOMEM;
                        s->awaited = v;
                        if (!(v[s->n_awaited] = strdup(d->data_directory)))
                                return -ENOMEM;
                        s->n_awaited++;
                }
                PmDir *n = calloc(t->n_clusters ? t->n_clusters : 1, sizeof *n);
                if (!n)
                        return -ENOMEM;
                for (size_t c = 0; c < t->n_clusters; c++) {
                        const PgCluster *cl = &t->clusters[c];
                        const PgProcess *pm = &t->procs[cl->postmaster];
                        n[c] = (PmDir){ .pid = pm->rec.pid, .start_ticks = pm->rec.start_ticks };
                        if (cl->data_directory[0] && !(n[c].data_directory = strdup(cl->data_directory))) {
                                for (size_t k = 0; k < c; k++)
                                        free(n[k].data_directory);
                                free(n);
                                return -ENOMEM;
                        }
                }
                for (size_t i = 0; i < s->n_pm_dirs; i++)
                        free(s->pm_dirs[i].data_directory);
                free(s->pm_dirs);
                s->pm_dirs = n;
                s->n_pm_dirs = t->n_clusters;
        }
        for (size_t k = 0; k < s->n_awaited;) {
                if (have_cluster_in(t, s->awaited[k])) {
                        free(s->awaited[k]);
                        s->awaited[k] = s->awaited[--s->n_awaited];
                } else
                        k++;
        }
        if (now >= s->eager_until || (s->n_awaited == 0 && !s->awaited_unknown)) {
                for (size_t k = 0; k < s->n_awaited; k++)
                        free(s->awaited[k]);
                s->n_awaited = 0;
                s->awaited_unknown = false;
                s->eager_until = 0;
        }
        return 0;
}

/* ---- Foreign processes: what runs below a cluster's processes and is not PostgreSQL ---- */

#define FOREIGN_MAX_DEPTH 16
#define FOREIGN_MAX_PER_CLUSTER 256

typedef struct TreePid {
        pid_t pid;
        int index;
} TreePid;

static int cmp_tree_pid(const void *a, const void *b) {
        return cmp_pid(&((const TreePid *) a)->pid, &((const TreePid *) b)->pid);
}

typedef struct ForeignScan {
        Scanner *s;
        PgTree *t;
        TreePid *members;       /* the tree's processes by pid */
        size_t n_members;
        size_t allocated;
        size_t *per_cluster;
} ForeignScan;

/* Index in t->procs of a cluster member with this pid, or −1. */
static int member(const ForeignScan *fs, pid_t pid) {
        TreePid key = { .pid = pid };
        const TreePid *m = fs->n_members ? bsearch(&key, fs->members, fs->n_members, sizeof key, cmp_tree_pid) : NULL;
        return m ? m->index : -1;
}

static int foreign_find(const PgTree *t, pid_t pid) {
        for (size_t i = 0; i < t->n_foreign; i++)
                if (t->foreign[i].rec.pid == pid)
                        return (int) i;
        return -1;
}

/* PostgreSQL runs archive_command (archiver), restore_command and recovery_end_command (startup)
 * and archive_cleanup_command (checkpointer, at restartpoints) through a shell: their children. */
static bool runs_commands(BackendType bt) {
        return bt == BACKEND_ARCHIVER || bt == BACKEND_STARTUP || bt == BACKEND_CHECKPOINTER;
}

/* Reads pid and adds it to t->foreign. via: the PostgreSQL process above it (−1 unknown), cluster
 * its cluster. Returns 1 if added, 0 if gone or known already, −ENOMEM. */
static int foreign_add(ForeignScan *fs, pid_t pid, int via, int cluster, int depth, bool detached, const char *why) {
        PgTree *t = fs->t;
        if (cluster < 0 || (size_t) cluster >= t->n_clusters || foreign_find(t, pid) >= 0)
                return 0;
        if (fs->per_cluster[cluster] >= FOREIGN_MAX_PER_CLUSTER)
                return 0; /* bounded: a fork bomb below a backend is reported by its first ones */
        ProcRecord rec = {};
        if (proc_read_stat_record(fs->s->ps, pid, &rec) < 0 || proc_state_is_dead(rec.state))
                return 0;
        if (proc_read_details(fs->s->ps, &rec, PROC_DETAIL_UID | PROC_DETAIL_IDENTITY | PROC_DETAIL_TITLE) < 0) {
                proc_record_clear(&rec);
                return -ENOMEM;
        }
        if (GROW(t->foreign, fs->allocated, t->n_foreign + 1) < 0) {
                proc_record_clear(&rec);
                return -ENOMEM;
        }
        PgForeign *f = &t->foreign[t->n_foreign++];
        *f = (PgForeign){ .rec = rec, .cluster = cluster, .via = via, .depth = depth, .detached = detached };
        if (via >= 0) {
                f->via_pid = t->procs[via].rec.pid;
                f->via_start_ticks = t->procs[via].rec.start_ticks;
                f->expected = runs_commands(t->procs[via].title.backend_type);
        }
        snprintf(f->why, sizeof f->why, "%s", why);
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/exe", (int) pid);
        ssize_t l = readlink(path, f->exe, sizeof f->exe - 1);
        f->exe[l > 0 ? l : 0] = 0;
        fs->per_cluster[cluster]++;
        return 1;
}

/* The foreign children of pid (one of via's descendants), their children, and so on. */
static int foreign_descend(ForeignScan *fs, pid_t pid, int via, int cluster, int depth) {
        if (depth > FOREIGN_MAX_DEPTH)
                return 0;
        _cleanup_free_ pid_t *children = NULL;
        size_t n = 0;
        if (proc_scan_children(fs->s->ps, pid, &children, &n) < 0)
                return 0; /* gone */
        for (size_t k = 0; k < n; k++) {
                if (member(fs, children[k]) >= 0)
                        continue; /* PostgreSQL's own (a postmaster's child is listed already) */
                int r = foreign_add(fs, children[k], via, cluster, depth, false, "below a PostgreSQL process");
                if (r < 0)
                        return r;
                if (r > 0 && (r = foreign_descend(fs, children[k], via, cluster, depth + 1)) < 0)
                        return r;
        }
        return 0;
}

/* The cluster a postmaster (pid, start) leads now, or −1. */
static int cluster_of_postmaster(const PgTree *t, pid_t pid, uint64_t start_ticks) {
        for (size_t c = 0; c < t->n_clusters; c++) {
                const PgProcess *pm = &t->procs[t->clusters[c].postmaster];
                if (pm->rec.pid == pid && pm->rec.start_ticks == start_ticks)
                        return (int) c;
        }
        return -1;
}

/* On a full scan: every process of the host whose ancestry reaches a cluster's process. */
static int foreign_from_records(ForeignScan *fs, const ProcRecord *all, size_t n_all) {
        for (size_t i = 0; i < n_all; i++) {
                const ProcRecord *r = &all[i];
                if (proc_state_is_dead(r->state) || member(fs, r->pid) >= 0 || r->pid <= 1)
                        continue;
                const ProcRecord *cur = r;
                for (int d = 1; d <= FOREIGN_MAX_DEPTH && cur->ppid > 1; d++) {
                        int m = member(fs, cur->ppid);
                        if (m >= 0) {
                                const PgProcess *p = &fs->t->procs[m];
                                if (p->cluster < 0)
                                        break; /* below an orphan: its server is gone */
                                if (p->identity == PG_IDENTITY_FOREIGN) { /* a postmaster's child, not PostgreSQL */
                                        cur = &p->rec;
                                        continue;
                                }
                                int k = foreign_add(fs, r->pid, m, p->cluster, d, false, "below a PostgreSQL process");
                                if (k < 0)
                                        return k;
                                break;
                        }
                        cur = find_record(all, n_all, cur->ppid);
                        if (!cur)
                                break;
                }
        }
        return 0;
}

/* On a full scan: a process of the cluster's owner, with no terminal, working in the cluster's
 * data directory, outside its tree: what daemonized away from a backend (double fork, setsid). */
static int foreign_in_data_dirs(ForeignScan *fs, const ProcRecord *all, size_t n_all) {
        PgTree *t = fs->t;
        _cleanup_free_ struct stat *dirs = calloc(t->n_clusters ? t->n_clusters : 1, sizeof *dirs);
        _cleanup_free_ bool *have = calloc(t->n_clusters ? t->n_clusters : 1, sizeof *have);
        if (!dirs || !have)
                return -ENOMEM;
        bool any = false;
        for (size_t c = 0; c < t->n_clusters; c++) {
                char path[64];
                snprintf(path, sizeof path, "/proc/%d/cwd", (int) t->procs[t->clusters[c].postmaster].rec.pid);
                any |= have[c] = !t->clusters[c].remote && stat(path, &dirs[c]) == 0;
        }
        for (size_t i = 0; any && i < n_all; i++) {
                const ProcRecord *r = &all[i];
                if (proc_state_is_dead(r->state) || r->pid <= 1 || member(fs, r->pid) >= 0 || foreign_find(t, r->pid) >= 0 ||
                    proc_comm_is_postgres(r->comm))
                        continue;
                for (size_t c = 0; c < t->n_clusters; c++) {
                        const PgProcess *pm = &t->procs[t->clusters[c].postmaster];
                        if (!have[c] || r->uid != pm->rec.uid)
                                continue;
                        char path[64];
                        struct stat st;
                        ProcStat ps;
                        snprintf(path, sizeof path, "/proc/%d/cwd", (int) r->pid);
                        if (stat(path, &st) < 0 || st.st_dev != dirs[c].st_dev || st.st_ino != dirs[c].st_ino)
                                continue;
                        if (proc_stat_read(NULL, r->pid, &ps) < 0 || ps.tty_nr != 0)
                                break; /* an operator's shell in the data directory */
                        int k = foreign_add(fs, r->pid, -1, (int) c, 0, true,
                                            "runs in the cluster's data directory as its owner, outside its process tree");
                        if (k < 0)
                                return k;
                        break;
                }
        }
        return 0;
}

/* Foreign processes of the last refresh that are still alive: where are they now? */
static int foreign_known(ForeignScan *fs) {
        PgTree *t = fs->t;
        for (size_t i = 0; i < fs->s->n_foreign; i++) {
                const KnownForeign *k = &fs->s->foreign[i];
                int c = cluster_of_postmaster(t, k->pm_pid, k->pm_start_ticks);
                if (c < 0 || foreign_find(t, k->pid) >= 0)
                        continue;
                ProcStat st;
                if (proc_stat_read(NULL, k->pid, &st) < 0 || st.start_ticks != k->start_ticks || proc_state_is_dead(st.state))
                        continue; /* it ended */
                int via = member(fs, k->via_pid);
                if (via >= 0 && t->procs[via].rec.start_ticks != k->via_start_ticks)
                        via = -1;
                /* still below its backend (or below another foreign process of it)? */
                bool below = (via >= 0 && st.ppid == k->via_pid) || foreign_find(t, st.ppid) >= 0;
                int r = foreign_add(fs, k->pid, via, c, below ? k->depth : 0, !below,
                                    below ? "below a PostgreSQL process"
                                          : "left the process tree of the PostgreSQL process it was seen under");
                if (r < 0)
                        return r;
                if (r > 0) {
                        PgForeign *f = &t->foreign[t->n_foreign - 1];
                        f->via_pid = k->via_pid; /* the one it was seen under, gone or not */
                        f->via_start_ticks = k->via_start_ticks;
                        if (via < 0)
                                f->expected = false;
                }
                if (r > 0 && (r = foreign_descend(fs, k->pid, via, c, (below ? k->depth : 0) + 1)) < 0)
                        return r;
        }
        return 0;
}

static int foreign_remember(Scanner *s, const PgTree *t) {
        KnownForeign *k = calloc(t->n_foreign ? t->n_foreign : 1, sizeof *k);
        if (!k)
                return -ENOMEM;
        for (size_t i = 0; i < t->n_foreign; i++) {
                const PgForeign *f = &t->foreign[i];
                const PgProcess *pm = &t->procs[t->clusters[f->cluster].postmaster];
                k[i] = (KnownForeign){ .pid = f->rec.pid, .start_ticks = f->rec.start_ticks, .via_pid = f->via_pid,
                                       .via_start_ticks = f->via_start_ticks, .pm_pid = pm->rec.pid,
                                       .pm_start_ticks = pm->rec.start_ticks, .depth = f->depth };
        }
        free(s->foreign);
        s->foreign = k;
        s->n_foreign = t->n_foreign;
        return 0;
}

/* Did pg_stat_activity show this process not running a query (an idle session, an auxiliary
 * process) at the last cycle? Only a process that runs something forks a program: the children of
 * the others are not read (what an idle session started earlier was found then, or by the next
 * full scan, and is followed since). */
static bool known_idle(const Scanner *s, const ProcRecord *r) {
        Cached key = { .pid = r->pid };
        const Cached *c = s->n_cache ? bsearch(&key, s->cache, s->n_cache, sizeof key, cmp_known_cached) : NULL;
        return c && c->start_ticks == r->start_ticks && c->title_stable;
}

/* Fills t->foreign. A full scan has every process (all): ancestry decides, and the data
 * directories are looked at. A refresh reads the children of the processes that run something
 * (active sessions, processes pg_stat_activity does not cover) and follows the foreign processes
 * already known: a cost of one small file per active session, not per process of the host. */
static int collect_foreign(Scanner *s, PgTree *t, const ProcRecord *all, size_t n_all, bool full) {
        ForeignScan fs = { .s = s, .t = t };
        _cleanup_free_ TreePid *members = calloc(t->n_procs ? t->n_procs : 1, sizeof *members);
        _cleanup_free_ size_t *per_cluster = calloc(t->n_clusters ? t->n_clusters : 1, sizeof *per_cluster);
        if (!members || !per_cluster)
                return -ENOMEM;
        for (size_t i = 0; i < t->n_procs; i++)
                if (t->procs[i].cluster >= 0 && !t->clusters[t->procs[i].cluster].remote)
                        members[fs.n_members++] = (TreePid){ t->procs[i].rec.pid, (int) i };
        qsort(members, fs.n_members, sizeof *members, cmp_tree_pid);
        fs.members = members;
        fs.per_cluster = per_cluster;

        int r = 0;
        /* a postmaster's own children that are not PostgreSQL's (another program or uid) */
        for (size_t i = 0; r >= 0 && i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (p->cluster >= 0 && p->depth == 1 && p->identity == PG_IDENTITY_FOREIGN)
                        r = foreign_add(&fs, p->rec.pid, (int) t->clusters[p->cluster].postmaster, p->cluster, 1, false,
                                        "a child of the postmaster that is not PostgreSQL");
        }
        if (r >= 0 && full)
                r = foreign_from_records(&fs, all, n_all);
        for (size_t i = 0; r >= 0 && !full && i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (p->cluster >= 0 && p->depth >= 1 && !p->rec.from_cache && !t->clusters[p->cluster].remote &&
                    !known_idle(s, &p->rec))
                        /* below a postmaster's child that is not PostgreSQL: generations counted from
                         * the postmaster, as a discovery scan counts them */
                        r = foreign_descend(&fs, p->rec.pid, p->identity == PG_IDENTITY_FOREIGN
                                                                     ? (int) t->clusters[p->cluster].postmaster
                                                                     : (int) i,
                                            p->cluster, p->identity == PG_IDENTITY_FOREIGN ? p->depth + 1 : 1);
        }
        if (r >= 0)
                r = foreign_known(&fs);
        if (r >= 0 && full)
                r = foreign_in_data_dirs(&fs, all, n_all);
        if (r >= 0)
                r = foreign_remember(s, t);
        return r;
}

bool scanner_discovering(const Scanner *s) {
        return s->eager_until != 0;
}

bool scanner_awaiting(const Scanner *s, const char *data_directory) {
        for (size_t i = 0; i < s->n_awaited; i++)
                if (!strcmp(s->awaited[i], data_directory))
                        return true;
        return false;
}

int scanner_refresh(Scanner *s, bool force_full, PgTree *ret, ScanStats *stats) {
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        ScanStats st = {};
        ProcRecord *recs = NULL;
        size_t n = 0;
        int r;

        proc_scan_begin(s->ps);
        (void) scanner_socket_events(s);
        bool eager = s->eager_until != 0 && t0 < s->eager_until;
        bool complete = s->last_full == 0 || complete_due(s, t0);
        bool full = force_full || complete || t0 - s->last_full >= s->discovery_usec || eager;
        st.full_reason = s->last_full == 0 ? "first" : complete ? s->complete_why : force_full ? "forced" : eager ? "awaiting a restarted postmaster" : "interval";
        if (!full) {
                r = refresh_known(s, &recs, &n, &st.full_reason);
                if (r < 0)
                        return r;
                full = r > 0;
        }
        if (full) {
                r = proc_scan_discover(s->ps, complete, &recs, &n);
                if (r < 0)
                        return r;
                s->last_full = t0;
                if (complete) {
                        /* the bound is between the discoveries sockets ask for: the first socket
                         * after start (or after a quiet while) is looked for at once */
                        if (s->complete_pending)
                                s->last_complete = t0;
                        s->complete_pending = false;
                }
                ProcScanStats ps = proc_scan_stats(s->ps);
                st.complete = ps.complete;
                st.read = ps.read;
        }
        /* a full scan read no kept descriptor: keep them for the next refreshes */
        if (!full)
                proc_scan_end(s->ps);
        st.full = full;
        st.examined = n;

        PgTree t;
        r = tree_build(recs, n, &t);
        if (r >= 0 && !s->no_descendants && (r = collect_foreign(s, &t, recs, n, full)) < 0)
                tree_free(&t);
        proc_records_free(recs, n);
        if (r < 0)
                return r;

        double real = (double) now_usec(CLOCK_REALTIME) / USEC_PER_SEC;
        double uptime = (double) now_usec(CLOCK_BOOTTIME) / USEC_PER_SEC;
        t.now = real;
        t.boot_time = real - uptime;
        t.hz = s->hz;

        for (size_t i = 0; i < t.n_clusters; i++) {
                const PgProcess *pm = &t.procs[t.clusters[i].postmaster];
                for (size_t k = 0; k < s->n_versions; k++)
                        if (s->versions[k].pid == pm->rec.pid && s->versions[k].start_ticks == pm->rec.start_ticks)
                                t.clusters[i].container = s->versions[k].container;
                cluster_identify(NULL, &t.clusters[i], pm, pg_process_start_time(&t, pm));
        }
        tree_unique_names(&t);
        for (size_t i = 0; i < t.n_procs; i++) {
                PgProcess *p = &t.procs[i];
                char cwd[PATH_MAX];
                if (pg_process_is_orphan(p) && proc_read_cwd(NULL, p->rec.pid, cwd, sizeof cwd) == 0) {
                        p->cwd = strdup(cwd);
                        char link[64];
                        snprintf(link, sizeof link, "/proc/%d/cwd", (int) p->rec.pid);
                        int major = pg_version_read(link); /* its data directory, wherever its root is */
                        p->server_major = major > 0 ? major : 0;
                }
                if (pg_process_is_orphan(p)) {
                        /* an orphan of a containerized cluster: its postmaster (and the cluster's
                         * probe) is gone, the orphan says where it runs (orphans are few) */
                        ContainerInfo ci;
                        container_probe(NULL, p->rec.pid, p->rec.ident.ns_pid, &ci);
                        if (ci.name[0] && !(p->container = strdup(ci.name))) {
                                tree_free(&t);
                                return -ENOMEM;
                        }
                }
        }
        if ((r = set_versions(s, &t)) < 0) {
                tree_free(&t);
                return r;
        }

        if ((r = track_restarts(s, &t, full, t0)) < 0 ||
            (r = update_cache(s, &t, now_usec(CLOCK_MONOTONIC), uptime, full)) < 0 ||
            (full && ((r = remember(&s->pms, &s->n_pms, &t, true)) < 0 ||
                      (r = remember(&s->orphans, &s->n_orphans, &t, false)) < 0))) {
                tree_free(&t);
                return r;
        }
        if (!full) /* orphans that ended are forgotten */
                (void) remember(&s->orphans, &s->n_orphans, &t, false);
        else
                sync_socket_watches(s, &t);

        s->refreshes++;
        st.seconds = (double) (now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_SEC;
        if (stats)
                *stats = st;
        *ret = t;
        return 0;
}
