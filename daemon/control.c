/* SPDX-License-Identifier: MIT */
/* The io.pgtree Varlink service on the control socket. */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/acl.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "build-config.h"
#include "access.h"
#include "alert.h"
#include "control.h"
#include "join.h"
#include "journal.h"
#include "macro.h"
#include "manager.h"
#include "metrics.h"
#include "pidref.h"
#include "protocol.h"
#include "render.h"

/* Connection limits. Readers (and peers with no role, who get nothing but GetInfo) share
 * MAX_READER_CLIENTS and have MAX_PER_READER each; admins MAX_PER_ADMIN each; root is bound only
 * by MAX_CLIENTS, so that root and admins always find a free slot however many readers
 * connect. */
#define MAX_CLIENTS 256
#define MAX_READER_CLIENTS 64
#define MAX_PER_READER 16
#define MAX_PER_ADMIN 64
#define CLIENT_IDLE_USEC (60 * USEC_PER_SEC)
/* A client whose queued reply does not drain for this long is dropped. */
#define CLIENT_WRITE_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define MAX_REQUESTS_PER_CLIENT 100000
/* Calls handled for one client before the loop turns to other work (the scan first). */
#define CALLS_PER_WAKEUP 4

typedef enum Role {
        ROLE_NONE,
        ROLE_READ,
        ROLE_ADMIN,
} Role;

/* A reply shared by every client it goes to (the Watch stream: rendered once per cycle and
 * role, whatever the number of subscribers). */
typedef struct Blob {
        unsigned n_ref;
        size_t len;
        char data[];
} Blob;

static Blob *blob_new(char *msg, size_t len) {
        Blob *b = msg ? malloc(sizeof *b + len) : NULL;
        if (b) {
                b->n_ref = 1;
                b->len = len;
                memcpy(b->data, msg, len);
        }
        free(msg);
        return b;
}

static Blob *blob_ref(Blob *b) {
        if (b)
                b->n_ref++;
        return b;
}

static Blob *blob_unref(Blob *b) {
        if (b && --b->n_ref == 0)
                free(b);
        return NULL;
}

typedef struct Client {
        struct ControlServer *server;
        int fd;
        sd_event_source *io;
        sd_event_source *idle;
        sd_event_source *stall;         /* write timeout: armed while a reply is queued */
        sd_event_source *defer;         /* more whole calls are buffered */
        VarlinkBuffer in;
        /* Backpressure: no call is handled while a reply is queued, so what waits here is at
         * most one reply (and an error after it). */
        char *out;
        size_t out_len, out_cap;
        /* A Watch subscriber reads no more calls; its stream reply of a cycle waits here
         * (shared, not copied), and only when nothing else is queued. */
        bool watching;
        Blob *blob;
        size_t blob_off;
        struct ucred cred;
        gid_t *groups;                  /* supplementary groups (SO_PEERGROUPS) */
        size_t n_groups;
        char comm[32];
        Role role;
        unsigned requests;
        bool closing;           /* flush what is queued, then disconnect */
        /* A Signal call whose reply waits for actions on managed servers: no other call is read
         * until it is answered. */
        struct SignalCall *call;
} Client;

/* The reply to a Signal call, complete once every pending action's outcome is known. The client
 * may go away meanwhile (client NULL): the outcomes are still logged, the reply is dropped. */
typedef struct SignalCall {
        Client *client;
        json_object *results;
        size_t n_pending;
} SignalCall;

typedef struct SignalSlot {
        SignalCall *call;
        json_object *result;            /* its element of call->results */
} SignalSlot;

struct ControlServer {
        Manager *manager;
        int fd;
        bool activated;
        char *path;             /* bound by us: removed on exit */
        sd_event_source *accept_source;
        sd_event_source *accept_retry;  /* out of descriptors: accepting again in a second */
        Client **clients;
        size_t n_clients, allocated;
        /* the groups of the configuration, resolved at start and on reload */
        bool have_admin_gid, have_reader_gid;
        gid_t admin_gid, reader_gid;
        /* the Tree reply of this cycle (without text): [0] with query text, [1] without */
        char *tree_cache[2];
        size_t tree_cache_len[2];
        /* the Watch reply of this cycle, rendered when first needed: [0] with query text, [1] without */
        Blob *watch_cache[2];
        uint64_t watch_renders;         /* for the tests: renders, not subscribers, cost */
};

static void client_free(Client *c) {
        if (!c)
                return;
        if (c->call)
                c->call->client = NULL; /* its actions still end and are logged */
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->idle);
        sd_event_source_disable_unref(c->stall);
        sd_event_source_disable_unref(c->defer);
        free(c->groups);
        if (c->fd >= 0)
                close(c->fd);
        varlink_buffer_clear(&c->in);
        free(c->out);
        blob_unref(c->blob);
        free(c);
}

static void client_drop(Client *c) {
        ControlServer *s = c->server;
        for (size_t i = 0; i < s->n_clients; i++)
                if (s->clients[i] == c) {
                        s->clients[i] = s->clients[--s->n_clients];
                        break;
                }
        client_free(c);
}

static bool call_buffered(const Client *c) {
        return c->in.len > 0 && memchr(c->in.data, 0, c->in.len);
}

/* Bytes waiting to be sent to the client. */
static size_t queued(const Client *c) {
        return c->out_len + (c->blob ? c->blob->len - c->blob_off : 0);
}

/* Reads only when nothing is queued and no whole call waits: a client that sends calls
 * without reading the replies is held back by its own socket buffers, not our memory. A
 * subscriber of Watch is not read at all (its hang-up still shows as EPOLLHUP). */
static void update_events(Client *c) {
        bool want_in = !c->closing && !c->watching && !c->call && queued(c) == 0 && !call_buffered(c);
        sd_event_source_set_io_events(c->io, (want_in ? EPOLLIN : 0) | (queued(c) ? EPOLLOUT : 0));
        if (queued(c) == 0)
                sd_event_source_set_enabled(c->stall, SD_EVENT_OFF);
        else if (sd_event_source_get_enabled(c->stall, NULL) == 0) {
                sd_event_source_set_time_relative(c->stall, CLIENT_WRITE_TIMEOUT_USEC);
                sd_event_source_set_enabled(c->stall, SD_EVENT_ONESHOT);
        }
        sd_event_source_set_enabled(c->defer, !c->closing && !c->watching && !c->call && queued(c) == 0 && call_buffered(c)
                                                      ? SD_EVENT_ONESHOT
                                                      : SD_EVENT_OFF);
}

static void queue(Client *c, char *msg, size_t len) {
        if (!msg)
                return;
        if (GROW(c->out, c->out_cap, c->out_len + len) < 0) {
                c->closing = true;
                c->out_len = 0;
                free(msg);
                return;
        }
        memcpy(c->out + c->out_len, msg, len);
        c->out_len += len;
        free(msg);
}

static void reply(Client *c, json_object *params) {
        size_t len = 0;
        char *msg = varlink_reply(params, &len);
        queue(c, msg, len);
}

static void reply_error(Client *c, const char *error, json_object *params) {
        size_t len = 0;
        char *msg = varlink_error(error, params, &len);
        queue(c, msg, len);
}

static json_object *one(const char *key, json_object *v) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, key, v);
        return o;
}

static void resolve_groups(ControlServer *s) {
        const Config *cfg = s->manager->config;
        struct {
                const char *key, *name;
                bool *have;
                gid_t *gid;
        } v[] = {
                { "socket_group", cfg->socket_group, &s->have_reader_gid, &s->reader_gid },
                { "admin_group", cfg->admin_group, &s->have_admin_gid, &s->admin_gid },
        };
        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                int r = access_resolve_group(v[i].name, v[i].gid);
                *v[i].have = r == 0;
                if (r < 0 && v[i].name && *v[i].name) {
                        LogEntry e = {};
                        log_add(&e, "PGTREE_GROUP", "%s", v[i].name);
                        log_send(&e, LOG_WARNING, NULL, "%s %s: %s; %s", v[i].key, v[i].name,
                                 r == -ENOENT ? "no such group" : strerror(-r),
                                 i == 0 ? "only root and admins can use the control socket"
                                        : "only root and pgtreed's own user can cancel, terminate and reload");
                }
        }
}

static Role role_of(const ControlServer *s, const Client *c) {
        AccessPolicy p = { .self_uid = geteuid(), .have_reader = s->have_reader_gid, .have_admin = s->have_admin_gid,
                           .reader_gid = s->reader_gid, .admin_gid = s->admin_gid };
        AccessRole r = access_role(&p, c->cred.uid, c->cred.gid, c->groups, c->n_groups);
        return r == ACCESS_ADMIN ? ROLE_ADMIN : r == ACCESS_READ ? ROLE_READ : ROLE_NONE;
}

/* Does the query text go to this client? */
static bool sees_query_text(const Client *c) {
        return c->role == ROLE_ADMIN || c->server->manager->config->query_text_for_readers;
}

/* Removes the query text of one process object (a reader's copy). */
static void redact_process(json_object *o) {
        json_object *q;
        if (o && json_object_object_get_ex(o, "query", &q) && q) {
                json_object_object_add(o, "query", NULL);
                json_object_object_add(o, "query_hidden", json_object_new_boolean(true));
        }
}

/* Every query text in a reply: processes, findings, their root blockers, lock chains. */
static void redact_tree(json_object *o) {
        if (json_object_is_type(o, json_type_array)) {
                for (size_t i = 0; i < json_object_array_length(o); i++)
                        redact_tree(json_object_array_get_idx(o, i));
                return;
        }
        if (!json_object_is_type(o, json_type_object))
                return;
        redact_process(o);
        json_object_object_foreach(o, key, v) {
                (void) key;
                if (json_object_is_type(v, json_type_object) || json_object_is_type(v, json_type_array))
                        redact_tree(v);
        }
}

/* ---- methods ---- */

static const char *param_string(json_object *p, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(p, key, &v) || !v)
                return NULL;
        return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

static bool param_bool(json_object *p, const char *key) {
        json_object *v;
        return json_object_object_get_ex(p, key, &v) && v && json_object_get_boolean(v);
}

static void invalid_parameter(Client *c, const char *name) {
        reply_error(c, "org.varlink.service.InvalidParameter", one("parameter", json_object_new_string(name)));
}

static void method_status(Client *c) {
        Manager *m = c->server->manager;
        const PgTree *t = &m->engine->tree;
        size_t backends = 0, orphans = 0;
        for (size_t i = 0; i < t->n_procs; i++) {
                orphans += pg_process_is_orphan(&t->procs[i]);
                backends += !pg_process_is_orphan(&t->procs[i]) && t->procs[i].title.backend_type == BACKEND_CLIENT;
        }
        json_object *o = json_object_new_object(), *un = json_object_new_array(), *en = json_object_new_array();
        for (size_t i = 0; i < t->n_clusters; i++) {
                if (!t->clusters[i].snapshot)
                        json_object_array_add(un, json_object_new_string(t->clusters[i].name));
                if (t->clusters[i].enforce)
                        json_object_array_add(en, json_object_new_string(t->clusters[i].name));
        }
        json_object_object_add(o, "version", json_object_new_string(PGTREE_VERSION));
        json_object_object_add(o, "pid", json_object_new_int(getpid()));
        json_object_object_add(o, "uptime_s", json_object_new_int64((int64_t) (t->now - m->start_time)));
        json_object_object_add(o, "clusters", json_object_new_int((int) t->n_clusters));
        json_object_object_add(o, "client_backends", json_object_new_int((int) backends));
        json_object_object_add(o, "orphans", json_object_new_int((int) orphans));
        json_object_object_add(o, "open_findings", json_object_new_int((int) m->engine->open.n));
        json_object_object_add(o, "enforce", json_object_new_boolean(m->config->enforce));
        json_object_object_add(o, "config", m->config_path ? json_object_new_string(m->config_path) : NULL);
        json_object_object_add(o, "cycles", json_object_new_int64((int64_t) m->engine->cycles));
        json_object_object_add(o, "full_scans", json_object_new_int64((int64_t) m->engine->full_scans));
        /* cycles run between two regular ones, for a long runner reaching a rule's threshold */
        json_object_object_add(o, "extra_cycles", json_object_new_int64((int64_t) m->extra_cycles));
        /* looks at busy backends' clients between cycles */
        json_object_object_add(o, "client_probes", json_object_new_int64((int64_t) m->client_probes));
        json_object_object_add(o, "complete_scans", json_object_new_int64((int64_t) m->engine->complete_scans));
        json_object_object_add(o, "processes_read", json_object_new_int64((int64_t) m->engine->processes_read));
        json_object_object_add(o, "last_cycle_s", json_number(m->engine->cycle_seconds));
        json_object_object_add(o, "interval_s", json_number((double) m->config->interval_usec / 1e6));
        json_object_object_add(o, "unreachable", un);
        json_object_object_add(o, "enforcing", en);
        /* managed servers behind one name: the last time another server answered there */
        json_object *changes = json_object_new_array();
        for (size_t i = 0; i < t->n_clusters; i++) {
                RemoteServerChange ch;
                if (!t->clusters[i].remote || !remote_set_server_change(m->engine->remote, t->clusters[i].name, &ch))
                        continue;
                json_object *x = json_object_new_object();
                json_object_object_add(x, "cluster", json_object_new_string(t->clusters[i].name));
                json_object_object_add(x, "server", json_object_new_string(t->clusters[i].remote_server));
                json_object_object_add(x, "at", json_number(ch.at));
                json_object_object_add(x, "changes", json_object_new_int((int) ch.count));
                json_object_object_add(x, "actions_dropped", json_object_new_int64((int64_t) ch.dropped));
                const ServerIdentity *ids[2] = { &ch.old_identity, &ch.new_identity };
                for (size_t k = 0; k < 2; k++) {
                        json_object *id = json_object_new_object();
                        json_object_object_add(id, "system_identifier", ids[k]->system_identifier[0]
                                                                                ? json_object_new_string(ids[k]->system_identifier)
                                                                                : NULL);
                        json_object_object_add(id, "started", json_number(ids[k]->started));
                        json_object_object_add(x, k == 0 ? "old" : "new", id);
                }
                json_object_array_add(changes, x);
        }
        json_object_object_add(o, "server_changes", changes);
        reply(c, o);
}

static void method_tree(Client *c, json_object *p) {
        ControlServer *s = c->server;
        Manager *m = s->manager;
        bool text = param_bool(p, "text");
        size_t k = sees_query_text(c) ? 0 : 1;
        json_object *wv;
        int64_t width = 0;
        if (json_object_object_get_ex(p, "width", &wv) && wv) {
                width = json_object_is_type(wv, json_type_int) ? json_object_get_int64(wv) : -1;
                if (width < 0 || width > 100000) {
                        invalid_parameter(c, "width");
                        return;
                }
        }
        const char *want = param_string(p, "cluster");
        if (want && !*want) {
                invalid_parameter(c, "cluster");
                return;
        }
        if (!text && !want && s->tree_cache[k]) {
                char *copy = malloc(s->tree_cache_len[k]);
                if (copy)
                        memcpy(copy, s->tree_cache[k], s->tree_cache_len[k]);
                queue(c, copy, s->tree_cache_len[k]);
                return;
        }
        json_object *o = render_json_for(&m->engine->tree, &m->engine->open, want);
        if (k == 1)
                redact_tree(o);
        /* which scan cycle this tree is (as Status counts them) */
        json_object_object_add(o, "cycle", json_object_new_int64((int64_t) m->engine->cycles));
        if (text) {
                char *buf = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&buf, &len);
                if (f) {
                        RenderOptions ro = { .group_by_application = param_bool(p, "group_by_application"),
                                             .query_text = k == 0, .width = (size_t) width, .cluster = want };
                        render_text(f, &m->engine->tree, &m->engine->open, &ro);
                        fclose(f);
                        json_object_object_add(o, "text", json_object_new_string(buf ? buf : ""));
                        free(buf);
                }
                reply(c, o);
                return;
        }
        size_t len = 0;
        char *msg = varlink_reply(o, &len);
        if (msg && !want && (s->tree_cache[k] = malloc(len))) {
                memcpy(s->tree_cache[k], msg, len);
                s->tree_cache_len[k] = len;
        }
        queue(c, msg, len);
}

static bool glob_ok(const char *pattern, const char *value) {
        return !pattern || (value && fnmatch(pattern, value, 0) == 0);
}

typedef struct SortItem {
        const PgProcess *p;
        json_object *o;
        double key;
        const char *skey;
} SortItem;

static int cmp_sort(const void *a, const void *b) {
        const SortItem *x = a, *y = b;
        if (x->skey || y->skey)
                return strcmp(x->skey ? x->skey : "", y->skey ? y->skey : "");
        return x->key < y->key ? 1 : x->key > y->key ? -1 : 0; /* largest first */
}

static void method_sessions(Client *c, json_object *p) {
        Manager *m = c->server->manager;
        const PgTree *t = &m->engine->tree;
        const char *user = param_string(p, "user"), *db = param_string(p, "database"),
                   *app = param_string(p, "application_name"), *state = param_string(p, "state"),
                   *sort = param_string(p, "sort"), *want = param_string(p, "cluster");
        bool all = param_bool(p, "all");
        static const char *const sorts[] = { "pid", "age", "duration", "cpu", "memory", "user", NULL };
        if (sort) {
                bool ok = false;
                for (const char *const *k = sorts; *k && !ok; k++)
                        ok = !strcmp(*k, sort);
                if (!ok) {
                        invalid_parameter(c, "sort");
                        return;
                }
        }
        SortItem *items = calloc(t->n_procs + 1, sizeof *items);
        if (!items) {
                reply_error(c, "io.pgtree.InvalidRequest", one("reason", json_object_new_string("out of memory")));
                return;
        }
        size_t n = 0;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *q = &t->procs[i];
                if (q->title.backend_type != BACKEND_CLIENT)
                        continue;
                /* pgtreed's connections are not the operator's sessions (shown with all) */
                if (!all && pg_process_is_pgtree(q))
                        continue;
                if (want && (q->cluster < 0 || !render_cluster_matches(&t->clusters[q->cluster], want)))
                        continue;
                if (!glob_ok(user, proc_user(q)) || !glob_ok(db, proc_database(q)) || !glob_ok(app, proc_application(q)) ||
                    !glob_ok(state, proc_state(q)))
                        continue;
                SortItem *it = &items[n++];
                it->p = q;
                double start = pg_process_start_time(t, q);
                if (!sort || !strcmp(sort, "pid"))
                        it->key = -(double) q->rec.pid;
                else if (!strcmp(sort, "age"))
                        it->key = start > 0 ? t->now - start : 0;
                else if (!strcmp(sort, "duration"))
                        it->key = q->act && q->act->state_change > 0 ? t->now - (q->act->query_start > 0 && proc_state(q) &&
                                                                                  !strcmp(proc_state(q), "active")
                                                                                          ? q->act->query_start
                                                                                          : q->act->state_change)
                                                                     : 0;
                else if (!strcmp(sort, "cpu"))
                        it->key = q->rec.cpu_percent;
                else if (!strcmp(sort, "memory"))
                        it->key = (double) q->rec.rss_anon_kb;
                else
                        it->skey = proc_user(q) ? proc_user(q) : "";
        }
        qsort(items, n, sizeof *items, cmp_sort);
        json_object *arr = json_object_new_array();
        for (size_t i = 0; i < n; i++) {
                json_object *o = render_process_json(t, items[i].p);
                json_object_object_add(o, "cluster", json_object_new_string(items[i].p->cluster >= 0
                                                                                    ? t->clusters[items[i].p->cluster].name
                                                                                    : "(orphan)"));
                if (!sees_query_text(c))
                        redact_process(o);
                json_object_array_add(arr, o);
        }
        free(items);
        reply(c, one("sessions", arr));
}

static bool get_pid(json_object *p, pid_t *pid) {
        json_object *v;
        if (!json_object_object_get_ex(p, "pid", &v) || !json_object_is_type(v, json_type_int))
                return false;
        int64_t x = json_object_get_int64(v);
        if (x <= 0 || x > INT32_MAX)
                return false;
        *pid = (pid_t) x;
        return true;
}

static bool chain_has(json_object *node, pid_t pid) {
        json_object *v;
        if (json_object_object_get_ex(node, "pid", &v) && json_object_get_int(v) == pid)
                return true;
        if (json_object_object_get_ex(node, "blocks", &v))
                for (size_t i = 0; i < json_object_array_length(v); i++)
                        if (chain_has(json_object_array_get_idx(v, i), pid))
                                return true;
        return false;
}

/* The blocking forest of every cluster (or the one asked for): root blockers → waiters. */
static void method_locks(Client *c, json_object *p) {
        Manager *m = c->server->manager;
        const PgTree *t = &m->engine->tree;
        const char *want = param_string(p, "cluster");
        if (want && !*want) {
                invalid_parameter(c, "cluster");
                return;
        }
        json_object *o = json_object_new_object(), *arr = json_object_new_array();
        for (size_t i = 0; i < t->n_clusters; i++) {
                const PgCluster *cl = &t->clusters[i];
                if (!render_cluster_matches(cl, want))
                        continue;
                json_object *co = json_object_new_object();
                json_object_object_add(co, "name", json_object_new_string(cl->name));
                json_object_object_add(co, "activity", json_object_new_string(cl->activity[0] ? cl->activity : "unavailable: not queried"));
                json_object_object_add(co, "chains", render_lock_chains_json(t, i));
                json_object_array_add(arr, co);
        }
        json_object_object_add(o, "clusters", arr);
        if (param_bool(p, "text")) {
                char *buf = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&buf, &len);
                if (f) {
                        json_object *wv;
                        int64_t width = json_object_object_get_ex(p, "width", &wv) && wv && json_object_is_type(wv, json_type_int)
                                                ? json_object_get_int64(wv) : 0;
                        RenderOptions ro = { .query_text = sees_query_text(c),
                                             .width = width > 0 && width < 100000 ? (size_t) width : 0 };
                        size_t shown = 0, chains = 0;
                        for (size_t i = 0; i < t->n_clusters; i++) {
                                const PgCluster *cl = &t->clusters[i];
                                if (!render_cluster_matches(cl, want))
                                        continue;
                                shown++;
                                fprintf(f, "cluster %s%s%s\n", cl->name, cl->snapshot ? "" : "  activity ",
                                        cl->snapshot ? "" : cl->activity);
                                json_object *ch = render_lock_chains_json(t, i);
                                size_t n = json_object_array_length(ch);
                                json_object_put(ch);
                                chains += n;
                                if (n == 0)
                                        fprintf(f, "  no session waits for another\n");
                                else
                                        render_lock_chains_text(f, t, i, "  ", &ro);
                        }
                        if (shown == 0 && want)
                                fprintf(f, "no cluster named %s\n", want);
                        (void) chains;
                        fclose(f);
                        json_object_object_add(o, "text", json_object_new_string(buf ? buf : ""));
                        free(buf);
                }
        }
        if (!sees_query_text(c))
                redact_tree(o);
        reply(c, o);
}

static void method_show(Client *c, json_object *p) {
        Manager *m = c->server->manager;
        const PgTree *t = &m->engine->tree;
        pid_t pid;
        if (!get_pid(p, &pid)) {
                invalid_parameter(c, "pid");
                return;
        }
        int i = tree_find(t, pid);
        if (i < 0) {
                reply_error(c, "io.pgtree.NoSuchProcess", one("pid", json_object_new_int(pid)));
                return;
        }
        const PgProcess *q = &t->procs[i];
        json_object *o = json_object_new_object(), *fa = json_object_new_array();
        json_object *po = render_process_json(t, q);
        if (!sees_query_text(c))
                redact_process(po);
        json_object_object_add(o, "process", po);
        json_object_object_add(o, "cluster", q->cluster >= 0 ? json_object_new_string(t->clusters[q->cluster].name) : NULL);
        for (size_t k = 0; k < m->engine->open.n; k++)
                if (m->engine->open.items[k].pid == pid) {
                        json_object *fo = render_finding_json(&m->engine->open.items[k]);
                        render_finding_blocker_query(fo, t, &m->engine->open.items[k]);
                        json_object_array_add(fa, fo);
                }
        json_object_object_add(o, "findings", fa);
        /* the lock chains it is part of (as a blocker or as a waiter) */
        json_object *chains = json_object_new_array();
        if (q->cluster >= 0) {
                json_object *all = render_lock_chains_json(t, (size_t) q->cluster);
                for (size_t k = 0; k < json_object_array_length(all); k++) {
                        json_object *root = json_object_array_get_idx(all, k);
                        if (chain_has(root, pid))
                                json_object_array_add(chains, json_object_get(root));
                }
                json_object_put(all);
        }
        json_object_object_add(o, "lock_chains", chains);
        if (!sees_query_text(c))
                redact_tree(o);
        reply(c, o);
}

static void method_findings(Client *c, json_object *p, bool orphans) {
        Manager *m = c->server->manager;
        const PgTree *t = &m->engine->tree;
        const char *want = param_string(p, "cluster");
        json_object *o = json_object_new_object(), *fa = json_object_new_array();
        for (size_t k = 0; k < m->engine->open.n; k++) {
                const Finding *f = &m->engine->open.items[k];
                if (!render_finding_matches(t, f, want))
                        continue;
                if (finding_kind_always_open(f->kind) == orphans) {
                        json_object *fo = render_finding_json(f);
                        render_finding_blocker_query(fo, t, f);
                        if (!sees_query_text(c))
                                redact_tree(fo);
                        /* what the session runs, where the operator looks (the policy applies) */
                        int i = tree_find(t, f->pid);
                        const PgProcess *q = i >= 0 ? &t->procs[i] : NULL;
                        if (q && q->act && q->act->query && q->act->query[0] && q->rec.start_ticks == f->start_ticks) {
                                json_object_object_add(fo, "query", json_object_new_string(q->act->query));
                                if (!sees_query_text(c))
                                        redact_process(fo);
                        }
                        json_object_array_add(fa, fo);
                }
        }
        if (orphans) {
                json_object *oa = json_object_new_array();
                for (size_t i = 0; i < t->n_procs; i++)
                        if (pg_process_is_orphan(&t->procs[i]) && (!want || (t->procs[i].cwd && !strcmp(t->procs[i].cwd, want))))
                                json_object_array_add(oa, render_process_json(t, &t->procs[i]));
                if (!sees_query_text(c))
                        redact_tree(oa);
                json_object_object_add(o, "orphans", oa);
        }
        json_object_object_add(o, "findings", fa);
        reply(c, o);
}

static void client_flush(Client *c);

static void signal_call_done(SignalCall *call) {
        Client *c = call->client;
        if (c) {
                c->call = NULL;
                reply(c, one("results", call->results));
                client_flush(c); /* sends it, and reads the next call */
        } else
                json_object_put(call->results);
        free(call);
}

static void on_signal_outcome(const char *word, const char *why, void *userdata) {
        SignalSlot *slot = userdata;
        SignalCall *call = slot->call;
        json_object_object_add(slot->result, "result", json_object_new_string(word));
        json_object_object_add(slot->result, "reason", json_object_new_string(why));
        free(slot);
        if (--call->n_pending == 0)
                signal_call_done(call);
}

static void method_signal(Client *c, json_object *p) {
        Manager *m = c->server->manager;
        const PgTree *t = &m->engine->tree;
        const char *action = param_string(p, "action");
        json_object *sigv;
        bool sig9 = json_object_object_get_ex(p, "signal", &sigv) && sigv &&
                    (json_object_get_int(sigv) == 9 || signal_spelling_is_sigkill(json_object_get_string(sigv)));
        char by[160];
        snprintf(by, sizeof by, "uid %u pid %d (%s)", (unsigned) c->cred.uid, (int) c->cred.pid, c->comm);
        LogEntry e = {};
        log_add(&e, "PGTREE_REQUESTED_BY", "%s", by);
        log_add(&e, "PGTREE_PEER_UID", "%u", (unsigned) c->cred.uid);
        log_add(&e, "PGTREE_PEER_PID", "%d", (int) c->cred.pid);
        log_add(&e, "PGTREE_PEER_COMM", "%s", c->comm);
        if (sig9 || signal_spelling_is_sigkill(action)) {
                log_add(&e, "PGTREE_REQUESTED_ACTION", "kill");
                log_add(&e, "PGTREE_RESULT", "refused");
                log_send(&e, LOG_WARNING, MSGID_ACTION_REFUSED, "SIGKILL requested by %s: refused", by);
                reply_error(c, "io.pgtree.SigkillRefused", one("reason", json_object_new_string(SIGKILL_REFUSAL)));
                return;
        }
        Action a;
        if (action && !strcmp(action, "cancel"))
                a = ACTION_CANCEL;
        else if (action && !strcmp(action, "terminate"))
                a = ACTION_TERMINATE;
        else {
                for (size_t i = 0; i < e.n; i++)
                        free(e.fields[i]);
                invalid_parameter(c, "action");
                return;
        }
        pid_t pid = 0;
        bool by_pid = json_object_object_get_ex(p, "pid", NULL);
        const char *app = param_string(p, "application_name");
        if ((by_pid && !get_pid(p, &pid)) || (by_pid == (app != NULL)) || (app && !*app)) {
                for (size_t i = 0; i < e.n; i++)
                        free(e.fields[i]);
                invalid_parameter(c, by_pid && app ? "pid" : app ? "application_name" : "pid");
                return;
        }
        bool dry = param_bool(p, "dry_run");
        /* managed servers: the same pid may be a session of several servers */
        const char *only = param_string(p, "cluster");
        if (!app && !only) {
                const char *first = NULL;
                json_object *where = json_object_new_array();
                for (size_t i = 0; i < t->n_procs; i++) {
                        const PgProcess *q = &t->procs[i];
                        const char *name = q->cluster >= 0 ? t->clusters[q->cluster].name : "(orphan)";
                        if (q->rec.pid != pid || (first && !strcmp(first, name)))
                                continue;
                        json_object_array_add(where, json_object_new_string(name));
                        first = first ? first : name;
                }
                if (json_object_array_length(where) > 1) {
                        for (size_t i = 0; i < e.n; i++)
                                free(e.fields[i]);
                        json_object *o = one("clusters", where);
                        json_object_object_add(o, "pid", json_object_new_int(pid));
                        reply_error(c, "io.pgtree.AmbiguousPid", o);
                        return;
                }
                json_object_put(where);
        }
        if (app)
                log_add(&e, "PGTREE_APPLICATION", "%s", app);
        else
                log_add(&e, "PGTREE_PID", "%d", (int) pid);
        log_add(&e, "PGTREE_REQUESTED_ACTION", "%s", action_to_string(a));
        if (app)
                log_send(&e, LOG_NOTICE, NULL, "%s%s of application %s requested by %s", dry ? "dry run: " : "",
                         action_to_string(a), app, by);
        else
                log_send(&e, LOG_NOTICE, NULL, "%s%s of pid %d requested by %s", dry ? "dry run: " : "", action_to_string(a),
                         (int) pid, by);
        json_object *results = json_object_new_array();
        SignalCall *call = NULL;
        size_t matched = 0;
        const char *want = only;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *q = &t->procs[i];
                if (app ? !(q->title.backend_type == BACKEND_CLIENT && !q->own && proc_application(q) &&
                             !strcmp(proc_application(q), app))
                        : q->rec.pid != pid)
                        continue;
                if (want && (q->cluster < 0 ? !q->cwd || strcmp(q->cwd, want) != 0
                                            : !render_cluster_matches(&t->clusters[q->cluster], want)))
                        continue;
                matched++;
                json_object *r = json_object_new_object();
                json_object_object_add(r, "pid", json_object_new_int(q->rec.pid));
                if (dry) {
                        json_object_object_add(r, "result", json_object_new_string("would"));
                        char why[200];
                        snprintf(why, sizeof why, "%s %s %s@%s", action_to_string(a), proc_backend_type(q),
                                 proc_user(q) ? proc_user(q) : "?", proc_database(q) ? proc_database(q) : "?");
                        json_object_object_add(r, "reason", json_object_new_string(why));
                } else {
                        Finding f = { .kind = _FINDING_KIND_MAX, .pid = q->rec.pid, .start_ticks = q->rec.start_ticks, .proc = (int) i,
                                      .xmin_age = -1, .action = a };
                        snprintf(f.cluster, sizeof f.cluster, "%s", q->cluster >= 0 ? t->clusters[q->cluster].name : q->cwd ? q->cwd : "");
                        snprintf(f.user, sizeof f.user, "%s", proc_user(q) ? proc_user(q) : "");
                        snprintf(f.database, sizeof f.database, "%s", proc_database(q) ? proc_database(q) : "");
                        snprintf(f.application_name, sizeof f.application_name, "%s", proc_application(q) ? proc_application(q) : "");
                        proc_client(q, f.client, sizeof f.client);
                        char why[768];
                        /* a managed server answers later: its result is filled in then */
                        if (!call && !(call = calloc(1, sizeof *call))) {
                                json_object_put(r);
                                json_object_put(results);
                                reply_error(c, "io.pgtree.InvalidRequest", one("reason", json_object_new_string("out of memory")));
                                return;
                        }
                        SignalSlot *slot = calloc(1, sizeof *slot);
                        if (slot)
                                *slot = (SignalSlot){ .call = call, .result = r };
                        const char *res = manager_act_async(m, &f, a, by, true, why, sizeof why, slot ? on_signal_outcome : NULL, slot);
                        if (!strcmp(res, "pending") && slot)
                                call->n_pending++;
                        else {
                                free(slot);
                                json_object_object_add(r, "result", json_object_new_string(res));
                                json_object_object_add(r, "reason", json_object_new_string(why));
                        }
                }
                json_object_array_add(results, r);
        }
        if (call && call->n_pending > 0) {
                /* answered when the last outcome is known (signal_call_done) */
                call->client = c;
                call->results = results;
                c->call = call;
                return;
        }
        free(call);
        if (!app && matched == 0) {
                json_object_put(results);
                reply_error(c, "io.pgtree.NoSuchProcess", one("pid", json_object_new_int(pid)));
                return;
        }
        reply(c, one("results", results));
}

static void method_reload(Client *c) {
        char **errors = NULL;
        int r = manager_reload(c->server->manager, &errors);
        if (r < 0) {
                json_object *arr = json_object_new_array();
                for (size_t i = 0; errors && errors[i]; i++)
                        json_object_array_add(arr, json_object_new_string(errors[i]));
                strv_free(errors);
                reply_error(c, "io.pgtree.ConfigInvalid", one("errors", arr));
                return;
        }
        reply(c, NULL);
}

static void method_metrics(Client *c) {
        Manager *m = c->server->manager;
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f) {
                reply_error(c, "io.pgtree.InvalidRequest", one("reason", json_object_new_string("out of memory")));
                return;
        }
        metrics_write(f, m->engine, &m->counters, m->start_time);
        size_t watchers = 0;
        for (size_t i = 0; i < c->server->n_clients; i++)
                watchers += c->server->clients[i]->watching;
        fprintf(f, "# HELP pgtree_control_watchers Control connections streaming Watch replies.\n"
                   "# TYPE pgtree_control_watchers gauge\n"
                   "pgtree_control_watchers %zu\n"
                   "# HELP pgtree_control_watch_renders_total Watch replies rendered (once per cycle and role, shared by all watchers).\n"
                   "# TYPE pgtree_control_watch_renders_total counter\n"
                   "pgtree_control_watch_renders_total %llu\n",
                watchers, (unsigned long long) c->server->watch_renders);
        fclose(f);
        reply(c, one("text", json_object_new_string(buf ? buf : "")));
        free(buf);
}

/* The Watch reply of the current cycle: the Tree JSON (redacted for k = 1) with the cycle. */
static json_object *watch_params(ControlServer *s, size_t k) {
        Manager *m = s->manager;
        const PgTree *t = &m->engine->tree;
        json_object *o = render_json(t, &m->engine->open);
        if (k == 1)
                redact_tree(o);
        char when[40] = "";
        time_t now = (time_t) t->now;
        struct tm tm;
        if (gmtime_r(&now, &tm))
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_object_add(o, "cycle", json_object_new_int64((int64_t) m->engine->cycles));
        json_object_object_add(o, "time", json_object_new_string(when));
        json_object_object_add(o, "interval_s", json_number((double) m->config->interval_usec / 1e6));
        s->watch_renders++;
        return o;
}

static Blob *watch_blob(ControlServer *s, size_t k) {
        if (!s->watch_cache[k]) {
                size_t len = 0;
                char *msg = varlink_reply_continues(watch_params(s, k), true, &len);
                s->watch_cache[k] = blob_new(msg, len);
        }
        return s->watch_cache[k];
}

/* Queues this cycle's stream reply, unless the previous one is still queued: a subscriber that
 * reads slowly skips cycles, and one that does not read is dropped by the write timeout. */
static void watch_push(Client *c) {
        if (!c->watching || c->closing || queued(c) > 0)
                return;
        Blob *b = watch_blob(c->server, sees_query_text(c) ? 0 : 1);
        if (!b) {
                reply_error(c, "io.pgtree.InvalidRequest", one("reason", json_object_new_string("out of memory")));
                c->closing = true;
                return;
        }
        c->blob = blob_ref(b);
        c->blob_off = 0;
}

static void method_watch(Client *c, bool more) {
        if (!more) {
                reply(c, watch_params(c->server, sees_query_text(c) ? 0 : 1));
                return;
        }
        c->watching = true;
        /* a subscriber is not idle while it reads its stream: the write timeout watches it */
        sd_event_source_set_enabled(c->idle, SD_EVENT_OFF);
        watch_push(c);
}

static void method_get_info(Client *c) {
        json_object *o = json_object_new_object(), *ifs = json_object_new_array();
        json_object_object_add(o, "vendor", json_object_new_string("pgtree"));
        json_object_object_add(o, "product", json_object_new_string("pgtreed"));
        json_object_object_add(o, "version", json_object_new_string(PGTREE_VERSION));
        json_object_object_add(o, "url", json_object_new_string("https://github.com/pgtree/pgtree"));
        json_object_array_add(ifs, json_object_new_string("org.varlink.service"));
        json_object_array_add(ifs, json_object_new_string(VARLINK_INTERFACE));
        json_object_object_add(o, "interfaces", ifs);
        reply(c, o);
}

static void method_describe(Client *c, json_object *p) {
        const char *itf = param_string(p, "interface");
        if (itf && !strcmp(itf, VARLINK_INTERFACE))
                reply(c, one("description", json_object_new_string(varlink_pgtree_description())));
        else if (itf && !strcmp(itf, "org.varlink.service"))
                reply(c, one("description", json_object_new_string(varlink_service_description())));
        else
                reply_error(c, "org.varlink.service.InterfaceNotFound", one("interface", json_object_new_string(itf ? itf : "")));
}

static void deny(Client *c, const char *method, const char *need) {
        LogEntry e = {};
        log_add(&e, "PGTREE_PEER_UID", "%u", (unsigned) c->cred.uid);
        log_add(&e, "PGTREE_PEER_PID", "%d", (int) c->cred.pid);
        log_add(&e, "PGTREE_PEER_COMM", "%s", c->comm);
        log_add(&e, "PGTREE_METHOD", "%s", method);
        log_send(&e, LOG_WARNING, MSGID_CLIENT_DENIED, "%s denied to uid %u pid %d (%s): needs %s", method,
                 (unsigned) c->cred.uid, (int) c->cred.pid, c->comm, need);
        char reason[160];
        snprintf(reason, sizeof reason, "%s needs %s", method, need);
        reply_error(c, "io.pgtree.PermissionDenied", one("reason", json_object_new_string(reason)));
}

static void dispatch(Client *c, VarlinkCall *call) {
        const char *m = call->method;
        const Config *cfg = c->server->manager->config;
        char need_read[160], need_admin[160];
        snprintf(need_read, sizeof need_read, "root or membership of group %s or %s", cfg->socket_group ? cfg->socket_group : "-",
                 cfg->admin_group ? cfg->admin_group : "-");
        snprintf(need_admin, sizeof need_admin, "root or membership of group %s", cfg->admin_group ? cfg->admin_group : "-");

        if (!strcmp(m, "org.varlink.service.GetInfo"))
                method_get_info(c);
        else if (!strcmp(m, "org.varlink.service.GetInterfaceDescription"))
                method_describe(c, call->parameters);
        else if (strncmp(m, VARLINK_INTERFACE ".", strlen(VARLINK_INTERFACE) + 1) != 0 || strchr(m + strlen(VARLINK_INTERFACE) + 1, '.'))
                reply_error(c, strncmp(m, VARLINK_INTERFACE ".", strlen(VARLINK_INTERFACE) + 1) == 0
                                       ? "org.varlink.service.MethodNotFound"
                                       : "org.varlink.service.InterfaceNotFound",
                            one("method", json_object_new_string(m)));
        else {
                const char *name = m + strlen(VARLINK_INTERFACE) + 1;
                bool admin_only = !strcmp(name, "Signal") || !strcmp(name, "Reload");
                static const char *const known[] = { "Status", "Tree", "Sessions", "Show", "Orphans", "LongRunners",
                                                     "Signal", "Reload", "Metrics", "Watch", "Locks", NULL };
                bool is_known = false;
                for (const char *const *k = known; *k && !is_known; k++)
                        is_known = !strcmp(*k, name);
                if (!is_known)
                        reply_error(c, "org.varlink.service.MethodNotFound", one("method", json_object_new_string(m)));
                else if (c->role == ROLE_NONE)
                        deny(c, m, need_read);
                else if (admin_only && c->role != ROLE_ADMIN)
                        deny(c, m, need_admin);
                else if (call->invalid_parameter[0])
                        invalid_parameter(c, call->invalid_parameter);
                else if (call->oneway && !admin_only)
                        ; /* a reader's method has no effect but its reply, and none is wanted */
                else if (!strcmp(name, "Status"))
                        method_status(c);
                else if (!strcmp(name, "Tree"))
                        method_tree(c, call->parameters);
                else if (!strcmp(name, "Sessions"))
                        method_sessions(c, call->parameters);
                else if (!strcmp(name, "Show"))
                        method_show(c, call->parameters);
                else if (!strcmp(name, "Orphans"))
                        method_findings(c, call->parameters, true);
                else if (!strcmp(name, "LongRunners"))
                        method_findings(c, call->parameters, false);
                else if (!strcmp(name, "Signal"))
                        method_signal(c, call->parameters);
                else if (!strcmp(name, "Reload"))
                        method_reload(c);
                else if (!strcmp(name, "Locks"))
                        method_locks(c, call->parameters);
                else if (!strcmp(name, "Watch"))
                        method_watch(c, call->more);
                else
                        method_metrics(c);
        }
}

/* ---- I/O ---- */

static int on_idle(sd_event_source *s, uint64_t usec, void *userdata) {
        Client *c = userdata;
        if (c->call) { /* it waits for us, not we for it */
                sd_event_source_set_time_relative(c->idle, CLIENT_IDLE_USEC);
                return 0;
        }
        if (queued(c) > 0) {
                client_drop(c); /* it does not even read what it asked for */
                return 0;
        }
        reply_error(c, "io.pgtree.InvalidRequest", one("reason", json_object_new_string("idle for too long")));
        c->closing = true;
        update_events(c);
        return 0;
}

static int on_stall(sd_event_source *s, uint64_t usec, void *userdata) {
        Client *c = userdata;
        LogEntry e = {};
        log_add(&e, "PGTREE_PEER_UID", "%u", (unsigned) c->cred.uid);
        log_add(&e, "PGTREE_PEER_PID", "%d", (int) c->cred.pid);
        log_add(&e, "PGTREE_PEER_COMM", "%s", c->comm);
        log_send(&e, LOG_NOTICE, NULL, "control client uid %u pid %d (%s) dropped: it did not read its reply for %us",
                 (unsigned) c->cred.uid, (int) c->cred.pid, c->comm, (unsigned) (CLIENT_WRITE_TIMEOUT_USEC / USEC_PER_SEC));
        client_drop(c);
        return 0;
}

/* Handles at most CALLS_PER_WAKEUP whole calls, and none while a reply is queued. */
static void handle_input(Client *c) {
        for (unsigned k = 0; k < CALLS_PER_WAKEUP && !c->closing && !c->watching && !c->call && queued(c) == 0; k++) {
                char *msg;
                size_t len;
                int r = varlink_buffer_next(&c->in, &msg, &len);
                if (r <= 0)
                        return;
                if (len > VARLINK_MAX_MESSAGE) {
                        free(msg);
                        reply_error(c, "io.pgtree.RequestTooLarge", one("limit", json_object_new_int(VARLINK_MAX_MESSAGE)));
                        c->closing = true;
                        return;
                }
                if (++c->requests > MAX_REQUESTS_PER_CLIENT) {
                        free(msg);
                        reply_error(c, "io.pgtree.TooManyRequests", one("limit", json_object_new_int(MAX_REQUESTS_PER_CLIENT)));
                        c->closing = true;
                        return;
                }
                VarlinkCall call;
                char why[160];
                r = varlink_call_parse(msg, len, &call, why, sizeof why);
                free(msg);
                if (r < 0) {
                        /* a malformed message ends the conversation, never the daemon */
                        reply_error(c, "io.pgtree.InvalidRequest", one("reason", json_object_new_string(why)));
                        c->closing = true;
                        return;
                }
                size_t before = c->out_len;
                dispatch(c, &call);
                if (call.oneway)
                        c->out_len = before;
                if (call.oneway && c->call) {
                        /* no reply is wanted: its actions go on, logged, on their own */
                        c->call->client = NULL;
                        c->call = NULL;
                }
                varlink_call_clear(&call);
        }
}

static void client_flush(Client *c) {
        if (queued(c) == 0)
                return;
        /* what was queued first goes first: a stream reply is queued only when nothing else is,
         * so it is always first (an error that ends the stream follows it) */
        bool own = c->blob == NULL;
        ssize_t k = own ? send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT)
                        : send(c->fd, c->blob->data + c->blob_off, c->blob->len - c->blob_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && errno != EAGAIN && errno != EINTR) {
                client_drop(c);
                return;
        }
        if (k > 0) {
                if (own) {
                        memmove(c->out, c->out + k, c->out_len - (size_t) k);
                        c->out_len -= (size_t) k;
                } else if ((c->blob_off += (size_t) k) == c->blob->len) {
                        c->blob = blob_unref(c->blob);
                        c->blob_off = 0;
                }
                /* progress: the write timeout starts again */
                if (queued(c) > 0)
                        sd_event_source_set_time_relative(c->stall, CLIENT_WRITE_TIMEOUT_USEC);
        }
        if (c->out_len == 0 && c->out_cap > 65536) {
                /* a large reply went out: give its memory back */
                free(c->out);
                c->out = NULL;
                c->out_cap = 0;
        }
        if (c->closing && queued(c) == 0) {
                client_drop(c);
                return;
        }
        update_events(c);
}

static int on_defer(sd_event_source *s, void *userdata) {
        Client *c = userdata;
        handle_input(c);
        client_flush(c);
        return 0;
}

static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Client *c = userdata;
        if (revents & EPOLLIN && !c->closing && !c->watching && !c->call && queued(c) == 0 && !call_buffered(c)) {
                char buf[65536];
                ssize_t k = read(fd, buf, sizeof buf);
                if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
                        client_drop(c);
                        return 0;
                }
                if (k > 0) {
                        int r = varlink_buffer_feed(&c->in, buf, (size_t) k, VARLINK_MAX_MESSAGE);
                        if (r == -EMSGSIZE) {
                                reply_error(c, "io.pgtree.RequestTooLarge", one("limit", json_object_new_int(VARLINK_MAX_MESSAGE)));
                                c->closing = true;
                        } else if (r < 0) {
                                client_drop(c);
                                return 0;
                        } else
                                handle_input(c);
                        sd_event_source_set_time_relative(c->idle, CLIENT_IDLE_USEC);
                }
        }
        if ((revents & (EPOLLHUP | EPOLLERR)) && queued(c) == 0) {
                client_drop(c);
                return 0;
        }
        client_flush(c);
        return 0;
}

/* Refuses a connection with a Varlink error naming the limit, so the client can say why. */
static void refuse(int cfd, const char *reason, int limit) {
        json_object *p = json_object_new_object();
        json_object_object_add(p, "limit", json_object_new_int(limit));
        json_object_object_add(p, "reason", json_object_new_string(reason));
        size_t len;
        char *msg = varlink_error("io.pgtree.TooManyConnections", p, &len);
        if (msg && send(cfd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* it is going anyway */
        }
        free(msg);
        close(cfd);
}

/* Whether one more connection of this peer fits; if not, why. */
static bool admit(const ControlServer *srv, const Client *c, char *why, size_t size, int *limit) {
        size_t same_uid = 0, readers = 0;
        for (size_t i = 0; i < srv->n_clients; i++) {
                same_uid += srv->clients[i]->cred.uid == c->cred.uid;
                readers += srv->clients[i]->role != ROLE_ADMIN;
        }
        if (srv->n_clients >= MAX_CLIENTS) {
                snprintf(why, size, "pgtreed has %zu control connections open, its limit", srv->n_clients);
                *limit = MAX_CLIENTS;
                return false;
        }
        if (c->cred.uid == 0)
                return true;
        unsigned per = c->role == ROLE_ADMIN ? MAX_PER_ADMIN : MAX_PER_READER;
        if (same_uid >= per) {
                snprintf(why, size, "uid %u has %zu connections to pgtreed open, the limit per user", (unsigned) c->cred.uid,
                         same_uid);
                *limit = (int) per;
                return false;
        }
        if (c->role != ROLE_ADMIN && readers >= MAX_READER_CLIENTS) {
                snprintf(why, size, "readers have %zu connections to pgtreed open, their limit (root and admins still get in)",
                         readers);
                *limit = MAX_READER_CLIENTS;
                return false;
        }
        return true;
}

static int on_accept_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        ControlServer *srv = userdata;
        srv->accept_retry = sd_event_source_disable_unref(srv->accept_retry);
        sd_event_source_set_enabled(srv->accept_source, SD_EVENT_ON);
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ControlServer *srv = userdata;
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
                /* out of descriptors, the connection stays queued and the socket ready: without
                 * a pause the loop would spin on it and starve the scan */
                if ((errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) && !srv->accept_retry) {
                        log_plain(LOG_WARNING, "control socket: cannot accept a connection: %m; trying again in 1s");
                        sd_event_source_set_enabled(srv->accept_source, SD_EVENT_OFF);
                        if (sd_event_add_time_relative(srv->manager->event, &srv->accept_retry, CLOCK_MONOTONIC, USEC_PER_SEC,
                                                       USEC_PER_SEC / 10, on_accept_retry, srv) < 0)
                                sd_event_source_set_enabled(srv->accept_source, SD_EVENT_ON);
                }
                return 0;
        }
        Client *c = calloc(1, sizeof *c);
        if (!c || GROW(srv->clients, srv->allocated, srv->n_clients + 1) < 0) {
                free(c);
                close(cfd);
                return 0;
        }
        c->server = srv;
        c->fd = cfd;
        socklen_t l = sizeof c->cred;
        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &c->cred, &l) < 0 || access_peer_groups(cfd, &c->groups, &c->n_groups) < 0) {
                client_free(c);
                return 0;
        }
        c->role = role_of(srv, c);
        char why[200];
        int limit = 0;
        if (!admit(srv, c, why, sizeof why, &limit)) {
                c->fd = -1;
                client_free(c);
                refuse(cfd, why, limit);
                return 0;
        }
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/comm", (int) c->cred.pid);
        FILE *f = fopen(path, "re");
        if (f) {
                if (fgets(c->comm, sizeof c->comm, f))
                        c->comm[strcspn(c->comm, "\n")] = 0;
                fclose(f);
        }
        for (char *p = c->comm; *p; p++)
                if ((unsigned char) *p < 0x20 || (unsigned char) *p == 0x7f)
                        *p = '?';
        sd_event *ev = srv->manager->event;
        if (sd_event_add_io(ev, &c->io, cfd, EPOLLIN, on_client_io, c) < 0 ||
            sd_event_add_time_relative(ev, &c->idle, CLOCK_MONOTONIC, CLIENT_IDLE_USEC, USEC_PER_SEC, on_idle, c) < 0 ||
            sd_event_add_time_relative(ev, &c->stall, CLOCK_MONOTONIC, CLIENT_WRITE_TIMEOUT_USEC, USEC_PER_SEC, on_stall, c) < 0 ||
            sd_event_add_defer(ev, &c->defer, on_defer, c) < 0) {
                client_free(c);
                return 0;
        }
        /* the scan, PostgreSQL's sockets and the signals come first; clients fill the gaps */
        sd_event_source_set_priority(c->io, SD_EVENT_PRIORITY_IDLE);
        sd_event_source_set_priority(c->defer, SD_EVENT_PRIORITY_IDLE);
        sd_event_source_set_enabled(c->idle, SD_EVENT_ON);
        sd_event_source_set_enabled(c->stall, SD_EVENT_OFF);
        sd_event_source_set_enabled(c->defer, SD_EVENT_OFF);
        srv->clients[srv->n_clients++] = c;
        return 0;
}

/* Sets a POSIX ACL that adds group:GID:PERMS to the file's mode bits (and the mask). */
static int acl_add_group(const char *path, gid_t gid, const char *perms) {
        struct stat st;
        if (stat(path, &st) < 0)
                return negative_errno();
        char text[160];
        snprintf(text, sizeof text, "u::%c%c%c,g::%c%c%c,o::%c%c%c,g:%u:%s,m::rwx", st.st_mode & S_IRUSR ? 'r' : '-',
                 st.st_mode & S_IWUSR ? 'w' : '-', st.st_mode & S_IXUSR ? 'x' : '-', st.st_mode & S_IRGRP ? 'r' : '-',
                 st.st_mode & S_IWGRP ? 'w' : '-', st.st_mode & S_IXGRP ? 'x' : '-', st.st_mode & S_IROTH ? 'r' : '-',
                 st.st_mode & S_IWOTH ? 'w' : '-', st.st_mode & S_IXOTH ? 'x' : '-', (unsigned) gid, perms);
        acl_t acl = acl_from_text(text);
        if (!acl)
                return negative_errno();
        int r = acl_calc_mask(&acl) < 0 || acl_set_file(path, ACL_TYPE_ACCESS, acl) < 0 ? negative_errno() : 0;
        acl_free(acl);
        return r;
}

/* The socket is mode 0660, group socket_group; members of admin_group get in through an ACL
 * entry on the socket (and on its directory, if pgtreed made it), so that an admin need not
 * also be a reader. Nobody else can connect. */
static void grant_socket_access(ControlServer *s, const char *path, const char *dir) {
        const Config *cfg = s->manager->config;
        if (s->have_reader_gid && chown(path, (uid_t) -1, s->reader_gid) < 0)
                log_plain(LOG_WARNING, "cannot give %s to group %s: %m", path, cfg->socket_group);
        if (!s->have_admin_gid || (s->have_reader_gid && s->admin_gid == s->reader_gid))
                return;
        int r = acl_add_group(path, s->admin_gid, "rw-");
        struct stat st;
        if (r == 0 && dir && stat(dir, &st) == 0 && st.st_uid == geteuid() && (st.st_mode & S_IXOTH) == 0)
                r = acl_add_group(dir, s->admin_gid, "r-x");
        if (r < 0)
                log_plain(LOG_WARNING, "cannot grant group %s access to %s: %s; members of %s must also be in %s",
                          cfg->admin_group, path, strerror(-r), cfg->admin_group, cfg->socket_group ? cfg->socket_group : "-");
}

static int bind_socket(ControlServer *s, const char *path) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof a.sun_path)
                return -ENAMETOOLONG;
        strcpy(a.sun_path, path);
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = 0;
                if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                        return negative_errno();
        } else
                snprintf(dir, sizeof dir, "/");
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(path); /* a stale socket of an earlier run */
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        mode_t old = umask(0117);
        int r = bind(fd, (struct sockaddr *) &a, sizeof a);
        umask(old);
        if (r < 0 || listen(fd, 128) < 0) {
                r = negative_errno();
                close(fd);
                return r;
        }
        grant_socket_access(s, path, dir);
        s->fd = fd;
        s->path = strdup(path);
        return 0;
}

int control_new(Manager *m, ControlServer **ret) {
        ControlServer *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->manager = m;
        s->fd = -1;
        resolve_groups(s);
        int n = sd_listen_fds(true);
        int r;
        if (n >= 1) {
                s->fd = SD_LISTEN_FDS_START;
                s->activated = true;
                int fl = fcntl(s->fd, F_GETFL);
                if (fl >= 0)
                        fcntl(s->fd, F_SETFL, fl | O_NONBLOCK);
        } else if ((r = bind_socket(s, m->config->socket_path)) < 0) {
                LogEntry e = {};
                log_add(&e, "PGTREE_SOCKET", "%s", m->config->socket_path);
                log_send(&e, LOG_ERR, NULL, "control socket %s: %s; pgtree clients cannot reach this daemon (it goes on watching)",
                         m->config->socket_path, strerror(-r));
        }
        if (s->fd >= 0 && (r = sd_event_add_io(m->event, &s->accept_source, s->fd, EPOLLIN, on_accept, s)) < 0) {
                control_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

ControlServer *control_free(ControlServer *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_clients; i++)
                client_free(s->clients[i]);
        free(s->clients);
        sd_event_source_disable_unref(s->accept_source);
        sd_event_source_disable_unref(s->accept_retry);
        if (s->fd >= 0 && !s->activated)
                close(s->fd);
        if (s->path)
                unlink(s->path);
        free(s->path);
        free(s->tree_cache[0]);
        free(s->tree_cache[1]);
        blob_unref(s->watch_cache[0]);
        blob_unref(s->watch_cache[1]);
        free(s);
        return NULL;
}

static void drop_caches(ControlServer *s) {
        for (size_t k = 0; k < ELEMENTSOF(s->tree_cache); k++) {
                free(s->tree_cache[k]);
                s->tree_cache[k] = NULL;
                s->tree_cache_len[k] = 0;
                s->watch_cache[k] = blob_unref(s->watch_cache[k]);
        }
}

void control_cycle_done(ControlServer *s) {
        if (!s)
                return;
        drop_caches(s);
        /* client_flush may drop a client: walk a copy of the list */
        size_t n = 0;
        Client **watchers = s->n_clients ? calloc(s->n_clients, sizeof *watchers) : NULL;
        for (size_t i = 0; watchers && i < s->n_clients; i++)
                if (s->clients[i]->watching)
                        watchers[n++] = s->clients[i];
        for (size_t i = 0; i < n; i++) {
                watch_push(watchers[i]);
                client_flush(watchers[i]);
        }
        free(watchers);
}

/* On reload: the groups are looked up again and every connected peer's role follows. */
void control_config_changed(ControlServer *s) {
        if (!s)
                return;
        drop_caches(s);
        resolve_groups(s);
        for (size_t i = 0; i < s->n_clients; i++) {
                Client *c = s->clients[i];
                c->role = role_of(s, c);
                if (c->watching && c->role == ROLE_NONE && !c->closing) {
                        /* no longer allowed to read: the stream ends with the reason */
                        c->watching = false;
                        deny(c, VARLINK_INTERFACE ".Watch", "root or membership of the socket or admin group");
                        c->closing = true;
                        update_events(c);
                }
        }
}
