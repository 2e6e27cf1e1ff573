/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "container.h"
#include "engine.h"
#include "foreign.h"
#include "join.h"
#include "macro.h"
#include "proc-scan.h"
#include "rules.h"
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
        if ((r = scanner_watch_default_socket_dirs(e->scanner)) < 0) {
                client_gone_probe_free(e->probe);
                scanner_free(e->scanner);
                return r;
        }
        *ret = TAKE_PTR(e);
        return 0;
}

/* A connection out of use: freed at once if nothing published can point into it. */
static void drop_conn(Engine *e, ActivityConn *a) {
        if (!a)
                return;
        if (!e->have_tree || GROW(e->dropped, e->dropped_allocated, e->n_dropped + 1) < 0) {
                activity_conn_free(a);
                return;
        }
        e->dropped[e->n_dropped++] = a;
}

static void slot_free(Engine *e, ClusterSlot *s) {
        drop_conn(e, s->conn);
        if (s->have_sockdir)
                close(s->sockdir_fd);
        free(s->conninfo);
        *s = (ClusterSlot){};
}

Engine *engine_free(Engine *e) {
        if (!e)
                return NULL;
        if (e->have_tree)
                tree_free(&e->tree);
        if (e->have_next)
                tree_free(&e->next);
        e->have_tree = e->have_next = false;
        for (size_t i = 0; i < e->n_slots; i++)
                slot_free(e, &e->slots[i]);
        free(e->slots);
        for (size_t i = 0; i < e->n_dropped; i++)
                activity_conn_free(e->dropped[i]);
        free(e->dropped);
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

static void slot_drop_conn(Engine *e, ClusterSlot *s) {
        drop_conn(e, s->conn);
        s->conn = NULL;
        free(s->conninfo);
        s->conninfo = NULL;
}

static int prepare_cluster(Engine *e, PgCluster *c, const PgProcess *pm, uint64_t now) {
        const Config *cfg = e->config;
        int port = c->pmfile_valid ? c->pmfile.port : 0;
        const char *dd = c->data_directory[0] ? c->data_directory : NULL;
        const ClusterConf *cc = config_find_cluster(cfg, c->name, dd, port);
        /* Renamed NAME:PORT because another cluster took its cluster_name (any local user can
         * start one): a section that selects by name still means every cluster of that name,
         * else that user would switch this cluster's section (enforce, conninfo) off. */
        if (!cc && c->name_shared && c->cluster_name_known && c->cluster_name[0])
                cc = config_find_cluster(cfg, c->cluster_name, dd, port);
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
                slot_drop_conn(e, s);
                snprintf(c->activity, sizeof c->activity, "unavailable: %s", c->pmfile_why[0] ? c->pmfile_why : "postmaster.pid not verified");
                return 0;
        }
        /* A server still starting (or stopping) has no sessions to show, and connecting now only
         * fails and backs off: wait for postmaster.pid to say ready. 9.6 writes no status. */
        if (c->pmfile_valid && c->pmfile.status[0] && strcmp(c->pmfile.status, "ready") != 0 &&
            strcmp(c->pmfile.status, "standby") != 0 && !configured) {
                slot_drop_conn(e, s);
                snprintf(c->activity, sizeof c->activity, "unavailable: the server is not ready (postmaster.pid says %s)",
                         c->pmfile.status);
                return 0;
        }
        /* Nor before its children carry their titles: the cluster's name (cluster_name, in their
         * titles) is not known before, and the first word about it would name the data directory. */
        if (!c->children_titled && !configured) {
                slot_drop_conn(e, s);
                snprintf(c->activity, sizeof c->activity, "unavailable: the server is starting (no child process has its title yet)");
                return 0;
        }
        if (cc && cc->port && !port)
                port = cc->port;
        const char *conninfo = cc && cc->conninfo ? cc->conninfo : cfg->conninfo;
        const char *host = c->pmfile_valid && c->pmfile.socket_dir[0] ? c->pmfile.socket_dir : NULL;
        char listen[256], in_root[64];
        if (host && c->container.root[0] && !configured) {
                /* a container's socket: in its mount namespace, reached through its root (a path
                 * that can be longer than sun_path's 108 bytes: an fd of the directory is not) */
                if (!s->have_sockdir) {
                        char path[PATH_MAX + 80];
                        int fd = container_path(c->container.root, host, path, sizeof path) < 0
                                         ? -ENAMETOOLONG
                                         : open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
                        if (fd < 0) {
                                int err = fd == -ENAMETOOLONG ? ENAMETOOLONG : errno;
                                slot_drop_conn(e, s);
                                snprintf(c->activity, sizeof c->activity,
                                         "unavailable: the container's socket directory %s%.300s cannot be opened: %s",
                                         c->container.root, host, strerror(err));
                                return 0;
                        }
                        s->sockdir_fd = fd;
                        s->have_sockdir = true;
                }
                snprintf(in_root, sizeof in_root, "/proc/self/fd/%d", s->sockdir_fd);
                host = in_root;
        }
        if (!configured && !host) {
                /* no Unix socket: its TCP address, never the default socket (another cluster's) */
                snprintf(listen, sizeof listen, "%.*s", (int) strcspn(c->pmfile.listen_addr, ", "), c->pmfile.listen_addr);
                if (!listen[0]) {
                        slot_drop_conn(e, s);
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
                slot_drop_conn(e, s);
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
        (void) client_gone_probe_run(e->probe, &e->next, client_wanted, e, &e->gone, &e->n_gone);
}

bool engine_clients_died(Engine *e) {
        if (!e->have_tree || e->have_next)
                return false; /* no tree yet, or a cycle is under way (it probes itself) */
        GoneBackend *gone = NULL;
        size_t n = 0;
        /* on the published tree: the same backends the last cycle looked at; TCP clients and at
         * most CLIENT_GONE_BETWEEN_MAX Unix ones (at 500 sessions, looking up a hundred Unix
         * sockets between cycles cost a tenth more CPU per interval) */
        client_gone_probe_limit_unix(e->probe, CLIENT_GONE_BETWEEN_MAX);
        int r = client_gone_probe_run(e->probe, &e->tree, client_wanted, e, &gone, &n);
        client_gone_probe_limit_unix(e->probe, 0);
        if (r < 0)
                return false;
        bool news = false;
        for (size_t i = 0; i < n && !news; i++) {
                /* not dead when the last cycle began (judged then) */
                const GoneBackend *g = e->n_gone ? bsearch(&gone[i], e->gone, e->n_gone, sizeof *g, cmp_gone_backend) : NULL;
                news = !g || g->start_ticks != gone[i].start_ticks;
        }
        free(gone);
        return news;
}

/* The local backends idle now, for the next cycle's probe. */
static void remember_idle(Engine *e) {
        const PgTree *t = &e->next; /* called while the cycle's tree is built */
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
        if (e->have_next) { /* a cycle that did not finish */
                tree_free(&e->next);
                e->have_next = false;
        }
        remote_set_tree_gone(e->remote); /* the new tree has no managed servers in it yet */
        int r = scanner_refresh(e->scanner, force_full, &e->next, &e->scan);
        if (r < 0)
                return r;
        e->have_next = true;
        e->full_scans += e->scan.full;
        for (size_t i = 0; i < e->next.n_foreign; i++)
                e->next.foreign[i].allowed = config_foreign_allowed(e->config, e->next.foreign[i].rec.title,
                                                                    e->next.foreign[i].exe);
        probe_clients(e);
        for (size_t i = 0; i < e->n_slots; i++)
                e->slots[i].seen = false;
        uint64_t now = now_monotonic_usec();
        for (size_t i = 0; i < e->next.n_clusters; i++) {
                PgCluster *c = &e->next.clusters[i];
                if ((r = prepare_cluster(e, c, &e->next.procs[c->postmaster], now)) < 0)
                        return r;
        }
        if ((r = remote_set_begin(&e->remote, e->config, now)) < 0 ||
            (r = remote_set_add_to_tree(e->remote, e->config, &e->next, false)) < 0)
                return r;
        /* connections of clusters that are gone */
        for (size_t i = 0; i < e->n_slots;) {
                if (!e->slots[i].seen) {
                        slot_free(e, &e->slots[i]);
                        e->slots[i] = e->slots[--e->n_slots];
                } else
                        i++;
        }
        return 0;
}

/* The finished tree becomes what readers see; what the old one pointed into can go. */
static void publish(Engine *e) {
        if (e->have_tree)
                tree_free(&e->tree);
        e->tree = e->next;
        e->have_tree = e->have_next;
        e->next = (PgTree){};
        e->have_next = false;
        for (size_t i = 0; i < e->n_dropped; i++)
                activity_conn_free(e->dropped[i]);
        e->n_dropped = 0;
        for (size_t i = 0; i < e->n_slots; i++)
                activity_conn_release_retired(e->slots[i].conn);
}

/* A cycle failed after its results came in: the published tree may point into snapshots that
 * are being replaced, so it is withdrawn (readers see no tree until the next cycle). */
static void unpublish(Engine *e) {
        if (e->have_tree)
                tree_free(&e->tree);
        e->have_tree = false;
        for (size_t i = 0; i < e->n_dropped; i++)
                activity_conn_free(e->dropped[i]);
        e->n_dropped = 0;
        for (size_t i = 0; i < e->n_slots; i++)
                activity_conn_release_retired(e->slots[i].conn);
}

static ClusterSlot *slot_of_cluster(Engine *e, const PgTree *t, const PgCluster *c) {
        const PgProcess *pm = &t->procs[c->postmaster];
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

/* The host pid of the child of pm whose pid in pm's PID namespace is ns_pid, or 0. */
static pid_t child_with_ns_pid(const PgProcess *pm, pid_t ns_pid) {
        _cleanup_free_ pid_t *children = NULL;
        size_t n = 0;
        if (proc_read_children(NULL, pm->rec.pid, &children, &n) < 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                char path[64], buf[2048];
                snprintf(path, sizeof path, "/proc/%d/status", (int) children[i]);
                _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
                ssize_t k = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
                if (k <= 0)
                        continue;
                buf[k] = 0;
                if (proc_status_ns_pid(buf, children[i]) == ns_pid)
                        return children[i];
        }
        return 0;
}

/* Once per connection: the backend serving pgtreed must be a child of this very postmaster, or
 * the server it reached is another cluster (a socket or port that is not this cluster's). */
static void verify_server(ClusterSlot *s, const PgProcess *pm, const ActivitySnapshot *snap) {
        unsigned connects = activity_conn_connects(s->conn);
        if (connects == s->verified_connects)
                return;
        s->verified_connects = connects;
        s->wrong_server[0] = 0;
        if (pm->rec.ident.ns_pid > 0) {
                /* A container's: its backend pid is one of its PID namespace (another container's
                 * server can hand out the same one). Over a Unix socket the listening process is
                 * the proof: it must be this postmaster. */
                pid_t peer = activity_conn_peer_pid(s->conn);
                if (peer > 0 && peer != pm->rec.pid)
                        snprintf(s->wrong_server, sizeof s->wrong_server,
                                 "the server reached is not this cluster (its socket is held by pid %d, not by postmaster %d)",
                                 (int) peer, (int) pm->rec.pid);
                else if (peer == 0 && child_with_ns_pid(pm, snap->own_pid) == 0)
                        snprintf(s->wrong_server, sizeof s->wrong_server,
                                 "the server reached is not this cluster (no child of postmaster %d has pid %d in its "
                                 "container)", (int) pm->rec.pid, (int) snap->own_pid);
                return;
        }
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

static int finish_cycle(Engine *e, FindingEvents *events);

int engine_finish_cycle(Engine *e, FindingEvents *events) {
        if (!e->have_next)
                return -ESTALE;
        int r = finish_cycle(e, events);
        if (r < 0)
                unpublish(e);
        else
                publish(e);
        return r;
}

/* An active session's title, read when this cycle began (between the previous answer and this
 * one), is still its title if both answers show it running the same statement and the title
 * shows no lock wait that may have ended since. */
static bool title_still_valid(const ActivitySnapshot *prev, const PgProcess *p) {
        if (!prev || !p->rec.title)
                return false;
        size_t len = strlen(p->rec.title);
        if (len >= 8 && strcmp(p->rec.title + len - 8, " waiting") == 0)
                return false;
        /* backend_start, compared there, tells a reused pid apart */
        return activity_row_same_statement(activity_snapshot_find(prev, p->act->pid), p->act);
}

static int finish_cycle(Engine *e, FindingEvents *events) {
        PgTree *t = &e->next;
        for (size_t i = 0; i < t->n_clusters; i++) {
                PgCluster *c = &t->clusters[i];
                ClusterSlot *s = slot_of_cluster(e, t, c);
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
                /* pgtreed's own backends are its own in every cycle, joined or not: a cycle whose
                 * query did not answer must not make them ordinary targets */
                for (size_t k = 0; s && s->conn && k < t->n_procs; k++) {
                        PgProcess *p = &t->procs[k];
                        if (p->cluster == (int) i && p->depth == 1 &&
                            activity_conn_backend_pid(s->conn) == pg_process_ns_pid(p)) /* the server's pid */
                                p->own = true;
                }
        }
        /* what runs below the archiver, startup process, checkpointer or postmaster: expected only if
         * it is what the server is configured to run (its settings, read over its connection) */
        for (size_t i = 0; i < t->n_clusters; i++) {
                ClusterSlot *s = slot_of_cluster(e, t, &t->clusters[i]);
                const ServerCommands *sc = s && s->conn && !s->wrong_server[0] ? activity_conn_commands(s->conn) : NULL;
                foreign_judge(t, i, sc);
                t->clusters[i].server_commands_reads = sc ? sc->reads : 0;
                t->clusters[i].server_commands_known = sc && sc->known;
        }
        /* pg_stat_activity tells the state of joined sessions: their titles need not be read
         * again until they turn active, nor while they run the same statement */
        _cleanup_free_ const ActivitySnapshot **prev = calloc(t->n_clusters ? t->n_clusters : 1, sizeof *prev);
        if (!prev)
                return -ENOMEM;
        for (size_t i = 0; i < t->n_clusters; i++) {
                ClusterSlot *s = t->clusters[i].snapshot ? slot_of_cluster(e, t, &t->clusters[i]) : NULL;
                prev[i] = s ? activity_conn_previous_snapshot(s->conn) : NULL;
        }
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                /* client backends only: the archiver, startup process and checkpointer have no
                 * state there, and what they run (their children) is looked at every refresh */
                if (p->act && p->title.backend_type == BACKEND_CLIENT &&
                    (!p->act->state || strcmp(p->act->state, "active") != 0))
                        scanner_title_stable(e->scanner, p->rec.pid, p->rec.start_ticks);
                else if (p->act && p->cluster >= 0 && (size_t) p->cluster < t->n_clusters &&
                         title_still_valid(prev[p->cluster], p))
                        scanner_title_keep(e->scanner, p->rec.pid, p->rec.start_ticks);
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
        /* room for as many as last time: no realloc copying 8 KB findings while they are added */
        (void) GROW(cand.items, cand.allocated, e->store.n + 16);
        uint64_t min_after[_FINDING_KIND_MAX];
        for (unsigned k = 0; k < _FINDING_KIND_MAX; k++)
                min_after[k] = rules_min_after(e->config, (FindingKind) k);
        r = findings_detect_filtered(t, gone, n_gone, min_after, &cand);
        free(gone);
        if (r >= 0)
                r = finding_store_update_take(&e->store, &cand, e->config, t->now, events);
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
        /* thresholds reached within a tenth of an interval of the first: one cycle for them all */
        e->next_crossing = findings_next_crossing(t, e->config, (double) e->config->interval_usec / 10e6);
        /* and what the store tracks: second looks, graces, the thresholds of orphan kinds */
        double due = finding_store_next_moment(&e->store, e->config, t->now);
        if (due > 0 && (e->next_crossing <= 0 || due < e->next_crossing))
                e->next_crossing = due;
        e->cycles++;
        if (e->scan.full) {
                e->full_scans++;
                e->complete_scans += e->scan.complete;
                e->processes_read += e->scan.read;
        }
        e->cycle_seconds = (double) (now_monotonic_usec() - e->cycle_started) / 1e6;
        return 0;
}

bool engine_is_own_backend(const Engine *e, const PgTree *t, const PgProcess *p) {
        if (p->own)
                return true;
        if (p->cluster < 0 || p->cluster >= (int) t->n_clusters)
                return false;
        const PgProcess *pm = &t->procs[t->clusters[p->cluster].postmaster];
        for (size_t i = 0; i < e->n_slots; i++)
                if (e->slots[i].pm_pid == pm->rec.pid && e->slots[i].pm_start_ticks == pm->rec.start_ticks)
                        return activity_conn_is_own_backend(e->slots[i].conn, pg_process_ns_pid(p));
        return false;
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
                ClusterSlot *s = slot_of_cluster(e, &e->tree, c);
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
