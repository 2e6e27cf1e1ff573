/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activity.h"
#include "findings.h"
#include "join.h"
#include "locks.h"
#include "render.h"
#include "macro.h"
#include "rules.h"

static const char *const kind_names[_FINDING_KIND_MAX] = {
        [FINDING_ORPHAN_BACKEND] = "orphan_backend",
        [FINDING_STALE_ACTIVITY] = "stale_activity",
        [FINDING_UNLISTED_PROCESS] = "unlisted_process",
        [FINDING_ORPHAN_PARALLEL_WORKER] = "orphan_parallel_worker",
        [FINDING_CLIENT_GONE] = "client_gone",
        [FINDING_LONG_QUERY] = "long_query",
        [FINDING_IDLE_IN_TRANSACTION] = "idle_in_transaction",
        [FINDING_LONG_TRANSACTION] = "long_transaction",
        [FINDING_LOCK_WAIT] = "lock_wait",
        [FINDING_FOREIGN_PROCESS] = "foreign_process",
};

static const char *const action_names[_ACTION_MAX] = {
        [ACTION_LOG] = "log",
        [ACTION_ALERT] = "alert",
        [ACTION_CANCEL] = "cancel",
        [ACTION_TERMINATE] = "terminate",
};

const char *finding_kind_to_string(FindingKind k) {
        return (unsigned) k < _FINDING_KIND_MAX ? kind_names[k] : "unknown";
}

int finding_kind_from_string(const char *s) {
        for (unsigned i = 0; s && i < _FINDING_KIND_MAX; i++)
                if (strcmp(s, kind_names[i]) == 0)
                        return (int) i;
        return -EINVAL;
}

const char *action_to_string(Action a) {
        return (unsigned) a < _ACTION_MAX ? action_names[a] : "unknown";
}

int action_from_string(const char *s) {
        for (unsigned i = 0; s && i < _ACTION_MAX; i++)
                if (strcmp(s, action_names[i]) == 0)
                        return (int) i;
        return -EINVAL;
}

Finding *findings_add(Findings *f) {
        if (GROW(f->items, f->allocated, f->n + 1) < 0)
                return NULL;
        Finding *x = &f->items[f->n++];
        *x = (Finding){ .proc = -1, .action = ACTION_LOG, .xmin_age = -1, .uid = -1 };
        return x;
}

void findings_free(Findings *f) {
        if (!f)
                return;
        free(f->items);
        *f = (Findings){};
}


#define COPY(dst, src) snprintf((dst), sizeof(dst), "%s", (src) ? (src) : "")

static void fill_for_process(Finding *x, const PgTree *t, size_t i, FindingKind kind) {
        const PgProcess *p = &t->procs[i];
        *x = (Finding){ .proc = -1, .action = ACTION_LOG, .xmin_age = -1, .uid = -1 };
        x->kind = kind;
        x->pid = p->rec.pid;
        x->ns_pid = p->rec.ident.ns_pid > 0 ? p->rec.ident.ns_pid : 0;
        x->start_ticks = p->rec.start_ticks;
        x->proc = (int) i;
        if (p->cluster >= 0) {
                const PgCluster *cl = &t->clusters[p->cluster];
                COPY(x->cluster, cl->name);
                if (cl->cluster_name_known && strcmp(cl->cluster_name, cl->name) != 0)
                        COPY(x->cluster_name, cl->cluster_name);
                COPY(x->container, cl->container.name);
        } else {
                COPY(x->cluster, p->cwd);
                COPY(x->container, p->container);
        }
        COPY(x->user, proc_user(p));
        COPY(x->database, proc_database(p));
        COPY(x->application_name, proc_application(p));
        proc_client(p, x->client, sizeof x->client);
        COPY(x->backend_type, proc_backend_type(p));
        COPY(x->state, proc_state(p));
        if (p->act)
                x->xmin_age = p->act->xmin_age;
}

static Finding *add_for_process(Findings *out, const PgTree *t, size_t i, FindingKind kind) {
        Finding *x = findings_add(out);
        if (x)
                fill_for_process(x, t, i, kind);
        return x;
}

/* The root of the chain that blocks a lock_wait session, if it is a live process of its cluster
 * with its own pg_stat_activity row. */
static void add_blocker(Finding *x, const PgTree *t, const PgProcess *p, const ActivitySnapshot *snap) {
        pid_t root;
        unsigned depth = 0;
        int r = lock_root_blocker(snap, p->rec.pid, &root, &depth);
        size_t l = strlen(x->detail);
        if (r == -ELOOP) {
                x->lock_cycle = true;
                snprintf(x->detail + l, sizeof x->detail - l, "%sin a cycle of waiting sessions (a deadlock not detected yet)",
                         l ? "; " : "");
                return;
        }
        if (r < 0)
                return;
        int bi = tree_find(t, root);
        const PgProcess *b = bi >= 0 ? &t->procs[bi] : NULL;
        if (!b || b->cluster != p->cluster || !b->act) {
                snprintf(x->detail + l, sizeof x->detail - l, "%sblocked by pid %d (not a session of this cluster's tree)",
                         l ? "; " : "", (int) root);
                return;
        }
        x->blocker_pid = root;
        x->blocker_start_ticks = b->rec.start_ticks;
        x->blocker_depth = depth;
        COPY(x->blocker_user, proc_user(b));
        COPY(x->blocker_database, proc_database(b));
        COPY(x->blocker_application_name, proc_application(b));
        proc_client(b, x->blocker_client, sizeof x->blocker_client);
        COPY(x->blocker_backend_type, proc_backend_type(b));
        COPY(x->blocker_state, proc_state(b));
        x->blocker_state_change = b->act->state_change;
        x->blocker_xact_start = b->act->xact_start;
        char age[32] = "";
        if (b->act->state_change > 0 && t->now > 0)
                format_duration(t->now - b->act->state_change, age, sizeof age);
        snprintf(x->detail + l, sizeof x->detail - l, "%sroot blocker pid %d (%s%s%s%s)", l ? "; " : "", (int) root,
                 x->blocker_state[0] ? x->blocker_state : "state unknown", age[0] ? " for " : "", age,
                 depth > 1 ? ", through a chain" : "");
}

static bool pid_listed(const pid_t *pids, size_t n, pid_t pid) {
        for (size_t i = 0; i < n; i++)
                if (pids[i] == pid)
                        return true;
        return false;
}

/* Can a long runner that began at since be a finding now? */
static bool past_threshold(const PgTree *t, const uint64_t *min_after, FindingKind kind, double since) {
        if (!min_after)
                return true;
        if (min_after[kind] == UINT64_MAX)
                return false; /* no rule covers the kind */
        if (since <= 0)
                return true; /* unknown start: tracked from first sight */
        double age = t->now - since;
        return age >= 0 && age * 1e6 >= (double) min_after[kind];
}

/* A long-runner condition of a process: its kind, and since when (0: unknown, tracked from first
 * sight). */
typedef struct LongRunner {
        FindingKind kind;
        double since;
} LongRunner;

/* The long-runner conditions that hold for p now (at most one of each kind). */
static size_t long_runner_conditions(const PgTree *t, const PgProcess *p, LongRunner out[static 4]) {
        const PgCluster *c = &t->clusters[p->cluster];
        const char *state = proc_state(p);
        const ActivityRow *a = p->act;
        bool known = c->snapshot != NULL;
        size_t n = 0;
        if (state && !strcmp(state, "active") && (!known || (a && a->query_start > 0)))
                out[n++] = (LongRunner){ FINDING_LONG_QUERY, a ? a->query_start : 0 };
        if (state && !strncmp(state, "idle in transaction", 19) && (!known || (a && a->state_change > 0)))
                out[n++] = (LongRunner){ FINDING_IDLE_IN_TRANSACTION, a ? a->state_change : 0 };
        if (a && a->xact_start > 0)
                out[n++] = (LongRunner){ FINDING_LONG_TRANSACTION, a->xact_start };
        else if (!known && state && !strncmp(state, "idle in transaction", 19))
                out[n++] = (LongRunner){ FINDING_LONG_TRANSACTION, 0 };
        bool lock = a ? (a->wait_event_type && !strcmp(a->wait_event_type, "Lock"))
                      : (p->title.flags & TITLE_WAITING) && p->title.backend_type == BACKEND_CLIENT;
        /* PostgreSQL does not say when the wait began: its query's start bounds it */
        if (lock)
                out[n++] = (LongRunner){ FINDING_LOCK_WAIT, a ? a->query_start : 0 };
        return n;
}

static int detect_process(const PgTree *t, size_t i, const pid_t *gone, size_t n_gone, const uint64_t *min_after,
                          Findings *out) {
        const PgProcess *p = &t->procs[i];
        Finding *x;
        if (p->depth == 0 && !pg_process_is_orphan(p))
                return 0; /* the postmaster */
        if (p->own)
                return 0; /* pgtree's own connection */

        if (pg_process_is_orphan(p)) {
                /* The logger (and the stats collector, the archiver before 14) hold no shared memory:
                 * they do not keep the server from starting, and exit by themselves once the last
                 * process that writes to them is gone. The tree lists them; they are no finding. */
                if (!backend_type_holds_shared_memory(p->title.backend_type, p->server_major))
                        return 0;
                if (!(x = add_for_process(out, t, i, FINDING_ORPHAN_BACKEND)))
                        return -ENOMEM;
                snprintf(x->detail, sizeof x->detail,
                         "%s has no live postmaster (parent now %d) and is still attached to the dead server's "
                         "shared memory: the server cannot restart (\"pre-existing shared memory block is still "
                         "in use\") until it exits",
                         proc_backend_type(p), (int) p->rec.ppid);
                return 0; /* the server is gone: nothing else about it matters */
        }
        const PgCluster *c = &t->clusters[p->cluster];
        if (p->title.backend_type == BACKEND_PARALLEL_WORKER && p->leader_missing) {
                if (!(x = add_for_process(out, t, i, FINDING_ORPHAN_PARALLEL_WORKER)))
                        return -ENOMEM;
                snprintf(x->detail, sizeof x->detail, "its leader %d is gone", (int) p->title.leader_pid);
        }
        if (c->snapshot && !p->act && p->depth == 1 &&
            backend_type_listed(p->title.backend_type, c->snapshot->server_version / 10000)) {
                if (!(x = add_for_process(out, t, i, FINDING_UNLISTED_PROCESS)))
                        return -ENOMEM;
                x->since = pg_process_start_time(t, p);
                snprintf(x->detail, sizeof x->detail, "%s", p->act_mismatch
                         ? "pg_stat_activity lists its pid for an earlier session (pid reused)"
                         : "a child of the postmaster that pg_stat_activity does not list");
        }
        if (!c->remote && pid_listed(gone, n_gone, p->rec.pid)) { /* host pids only */
                if (!(x = add_for_process(out, t, i, FINDING_CLIENT_GONE)))
                        return -ENOMEM;
                snprintf(x->detail, sizeof x->detail, "its client connection %s is dead while it is %s",
                         x->client[0] ? x->client : "?", x->state[0] ? x->state : "running");
        }

        /* long runners */
        LongRunner lr[4];
        size_t n = long_runner_conditions(t, p, lr);
        for (size_t k = 0; k < n; k++) {
                if (!past_threshold(t, min_after, lr[k].kind, lr[k].since))
                        continue;
                if (!(x = add_for_process(out, t, i, lr[k].kind)))
                        return -ENOMEM;
                x->since = lr[k].since;
                if (lr[k].kind == FINDING_LOCK_WAIT) {
                        const ActivityRow *a = p->act;
                        if (a && a->wait_event)
                                snprintf(x->detail, sizeof x->detail, "waiting for a %s lock", a->wait_event);
                        if (a && c->snapshot)
                                add_blocker(x, t, p, c->snapshot);
                }
        }
        return 0;
}

static int detect_stale_rows(const PgTree *t, size_t ci, Findings *out) {
        const PgCluster *c = &t->clusters[ci];
        const ActivitySnapshot *s = c->snapshot;
        if (!s || s->n == 0)
                return 0;
        bool *alive = calloc(s->n, sizeof(bool));
        if (!alive)
                return -ENOMEM;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (p->cluster == (int) ci && p->act >= s->rows && p->act < s->rows + s->n)
                        alive[p->act - s->rows] = true;
        }
        for (size_t k = 0; k < s->n; k++) {
                const ActivityRow *r = &s->rows[k];
                if (alive[k] || r->pid == s->own_pid)
                        continue;
                Finding *x = findings_add(out);
                if (!x) {
                        free(alive);
                        return -ENOMEM;
                }
                x->kind = FINDING_STALE_ACTIVITY;
                x->pid = r->pid;
                x->start_ticks = (uint64_t) (r->backend_start * 100.0);
                COPY(x->cluster, c->name);
                if (c->cluster_name_known && strcmp(c->cluster_name, c->name) != 0)
                        COPY(x->cluster_name, c->cluster_name);
                COPY(x->container, c->container.name);
                COPY(x->user, r->usename);
                COPY(x->database, r->datname);
                COPY(x->application_name, r->application_name);
                COPY(x->backend_type, r->backend_type);
                COPY(x->state, r->state);
                x->xmin_age = r->xmin_age;
                snprintf(x->detail, sizeof x->detail, "pg_stat_activity lists pid %d, which has no live process in the cluster",
                         (int) r->pid);
        }
        free(alive);
        return 0;
}

/* One foreign process: its own facts, and its backend's (user, database, client, query). */
static int detect_foreign(const PgTree *t, const PgForeign *g, Findings *out) {
        if (g->expected || g->allowed)
                return 0;
        Finding *x = findings_add(out);
        if (!x)
                return -ENOMEM;
        x->kind = FINDING_FOREIGN_PROCESS;
        x->pid = g->rec.pid;
        x->ns_pid = g->rec.ident.ns_pid > 0 ? g->rec.ident.ns_pid : 0;
        x->start_ticks = g->rec.start_ticks;
        COPY(x->cluster, t->clusters[g->cluster].name);
        COPY(x->container, t->clusters[g->cluster].container.name);
        COPY(x->command, g->rec.title);
        COPY(x->exe, g->exe);
        x->uid = g->rec.ident.ids_valid ? (long long) g->rec.ident.euid : (long long) g->rec.uid;
        x->ppid = g->rec.ppid;
        x->via_pid = g->via_pid;
        x->via_start_ticks = g->via_start_ticks;
        x->detached = g->detached;
        if (t->hz > 0 && t->boot_time > 0) {
                x->since = t->boot_time + (double) g->rec.start_ticks / (double) t->hz;
                double age = t->now - x->since;
                x->cpu_percent = age > 0.01 ? 100.0 * ((double) g->rec.cpu_ticks / (double) t->hz) / age : 0;
        }
        const PgProcess *b = g->via >= 0 ? &t->procs[g->via] : NULL;
        if (b) {
                COPY(x->user, proc_user(b));
                COPY(x->database, proc_database(b));
                COPY(x->application_name, proc_application(b));
                proc_client(b, x->client, sizeof x->client);
                COPY(x->backend_type, proc_backend_type(b));
                COPY(x->state, proc_state(b));
                if (b->act && b->act->query)
                        COPY(x->query, b->act->query);
        }
        int n = snprintf(x->detail, sizeof x->detail, "%s", g->why);
        if (g->via_pid > 0 && n > 0 && (size_t) n < sizeof x->detail)
                n += snprintf(x->detail + n, sizeof x->detail - (size_t) n, " (%s %d%s)",
                              b ? proc_backend_type(b) : "PostgreSQL process", (int) g->via_pid, b ? "" : ", gone");
        if (g->judged[0] && n > 0 && (size_t) n < sizeof x->detail)
                snprintf(x->detail + n, sizeof x->detail - (size_t) n, ": %s", g->judged);
        return 0;
}

int findings_detect(const PgTree *t, const pid_t *gone, size_t n_gone, Findings *ret) {
        return findings_detect_filtered(t, gone, n_gone, NULL, ret);
}

int findings_detect_filtered(const PgTree *t, const pid_t *gone, size_t n_gone, const uint64_t *min_after,
                             Findings *ret) {
        for (size_t i = 0; i < t->n_foreign; i++) {
                int r = detect_foreign(t, &t->foreign[i], ret);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < t->n_procs; i++) {
                int r = detect_process(t, i, gone, n_gone, min_after, ret);
                if (r < 0)
                        return r;
        }
        for (size_t c = 0; c < t->n_clusters; c++) {
                int r = detect_stale_rows(t, c, ret);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The earliest (or the latest) moment in (lo, hi] at which a long runner reaches the threshold of
 * a rule that then matches it, or 0. */
static double crossing_in(const PgTree *t, const Config *c, double lo, double hi, bool latest) {
        double best = 0;
        Finding f;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (p->depth == 0 || p->own || p->cluster < 0 || pg_process_is_orphan(p))
                        continue;
                LongRunner lr[4];
                size_t n = long_runner_conditions(t, p, lr);
                for (size_t k = 0; k < n; k++) {
                        if (lr[k].since <= 0)
                                continue; /* tracked from first sight: no moment known */
                        bool built = false;
                        Subject s, blocker;
                        for (size_t r = 0; r < c->n_rules; r++) {
                                const Rule *rule = &c->rules[r];
                                if (!(rule->kinds & (1u << lr[k].kind)) || rule->after_usec == 0)
                                        continue;
                                double at = lr[k].since + (double) rule->after_usec / 1e6;
                                if (at <= lo || at > hi || (best > 0 && (latest ? at <= best : at >= best)))
                                        continue;
                                if (!built) {
                                        fill_for_process(&f, t, i, lr[k].kind);
                                        f.since = lr[k].since;
                                        const PgCluster *cl = &t->clusters[p->cluster];
                                        if (lr[k].kind == FINDING_LOCK_WAIT && p->act && cl->snapshot)
                                                add_blocker(&f, t, p, cl->snapshot);
                                        built = true;
                                }
                                subject_of_finding(&f, rule->after_usec, &s, &blocker);
                                if (rule_matches(rule, &s))
                                        best = at;
                        }
                }
        }
        return best;
}

double findings_next_crossing(const PgTree *t, const Config *c, double window) {
        /* reached already: decided this cycle */
        double first = crossing_in(t, c, t->now, INFINITY, false);
        if (first <= 0 || window <= 0)
                return first;
        double last = crossing_in(t, c, first, first + window, true);
        return last > 0 ? last : first;
}
