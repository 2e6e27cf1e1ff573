/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "engine.h"
#include "join.h"
#include "macro.h"
#include "proc-stat.h"
#include "rules.h"
#include "sockdiag.h"

int engine_new(const Config *c, Engine **ret) {
        _cleanup_free_ Engine *e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        int r = scanner_new(&e->scanner);
        if (r < 0)
                return r;
        if ((r = client_gone_probe_new(&e->probe)) < 0) {
                scanner_free(e->scanner);
                return r;
        }
        e->config = c;
        scanner_set_discovery_interval(e->scanner, c->discovery_interval_usec);
        *ret = TAKE_PTR(e);
        return 0;
}

static void slot_free(ClusterSlot *s) {
        activity_conn_free(s->conn);
        free(s->conninfo);
        *s = (ClusterSlot){};
}

Engine *engine_free(Engine *e) {
        if (!e)
                return NULL;
        for (size_t i = 0; i < e->n_slots; i++)
                slot_free(&e->slots[i]);
        free(e->slots);
        if (e->have_tree)
                tree_free(&e->tree);
        finding_store_clear(&e->store);
        findings_free(&e->open);
        scanner_free(e->scanner);
        client_gone_probe_free(e->probe);
        free(e->gone);
        free(e->idle);
        remote_set_free(e->remote);
        free(e);
        return NULL;
}

void engine_set_config(Engine *e, const Config *c) {
        e->config = c;
        scanner_set_discovery_interval(e->scanner, c->discovery_interval_usec);
}

static ClusterSlot *slot_for(Engine *e, const PgProcess *pm) {
        for (size_t i = 0; i < e->n_slots; i++)
                if (e->slots[i].pm_pid == pm->rec.pid && e->slots[i].pm_start_ticks == pm->rec.start_ticks)
                        return &e->slots[i];
        if (GROW(e->slots, e->slots_allocated, e->n_slots + 1) < 0)
                return NULL;
        ClusterSlot *s = &e->slots[e->n_slots++];
        *s = (ClusterSlot){ .pm_pid = pm->rec.pid, .pm_start_ticks = pm->rec.start_ticks };
        return s;
}

/* Does this conninfo name the server itself (host or hostaddr)? */
static bool conninfo_names_host(const char *conninfo) {
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", &err);
        if (!opts) {
                PQfreemem(err);
                return false;
        }
        bool yes = false;
        for (PQconninfoOption *p = opts; p->keyword; p++)
                if (p->val && p->val[0] && (!strcmp(p->keyword, "host") || !strcmp(p->keyword, "hostaddr")))
                        yes = true;
        PQconninfoFree(opts);
        return yes;
}

static void slot_drop_conn(ClusterSlot *s) {
        s->conn = activity_conn_free(s->conn);
        free(s->conninfo);
        s->conninfo = NULL;
}

static int prepare_cluster(Engine *e, PgCluster *c, const PgProcess *pm, uint64_t now) {
        const Config *cfg = e->config;
        int port = c->pmfile_valid ? c->pmfile.port : 0;
        const ClusterConf *cc = config_find_cluster(cfg, c->name, c->data_directory[0] ? c->data_directory : NULL, port);
        snprintf(c->config_name, sizeof c->config_name, "%s", cc ? cc->name : "");
        c->enforce = config_cluster_enforce(cfg, cc);
        ClusterSlot *s = slot_for(e, pm);
        if (!s)
                return -ENOMEM;
        s->seen = true;

        /* Never guess which server: without a postmaster.pid that is this very postmaster's, the
         * default socket may well be another cluster's. Only the cluster's own [cluster] section
         * naming a host says where it is. */
        bool configured = cc && cc->conninfo && conninfo_names_host(cc->conninfo);
        if (!c->pmfile_valid && !configured) {
                slot_drop_conn(s);
                snprintf(c->activity, sizeof c->activity, "unavailable: %s", c->pmfile_why[0] ? c->pmfile_why : "postmaster.pid not verified");
                return 0;
        }
        /* A server still starting (or stopping) has no sessions to show, and connecting now only
         * fails and backs off: wait for postmaster.pid to say ready. 9.6 writes no status. */
        if (c->pmfile_valid && c->pmfile.status[0] && strcmp(c->pmfile.status, "ready") != 0 &&
            strcmp(c->pmfile.status, "standby") != 0 && !configured) {
                slot_drop_conn(s);
                snprintf(c->activity, sizeof c->activity, "unavailable: the server is not ready (postmaster.pid says %s)",
                         c->pmfile.status);
                return 0;
        }
        /* Nor before its children carry their titles: the cluster's name (cluster_name, in their
         * titles) is not known before, and the first word about it would name the data directory. */
        if (!c->children_titled && !configured) {
                slot_drop_conn(s);
                snprintf(c->activity, sizeof c->activity, "unavailable: the server is starting (no child process has its title yet)");
                return 0;
        }
        if (cc && cc->port && !port)
                port = cc->port;
        const char *conninfo = cc && cc->conninfo ? cc->conninfo : cfg->conninfo;
        const char *host = c->pmfile_valid && c->pmfile.socket_dir[0] ? c->pmfile.socket_dir : NULL;
        char listen[256];
        if (!configured && !host) {
                /* no Unix socket: its TCP address, never the default socket (another cluster's) */
                snprintf(listen, sizeof listen, "%.*s", (int) strcspn(c->pmfile.listen_addr, ", "), c->pmfile.listen_addr);
                if (!listen[0]) {
                        slot_drop_conn(s);
                        snprintf(c->activity, sizeof c->activity, "unavailable: the server has neither a Unix socket nor a TCP address");
                        return 0;
                }
                host = strcmp(listen, "*") == 0 ? "localhost" : listen;
        }

        _cleanup_free_ char *key = NULL;
        if (asprintf(&key, "%s|%s|%d|%u|%llu|%llu", conninfo, host ? host : "", port, cfg->query_max_length,
                     (unsigned long long) cfg->connect_timeout_usec, (unsigned long long) cfg->query_timeout_usec) < 0)
                return -ENOMEM;
        if (!s->conn || !s->conninfo || strcmp(s->conninfo, key) != 0) {
                slot_drop_conn(s);
                s->conninfo = TAKE_PTR(key);
                s->verified_connects = 0;
                s->wrong_server[0] = 0;
                ActivityOptions o = { .connect_timeout_usec = cfg->connect_timeout_usec,
                                      .query_timeout_usec = cfg->query_timeout_usec,
                                      .query_max_length = cfg->query_max_length };
                int r = activity_conn_new(conninfo, host, port, &o, &s->conn);
                if (r < 0) {
                        snprintf(c->activity, sizeof c->activity, "unavailable: invalid conninfo");
                        return 0;
                }
        }
        activity_conn_start(s->conn, now);
        return 0;
}

static int cmp_gone_backend(const void *a, const void *b) {
        pid_t x = ((const GoneBackend *) a)->pid, y = ((const GoneBackend *) b)->pid;
        return (x > y) - (x < y);
}

static const GoneBackend *find_backend(const GoneBackend *v, size_t n, const PgProcess *p) {
        GoneBackend key = { .pid = p->rec.pid };
        const GoneBackend *g = n ? bsearch(&key, v, n, sizeof key, cmp_gone_backend) : NULL;
        return g && g->start_ticks == p->rec.start_ticks ? g : NULL;
}

/* Whose client socket to look at: every backend not known to be idle (by the last answer of
 * its server, else by its title). */
static bool client_wanted(const PgProcess *p, void *userdata) {
        Engine *e = userdata;
        if (find_backend(e->idle, e->n_idle, p))
                return false;
        return strcmp(p->title.state, "idle") != 0;
}

/* best effort: without netlink there is no client_gone */
static void probe_clients(Engine *e) {
        free(e->gone);
        e->gone = NULL;
        e->n_gone = 0;
        (void) client_gone_probe_run(e->probe, &e->tree, client_wanted, e, &e->gone, &e->n_gone);
}

/* The local backends idle now, for the next cycle's probe. */
static void remember_idle(Engine *e) {
        const PgTree *t = &e->tree;
        size_t n = 0;
        GoneBackend *v = malloc((t->n_procs ? t->n_procs : 1) * sizeof *v);
        if (!v)
                return; /* then every backend is looked at */
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                const char *state = p->act ? p->act->state : NULL;
                if (state && !strcmp(state, "idle"))
                        v[n++] = (GoneBackend){ p->rec.pid, p->rec.start_ticks };
        }
        if (n > 1)
                qsort(v, n, sizeof *v, cmp_gone_backend);
        free(e->idle);
        e->idle = v;
        e->n_idle = n;
}

int engine_begin_cycle(Engine *e, bool force_full) {
        e->cycle_started = now_monotonic_usec();
        if (e->have_tree) {
                tree_free(&e->tree);
                e->have_tree = false;
                remote_set_tree_gone(e->remote);
        }
        int r = scanner_refresh(e->scanner, force_full, &e->tree, &e->scan);
        if (r < 0)
                return r;
        e->have_tree = true;
        probe_clients(e);
        for (size_t i = 0; i < e->n_slots; i++)
                e->slots[i].seen = false;
        uint64_t now = now_monotonic_usec();
        for (size_t i = 0; i < e->tree.n_clusters; i++) {
                PgCluster *c = &e->tree.clusters[i];
                if ((r = prepare_cluster(e, c, &e->tree.procs[c->postmaster], now)) < 0)
                        return r;
        }
        if ((r = remote_set_begin(&e->remote, e->config, now)) < 0 ||
            (r = remote_set_add_to_tree(e->remote, e->config, &e->tree, false)) < 0)
                return r;
        /* connections of clusters that are gone */
        for (size_t i = 0; i < e->n_slots;) {
                if (!e->slots[i].seen) {
                        slot_free(&e->slots[i]);
                        e->slots[i] = e->slots[--e->n_slots];
                } else
                        i++;
        }
        return 0;
}

static ClusterSlot *slot_of_cluster(Engine *e, const PgCluster *c) {
        const PgProcess *pm = &e->tree.procs[c->postmaster];
        for (size_t i = 0; i < e->n_slots; i++)
                if (e->slots[i].pm_pid == pm->rec.pid && e->slots[i].pm_start_ticks == pm->rec.start_ticks)
                        return &e->slots[i];
        return NULL;
}

size_t engine_connections(Engine *e, ActivityConn **conns, size_t max) {
        size_t n = 0;
        for (size_t i = 0; i < e->n_slots && n < max; i++)
                if (e->slots[i].conn)
                        conns[n++] = e->slots[i].conn;
        return n + remote_set_connections(e->remote, conns + n, max - n);
}

bool engine_waiting(Engine *e, uint64_t now) {
        for (size_t i = 0; i < e->n_slots; i++)
                if (e->slots[i].conn && activity_conn_busy(e->slots[i].conn))
                        return true;
        return remote_set_waiting(e->remote, now);
}

uint64_t engine_remote_deadline(Engine *e) {
        return remote_set_deadline(e->remote);
}

/* Is the process in a PID namespace of its own (a container)? Its pids there are not ours. */
static bool in_other_pid_namespace(pid_t pid) {
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t k = read(fd, buf, sizeof buf - 1);
        if (k <= 0)
                return false;
        buf[k] = 0;
        const char *ns = strstr(buf, "\nNSpid:");
        if (!ns)
                return false;
        ns += 8;
        size_t l = strcspn(ns, "\n");
        int fields = 0;
        for (size_t i = 0; i < l; i++)
                if ((i == 0 || ns[i - 1] == '\t' || ns[i - 1] == ' ') && ns[i] >= '0' && ns[i] <= '9')
                        fields++;
        return fields > 1;
}

/* Once per connection: the backend serving pgtreed must be a child of this very postmaster, or
 * the server it reached is another cluster (a socket or port that is not this cluster's). */
static void verify_server(ClusterSlot *s, const PgProcess *pm, const ActivitySnapshot *snap) {
        unsigned connects = activity_conn_connects(s->conn);
        if (connects == s->verified_connects)
                return;
        s->verified_connects = connects;
        s->wrong_server[0] = 0;
        if (in_other_pid_namespace(pm->rec.pid))
                return; /* its backend pid is the container's: nothing to compare on the host */
        ProcStat st;
        int r = proc_stat_read(NULL, snap->own_pid, &st);
        if (r < 0)
                snprintf(s->wrong_server, sizeof s->wrong_server,
                         "the server reached is not this cluster (its backend pid %d is not a process of this host: %s)",
                         (int) snap->own_pid, strerror(-r));
        else if (st.ppid != pm->rec.pid)
                snprintf(s->wrong_server, sizeof s->wrong_server,
                         "the server reached is not this cluster (its backend %d is a child of %d, not of postmaster %d)",
                         (int) snap->own_pid, (int) st.ppid, (int) pm->rec.pid);
}

int engine_finish_cycle(Engine *e, FindingEvents *events) {
        PgTree *t = &e->tree;
        for (size_t i = 0; i < t->n_clusters; i++) {
                PgCluster *c = &t->clusters[i];
                ClusterSlot *s = slot_of_cluster(e, c);
                const ActivitySnapshot *snap = s && s->conn ? activity_conn_snapshot(s->conn) : NULL;
                if (snap) {
                        verify_server(s, &t->procs[c->postmaster], snap);
                        if (s->wrong_server[0]) {
                                snprintf(c->activity, sizeof c->activity, "unavailable: %s", s->wrong_server);
                                continue;
                        }
                }
                if (s && s->conn)
                        snprintf(c->activity, sizeof c->activity, "%s",
                                 snap ? "ok" : activity_conn_busy(s->conn) ? "unavailable: no answer in time"
                                                                          : activity_conn_status(s->conn));
                if (snap && snap->server_version >= 90600)
                        s->server_major = snap->server_version / 10000;
                /* PG_VERSION was unreadable (pgtreed not root nor the cluster's owner): the version
                 * the server told keeps naming its processes when the connection drops */
                if (!c->server_major && s && s->server_major)
                        tree_set_server_major(t, i, s->server_major);
                if (snap)
                        join_activity(t, i, snap, NULL);
        }
        /* pg_stat_activity tells the state of joined sessions: their titles need not be read
         * again until they turn active */
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (p->act && (!p->act->state || strcmp(p->act->state, "active") != 0))
                        scanner_title_stable(e->scanner, p->rec.pid, p->rec.start_ticks);
        }

        /* client_gone: dead when the cycle began, and still working by the answer that came after
         * (by its title when its server did not answer) */
        pid_t *gone = calloc(e->n_gone ? e->n_gone : 1, sizeof *gone);
        size_t n_gone = 0;
        if (!gone)
                return -ENOMEM;
        for (size_t i = 0; i < e->n_gone; i++) {
                int idx = tree_find(t, e->gone[i].pid);
                if (idx < 0 || t->procs[idx].rec.start_ticks != e->gone[i].start_ticks)
                        continue; /* that backend is gone */
                const PgProcess *p = &t->procs[idx];
                bool known = p->cluster >= 0 && t->clusters[p->cluster].snapshot;
                if (known && !p->act)
                        continue; /* unlisted: it is leaving after a clean disconnect */
                const char *state = p->act && p->act->state ? p->act->state : p->title.state;
                if (!state[0] || !strcmp(state, "idle"))
                        continue; /* idle: it is leaving after a clean disconnect */
                gone[n_gone++] = p->rec.pid;
        }
        remember_idle(e);

        /* managed servers: their sessions from pg_stat_activity alone, after everything that
         * reads /proc or the host's sockets */
        int r = remote_set_add_to_tree(e->remote, e->config, t, true);
        if (r < 0) {
                free(gone);
                return r;
        }
        Findings cand = {};
        uint64_t min_after[_FINDING_KIND_MAX];
        for (unsigned k = 0; k < _FINDING_KIND_MAX; k++)
                min_after[k] = rules_min_after(e->config, (FindingKind) k);
        r = findings_detect_filtered(t, gone, n_gone, min_after, &cand);
        free(gone);
        if (r >= 0)
                r = finding_store_update(&e->store, &cand, e->config, t->now, events);
        findings_free(&cand);
        if (r < 0)
                return r;
        findings_free(&e->open);
        r = finding_store_list(&e->store, &e->open);
        if (r < 0)
                return r;
        /* index the open findings into the current tree */
        for (size_t i = 0; i < e->open.n; i++) {
                Finding *f = &e->open.items[i];
                f->proc = f->kind == FINDING_STALE_ACTIVITY ? -1 : tree_find_finding(t, f);
        }
        e->cycles++;
        e->cycle_seconds = (double) (now_monotonic_usec() - e->cycle_started) / 1e6;
        return 0;
}

int engine_run_cycle_blocking(Engine *e, bool force_full, FindingEvents *events) {
        int r = engine_begin_cycle(e, force_full);
        if (r < 0)
                return r;
        ActivityConn *conns[64];
        size_t n = engine_connections(e, conns, ELEMENTSOF(conns));
        uint64_t deadline = now_monotonic_usec() + e->config->connect_timeout_usec + e->config->query_timeout_usec;
        activity_conns_run(conns, n, deadline);
        return engine_finish_cycle(e, events);
}

void engine_report_reachability(Engine *e, ReachabilityChanged cb, void *userdata) {
        for (size_t i = 0; i < e->tree.n_clusters; i++) {
                PgCluster *c = &e->tree.clusters[i];
                ClusterSlot *s = slot_of_cluster(e, c);
                if (!s)
                        continue;
                bool reachable = c->snapshot != NULL;
                if (!s->reported || reachable != s->reachable) {
                        s->reported = true;
                        s->reachable = reachable;
                        if (cb)
                                cb(c, reachable, userdata);
                }
        }
        remote_set_report_reachability(e->remote, &e->tree, cb, userdata);
}
