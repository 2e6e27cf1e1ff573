/* SPDX-License-Identifier: MIT */
/* The postmaster → child forest, built from plain process records. Pure. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "activity.h"
#include "tree.h"

#define MAX_ANCESTRY 64

bool proc_comm_is_postgres(const char *comm) {
        return comm && (strcmp(comm, "postgres") == 0 || strcmp(comm, "postmaster") == 0);
}

void proc_record_clear(ProcRecord *r) {
        if (!r)
                return;
        free(r->title);
        r->title = NULL;
}

void proc_records_free(ProcRecord *r, size_t n) {
        for (size_t i = 0; r && i < n; i++)
                proc_record_clear(&r[i]);
        free(r);
}

typedef struct Builder {
        const ProcRecord *recs;
        size_t n;
        size_t *by_pid;         /* indices of recs sorted by pid */
        signed char *pm;        /* −1 unknown, 0 no, 1 postmaster */
} Builder;

static const ProcRecord *sort_base;

static int cmp_by_pid(const void *a, const void *b) {
        pid_t x = sort_base[*(const size_t *) a].pid, y = sort_base[*(const size_t *) b].pid;
        return (x > y) - (x < y);
}

static long lookup(const Builder *b, pid_t pid) {
        size_t lo = 0, hi = b->n;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                pid_t p = b->recs[b->by_pid[mid]].pid;
                if (p == pid)
                        return (long) b->by_pid[mid];
                if (p < pid)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return -1;
}

static bool alive(const ProcRecord *r) {
        return !proc_state_is_dead(r->state);
}

static bool child_title(const ProcRecord *r) {
        return r->title && strncmp(r->title, "postgres:", 9) == 0;
}

/* ---- identity ---- */

static uid_t effective_uid(const ProcRecord *r) {
        return r->ident.ids_valid ? r->ident.euid : r->uid;
}

/* What no PostgreSQL process is: root, or a setuid/setgid-changed one. */
static bool ids_contradict(const ProcRecord *r, char *why, size_t size) {
        const ProcIdentity *id = &r->ident;
        if (!id->ids_valid)
                return false;
        if (id->ruid != id->euid)
                snprintf(why, size, "its real uid %u differs from its effective uid %u (a setuid program)",
                         (unsigned) id->ruid, (unsigned) id->euid);
        else if (id->euid == 0)
                snprintf(why, size, "it runs as root (PostgreSQL refuses to)");
        else
                return false;
        return true;
}

static bool same_exe(const ProcRecord *a, const ProcRecord *b) {
        return a->ident.exe_valid && b->ident.exe_valid && a->ident.exe_dev == b->ident.exe_dev &&
               a->ident.exe_ino == b->ident.exe_ino;
}

/* Its working directory, if readable, must be a data directory of its own uid. */
static bool dir_contradicts(const ProcRecord *r, char *why, size_t size) {
        const ProcIdentity *id = &r->ident;
        if (!id->dir_valid)
                return false;
        if (!id->dir_pg)
                snprintf(why, size, "its working directory is not a data directory (no PG_VERSION)");
        else if (id->dir_uid != effective_uid(r))
                snprintf(why, size, "it runs as uid %u but its data directory belongs to uid %u",
                         (unsigned) effective_uid(r), (unsigned) id->dir_uid);
        else
                return false;
        return true;
}

/* Why a fact is missing (the first one), for an unverified process. */
static bool facts_missing(const ProcRecord *r, bool need_dir, char *why, size_t size) {
        const ProcIdentity *id = &r->ident;
        if (!id->ids_valid)
                snprintf(why, size, "its uids are unknown (/proc/%d/status not read)", (int) r->pid);
        else if (!id->exe_valid)
                snprintf(why, size, "cannot read /proc/%d/exe: %s", (int) r->pid,
                         id->exe_error ? strerror(id->exe_error) : "not read");
        else if (need_dir && !id->dir_valid)
                snprintf(why, size, "cannot read /proc/%d/cwd: %s", (int) r->pid,
                         id->dir_error ? strerror(id->dir_error) : "not read");
        else
                return false;
        return true;
}

/* A postmaster candidate that cannot be one. */
static bool pm_contradicts(const ProcRecord *r, char *why, size_t size) {
        if (ids_contradict(r, why, size) || dir_contradicts(r, why, size))
                return true;
        if (r->ident.exe_valid && !r->ident.exe_trusted) {
                snprintf(why, size, "its executable is not a PostgreSQL server binary");
                return true;
        }
        return false;
}

static bool looks_like_postmaster(const ProcRecord *r) {
        return alive(r) && proc_comm_is_postgres(r->comm) && r->title && r->title[0] && !child_title(r);
}

/* A live PostgreSQL process that still carries its own command line, and may be PostgreSQL. */
static bool pm_candidate(const ProcRecord *r) {
        char why[192];
        return looks_like_postmaster(r) && !pm_contradicts(r, why, sizeof why);
}

static bool is_postmaster(Builder *b, size_t i) {
        if (b->pm[i] < 0) {
                const ProcRecord *r = &b->recs[i];
                bool yes = pm_candidate(r);
                if (yes && r->ppid > 0 && r->ppid != r->pid) {
                        long p = lookup(b, r->ppid);
                        if (p >= 0 && pm_candidate(&b->recs[p]))
                                yes = false; /* a postgres started by a postmaster is its child */
                }
                b->pm[i] = yes;
        }
        return b->pm[i] > 0;
}

/* The postmaster above record i (and how far up), or −1. */
static long owning_postmaster(Builder *b, size_t i, int *depth) {
        const ProcRecord *r = &b->recs[i];
        for (int d = 1; d <= MAX_ANCESTRY; d++) {
                if (r->ppid <= 0 || r->ppid == r->pid)
                        return -1;
                long p = lookup(b, r->ppid);
                if (p < 0 || !alive(&b->recs[p]))
                        return -1;
                if (is_postmaster(b, (size_t) p)) {
                        *depth = d;
                        return p;
                }
                r = &b->recs[p];
        }
        return -1;
}

/* The identity of a postmaster's member (pm != NULL), a postmaster (pm == r) or an orphan (pm NULL;
 * then -1 means it is a lookalike). */
static PgIdentity judge(Builder *b, const ProcRecord *r, const ProcRecord *pm, char *why, size_t size) {
        *why = 0;
        if (pm == r) {
                if (pm_contradicts(r, why, size))
                        return PG_IDENTITY_FOREIGN; /* not reached: it would not be a postmaster */
                return facts_missing(r, true, why, size) ? PG_IDENTITY_UNVERIFIED : PG_IDENTITY_VERIFIED;
        }
        if (pm) {
                if (ids_contradict(r, why, size))
                        return PG_IDENTITY_FOREIGN;
                if (r->ident.ids_valid && pm->ident.ids_valid && r->ident.euid != pm->ident.euid) {
                        snprintf(why, size, "it runs as uid %u, not as its postmaster's uid %u", (unsigned) r->ident.euid,
                                 (unsigned) pm->ident.euid);
                        return PG_IDENTITY_FOREIGN;
                }
                if (r->ident.exe_valid && pm->ident.exe_valid && !same_exe(r, pm) && !r->ident.exe_trusted) {
                        snprintf(why, size, "it runs another program than its postmaster");
                        return PG_IDENTITY_FOREIGN;
                }
                if (facts_missing(r, false, why, size))
                        return PG_IDENTITY_UNVERIFIED;
                char pm_why[192];
                if (judge(b, pm, pm, pm_why, sizeof pm_why) != PG_IDENTITY_VERIFIED) {
                        snprintf(why, size, "its postmaster is not verified: %.150s", pm_why);
                        return PG_IDENTITY_UNVERIFIED;
                }
                return PG_IDENTITY_VERIFIED;
        }
        /* an orphan */
        if (ids_contradict(r, why, size) || dir_contradicts(r, why, size))
                return (PgIdentity) -1;
        if (r->ident.exe_valid && !r->ident.exe_trusted) {
                bool of_pm = false;
                for (size_t i = 0; i < b->n && !of_pm; i++)
                        of_pm = same_exe(r, &b->recs[i]) && is_postmaster(b, i);
                if (!of_pm) {
                        snprintf(why, size, "its executable is not a PostgreSQL server binary");
                        return (PgIdentity) -1;
                }
        }
        return facts_missing(r, true, why, size) ? PG_IDENTITY_UNVERIFIED : PG_IDENTITY_VERIFIED;
}

static int add_lookalike(PgTree *t, size_t *allocated, const ProcRecord *r, const char *why) {
        if (GROW(t->lookalikes, *allocated, t->n_lookalikes + 1) < 0)
                return -ENOMEM;
        PgLookalike *l = &t->lookalikes[t->n_lookalikes];
        *l = (PgLookalike){ .rec = *r };
        l->rec.title = NULL;
        snprintf(l->why, sizeof l->why, "%s", why);
        if (r->title && !(l->rec.title = strdup(r->title)))
                return -ENOMEM;
        t->n_lookalikes++;
        return 0;
}

static int append(PgTree *t, size_t *allocated, const ProcRecord *r, int cluster, int depth) {
        if (GROW(t->procs, *allocated, t->n_procs + 1) < 0)
                return -ENOMEM;
        PgProcess *p = &t->procs[t->n_procs];
        *p = (PgProcess){ .rec = *r, .cluster = cluster, .leader = -1, .depth = depth, .cwd = NULL, .container = NULL };
        p->rec.title = NULL;
        if (r->title && !(p->rec.title = strdup(r->title)))
                return -ENOMEM;
        t->n_procs++;
        return 0;
}

static void parse_titles(PgTree *t, size_t from, size_t to, PgCluster *c) {
        const char *hint = NULL;
        if (c) {
                for (size_t i = from; i < to; i++)
                        if (i != c->postmaster && child_title(&t->procs[i].rec))
                                c->children_titled = true;
                for (size_t i = from; i < to && !c->cluster_name_known; i++) {
                        const char *s = t->procs[i].rec.title;
                        if (s && i != c->postmaster &&
                            title_cluster_name(s, strlen(s), c->cluster_name))
                                c->cluster_name_known = true;
                }
                if (c->cluster_name_known)
                        hint = c->cluster_name;
        }
        for (size_t i = from; i < to; i++) {
                const char *s = t->procs[i].rec.title;
                PgProcess *p = &t->procs[i];
                title_parse(s, s ? strlen(s) : 0, hint, &p->title);
                /* Only the cluster's head is its postmaster: anything else with its own command line
                 * (archive_command's shell, a tool exec'd by a backend) is of unknown kind. */
                if (p->title.backend_type == BACKEND_POSTMASTER && !(c && i == c->postmaster))
                        p->title.backend_type = BACKEND_UNKNOWN;
                /* another uid or program below a postmaster is no backend, whatever its title */
                if (p->identity == PG_IDENTITY_FOREIGN)
                        p->title.backend_type = BACKEND_UNKNOWN;
        }
}

static void link_leaders(PgTree *t, size_t from, size_t to) {
        for (size_t i = from; i < to; i++) {
                PgProcess *w = &t->procs[i];
                if (w->title.backend_type != BACKEND_PARALLEL_WORKER)
                        continue;
                w->leader_missing = true;
                for (size_t j = from; j < to; j++)
                        if (j != i && t->procs[j].rec.pid == w->title.leader_pid &&
                            t->procs[j].title.backend_type != BACKEND_PARALLEL_WORKER) {
                                w->leader = (int) j;
                                w->leader_missing = false;
                                /* pg_stat_activity shows a worker under its leader's role and
                                 * database; its title does not say them. */
                                memcpy(w->title.user, t->procs[j].title.user, sizeof w->title.user);
                                memcpy(w->title.database, t->procs[j].title.database, sizeof w->title.database);
                                break;
                        }
        }
}

void cluster_derive_name(PgCluster *c, pid_t pm_pid) {
        if (c->cluster_name_known && c->cluster_name[0])
                snprintf(c->name, sizeof c->name, "%s", c->cluster_name);
        else if (c->data_directory[0])
                snprintf(c->name, sizeof c->name, "%s", c->data_directory);
        else if (c->pmfile_valid && c->pmfile.port > 0)
                snprintf(c->name, sizeof c->name, "port %d", c->pmfile.port);
        else
                snprintf(c->name, sizeof c->name, "pid %d", (int) pm_pid);
}

void tree_set_server_major(PgTree *t, size_t ci, int major) {
        if (ci >= t->n_clusters)
                return;
        t->clusters[ci].server_major = major;
        for (size_t i = 0; i < t->n_procs; i++)
                if (t->procs[i].cluster == (int) ci)
                        t->procs[i].server_major = major;
}

int pg_version_parse(const char *buf, size_t len) {
        size_t i = 0;
        int v = 0;
        if (!buf)
                return -EINVAL;
        while (i < len && i < 3 && buf[i] >= '0' && buf[i] <= '9')
                v = v * 10 + (buf[i++] - '0');
        if (i == 0 || v < 7 || v > 99)
                return -EINVAL;
        if (i < len && buf[i] == '.') /* 9.6 */
                for (i++; i < len && buf[i] >= '0' && buf[i] <= '9'; i++)
                        ;
        if (i < len && buf[i] == '\r')
                i++;
        if (i < len && buf[i] == '\n')
                i++;
        return i == len ? v : -EINVAL;
}

int tree_build(const ProcRecord *recs, size_t n, PgTree *ret) {
        *ret = (PgTree){};
        if (n == 0)
                return 0;
        if (!recs)
                return -EINVAL;

        _cleanup_free_ size_t *by_pid = calloc(n, sizeof(size_t));
        _cleanup_free_ signed char *pm = malloc(n);
        _cleanup_free_ long *owner = malloc(n * sizeof(long));
        _cleanup_free_ int *depth = calloc(n, sizeof(int));
        if (!by_pid || !pm || !owner || !depth)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                by_pid[i] = i;
        bool sorted = true; /* the scanner's records come sorted by pid: no sort then */
        for (size_t i = 1; i < n && sorted; i++)
                sorted = recs[i - 1].pid < recs[i].pid;
        sort_base = recs;
        if (!sorted)
                qsort(by_pid, n, sizeof(size_t), cmp_by_pid);
        memset(pm, -1, n);
        Builder b = { .recs = recs, .n = n, .by_pid = by_pid, .pm = pm };

        PgTree t = {};
        size_t allocated = 0, c_allocated = 0;
        int r = 0;

        /* Membership: the owning postmaster, −2 orphan, −3 lookalike, −1 not PostgreSQL's. */
        size_t l_allocated = 0;
        char why[192];
        for (size_t i = 0; i < n; i++) {
                const ProcRecord *rec = &recs[i];
                owner[i] = -1;
                if (!alive(rec)) {
                        if (proc_comm_is_postgres(rec->comm))
                                t.n_dead++;
                        continue;
                }
                if (is_postmaster(&b, i))
                        continue;
                long parent = rec->ppid > 0 ? lookup(&b, rec->ppid) : -1;
                if (parent >= 0 && is_postmaster(&b, (size_t) parent)) {
                        owner[i] = parent;
                        depth[i] = 1;
                } else if (proc_comm_is_postgres(rec->comm) && child_title(rec)) {
                        owner[i] = owning_postmaster(&b, i, &depth[i]);
                        if (owner[i] < 0)
                                owner[i] = (int) judge(&b, rec, NULL, why, sizeof why) < 0 ? -3 : -2;
                } else if (looks_like_postmaster(rec) && pm_contradicts(rec, why, sizeof why) &&
                           !(parent >= 0 && looks_like_postmaster(&recs[parent])))
                        owner[i] = -3; /* not started by a postmaster-like parent: it claims to be one */
        }
        for (size_t k = 0; k < n; k++) {
                size_t i = by_pid[k];
                if (owner[i] != -3)
                        continue;
                if (!looks_like_postmaster(&recs[i]) || !pm_contradicts(&recs[i], why, sizeof why))
                        (void) judge(&b, &recs[i], NULL, why, sizeof why);
                if ((r = add_lookalike(&t, &l_allocated, &recs[i], why)) < 0)
                        goto fail;
        }

        /* Clusters in postmaster pid order, each followed by its processes in pid order. */
        for (size_t k = 0; k < n; k++) {
                size_t i = by_pid[k];
                if (!alive(&recs[i]) || !is_postmaster(&b, i))
                        continue;
                if (GROW(t.clusters, c_allocated, t.n_clusters + 1) < 0) {
                        r = -ENOMEM;
                        goto fail;
                }
                PgCluster *c = &t.clusters[t.n_clusters];
                *c = (PgCluster){ .postmaster = t.n_procs };
                size_t from = t.n_procs;
                r = append(&t, &allocated, &recs[i], (int) t.n_clusters, 0);
                for (size_t m = 0; r >= 0 && m < n; m++)
                        if (owner[by_pid[m]] == (long) i)
                                r = append(&t, &allocated, &recs[by_pid[m]], (int) t.n_clusters,
                                           depth[by_pid[m]]);
                if (r < 0)
                        goto fail;
                t.n_clusters++;
                for (size_t m = from; m < t.n_procs; m++) {
                        PgProcess *p = &t.procs[m];
                        p->identity = judge(&b, &p->rec, &recs[i], p->identity_why, sizeof p->identity_why);
                }
                parse_titles(&t, from, t.n_procs, c);
                link_leaders(&t, from, t.n_procs);
                cluster_derive_name(c, recs[i].pid);
        }

        size_t from = t.n_procs;
        for (size_t k = 0; k < n; k++)
                if (owner[by_pid[k]] == -2 && (r = append(&t, &allocated, &recs[by_pid[k]], -1, 0)) < 0)
                        goto fail;
        for (size_t m = from; m < t.n_procs; m++) {
                PgProcess *p = &t.procs[m];
                p->identity = judge(&b, &p->rec, NULL, p->identity_why, sizeof p->identity_why);
        }
        parse_titles(&t, from, t.n_procs, NULL);
        /* An orphaned parallel worker's leader can only be another orphan. */
        link_leaders(&t, from, t.n_procs);

        *ret = t;
        return 0;
fail:
        tree_free(&t);
        return r;
}

void tree_free(PgTree *t) {
        if (!t)
                return;
        for (size_t i = 0; i < t->n_procs; i++) {
                free(t->procs[i].rec.title);
                free(t->procs[i].cwd);
                free(t->procs[i].container);
        }
        free(t->procs);
        free(t->clusters);
        for (size_t i = 0; i < t->n_lookalikes; i++)
                free(t->lookalikes[i].rec.title);
        free(t->lookalikes);
        for (size_t i = 0; i < t->n_foreign; i++)
                free(t->foreign[i].rec.title);
        free(t->foreign);
        *t = (PgTree){};
}

double pg_process_start_time(const PgTree *t, const PgProcess *p) {
        if (p->cluster >= 0 && (size_t) p->cluster < t->n_clusters && t->clusters[p->cluster].remote)
                return p->act ? p->act->backend_start : 0; /* a managed server's session */
        if (t->hz == 0 || t->boot_time <= 0)
                return 0;
        return t->boot_time + (double) p->rec.start_ticks / (double) t->hz;
}

int tree_find(const PgTree *t, pid_t pid) {
        for (size_t i = 0; i < t->n_procs; i++)
                if (t->procs[i].rec.pid == pid)
                        return (int) i;
        return -1;
}

static bool next_line(const char **p, const char *end, const char **line, size_t *len) {
        if (*p >= end)
                return false;
        const char *nl = memchr(*p, '\n', (size_t) (end - *p));
        *line = *p;
        *len = nl ? (size_t) (nl - *p) : (size_t) (end - *p);
        *p = nl ? nl + 1 : end;
        return true;
}

static int parse_int_line(const char *s, size_t len, long long min, long long max, long long *ret) {
        char buf[32];
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\r'))
                len--;
        if (len == 0 || len >= sizeof buf)
                return -EINVAL;
        memcpy(buf, s, len);
        buf[len] = 0;
        char *e;
        errno = 0;
        long long v = strtoll(buf, &e, 10);
        if (errno || *e || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static void copy_line(const char *s, size_t len, char *dst, size_t size) {
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\r'))
                len--;
        while (len > 0 && s[0] == ' ')
                s++, len--;
        if (len >= size)
                len = size - 1;
        memcpy(dst, s, len);
        dst[len] = 0;
}

int pmfile_parse(const char *buf, size_t len, PmFile *ret) {
        PmFile f = {};
        const char *p = buf, *end = buf + len, *line;
        size_t l;
        long long v;
        if (!buf || !next_line(&p, end, &line, &l) || parse_int_line(line, l, -INT_MAX, INT_MAX, &v) < 0 || v == 0)
                return -EINVAL;
        f.pid = (pid_t) v;
        if (!next_line(&p, end, &line, &l) || l == 0 || line[0] != '/')
                return -EINVAL;
        copy_line(line, l, f.data_directory, sizeof f.data_directory);
        if (next_line(&p, end, &line, &l) && parse_int_line(line, l, 0, INT64_MAX, &v) == 0)
                f.start_time = v;
        if (next_line(&p, end, &line, &l) && parse_int_line(line, l, 1, 65535, &v) == 0)
                f.port = (int) v;
        if (next_line(&p, end, &line, &l))
                copy_line(line, l, f.socket_dir, sizeof f.socket_dir);
        if (next_line(&p, end, &line, &l))
                copy_line(line, l, f.listen_addr, sizeof f.listen_addr);
        /* line 7 is the shared memory key; line 8 (10+) the status */
        if (next_line(&p, end, &line, &l) && next_line(&p, end, &line, &l))
                copy_line(line, l, f.status, sizeof f.status);
        *ret = f;
        return 0;
}

/* PostgreSQL writes its own time(NULL) of startup; the process began a moment before. */
#define PMFILE_EARLY_S 2
#define PMFILE_LATE_S 5

bool pmfile_matches(const PmFile *f, pid_t pid, double proc_start, char *why, size_t why_size) {
        if (f->pid != pid) {
                if (f->pid < 0)
                        snprintf(why, why_size, "postmaster.pid belongs to a single-user backend, pid %d", (int) -f->pid);
                else
                        snprintf(why, why_size, "postmaster.pid belongs to pid %d", (int) f->pid);
                return false;
        }
        if (proc_start > 0) {
                if (f->start_time <= 0) {
                        snprintf(why, why_size, "postmaster.pid has no start time yet");
                        return false;
                }
                double d = (double) f->start_time - proc_start;
                if (d < -PMFILE_EARLY_S || d > PMFILE_LATE_S) {
                        snprintf(why, why_size, "postmaster.pid was written by an earlier pid %d (its start time is %.0fs off the process's)",
                                 (int) pid, d);
                        return false;
                }
        }
        return true;
}

static bool name_taken(const PgTree *t, size_t i) {
        for (size_t j = 0; j < t->n_clusters; j++)
                if (j != i && strcmp(t->clusters[i].name, t->clusters[j].name) == 0)
                        return true;
        return false;
}

void tree_unique_names(PgTree *t) {
        for (size_t i = 0; i < t->n_clusters; i++)
                t->clusters[i].name_shared = name_taken(t, i);
        /* every cluster of a shared name gets a suffix: port, else data directory, else pid; a
         * suffix still shared moves on to the next kind */
        _cleanup_free_ bool *rename = calloc(t->n_clusters ? t->n_clusters : 1, sizeof(bool));
        if (!rename)
                return;
        for (int pass = 0; pass < 3; pass++) {
                bool again = false;
                for (size_t i = 0; i < t->n_clusters; i++)
                        rename[i] = t->clusters[i].name_shared && (pass == 0 || name_taken(t, i));
                for (size_t i = 0; i < t->n_clusters; i++) {
                        PgCluster *c = &t->clusters[i];
                        if (!rename[i])
                                continue;
                        const char *base = c->cluster_name_known && c->cluster_name[0] ? c->cluster_name
                                           : c->data_directory[0]                   ? c->data_directory
                                                                                    : "";
                        int kind = pass;
                        if (kind == 0 && !(c->pmfile_valid && c->pmfile.port > 0))
                                kind = 1;
                        if (kind == 1 && (!c->data_directory[0] || strcmp(base, c->data_directory) == 0))
                                kind = 2;
                        if (kind == 0)
                                snprintf(c->name, sizeof c->name, "%.200s:%d", base, c->pmfile.port);
                        else if (kind == 1)
                                snprintf(c->name, sizeof c->name, "%.200s:%.3800s", base, c->data_directory);
                        else
                                snprintf(c->name, sizeof c->name, "%.200s%spid %d", base, *base ? ":" : "",
                                         (int) t->procs[c->postmaster].rec.pid);
                }
                for (size_t i = 0; i < t->n_clusters && !again; i++)
                        again = t->clusters[i].name_shared && name_taken(t, i);
                if (!again)
                        break;
        }
}
