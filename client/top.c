/* SPDX-License-Identifier: MIT */
/* pgtree top: a live, full-screen view fed by pgtreed's io.pgtree.Watch stream. It asks
 * PostgreSQL nothing itself; cancel and terminate go through the daemon's Signal method (with
 * all of its checks); there is no way to send SIGKILL from here. */
#include <ctype.h>
#include <curses.h>
#include <errno.h>
#include <fnmatch.h>
#include <json-c/json.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "macro.h"
#include "protocol.h"
#include "render.h"
#include "top.h"

#define MAX_STREAM_MESSAGE (256 * 1024 * 1024)
#define CALL_TIMEOUT_MS 10000
#define RECONNECT_MS 1000

typedef enum SortKey { SORT_CPU, SORT_DURATION, SORT_MEMORY, SORT_PID, _SORT_MAX } SortKey;
static const char *const sort_names[] = { "cpu", "duration", "memory", "pid" };

typedef struct Proc {
        json_object *o;                 /* borrowed from the snapshot */
        pid_t pid, ppid, leader;
        const char *cluster, *type, *user, *db, *client, *app, *state, *wait_type, *wait, *query, *status;
        bool query_hidden, own, orphan, session;
        double cpu, dur;                /* dur < 0: unknown */
        long long priv_kb;
        double io_rate;                 /* bytes/s, < 0: unknown */
        unsigned long long start_ticks, io_total;
        const char *finding;            /* the first open finding's kind, or NULL */
        int parent;                     /* index of the parent in the view's forest, or -1 */
        int blocked_by;                 /* the first pid that blocks it, or 0 */
        int blocking;                   /* how many sessions wait for it */
} Proc;

typedef struct Row {
        int proc;                       /* -1: a heading */
        char graph[96];
        char heading[512];
        bool context;                   /* shown only as the parent of what matches */
} Row;

typedef struct Filter {
        char *user, *db, *app, *state, *cluster, *any;
} Filter;

typedef struct Top {
        const char *socket_path;
        int fd;                         /* the Watch stream, or -1 */
        VarlinkBuffer in;
        bool ever_connected;
        long long next_connect_ms;
        json_object *snap, *pending;    /* the snapshot shown, and one received while paused */
        long long snap_cycle;
        double snap_time;
        /* the previous I/O counters, for rates */
        struct IoMark {
                pid_t pid;
                unsigned long long start_ticks, total;
        } *io_prev;
        size_t n_io_prev;
        double io_prev_at;
        Proc *procs;
        size_t n_procs;
        Row *rows;
        size_t n_rows, rows_cap;
        /* the view */
        SortKey sort;
        bool flat, hide_idle, paused, ascii, color;
        Filter filter;
        char filter_text[256], search[128];
        pid_t sel_pid, follow_pid, expand_pid;
        size_t sel, top_row;
        char message[512];
        bool message_error;
        long long message_until_ms;
} Top;

static long long now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void say(Top *t, bool error, const char *fmt, ...) _printf_(3, 4);
static void say(Top *t, bool error, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->message, sizeof t->message, fmt, ap);
        va_end(ap);
        t->message_error = error;
        t->message_until_ms = now_ms() + 8000;
}

/* ---- JSON helpers ---- */

static const char *jstr(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) && v && json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v)
                       : NULL;
}

static long long jint(json_object *o, const char *key, long long dflt) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) && v &&
                               (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))
                       ? json_object_get_int64(v)
                       : dflt;
}

static double jdouble(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) && v ? json_object_get_double(v) : 0;
}

static bool jbool(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) && v && json_object_get_boolean(v);
}

static double parse_iso(const char *s) {
        struct tm tm = {};
        return s && strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) ? (double) timegm(&tm) : 0;
}

/* ---- talking to pgtreed ---- */

static int send_call(int fd, const char *method, json_object *params, bool more) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "method", json_object_new_string(method));
        json_object_object_add(o, "parameters", params ? params : json_object_new_object());
        if (more)
                json_object_object_add(o, "more", json_object_new_boolean(true));
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        size_t len = strlen(s) + 1;
        ssize_t k = send(fd, s, len, MSG_NOSIGNAL);
        json_object_put(o);
        return k == (ssize_t) len ? 0 : -EIO;
}

/* One call on its own connection (the stream's connection reads no calls). */
static int call_once(Top *t, const char *method, json_object *params, json_object **ret, char **error) {
        return varlink_call_once(t->socket_path, method, params, CALL_TIMEOUT_MS, MAX_STREAM_MESSAGE, ret, error);
}

static void disconnect(Top *t) {
        if (t->fd >= 0)
                close(t->fd);
        t->fd = -1;
        varlink_buffer_clear(&t->in);
        t->next_connect_ms = now_ms() + RECONNECT_MS;
}

static void try_connect(Top *t) {
        if (t->fd >= 0 || now_ms() < t->next_connect_ms)
                return;
        int fd = varlink_connect_unix(t->socket_path, RECONNECT_MS);
        if (fd < 0 || send_call(fd, VARLINK_INTERFACE ".Watch", NULL, true) < 0) {
                if (fd >= 0)
                        close(fd);
                t->next_connect_ms = now_ms() + RECONNECT_MS;
                if (!t->message[0] || now_ms() > t->message_until_ms)
                        say(t, true, "pgtreed is not reachable on %s (%s): retrying every second", t->socket_path,
                            strerror(fd < 0 ? -fd : EIO));
                return;
        }
        t->fd = fd;
        if (t->ever_connected)
                say(t, false, "reconnected to pgtreed");
        t->ever_connected = true;
}

/* ---- the snapshot ---- */

static const char *short_type(const char *type) {
        static const struct {
                const char *from, *to;
        } m[] = {
                { "client backend", "backend" },  { "autovacuum launcher", "av launcher" },
                { "autovacuum worker", "av worker" }, { "background writer", "bgwriter" },
                { "logical replication launcher", "logical launcher" },
                { "logical replication apply worker", "apply worker" }, { "parallel worker", "parallel" },
        };
        for (size_t i = 0; type && i < ELEMENTSOF(m); i++)
                if (!strcmp(type, m[i].from))
                        return m[i].to;
        return type ? type : "?";
}

static void add_proc(Top *t, json_object *o, const char *cluster, bool orphan, size_t *cap) {
        if (GROW(t->procs, *cap, t->n_procs + 1) < 0)
                return;
        Proc *p = &t->procs[t->n_procs++];
        *p = (Proc){ .o = o, .cluster = cluster, .orphan = orphan, .parent = -1, .dur = -1, .io_rate = -1 };
        p->pid = (pid_t) jint(o, "pid", 0);
        p->ppid = (pid_t) jint(o, "ppid", 0);
        p->leader = (pid_t) jint(o, "leader_pid", 0);
        p->type = jstr(o, "backend_type");
        p->user = jstr(o, "user");
        p->db = jstr(o, "database");
        p->client = jstr(o, "client");
        p->app = jstr(o, "application_name");
        p->state = jstr(o, "state");
        p->status = jstr(o, "status");
        p->wait_type = jstr(o, "wait_event_type");
        p->wait = jstr(o, "wait_event");
        p->query = jstr(o, "query");
        p->query_hidden = jbool(o, "query_hidden");
        p->own = jbool(o, "pgtree_connection");
        p->cpu = jdouble(o, "cpu_percent");
        p->priv_kb = jint(o, "rss_anon_kb", 0);
        p->start_ticks = (unsigned long long) jint(o, "start_ticks", 0);
        p->session = p->type && (!strcmp(p->type, "client backend") || !strcmp(p->type, "parallel worker") ||
                                 !strcmp(p->type, "walsender"));
        json_object *v;
        if (json_object_object_get_ex(o, "read_bytes", &v) && v)
                p->io_total = (unsigned long long) jint(o, "read_bytes", 0) + (unsigned long long) jint(o, "write_bytes", 0);
        else
                p->io_total = (unsigned long long) -1;
        if (json_object_object_get_ex(o, "blocked_by", &v) && v && json_object_is_type(v, json_type_array) &&
            json_object_array_length(v) > 0)
                p->blocked_by = json_object_get_int(json_object_array_get_idx(v, 0));
        p->blocking = (int) jint(o, "blocking", 0);
        double since = parse_iso(jstr(o, p->state && !strcmp(p->state, "active") ? "query_start" : "state_change"));
        if (!since)
                since = parse_iso(jstr(o, "start_time"));
        if (since > 0 && t->snap_time > 0)
                p->dur = t->snap_time > since ? t->snap_time - since : 0;
}

/* Takes a Watch reply's parameters (owned) as the snapshot shown. */
static void take_snapshot(Top *t, json_object *params) {
        double prev_time = t->io_prev_at;
        /* remember the I/O counters of the snapshot that goes away */
        struct IoMark *marks = t->n_procs ? calloc(t->n_procs, sizeof *marks) : NULL;
        size_t n_marks = 0;
        for (size_t i = 0; marks && i < t->n_procs; i++)
                if (t->procs[i].io_total != (unsigned long long) -1)
                        marks[n_marks++] = (struct IoMark){ t->procs[i].pid, t->procs[i].start_ticks, t->procs[i].io_total };
        if (t->snap) {
                free(t->io_prev);
                t->io_prev = marks;
                t->n_io_prev = n_marks;
        } else
                free(marks);
        json_object_put(t->snap);
        t->snap = params;
        t->snap_cycle = jint(params, "cycle", 0);
        t->snap_time = parse_iso(jstr(params, "time"));
        t->io_prev_at = (double) now_ms() / 1000;
        t->n_procs = 0;
        size_t cap = 0;
        free(t->procs);
        t->procs = NULL;
        json_object *clusters, *orphans, *findings;
        if (json_object_object_get_ex(params, "clusters", &clusters) && json_object_is_type(clusters, json_type_array))
                for (size_t c = 0; c < json_object_array_length(clusters); c++) {
                        json_object *cl = json_object_array_get_idx(clusters, c), *procs;
                        if (json_object_object_get_ex(cl, "processes", &procs) && json_object_is_type(procs, json_type_array))
                                for (size_t i = 0; i < json_object_array_length(procs); i++)
                                        add_proc(t, json_object_array_get_idx(procs, i), jstr(cl, "name"), false, &cap);
                }
        if (json_object_object_get_ex(params, "orphans", &orphans) && json_object_is_type(orphans, json_type_array))
                for (size_t i = 0; i < json_object_array_length(orphans); i++)
                        add_proc(t, json_object_array_get_idx(orphans, i), NULL, true, &cap);
        if (json_object_object_get_ex(params, "findings", &findings) && json_object_is_type(findings, json_type_array))
                for (size_t k = 0; k < json_object_array_length(findings); k++) {
                        json_object *f = json_object_array_get_idx(findings, k);
                        pid_t pid = (pid_t) jint(f, "pid", 0);
                        for (size_t i = 0; i < t->n_procs; i++)
                                if (t->procs[i].pid == pid && !t->procs[i].finding)
                                        t->procs[i].finding = jstr(f, "kind");
                }
        double dt = t->io_prev_at - prev_time;
        for (size_t i = 0; i < t->n_procs && dt > 0.05; i++) {
                Proc *p = &t->procs[i];
                for (size_t k = 0; p->io_total != (unsigned long long) -1 && k < t->n_io_prev; k++)
                        if (t->io_prev[k].pid == p->pid && t->io_prev[k].start_ticks == p->start_ticks &&
                            p->io_total >= t->io_prev[k].total) {
                                p->io_rate = (double) (p->io_total - t->io_prev[k].total) / dt;
                                break;
                        }
        }
}

static int find_proc(const Top *t, pid_t pid) {
        for (size_t i = 0; i < t->n_procs; i++)
                if (t->procs[i].pid == pid)
                        return (int) i;
        return -1;
}

/* ---- filters ---- */

static void filter_clear(Filter *f) {
        free(f->user);
        free(f->db);
        free(f->app);
        free(f->state);
        free(f->cluster);
        free(f->any);
        *f = (Filter){};
}

static bool filter_active(const Filter *f) {
        return f->user || f->db || f->app || f->state || f->cluster || f->any;
}

/* "user=alice db=shop* app=... state=idle* cluster=main word": globs; a bare word is looked for
 * in user, database, application and cluster. */
static int filter_parse(const char *text, Filter *ret, char *why, size_t size) {
        Filter f = {};
        char *copy = strdup(text), *save = NULL;
        if (!copy)
                return -ENOMEM;
        for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
                char *eq = strchr(w, '=');
                char **slot;
                if (!eq) {
                        slot = &f.any;
                        free(*slot);
                        if (asprintf(slot, "*%s*", w) < 0)
                                *slot = NULL;
                        continue;
                }
                *eq = 0;
                if (!strcmp(w, "user") || !strcmp(w, "u"))
                        slot = &f.user;
                else if (!strcmp(w, "db") || !strcmp(w, "database") || !strcmp(w, "d"))
                        slot = &f.db;
                else if (!strcmp(w, "app") || !strcmp(w, "application") || !strcmp(w, "application_name") || !strcmp(w, "a"))
                        slot = &f.app;
                else if (!strcmp(w, "state") || !strcmp(w, "s"))
                        slot = &f.state;
                else if (!strcmp(w, "cluster") || !strcmp(w, "c"))
                        slot = &f.cluster;
                else {
                        snprintf(why, size, "unknown filter field '%s' (user, db, app, state, cluster)", w);
                        free(copy);
                        filter_clear(&f);
                        return -EINVAL;
                }
                free(*slot);
                *slot = strdup(eq + 1);
        }
        free(copy);
        *ret = f;
        return 0;
}

static bool glob(const char *pattern, const char *value) {
        return !pattern || (value && fnmatch(pattern, value, 0) == 0);
}

static bool matches(const Top *t, const Proc *p) {
        if (t->hide_idle && p->state && !strcmp(p->state, "idle"))
                return false;
        const Filter *f = &t->filter;
        if (!filter_active(f))
                return true;
        if (!glob(f->user, p->user) || !glob(f->db, p->db) || !glob(f->app, p->app) || !glob(f->state, p->state) ||
            !glob(f->cluster, p->cluster))
                return false;
        return !f->any || glob(f->any, p->user) || glob(f->any, p->db) || glob(f->any, p->app) || glob(f->any, p->cluster);
}

/* ---- building the rows ---- */

static double sort_value(const Top *t, const Proc *p) {
        switch (t->sort) {
        case SORT_CPU:
                return p->cpu;
        case SORT_DURATION:
                return p->dur;
        case SORT_MEMORY:
                return (double) p->priv_kb;
        default:
                return -(double) p->pid;
        }
}

static const Top *sort_ctx;

static int cmp_procs(const void *a, const void *b) {
        const Proc *x = &sort_ctx->procs[*(const int *) a], *y = &sort_ctx->procs[*(const int *) b];
        double u = sort_value(sort_ctx, x), v = sort_value(sort_ctx, y);
        if (u != v)
                return u < v ? 1 : -1; /* largest first */
        return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static Row *add_row(Top *t) {
        if (GROW(t->rows, t->rows_cap, t->n_rows + 1) < 0)
                return NULL;
        Row *r = &t->rows[t->n_rows++];
        *r = (Row){ .proc = -1 };
        return r;
}

/* The parent in the forest: a parallel worker's leader when it is there, else the parent
 * process, when it is in the same cluster. */
static void link_parents(Top *t) {
        for (size_t i = 0; i < t->n_procs; i++) {
                Proc *p = &t->procs[i];
                p->parent = -1;
                pid_t up = p->leader > 0 && p->leader != p->pid ? p->leader : p->ppid;
                for (size_t k = 0; k < t->n_procs; k++)
                        if (k != i && t->procs[k].pid == up && t->procs[k].orphan == p->orphan &&
                            ((!p->cluster && !t->procs[k].cluster) ||
                             (p->cluster && t->procs[k].cluster && !strcmp(p->cluster, t->procs[k].cluster)))) {
                                p->parent = (int) k;
                                break;
                        }
        }
}

static bool subtree_visible(const Top *t, int i, int depth) {
        if (matches(t, &t->procs[i]))
                return true;
        if (depth > 16)
                return false;
        for (size_t k = 0; k < t->n_procs; k++)
                if (t->procs[k].parent == i && subtree_visible(t, (int) k, depth + 1))
                        return true;
        return false;
}

static void add_subtree(Top *t, int i, const char *indent, bool last, int depth) {
        Row *r = add_row(t);
        if (!r)
                return;
        const char *branch = t->ascii ? (last ? "`- " : "|- ") : (last ? "└─ " : "├─ ");
        const char *pipe = t->ascii ? "|  " : "│  ";
        r->proc = i;
        r->context = !matches(t, &t->procs[i]);
        if (depth > 0)
                snprintf(r->graph, sizeof r->graph, "%s%s", indent, branch);
        int *kids = calloc(t->n_procs + 1, sizeof *kids);
        size_t n = 0;
        for (size_t k = 0; kids && k < t->n_procs && depth < 16; k++)
                if (t->procs[k].parent == i && subtree_visible(t, (int) k, 0))
                        kids[n++] = (int) k;
        sort_ctx = t;
        qsort(kids, n, sizeof *kids, cmp_procs);
        char next[96];
        snprintf(next, sizeof next, "%s%s", depth > 0 ? indent : "", depth > 0 ? (last ? "   " : pipe) : "");
        for (size_t k = 0; k < n; k++)
                add_subtree(t, kids[k], next, k + 1 == n, depth + 1);
        free(kids);
}

/* A lock chain: what proc i blocks (the sessions whose first blocker it is), depth first; each
 * process once (a cycle of waiters ends), at most 16 deep. */
static void add_lock_subtree(Top *t, int i, const char *indent, bool last, int depth, bool *seen) {
        Row *r = add_row(t);
        if (!r)
                return;
        seen[i] = true;
        r->proc = i;
        const char *branch = t->ascii ? (last ? "`- " : "|- ") : (last ? "└─ " : "├─ ");
        if (depth > 0)
                snprintf(r->graph, sizeof r->graph, "%s%s", indent, branch);
        size_t n = 0;
        int kids[64];
        for (size_t k = 0; k < t->n_procs && n < ELEMENTSOF(kids) && depth < 16; k++)
                if (!seen[k] && t->procs[k].blocked_by == t->procs[i].pid && t->procs[k].cluster && t->procs[i].cluster &&
                    !strcmp(t->procs[k].cluster, t->procs[i].cluster))
                        kids[n++] = (int) k;
        char next[96];
        snprintf(next, sizeof next, "%s%s", depth > 0 ? indent : "", depth > 0 ? (last ? "   " : t->ascii ? "|  " : "│  ") : "");
        for (size_t k = 0; k < n; k++)
                if (!seen[kids[k]])
                        add_lock_subtree(t, kids[k], next, k + 1 == n, depth + 1, seen);
}

/* Under a cluster's tree: its lock chains, root blocker → the sessions waiting behind it. */
static void add_lock_chains(Top *t, const char *cluster) {
        bool *seen = calloc(t->n_procs + 1, sizeof(bool));
        bool any = false;
        for (size_t i = 0; seen && i < t->n_procs; i++) {
                const Proc *p = &t->procs[i];
                if (p->blocking <= 0 || p->blocked_by || !p->cluster || strcmp(p->cluster, cluster) != 0)
                        continue;
                if (!any) {
                        Row *h = add_row(t);
                        if (h)
                                snprintf(h->heading, sizeof h->heading, "lock chains (root blocker -> the sessions waiting behind it)");
                }
                any = true;
                add_lock_subtree(t, (int) i, "", true, 0, seen);
        }
        free(seen);
}

static void build_rows(Top *t) {
        t->n_rows = 0;
        if (!t->snap)
                return;
        link_parents(t);
        if (t->flat) {
                int *idx = calloc(t->n_procs + 1, sizeof *idx);
                size_t n = 0;
                for (size_t i = 0; idx && i < t->n_procs; i++)
                        if (t->procs[i].session && !t->procs[i].own && matches(t, &t->procs[i]))
                                idx[n++] = (int) i;
                sort_ctx = t;
                qsort(idx, n, sizeof *idx, cmp_procs);
                for (size_t k = 0; k < n; k++) {
                        Row *r = add_row(t);
                        if (r)
                                r->proc = idx[k];
                }
                free(idx);
                return;
        }
        json_object *clusters;
        if (json_object_object_get_ex(t->snap, "clusters", &clusters))
                for (size_t c = 0; c < json_object_array_length(clusters); c++) {
                        json_object *cl = json_object_array_get_idx(clusters, c), *pm;
                        const char *name = jstr(cl, "name");
                        if (t->filter.cluster && !glob(t->filter.cluster, name))
                                continue;
                        Row *h = add_row(t);
                        if (!h)
                                return;
                        json_object_object_get_ex(cl, "postmaster", &pm);
                        const char *act = jstr(cl, "activity");
                        char port[32] = "";
                        if (jint(pm, "port", 0) > 0)
                                snprintf(port, sizeof port, "  port %lld", jint(pm, "port", 0));
                        snprintf(h->heading, sizeof h->heading, "cluster %s  %s%s%s", name ? name : "?",
                                 jstr(pm, "data_directory") ?: "", port, jbool(cl, "enforce") ? "  [enforcing]" : "");
                        if (act && strcmp(act, "ok")) {
                                size_t l = strlen(h->heading);
                                snprintf(h->heading + l, sizeof h->heading - l, "  activity %s", act);
                        }
                        int root = find_proc(t, (pid_t) jint(pm, "pid", 0));
                        if (root >= 0)
                                add_subtree(t, root, "", true, 0);
                        if (name)
                                add_lock_chains(t, name);
                }
        bool any = false;
        for (size_t i = 0; i < t->n_procs; i++) {
                if (!t->procs[i].orphan || t->procs[i].parent >= 0 || !subtree_visible(t, (int) i, 0))
                        continue;
                if (!any) {
                        Row *h = add_row(t);
                        if (h)
                                snprintf(h->heading, sizeof h->heading, "ORPHANS: PostgreSQL processes with no live postmaster");
                }
                any = true;
                add_subtree(t, (int) i, "", true, 0);
        }
}

/* ---- drawing ---- */

enum { PAIR_HEAD = 1, PAIR_ORPHAN, PAIR_FINDING, PAIR_WAIT, PAIR_ACTIVE, PAIR_DIM, PAIR_ERROR };

static attr_t attr_of(const Top *t, int pair, attr_t fallback) {
        return t->color ? (attr_t) COLOR_PAIR(pair) : fallback;
}

/* Writes s at (y, x) in at most width columns: multibyte text is measured with wcwidth in a
 * UTF-8 locale; elsewhere (and for anything invalid or unprintable) one '?' per byte. Line
 * breaks and tabs become spaces; with squeeze (query text), runs of blanks one space. Returns
 * the columns used. */
static int put_text_ex(int y, int x, const char *s, int width, bool squeeze) {
        int used = 0;
        bool blank = false;
        mbstate_t st = {};
        move(y, x);
        while (s && *s && used < width) {
                if (*s == '\n' || *s == '\t' || *s == '\r' || *s == ' ') {
                        if (!squeeze || (!blank && used > 0)) {
                                addch(' ');
                                used++;
                        }
                        blank = true;
                        s++;
                        continue;
                }
                blank = false;
                wchar_t wc;
                size_t k = MB_CUR_MAX > 1 ? mbrtowc(&wc, s, MB_CUR_MAX, &st) : (size_t) -1;
                if (k == (size_t) -1 || k == (size_t) -2 || k == 0) {
                        memset(&st, 0, sizeof st);
                        unsigned char ch = (unsigned char) *s;
                        addch(ch >= 0x20 && ch < 0x7f ? ch : '?');
                        used++;
                        s++;
                        continue;
                }
                int w = wcwidth(wc);
                if (w < 0 || (wc < 0x20) || wc == 0x7f) {
                        addch('?');
                        used++;
                } else {
                        if (used + w > width)
                                break;
                        addnwstr(&wc, 1);
                        used += w;
                }
                s += k;
        }
        return used;
}

static int put_text(int y, int x, const char *s, int width) {
        return put_text_ex(y, x, s, width, false);
}

static void fmt_kb(long long kb, char *buf, size_t size) {
        if (kb < 1024)
                snprintf(buf, size, "%lldK", kb);
        else if (kb < 1024 * 1024)
                snprintf(buf, size, "%.1fM", (double) kb / 1024);
        else
                snprintf(buf, size, "%.1fG", (double) kb / (1024 * 1024));
}

static void fmt_rate(double r, char *buf, size_t size) {
        if (r < 0)
                snprintf(buf, size, "-");
        else if (r < 1024)
                snprintf(buf, size, "%.0fB", r);
        else if (r < 1024 * 1024)
                snprintf(buf, size, "%.0fK", r / 1024);
        else
                snprintf(buf, size, "%.1fM", r / (1024 * 1024));
}

static const char *short_state(const char *s) {
        if (!s)
                return "";
        if (!strcmp(s, "idle in transaction"))
                return "idle tx";
        if (!strcmp(s, "idle in transaction (aborted)"))
                return "idle tx!";
        return s;
}

/* Columns, by how long they stay when the terminal narrows (drop = lowest first). */
enum { COL_PID, COL_TYPE, COL_USER, COL_DB, COL_CLIENT, COL_APP, COL_STATE, COL_TIME, COL_WAIT, COL_CPU, COL_PRIV,
       COL_IO, _COL_MAX };
static const struct {
        const char *title;
        int width, keep; /* keep: higher stays longer */
        bool right;
} cols[_COL_MAX] = {
        [COL_PID] = { "PID", 7, 100, true },     [COL_TYPE] = { "TYPE", 10, 40 },
        [COL_USER] = { "USER", 10, 90 },         [COL_DB] = { "DATABASE", 10, 70 },
        [COL_CLIENT] = { "CLIENT", 15, 20 },     [COL_APP] = { "APPLICATION", 12, 30 },
        [COL_STATE] = { "STATE", 8, 95 },        [COL_TIME] = { "TIME", 6, 96, true },
        [COL_WAIT] = { "WAIT", 16, 50 },         [COL_CPU] = { "CPU%", 5, 97, true },
        [COL_PRIV] = { "PRIV", 6, 80, true },    [COL_IO] = { "IO/s", 6, 10, true },
};

/* Which columns fit: leave at least 24 columns to the process and its query. */
static void choose_columns(bool *on, bool flat) {
        int total = 0;
        for (int c = 0; c < _COL_MAX; c++) {
                /* the tree names each process's type where it stands */
                on[c] = c != COL_TYPE || flat;
                total += on[c] ? cols[c].width + 1 : 0;
        }
        while (total > COLS - 24) {
                int drop = -1;
                for (int c = 0; c < _COL_MAX; c++)
                        if (on[c] && c != COL_PID && (drop < 0 || cols[c].keep < cols[drop].keep))
                                drop = c;
                if (drop < 0)
                        break;
                on[drop] = false;
                total -= cols[drop].width + 1;
        }
}

static void cell(int y, int *x, int c, const char *text) {
        int w = cols[c].width;
        if (cols[c].right) {
                int l = (int) strlen(text);
                if (l < w)
                        mvhline(y, *x, ' ', w - l);
                put_text(y, *x + (l < w ? w - l : 0), text, l < w ? l : w);
        } else
                put_text(y, *x, text, w);
        *x += w + 1;
}

static bool row_matches_search(const Top *t, const Row *r) {
        if (!t->search[0])
                return false;
        if (r->proc < 0)
                return strcasestr(r->heading, t->search) != NULL;
        const Proc *p = &t->procs[r->proc];
        char pid[16];
        snprintf(pid, sizeof pid, "%d", (int) p->pid);
        const char *f[] = { pid, p->type, p->user, p->db, p->client, p->app, p->state, p->query, p->cluster, p->wait };
        for (size_t i = 0; i < ELEMENTSOF(f); i++)
                if (f[i] && strcasestr(f[i], t->search))
                        return true;
        return false;
}

static void draw_row(Top *t, int y, const Row *r, bool selected, const bool *on) {
        move(y, 0);
        clrtoeol();
        if (r->proc < 0) {
                attron(A_BOLD | attr_of(t, strncmp(r->heading, "ORPHANS", 7) ? PAIR_HEAD : PAIR_ORPHAN, 0));
                put_text(y, 0, r->heading, COLS);
                attrset(A_NORMAL);
                return;
        }
        const Proc *p = &t->procs[r->proc];
        attr_t attr = A_NORMAL;
        if (p->orphan || (p->finding && !strncmp(p->finding, "orphan", 6)))
                attr = attr_of(t, PAIR_ORPHAN, A_BOLD);
        else if (p->finding)
                attr = attr_of(t, PAIR_FINDING, A_BOLD);
        else if (p->blocked_by || (p->wait_type && !strcmp(p->wait_type, "Lock")))
                attr = attr_of(t, PAIR_WAIT, A_UNDERLINE);
        else if (r->context)
                attr = attr_of(t, PAIR_DIM, A_DIM);
        if (row_matches_search(t, r))
                attr |= A_BOLD;
        if (selected)
                attr |= A_REVERSE;
        attrset(attr);
        if (selected)
                mvhline(y, 0, ' ', COLS);
        char buf[64];
        int x = 0;
        for (int c = 0; c < _COL_MAX; c++) {
                if (!on[c])
                        continue;
                const char *v = "";
                switch (c) {
                case COL_PID:
                        snprintf(buf, sizeof buf, "%d", (int) p->pid);
                        v = buf;
                        break;
                case COL_TYPE:
                        v = short_type(p->type);
                        break;
                case COL_USER:
                        v = p->user ?: "";
                        break;
                case COL_DB:
                        v = p->db ?: "";
                        break;
                case COL_CLIENT:
                        v = p->client ?: "";
                        break;
                case COL_APP:
                        v = p->app ?: "";
                        break;
                case COL_STATE:
                        v = short_state(p->state);
                        break;
                case COL_TIME:
                        buf[0] = 0;
                        if (p->dur >= 0)
                                format_duration(p->dur, buf, sizeof buf);
                        v = buf;
                        break;
                case COL_WAIT:
                        if (p->wait_type && strcmp(p->wait_type, "Activity") && strcmp(p->wait_type, "Client"))
                                snprintf(buf, sizeof buf, "%s:%s", p->wait_type, p->wait ?: "?");
                        else
                                buf[0] = 0;
                        v = buf;
                        break;
                case COL_CPU:
                        snprintf(buf, sizeof buf, "%.1f", p->cpu);
                        v = buf;
                        break;
                case COL_PRIV:
                        fmt_kb(p->priv_kb, buf, sizeof buf);
                        v = buf;
                        break;
                case COL_IO:
                        fmt_rate(p->io_rate, buf, sizeof buf);
                        v = buf;
                        break;
                }
                cell(y, &x, c, v);
        }
        /* the process: its place in the tree, then the query (or what it is) */
        int w = COLS - x;
        if (w <= 0)
                return;
        int used = put_text(y, x, r->graph, w);
        x += used;
        w -= used;
        char what[256];
        if (p->blocked_by) {
                snprintf(what, sizeof what, "[blocked by %d] ", (int) p->blocked_by);
                used = put_text(y, x, what, w);
                x += used;
                w -= used;
        }
        if (p->finding && w > 0) {
                snprintf(what, sizeof what, "!%s ", p->finding);
                used = put_text(y, x, what, w);
                x += used;
                w -= used;
        }
        if (w <= 0)
                return;
        if (p->type && !strcmp(p->type, "client backend")) {
                if (p->query_hidden)
                        put_text(y, x, "(query text hidden: admins only)", w);
                else if (p->own)
                        put_text(y, x, "(pgtreed's own connection)", w);
                else
                        put_text_ex(y, x, p->query ?: "", w, true);
        } else {
                const char *wk = jstr(p->o, "worker");
                snprintf(what, sizeof what, "%s%s%s%s%s", p->type ?: "?", wk ? "  " : "", wk ?: "",
                         p->query && !p->query_hidden ? "  " : "", p->query && !p->query_hidden ? p->query : "");
                put_text_ex(y, x, what, w, true);
        }
        attrset(A_NORMAL);
}

static void draw_expand(Top *t) {
        int i = find_proc(t, t->expand_pid);
        int h = LINES - 4, w = COLS - 4;
        if (h < 3 || w < 20)
                return;
        WINDOW *win = newwin(h, w, 2, 2);
        if (!win)
                return;
        werase(win);
        box(win, 0, 0);
        int y = 1;
        char line[1024];
        if (i < 0)
                snprintf(line, sizeof line, "pid %d has ended (or is outside the view)", (int) t->expand_pid);
        else
                snprintf(line, sizeof line, "pid %d  (Enter or Esc closes)", (int) t->expand_pid);
        mvwaddnstr(win, y++, 2, line, w - 4);
        if (i >= 0) {
                const Proc *p = &t->procs[i];
                snprintf(line, sizeof line, "%-18s %s", "cluster", p->cluster ?: "(orphan: no live postmaster)");
                mvwaddnstr(win, y++, 2, line, w - 4);
                json_object_object_foreach(p->o, key, val) {
                        /* a reader's copy has no query text: say so where the query would stand,
                         * not below the fold with the other fields */
                        bool hidden = !val && p->query_hidden && !strcmp(key, "query");
                        if ((!val && !hidden) || y >= h - 1 || !strcmp(key, "query_hidden"))
                                continue;
                        const char *s = hidden ? "(query_hidden: query text is for admins only)"
                                        : json_object_is_type(val, json_type_string)
                                                ? json_object_get_string(val)
                                                : json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN);
                        snprintf(line, sizeof line, "%-18s ", key);
                        mvwaddnstr(win, y, 2, line, w - 4);
                        /* query text may be long: it wraps over the lines left */
                        int x0 = 2 + 19, room = w - 2 - x0;
                        const char *q = s;
                        do {
                                wmove(win, y, x0);
                                char chunk[1024];
                                size_t n = 0;
                                for (int k = 0; *q && k < room && n < sizeof chunk - 1; k++, q++)
                                        chunk[n++] = (unsigned char) *q < 0x20 || *q == 0x7f || ((unsigned char) *q >= 0x80 && MB_CUR_MAX == 1) ? '?' : *q;
                                chunk[n] = 0;
                                waddstr(win, chunk);
                                y++;
                        } while (*q && !strcmp(key, "query") && y < h - 1);
                }
                json_object *fa;
                if (json_object_object_get_ex(t->snap, "findings", &fa))
                        for (size_t k = 0; k < json_object_array_length(fa) && y < h - 1; k++) {
                                json_object *f = json_object_array_get_idx(fa, k);
                                if (jint(f, "pid", 0) != p->pid)
                                        continue;
                                snprintf(line, sizeof line, "finding            %s, %llds, rule %s: %s", jstr(f, "kind") ?: "?",
                                         jint(f, "duration_s", 0), jstr(f, "rule") ?: "-", jstr(f, "action") ?: "?");
                                mvwaddnstr(win, y++, 2, line, w - 4);
                        }
        }
        wnoutrefresh(win);
        delwin(win);
}

static void draw(Top *t) {
        erase();
        if (COLS < 40 || LINES < 6) {
                mvaddnstr(0, 0, "pgtree top: terminal too small", COLS);
                mvaddnstr(1, 0, "(40x6 at least)", COLS);
                refresh();
                return;
        }
        /* line 0: what is there */
        size_t sessions = 0, active = 0, idle_tx = 0, orphans = 0, waiting = 0;
        for (size_t i = 0; i < t->n_procs; i++) {
                const Proc *p = &t->procs[i];
                orphans += p->orphan;
                if (!p->type || strcmp(p->type, "client backend") || p->own)
                        continue;
                sessions++;
                active += p->state && !strcmp(p->state, "active");
                idle_tx += p->state && !strncmp(p->state, "idle in transaction", 19);
                waiting += p->wait_type && !strcmp(p->wait_type, "Lock");
        }
        json_object *fa = NULL, *cl = NULL;
        if (t->snap) {
                json_object_object_get_ex(t->snap, "findings", &fa);
                json_object_object_get_ex(t->snap, "clusters", &cl);
        }
        char line[1024], clock[16] = "--:--:--";
        if (t->snap_time > 0) {
                time_t tt = (time_t) t->snap_time;
                struct tm tm;
                localtime_r(&tt, &tm);
                strftime(clock, sizeof clock, "%H:%M:%S", &tm);
        }
        snprintf(line, sizeof line, "pgtree top  %s  cycle %lld  clusters %zu  sessions %zu (active %zu, idle in tx %zu, lock wait %zu)  orphans %zu  findings %zu",
                 clock, t->snap_cycle, cl ? json_object_array_length(cl) : (size_t) 0, sessions, active, idle_tx, waiting,
                 orphans, fa ? json_object_array_length(fa) : (size_t) 0);
        attron(A_BOLD);
        put_text(0, 0, line, COLS);
        attroff(A_BOLD);
        snprintf(line, sizeof line, "%s view, sort %s%s%s%s%s%s%s%s%s", t->flat ? "sessions" : "tree", sort_names[t->sort],
                 t->hide_idle ? ", idle hidden" : "", t->filter_text[0] ? ", filter: " : "", t->filter_text,
                 t->search[0] ? ", search: " : "", t->search, t->paused ? "   PAUSED (space resumes)" : "",
                 t->fd < 0 ? "   DISCONNECTED" : "", "");
        if (t->follow_pid) {
                size_t l = strlen(line);
                snprintf(line + l, sizeof line - l, ", following pid %d", (int) t->follow_pid);
        }
        put_text(1, 0, line, COLS);

        bool on[_COL_MAX];
        choose_columns(on, t->flat);
        attrset(A_REVERSE | A_BOLD);
        mvhline(2, 0, ' ', COLS);
        int x = 0;
        for (int c = 0; c < _COL_MAX; c++)
                if (on[c])
                        cell(2, &x, c, cols[c].title);
        if (x < COLS)
                put_text(2, x, t->flat ? "QUERY" : "PROCESS / QUERY", COLS - x);
        attrset(A_NORMAL);

        int first = 3, height = LINES - first - 1;
        if (t->n_rows == 0) {
                mvaddnstr(first, 0, !t->snap ? "waiting for pgtreed's first cycle..." : filter_active(&t->filter) || t->hide_idle
                                                                                         ? "nothing matches the filter"
                                                                                         : "no PostgreSQL processes",
                          COLS);
        } else {
                if (t->sel >= t->n_rows)
                        t->sel = t->n_rows - 1;
                if (t->sel < t->top_row)
                        t->top_row = t->sel;
                if (t->sel >= t->top_row + (size_t) height)
                        t->top_row = t->sel - (size_t) height + 1;
                if (t->top_row + (size_t) height > t->n_rows)
                        t->top_row = t->n_rows > (size_t) height ? t->n_rows - (size_t) height : 0;
                for (int k = 0; k < height && t->top_row + (size_t) k < t->n_rows; k++)
                        draw_row(t, first + k, &t->rows[t->top_row + (size_t) k], t->top_row + (size_t) k == t->sel, on);
        }
        /* the last line: a message, or the keys */
        move(LINES - 1, 0);
        clrtoeol();
        if (t->message[0] && now_ms() < t->message_until_ms) {
                attrset(t->message_error ? attr_of(t, PAIR_ERROR, A_BOLD) | A_BOLD : A_BOLD);
                put_text(LINES - 1, 0, t->message, COLS);
                attrset(A_NORMAL);
        } else
                put_text(LINES - 1, 0,
                         "q quit  arrows select  C/D/M/P sort  f filter  / search  i idle  v view  Enter expand  F follow  "
                         "space pause  c cancel  t terminate  ? help",
                         COLS);
        wnoutrefresh(stdscr);
        if (t->expand_pid)
                draw_expand(t);
        doupdate();
}

/* ---- input ---- */

static void on_stream(Top *t);

/* While a prompt waits for a key, the stream is still read (pgtreed drops a client that does
 * not read for 10 s). */
static int wait_key(Top *t) {
        for (;;) {
                struct pollfd p[2] = { { .fd = STDIN_FILENO, .events = POLLIN }, { .fd = t->fd, .events = POLLIN } };
                int ch = getch();
                if (ch != ERR)
                        return ch;
                int r = poll(p, t->fd >= 0 ? 2 : 1, 1000);
                if (r > 0 && t->fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
                        on_stream(t);
        }
}

/* A line of input on the last line; false if cancelled with Esc. */
static bool prompt(Top *t, const char *question, char *buf, size_t size) {
        size_t len = strlen(buf);
        for (;;) {
                move(LINES - 1, 0);
                clrtoeol();
                attron(A_BOLD);
                int used = put_text(LINES - 1, 0, question, COLS);
                attroff(A_BOLD);
                put_text(LINES - 1, used, buf, COLS - used - 1);
                curs_set(1);
                refresh();
                int ch = wait_key(t);
                if (ch == 27) {
                        curs_set(0);
                        return false;
                }
                if (ch == '\n' || ch == '\r' || ch == KEY_ENTER)
                        break;
                if ((ch == KEY_BACKSPACE || ch == 127 || ch == 8) && len > 0)
                        buf[--len] = 0;
                else if (ch == KEY_RESIZE)
                        draw(t);
                else if (ch >= 0x20 && ch < 0x100 && ch != 0x7f && len + 1 < size) {
                        buf[len++] = (char) ch;
                        buf[len] = 0;
                }
        }
        curs_set(0);
        return true;
}

static bool confirm(Top *t, const char *question) {
        move(LINES - 1, 0);
        clrtoeol();
        attrset(attr_of(t, PAIR_ERROR, 0) | A_BOLD);
        put_text(LINES - 1, 0, question, COLS);
        attrset(A_NORMAL);
        refresh();
        for (;;) {
                int ch = wait_key(t);
                if (ch == KEY_RESIZE)
                        continue;
                return ch == 'y' || ch == 'Y';
        }
}

static const Proc *selected(const Top *t) {
        if (t->sel >= t->n_rows || t->rows[t->sel].proc < 0)
                return NULL;
        return &t->procs[t->rows[t->sel].proc];
}

static void describe(const Proc *p, char *buf, size_t size) {
        char d[32] = "";
        if (p->dur >= 0)
                format_duration(p->dur, d, sizeof d);
        snprintf(buf, size, "pid %d %s@%s%s%s%s %s %s%s%.60s", (int) p->pid, p->user ?: "?", p->db ?: "?", p->app ? " [" : "",
                 p->app ?: "", p->app ? "]" : "", short_state(p->state), d, p->query && !p->query_hidden ? ": " : "",
                 p->query && !p->query_hidden ? p->query : "");
        for (char *c = buf; *c; c++)
                if ((unsigned char) *c < 0x20 || *c == 0x7f)
                        *c = ' ';
}

/* c and t: a dry run first (a reader is refused here, with the daemon's reason), then the
 * confirmation naming the session, then the Signal call. */
static void signal_selected(Top *t, const char *action) {
        const Proc *p = selected(t);
        if (!p) {
                say(t, true, "select a session first");
                return;
        }
        if (!p->type || strcmp(p->type, "client backend") || p->own) {
                say(t, true, "pid %d is a %s: pgtree cancels and terminates client backends only", (int) p->pid,
                    p->own ? "connection of pgtreed" : p->type ?: "process of unknown type");
                return;
        }
        pid_t pid = p->pid;
        char who[256];
        describe(p, who, sizeof who);
        for (int dry = 1; dry >= 0; dry--) {
                json_object *params = json_object_new_object(), *reply;
                json_object_object_add(params, "action", json_object_new_string(action));
                json_object_object_add(params, "pid", json_object_new_int(pid));
                if (dry)
                        json_object_object_add(params, "dry_run", json_object_new_boolean(true));
                char *error;
                int r = call_once(t, VARLINK_INTERFACE ".Signal", params, &reply, &error);
                if (r < 0) {
                        say(t, true, "%s pid %d: cannot reach pgtreed: %s", action, (int) pid, strerror(-r));
                        return;
                }
                if (error) {
                        const char *reason = jstr(reply, "reason");
                        if (!strcmp(error, "io.pgtree.PermissionDenied"))
                                say(t, true, "%s refused: %s", action, reason ?: "permission denied");
                        else if (!strcmp(error, "io.pgtree.NoSuchProcess"))
                                say(t, true, "%s: pid %d has ended", action, (int) pid);
                        else
                                say(t, true, "%s refused: %s %s", action, error, reason ?: "");
                        free(error);
                        json_object_put(reply);
                        return;
                }
                json_object *arr, *res = NULL;
                if (json_object_object_get_ex(reply, "results", &arr) && json_object_array_length(arr) > 0)
                        res = json_object_array_get_idx(arr, 0);
                if (dry) {
                        json_object_put(reply);
                        char q[512];
                        snprintf(q, sizeof q, "%s %s? (%s) y/N ", !strcmp(action, "terminate") ? "Terminate" : "Cancel the query of",
                                 who, !strcmp(action, "terminate") ? "SIGTERM" : "SIGINT");
                        if (!confirm(t, q)) {
                                say(t, false, "nothing done");
                                return;
                        }
                        continue;
                }
                const char *result = jstr(res, "result") ?: "?", *reason = jstr(res, "reason") ?: "";
                char clean[256];
                snprintf(clean, sizeof clean, "%s", reason);
                for (char *c = clean; *c; c++)
                        if ((unsigned char) *c < 0x20 || *c == 0x7f)
                                *c = '?';
                if (!strcmp(result, "sent"))
                        say(t, false, "%s", clean); /* "sent SIGTERM to pid N" */
                else
                        say(t, true, "pid %d: %s: %s", (int) pid, result, clean);
                json_object_put(reply);
        }
}

static void help_screen(Top *t) {
        static const char *const lines[] = {
                "pgtree top: the live view of pgtreed (every scan cycle, from the daemon's Watch stream)",
                "",
                "  Up/Down, PgUp/PgDn, Home/End   select a line",
                "  C  D  M  P                     sort by CPU, duration, private memory, pid",
                "  f                              filter: user=GLOB db=GLOB app=GLOB state=GLOB cluster=GLOB, or a word",
                "  /   n                          search (pid, user, database, application, query...), next match",
                "  i                              show or hide idle sessions",
                "  v                              tree of processes / flat table of sessions",
                "  Enter                          everything known about the selected process",
                "  F                              follow the selected pid (it stays selected; its end is told)",
                "  space                          pause / resume",
                "  c                              cancel the selected session's query (SIGINT), after confirmation",
                "  t                              terminate the selected session (SIGTERM), after confirmation",
                "  q                              quit",
                "",
                "Cancel and terminate go through pgtreed (admins only; a reader is told why not).",
                "There is no key for SIGKILL: on a backend it makes PostgreSQL end every session and run crash recovery.",
                "",
                "Any key returns.",
        };
        erase();
        for (size_t i = 0; i < ELEMENTSOF(lines) && (int) i < LINES; i++)
                put_text((int) i, 0, lines[i], COLS);
        refresh();
        (void) wait_key(t);
}

static void select_pid(Top *t, pid_t pid) {
        for (size_t k = 0; k < t->n_rows; k++)
                if (t->rows[k].proc >= 0 && t->procs[t->rows[k].proc].pid == pid) {
                        t->sel = k;
                        return;
                }
}

static void rebuild(Top *t) {
        build_rows(t);
        if (t->follow_pid && find_proc(t, t->follow_pid) < 0) {
                say(t, false, "pid %d has ended", (int) t->follow_pid);
                t->follow_pid = 0;
        }
        pid_t want = t->follow_pid ? t->follow_pid : t->sel_pid;
        if (want)
                select_pid(t, want);
        const Proc *p = selected(t);
        t->sel_pid = p ? p->pid : 0;
}

static void search_next(Top *t, size_t from) {
        for (size_t k = 0; k < t->n_rows; k++) {
                size_t i = (from + k) % t->n_rows;
                if (row_matches_search(t, &t->rows[i])) {
                        t->sel = i;
                        const Proc *p = selected(t);
                        t->sel_pid = p ? p->pid : 0;
                        return;
                }
        }
        say(t, true, "no line matches '%s'", t->search);
}

/* false: quit */
static bool on_key(Top *t, int ch) {
        size_t page = LINES > 5 ? (size_t) LINES - 5 : 1;
        if (t->expand_pid && (ch == 27 || ch == '\n' || ch == '\r' || ch == KEY_ENTER || ch == 'q')) {
                t->expand_pid = 0;
                return true;
        }
        switch (ch) {
        case 'q':
        case 'Q':
                return false;
        case KEY_UP:
        case 'k':
                if (t->sel > 0)
                        t->sel--;
                break;
        case KEY_DOWN:
        case 'j':
                if (t->sel + 1 < t->n_rows)
                        t->sel++;
                break;
        case KEY_PPAGE:
                t->sel = t->sel > page ? t->sel - page : 0;
                break;
        case KEY_NPAGE:
                t->sel = t->n_rows ? (t->sel + page < t->n_rows ? t->sel + page : t->n_rows - 1) : 0;
                break;
        case KEY_HOME:
        case 'g':
                t->sel = 0;
                break;
        case KEY_END:
        case 'G':
                t->sel = t->n_rows ? t->n_rows - 1 : 0;
                break;
        case 'C':
        case 'D':
        case 'M':
        case 'P':
                t->sort = ch == 'C' ? SORT_CPU : ch == 'D' ? SORT_DURATION : ch == 'M' ? SORT_MEMORY : SORT_PID;
                say(t, false, "sorted by %s", sort_names[t->sort]);
                break;
        case 'i':
                t->hide_idle = !t->hide_idle;
                say(t, false, t->hide_idle ? "idle sessions hidden" : "idle sessions shown");
                break;
        case 'v':
                t->flat = !t->flat;
                break;
        case 'f': {
                char buf[256];
                snprintf(buf, sizeof buf, "%s", t->filter_text);
                if (!prompt(t, "filter (user= db= app= state= cluster=, or a word; empty clears): ", buf, sizeof buf))
                        break;
                Filter f;
                char why[160];
                if (filter_parse(buf, &f, why, sizeof why) < 0) {
                        say(t, true, "%s", why);
                        break;
                }
                filter_clear(&t->filter);
                t->filter = f;
                snprintf(t->filter_text, sizeof t->filter_text, "%s", buf);
                break;
        }
        case '/': {
                char buf[128] = "";
                if (prompt(t, "search: ", buf, sizeof buf)) {
                        snprintf(t->search, sizeof t->search, "%s", buf);
                        if (buf[0])
                                search_next(t, t->sel);
                }
                return true;
        }
        case 'n':
                if (t->search[0])
                        search_next(t, t->sel + 1);
                return true;
        case ' ':
        case 'p':
                t->paused = !t->paused;
                if (!t->paused && t->pending) {
                        take_snapshot(t, t->pending);
                        t->pending = NULL;
                }
                break;
        case '\n':
        case '\r':
        case KEY_ENTER:
        case 'e':
                if (selected(t))
                        t->expand_pid = selected(t)->pid;
                break;
        case 'F':
                if (t->follow_pid)
                        t->follow_pid = 0;
                else if (selected(t))
                        t->follow_pid = selected(t)->pid;
                break;
        case 'c':
                signal_selected(t, "cancel");
                break;
        case 't':
                signal_selected(t, "terminate");
                break;
        case 'K':
        case '9':
                say(t, true, "pgtree never sends SIGKILL (PostgreSQL would end every session and recover); t terminates");
                break;
        case '?':
        case 'h':
                help_screen(t);
                break;
        case KEY_RESIZE:
                break;
        default:
                return true;
        }
        if (ch == KEY_UP || ch == KEY_DOWN || ch == 'k' || ch == 'j' || ch == KEY_PPAGE || ch == KEY_NPAGE ||
            ch == KEY_HOME || ch == KEY_END || ch == 'g' || ch == 'G') {
                const Proc *p = selected(t);
                t->sel_pid = p ? p->pid : 0;
                if (t->follow_pid && p && p->pid != t->follow_pid)
                        t->follow_pid = 0;
        }
        rebuild(t);
        return true;
}

/* Reads what the stream has; a reply replaces the snapshot (or waits while paused). */
static void on_stream(Top *t) {
        char buf[65536];
        ssize_t k = read(t->fd, buf, sizeof buf);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
                disconnect(t);
                say(t, true, "pgtreed went away (restarting?): reconnecting; the screen shows its last cycle");
                return;
        }
        if (k < 0)
                return;
        if (varlink_buffer_feed(&t->in, buf, (size_t) k, MAX_STREAM_MESSAGE) < 0) {
                disconnect(t);
                say(t, true, "pgtreed sent a reply too large to read: reconnecting");
                return;
        }
        char *m;
        size_t ml;
        while (varlink_buffer_next(&t->in, &m, &ml) == 1) {
                json_object *params;
                char *error;
                int r = varlink_reply_parse(m, ml, &params, &error);
                free(m);
                if (r < 0)
                        continue;
                if (error) {
                        const char *reason = jstr(params, "reason");
                        say(t, true, "pgtreed: %s%s%s", error, reason ? ": " : "", reason ?: "");
                        free(error);
                        json_object_put(params);
                        if (t->fd >= 0)
                                disconnect(t);
                        t->next_connect_ms = now_ms() + 5 * RECONNECT_MS;
                        return;
                }
                if (t->paused) {
                        json_object_put(t->pending);
                        t->pending = params;
                } else {
                        take_snapshot(t, params);
                        rebuild(t);
                }
        }
}

int top_run(const char *socket_path, const TopOptions *o) {
        Top t = { .socket_path = socket_path, .fd = -1, .sort = SORT_CPU, .flat = o->flat,
                  .hide_idle = o->hide_idle };
        if (o->sort && strcmp(o->sort, "cpu")) {
                bool ok = false;
                for (int s = 0; s < _SORT_MAX && !ok; s++)
                        if (!strcmp(o->sort, sort_names[s])) {
                                t.sort = (SortKey) s;
                                ok = true;
                        }
                if (!ok) {
                        fprintf(stderr, "pgtree top: --sort: '%s' is not one of cpu, duration, memory, pid\n", o->sort);
                        return 2;
                }
        }
        if (o->filter) {
                char why[160];
                if (filter_parse(o->filter, &t.filter, why, sizeof why) < 0) {
                        fprintf(stderr, "pgtree top: --filter: %s\n", why);
                        return 2;
                }
                snprintf(t.filter_text, sizeof t.filter_text, "%s", o->filter);
        }
        if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
                fprintf(stderr, "pgtree top: needs a terminal (for a one-shot listing use 'pgtree tree' or 'pgtree sessions')\n");
                return 2;
        }
        /* the first connection says at once whether pgtreed is there at all */
        int fd = varlink_connect_unix(socket_path, CALL_TIMEOUT_MS);
        if (fd < 0) {
                fprintf(stderr, "pgtree top: cannot connect to pgtreed on %s: %s\n", socket_path, strerror(-fd));
                return fd == -EACCES || fd == -EPERM ? 4 : 5;
        }
        close(fd);
        setlocale(LC_ALL, "");
        t.ascii = strcmp(nl_langinfo(CODESET), "UTF-8") != 0;
        if (!initscr()) {
                fprintf(stderr, "pgtree top: cannot initialise the terminal\n");
                return 1;
        }
        cbreak();
        noecho();
        keypad(stdscr, TRUE);
        nodelay(stdscr, TRUE);
        set_escdelay(50);
        curs_set(0);
        const char *nc = getenv("NO_COLOR");
        t.color = has_colors() && !(nc && *nc);
        if (t.color) {
                start_color();
                use_default_colors();
                init_pair(PAIR_HEAD, COLOR_CYAN, -1);
                init_pair(PAIR_ORPHAN, COLOR_RED, -1);
                init_pair(PAIR_FINDING, COLOR_YELLOW, -1);
                init_pair(PAIR_WAIT, COLOR_MAGENTA, -1);
                init_pair(PAIR_ACTIVE, COLOR_GREEN, -1);
                init_pair(PAIR_DIM, COLOR_BLUE, -1);
                init_pair(PAIR_ERROR, COLOR_RED, -1);
        }
        try_connect(&t);
        bool running = true;
        while (running) {
                draw(&t);
                struct pollfd p[2] = { { .fd = STDIN_FILENO, .events = POLLIN }, { .fd = t.fd, .events = POLLIN } };
                int r = poll(p, t.fd >= 0 ? 2 : 1, t.fd >= 0 ? 1000 : RECONNECT_MS / 4);
                if (r < 0 && errno != EINTR)
                        break;
                if (r > 0 && t.fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
                        on_stream(&t);
                int ch;
                while (running && (ch = getch()) != ERR)
                        running = on_key(&t, ch);
                if (t.fd < 0)
                        try_connect(&t);
        }
        endwin();
        if (t.fd >= 0)
                close(t.fd);
        varlink_buffer_clear(&t.in);
        json_object_put(t.snap);
        json_object_put(t.pending);
        free(t.procs);
        free(t.rows);
        free(t.io_prev);
        filter_clear(&t.filter);
        return 0;
}
