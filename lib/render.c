/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "activity.h"
#include "join.h"
#include "locks.h"
#include "macro.h"
#include "remote.h"
#include "render.h"
#include <fnmatch.h>

static json_object *str_or_null(const char *s) {
        return s && *s ? json_object_new_string(s) : NULL;
}

static json_object *iso_time(double epoch) {
        if (epoch <= 0)
                return NULL;
        time_t t = (time_t) epoch;
        struct tm tm;
        char buf[32];
        if (!gmtime_r(&t, &tm) || strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return NULL;
        return json_object_new_string(buf);
}

json_object *json_number(double v) {
        if (!isfinite(v))
                return NULL;
        char buf[40];
        for (int prec = 1; prec <= 17; prec++) {
                snprintf(buf, sizeof buf, "%.*g", prec, v);
                if (strtod(buf, NULL) == v)
                        break;
        }
        /* keep it a JSON number that reads back as a double */
        if (!strpbrk(buf, ".eEn"))
                strncat(buf, ".0", sizeof buf - strlen(buf) - 1);
        return json_object_new_double_s(v, buf);
}

static json_object *round1(double v) {
        return json_number(round(v * 10.0) / 10.0);
}

json_object *render_process_json(const PgTree *t, const PgProcess *p) {
        json_object *o = json_object_new_object();
        const TitleInfo *ti = &p->title;
        const ActivityRow *a = p->act;
        char client[128];
        proc_client(p, client, sizeof client);
        pid_t leader = a && a->leader_pid > 0 && a->leader_pid != p->rec.pid ? a->leader_pid : ti->leader_pid;
        json_object_object_add(o, "pid", json_object_new_int(p->rec.pid));
        if (p->rec.ident.ns_pid > 0) /* what pg_stat_activity and the container show */
                json_object_object_add(o, "ns_pid", json_object_new_int(p->rec.ident.ns_pid));
        json_object_object_add(o, "ppid", json_object_new_int(p->rec.ppid));
        json_object_object_add(o, "backend_type", json_object_new_string(proc_backend_type(p)));
        json_object_object_add(o, "title", str_or_null(p->rec.title));
        json_object_object_add(o, "user", str_or_null(proc_user(p)));
        json_object_object_add(o, "database", str_or_null(proc_database(p)));
        json_object_object_add(o, "client", str_or_null(client));
        json_object_object_add(o, "state", str_or_null(proc_state(p)));
        json_object_object_add(o, "status", str_or_null(ti->status));
        /* update_process_title = off: a session's title has its fixed part only, and without
         * pg_stat_activity its state is not known (not guessed) */
        if (ti->backend_type == BACKEND_CLIENT || ti->backend_type == BACKEND_WALSENDER)
                json_object_object_add(o, "title_status", json_object_new_boolean(!(ti->flags & TITLE_NO_STATUS)));
        json_object_object_add(o, "leader_pid", leader > 0 ? json_object_new_int(leader) : NULL);
        json_object_object_add(o, "application_name", str_or_null(proc_application(p)));
        json_object_object_add(o, "backend_start", iso_time(a ? a->backend_start : 0));
        json_object_object_add(o, "query_start", iso_time(a ? a->query_start : 0));
        json_object_object_add(o, "xact_start", iso_time(a ? a->xact_start : 0));
        json_object_object_add(o, "state_change", iso_time(a ? a->state_change : 0));
        bool session = ti->backend_type == BACKEND_CLIENT || ti->backend_type == BACKEND_WALSENDER ||
                       ti->backend_type == BACKEND_PARALLEL_WORKER;
        const char *wet = a ? a->wait_event_type : session && (ti->flags & TITLE_WAITING) ? "Lock" : NULL;
        json_object_object_add(o, "wait_event_type", str_or_null(wet));
        json_object_object_add(o, "wait_event", str_or_null(a ? a->wait_event : NULL));
        json_object_object_add(o, "backend_xmin_age", a && a->xmin_age >= 0 ? json_object_new_int64(a->xmin_age) : NULL);
        json_object_object_add(o, "query", str_or_null(a ? a->query : NULL));
        if (a && a->n_blocked_by > 0) {
                json_object *b = json_object_new_array();
                for (size_t i = 0; i < a->n_blocked_by; i++)
                        json_object_array_add(b, json_object_new_int(a->blocked_by[i]));
                json_object_object_add(o, "blocked_by", b);
                const PgCluster *c = p->cluster >= 0 ? &t->clusters[p->cluster] : NULL;
                pid_t root;
                if (c && c->snapshot) {
                        int r = lock_root_blocker(c->snapshot, p->rec.pid, &root, NULL);
                        if (r == 0)
                                json_object_object_add(o, "root_blocker", json_object_new_int(root));
                        else if (r == -ELOOP)
                                json_object_object_add(o, "lock_cycle", json_object_new_boolean(true));
                }
        }
        if (a && p->cluster >= 0 && t->clusters[p->cluster].snapshot) {
                size_t n = lock_count_blocked(t->clusters[p->cluster].snapshot, p->rec.pid);
                if (n > 0)
                        json_object_object_add(o, "blocking", json_object_new_int((int) n));
        }
        json_object_object_add(o, "activity_joined", json_object_new_boolean(a != NULL));
        if (p->act_mismatch)
                json_object_object_add(o, "pid_reused", json_object_new_boolean(true));
        if (p->own || pg_process_is_pgtree(p))
                json_object_object_add(o, "pgtree_connection", json_object_new_boolean(true));
        if (pg_process_is_remote(t, p)) {
                /* a managed server's session: nothing of it is in this host's /proc */
                json_object_object_add(o, "ppid", NULL);
                json_object_object_add(o, "cpu_percent", NULL);
                json_object_object_add(o, "rss_anon_kb", NULL);
                json_object_object_add(o, "rss_kb", NULL);
                json_object_object_add(o, "uid", NULL);
                json_object_object_add(o, "process_state", NULL);
                json_object_object_add(o, "start_ticks", json_object_new_uint64(p->rec.start_ticks));
                double start = pg_process_start_time(t, p);
                json_object_object_add(o, "start_time", iso_time(start));
                json_object_object_add(o, "age_s", start > 0 && t->now > 0 ? json_object_new_int64((int64_t) (t->now - start)) : NULL);
                if (p->leader_missing)
                        json_object_object_add(o, "leader_missing", json_object_new_boolean(true));
                return o;
        }
        json_object_object_add(o, "cpu_percent", round1(p->rec.cpu_percent >= 0 ? p->rec.cpu_percent : 0));
        json_object_object_add(o, "rss_anon_kb", json_object_new_int64((int64_t) p->rec.rss_anon_kb));
        json_object_object_add(o, "rss_kb", json_object_new_int64((int64_t) p->rec.rss_kb));
        if (p->rec.io_valid) {
                json_object_object_add(o, "read_bytes", json_object_new_uint64(p->rec.read_bytes));
                json_object_object_add(o, "write_bytes", json_object_new_uint64(p->rec.write_bytes));
        }
        json_object_object_add(o, "uid", json_object_new_int64(p->rec.uid));
        char st[2] = { p->rec.state, 0 };
        json_object_object_add(o, "process_state", json_object_new_string(st));
        json_object_object_add(o, "start_ticks", json_object_new_uint64(p->rec.start_ticks));
        double start = pg_process_start_time(t, p);
        json_object_object_add(o, "start_time", iso_time(start));
        json_object_object_add(o, "age_s", start > 0 ? json_object_new_int64((int64_t) (t->now - start)) : NULL);
        json_object_object_add(o, "worker", str_or_null(ti->worker));
        json_object_object_add(o, "waiting", json_object_new_boolean(!!(ti->flags & TITLE_WAITING)));
        json_object_object_add(o, "title_truncated", json_object_new_boolean(!!(ti->flags & TITLE_TRUNCATED)));
        if (p->leader_missing)
                json_object_object_add(o, "leader_missing", json_object_new_boolean(true));
        if (pg_process_is_orphan(p)) {
                json_object_object_add(o, "data_directory", str_or_null(p->cwd));
                if (p->container)
                        json_object_object_add(o, "container", json_object_new_string(p->container));
                json_object_object_add(o, "blocks_restart", json_object_new_boolean(
                        backend_type_holds_shared_memory(ti->backend_type, p->server_major)));
        }
        if (p->server_major > 0)
                json_object_object_add(o, "server_major", json_object_new_int(p->server_major));
        char ident[256];
        if (pg_process_is_remote(t, p))
                snprintf(ident, sizeof ident, "remote: pid and backend_start are checked by the server when acting");
        else
                snprintf(ident, sizeof ident, "%s%s%s",
                         p->identity == PG_IDENTITY_VERIFIED ? "verified" : p->identity == PG_IDENTITY_FOREIGN ? "foreign" : "unverified",
                         p->identity_why[0] ? ": " : "", p->identity_why);
        json_object_object_add(o, "identity", json_object_new_string(ident));
        return o;
}

json_object *render_finding_json(const Finding *x) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "kind", json_object_new_string(finding_kind_to_string(x->kind)));
        json_object_object_add(o, "pid", json_object_new_int(x->pid));
        if (x->ns_pid > 0)
                json_object_object_add(o, "ns_pid", json_object_new_int(x->ns_pid));
        json_object_object_add(o, "cluster", str_or_null(x->cluster));
        if (x->container[0])
                json_object_object_add(o, "container", json_object_new_string(x->container));
        json_object_object_add(o, "rule", str_or_null(x->rule));
        json_object_object_add(o, "duration_s", json_object_new_int64((int64_t) x->duration_s));
        json_object_object_add(o, "action", json_object_new_string(action_to_string(x->action)));
        json_object_object_add(o, "dry_run", json_object_new_boolean(x->dry_run));
        json_object_object_add(o, "start_ticks", json_object_new_uint64(x->start_ticks));
        json_object_object_add(o, "user", str_or_null(x->user));
        json_object_object_add(o, "database", str_or_null(x->database));
        json_object_object_add(o, "application_name", str_or_null(x->application_name));
        json_object_object_add(o, "client", str_or_null(x->client));
        json_object_object_add(o, "backend_type", str_or_null(x->backend_type));
        json_object_object_add(o, "state", str_or_null(x->state));
        json_object_object_add(o, "backend_xmin_age", x->xmin_age >= 0 ? json_object_new_int64(x->xmin_age) : NULL);
        json_object_object_add(o, "since", iso_time(x->since));
        json_object_object_add(o, "first_seen", iso_time(x->first_seen));
        json_object_object_add(o, "detail", str_or_null(x->detail));
        if (x->kind == FINDING_LOCK_WAIT) {
                json_object *b = NULL;
                if (x->blocker_pid > 0) {
                        b = json_object_new_object();
                        json_object_object_add(b, "pid", json_object_new_int(x->blocker_pid));
                        json_object_object_add(b, "start_ticks", json_object_new_uint64(x->blocker_start_ticks));
                        json_object_object_add(b, "depth", json_object_new_int((int) x->blocker_depth));
                        json_object_object_add(b, "user", str_or_null(x->blocker_user));
                        json_object_object_add(b, "database", str_or_null(x->blocker_database));
                        json_object_object_add(b, "application_name", str_or_null(x->blocker_application_name));
                        json_object_object_add(b, "client", str_or_null(x->blocker_client));
                        json_object_object_add(b, "backend_type", str_or_null(x->blocker_backend_type));
                        json_object_object_add(b, "state", str_or_null(x->blocker_state));
                        json_object_object_add(b, "state_change", iso_time(x->blocker_state_change));
                        json_object_object_add(b, "xact_start", iso_time(x->blocker_xact_start));
                }
                json_object_object_add(o, "blocker", b);
                if (x->lock_cycle)
                        json_object_object_add(o, "lock_cycle", json_object_new_boolean(true));
                if (x->act_on_blocker)
                        json_object_object_add(o, "target", json_object_new_string("blocker"));
        }
        if (x->kind == FINDING_FOREIGN_PROCESS) {
                json_object_object_add(o, "command", json_object_new_string(x->command));
                json_object_object_add(o, "exe", str_or_null(x->exe));
                json_object_object_add(o, "uid", x->uid >= 0 ? json_object_new_int64(x->uid) : NULL);
                json_object_object_add(o, "cpu_percent", round1(x->cpu_percent));
                json_object_object_add(o, "started", iso_time(x->since));
                json_object_object_add(o, "detached", json_object_new_boolean(x->detached));
                json_object_object_add(o, "backend_pid", x->via_pid > 0 ? json_object_new_int(x->via_pid) : NULL);
                /* the backend's query (the socket hides it from readers unless allowed) */
                json_object_object_add(o, "query", str_or_null(x->query));
        }
        return o;
}

/* What a managed server's entry adds: where it is, and what a view without /proc cannot have. */
static void render_remote_cluster_json(json_object *o, const PgCluster *cl) {
        json_object_object_add(o, "server", json_object_new_string(cl->remote_server));
        json_object_object_add(o, "parent_tag", str_or_null(cl->parent_tag));
        json_object_object_add(o, "view_description", json_object_new_string(REMOTE_VIEW_LABEL));
        json_object_object_add(o, "activity_taken_at", cl->snapshot ? json_object_new_double(cl->snapshot->taken_at) : NULL);
        json_object *u = json_object_new_object();
        for (size_t i = 0; i < remote_n_unavailable; i++)
                json_object_object_add(u, remote_unavailable[i].what, json_object_new_string(remote_unavailable[i].why));
        json_object_object_add(o, "unavailable", u);
}

void render_finding_blocker_query(json_object *fo, const PgTree *t, const Finding *x) {
        json_object *b;
        if (x->kind != FINDING_LOCK_WAIT || x->blocker_pid <= 0 || !json_object_object_get_ex(fo, "blocker", &b) || !b)
                return;
        int i = tree_find(t, x->blocker_pid);
        const PgProcess *p = i >= 0 ? &t->procs[i] : NULL;
        if (!p || p->rec.start_ticks != x->blocker_start_ticks)
                return;
        if (t->now > 0 && x->blocker_state_change > 0)
                json_object_object_add(b, "state_s", json_object_new_int64((int64_t) (t->now - x->blocker_state_change)));
        if (t->now > 0 && x->blocker_xact_start > 0)
                json_object_object_add(b, "xact_age_s", json_object_new_int64((int64_t) (t->now - x->blocker_xact_start)));
        json_object_object_add(b, "query", str_or_null(p->act ? p->act->query : NULL));
}

/* The process of a lock line, if it is in the cluster's tree. */
static const PgProcess *lock_line_process(const PgTree *t, size_t c, const LockLine *l) {
        int i = tree_find(t, l->pid);
        return i >= 0 && t->procs[i].cluster == (int) c ? &t->procs[i] : NULL;
}

static json_object *lock_node_json(const PgTree *t, size_t c, const LockLine *l) {
        const PgProcess *p = lock_line_process(t, c, l);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "pid", json_object_new_int(l->pid));
        const ActivityRow *a = l->row;
        json_object_object_add(o, "user", str_or_null(p ? proc_user(p) : a ? a->usename : NULL));
        json_object_object_add(o, "database", str_or_null(p ? proc_database(p) : a ? a->datname : NULL));
        json_object_object_add(o, "application_name", str_or_null(a ? a->application_name : NULL));
        json_object_object_add(o, "backend_type", str_or_null(p ? proc_backend_type(p) : a ? a->backend_type : NULL));
        json_object_object_add(o, "state", str_or_null(a ? a->state : NULL));
        json_object_object_add(o, "state_s", a && a->state_change > 0 && t->now > 0
                                                     ? json_object_new_int64((int64_t) (t->now - a->state_change)) : NULL);
        json_object_object_add(o, "xact_age_s", a && a->xact_start > 0 && t->now > 0
                                                        ? json_object_new_int64((int64_t) (t->now - a->xact_start)) : NULL);
        json_object_object_add(o, "wait_event_type", str_or_null(a ? a->wait_event_type : NULL));
        json_object_object_add(o, "wait_event", str_or_null(a ? a->wait_event : NULL));
        json_object *bb = json_object_new_array();
        for (size_t i = 0; a && i < a->n_blocked_by; i++)
                json_object_array_add(bb, json_object_new_int(a->blocked_by[i]));
        json_object_object_add(o, "blocked_by", bb);
        json_object_object_add(o, "query", str_or_null(a ? a->query : NULL));
        if (!a)
                json_object_object_add(o, "listed", json_object_new_boolean(false));
        if (l->repeat)
                json_object_object_add(o, "repeat", json_object_new_boolean(true));
        if (l->cycle)
                json_object_object_add(o, "cycle", json_object_new_boolean(true));
        json_object_object_add(o, "blocks", json_object_new_array());
        return o;
}

json_object *render_lock_chains_json(const PgTree *t, size_t c) {
        json_object *roots = json_object_new_array();
        const ActivitySnapshot *s = t->clusters[c].snapshot;
        LockLine *lines = NULL;
        size_t n = 0;
        if (!s || lock_forest(s, &lines, &n) < 0)
                return roots;
        /* parents by depth: lines come depth first */
        json_object **stack = calloc(n + 1, sizeof *stack);
        for (size_t i = 0; stack && i < n; i++) {
                json_object *o = lock_node_json(t, c, &lines[i]);
                unsigned d = lines[i].depth;
                if (d == 0 || !stack[d - 1])
                        json_object_array_add(roots, o);
                else {
                        json_object *kids;
                        json_object_object_get_ex(stack[d - 1], "blocks", &kids);
                        json_object_array_add(kids, o);
                }
                stack[d] = o;
        }
        free(stack);
        free(lines);
        return roots;
}

bool render_cluster_matches(const PgCluster *c, const char *want) {
        return !want || !strcmp(c->name, want) || (c->config_name[0] && !strcmp(c->config_name, want)) ||
               (c->data_directory[0] && !strcmp(c->data_directory, want));
}

static bool orphan_matches(const PgProcess *p, const char *want) {
        return !want || (p->cwd && !strcmp(p->cwd, want));
}

bool render_finding_matches(const PgTree *t, const Finding *x, const char *want) {
        if (!want || !strcmp(x->cluster, want))
                return true;
        for (size_t c = 0; c < t->n_clusters; c++)
                if (!strcmp(t->clusters[c].name, x->cluster) && render_cluster_matches(&t->clusters[c], want))
                        return true;
        return false;
}

json_object *render_json(const PgTree *t, const Findings *f) {
        return render_json_for(t, f, NULL);
}

json_object *render_json_for(const PgTree *t, const Findings *f, const char *want) {
        json_object *root = json_object_new_object();
        json_object *clusters = json_object_new_array();
        for (size_t c = 0; c < t->n_clusters; c++) {
                const PgCluster *cl = &t->clusters[c];
                if (!render_cluster_matches(cl, want))
                        continue;
                const PgProcess *pm = &t->procs[cl->postmaster];
                json_object *o = json_object_new_object(), *pmo = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(cl->name));
                json_object_object_add(o, "cluster_name", cl->cluster_name_known ? json_object_new_string(cl->cluster_name) : NULL);
                json_object_object_add(o, "config_section", str_or_null(cl->config_name));
                json_object_object_add(o, "enforce", json_object_new_boolean(cl->enforce));
                json_object_object_add(o, "view", json_object_new_string(cl->remote ? "remote" : "host"));
                if (!cl->remote) { /* what runs below the archiver & co. is compared with them */
                        json_object_object_add(o, "server_commands_known", json_object_new_boolean(cl->server_commands_known));
                        json_object_object_add(o, "server_commands_reads", json_object_new_int64(cl->server_commands_reads));
                }
                json_object_object_add(o, "container", str_or_null(cl->container.name));
                if (cl->container.name[0]) {
                        json_object_object_add(o, "container_hostname", str_or_null(cl->container.hostname));
                        json_object_object_add(o, "container_root", str_or_null(cl->container.root));
                }
                if (cl->remote)
                        render_remote_cluster_json(o, cl);
                json_object_object_add(pmo, "pid", cl->remote ? NULL : json_object_new_int(pm->rec.pid));
                json_object_object_add(pmo, "data_directory", str_or_null(cl->data_directory));
                json_object_object_add(pmo, "port", cl->pmfile_valid && cl->pmfile.port ? json_object_new_int(cl->pmfile.port) : NULL);
                json_object_object_add(pmo, "socket_directory", cl->pmfile_valid ? str_or_null(cl->pmfile.socket_dir) : NULL);
                json_object_object_add(pmo, "status", cl->pmfile_valid ? str_or_null(cl->pmfile.status) : NULL);
                json_object_object_add(pmo, "start_time", iso_time(pg_process_start_time(t, pm)));
                json_object_object_add(o, "postmaster", pmo);
                json_object_object_add(o, "activity", json_object_new_string(cl->activity[0] ? cl->activity : "unavailable: not queried"));
                if (cl->snapshot)
                        json_object_object_add(o, "server_version", json_object_new_int(cl->snapshot->server_version));
                json_object_object_add(o, "server_major", cl->server_major > 0 ? json_object_new_int(cl->server_major) : NULL);
                json_object *procs = json_object_new_array();
                for (size_t i = 0; i < t->n_procs; i++)
                        if (t->procs[i].cluster == (int) c && !(cl->remote && i == cl->postmaster))
                                json_object_array_add(procs, render_process_json(t, &t->procs[i]));
                json_object_object_add(o, "processes", procs);
                json_object_array_add(clusters, o);
        }
        json_object_object_add(root, "clusters", clusters);

        json_object *orphans = json_object_new_array();
        for (size_t i = 0; i < t->n_procs; i++)
                if (pg_process_is_orphan(&t->procs[i]) && orphan_matches(&t->procs[i], want))
                        json_object_array_add(orphans, render_process_json(t, &t->procs[i]));
        json_object_object_add(root, "orphans", orphans);

        /* looked like PostgreSQL, is not: never a finding, never signalled */
        json_object *fakes = json_object_new_array();
        for (size_t i = 0; i < t->n_lookalikes; i++) {
                const PgLookalike *l = &t->lookalikes[i];
                json_object *o = json_object_new_object();
                json_object_object_add(o, "pid", json_object_new_int(l->rec.pid));
                json_object_object_add(o, "ppid", json_object_new_int(l->rec.ppid));
                json_object_object_add(o, "uid", json_object_new_int64(l->rec.ident.ids_valid ? l->rec.ident.euid : l->rec.uid));
                json_object_object_add(o, "comm", json_object_new_string(l->rec.comm));
                json_object_object_add(o, "title", str_or_null(l->rec.title));
                json_object_object_add(o, "reason", json_object_new_string(l->why));
                json_object_array_add(fakes, o);
        }
        json_object_object_add(root, "not_postgresql", fakes);

        /* below the clusters' processes, not PostgreSQL (expected and allowed ones included) */
        json_object *foreign = json_object_new_array();
        for (size_t i = 0; i < t->n_foreign; i++) {
                const PgForeign *g = &t->foreign[i];
                json_object *o = json_object_new_object();
                json_object_object_add(o, "pid", json_object_new_int(g->rec.pid));
                json_object_object_add(o, "ppid", json_object_new_int(g->rec.ppid));
                if (g->rec.ident.ns_pid > 0)
                        json_object_object_add(o, "ns_pid", json_object_new_int(g->rec.ident.ns_pid));
                json_object_object_add(o, "cluster", json_object_new_string(t->clusters[g->cluster].name));
                json_object_object_add(o, "command", str_or_null(g->rec.title));
                json_object_object_add(o, "exe", str_or_null(g->exe));
                json_object_object_add(o, "uid", json_object_new_int64(g->rec.ident.ids_valid ? g->rec.ident.euid : g->rec.uid));
                json_object_object_add(o, "backend_pid", g->via_pid > 0 ? json_object_new_int(g->via_pid) : NULL);
                json_object_object_add(o, "depth", json_object_new_int(g->depth));
                json_object_object_add(o, "detached", json_object_new_boolean(g->detached));
                json_object_object_add(o, "expected", json_object_new_boolean(g->expected));
                json_object_object_add(o, "judged", str_or_null(g->judged));
                json_object_object_add(o, "allowed", json_object_new_boolean(g->allowed));
                json_object_object_add(o, "found", json_object_new_string(g->why));
                json_object_array_add(foreign, o);
        }
        json_object_object_add(root, "foreign_processes", foreign);

        json_object *fa = json_object_new_array();
        for (size_t i = 0; f && i < f->n; i++) {
                if (!render_finding_matches(t, &f->items[i], want))
                        continue;
                json_object *fo = render_finding_json(&f->items[i]);
                render_finding_blocker_query(fo, t, &f->items[i]);
                json_object_array_add(fa, fo);
        }
        json_object_object_add(root, "findings", fa);
        return root;
}

void format_duration(double s, char *buf, size_t size) {
        if (s < 0)
                s = 0;
        unsigned long long v = (unsigned long long) s;
        if (v < 60)
                snprintf(buf, size, "%llus", v);
        else if (v < 3600)
                snprintf(buf, size, "%llum%02llus", v / 60, v % 60);
        else if (v < 86400)
                snprintf(buf, size, "%lluh%02llum", v / 3600, (v % 3600) / 60);
        else
                snprintf(buf, size, "%llud%02lluh", v / 86400, (v % 86400) / 3600);
}

/* Titles and names come from other users: never let them drive the terminal. */
static void put_safe(FILE *out, const char *s) {
        for (; s && *s; s++)
                fputc((unsigned char) *s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static void put_field(FILE *out, const char *s) {
        if (s && *s) {
                fputs("  ", out);
                put_safe(out, s);
        }
}

static void format_kb(uint64_t kb, char *buf, size_t size) {
        if (kb < 1024)
                snprintf(buf, size, "%lluK", (unsigned long long) kb);
        else if (kb < 1024 * 1024)
                snprintf(buf, size, "%.1fM", (double) kb / 1024);
        else
                snprintf(buf, size, "%.1fG", (double) kb / (1024 * 1024));
}

static void process_fields(FILE *out, const PgTree *t, const PgProcess *p, const char *graph) {
        char age[32] = "-", mem[32];
        double start = pg_process_start_time(t, p);
        if (start > 0)
                format_duration(t->now - start, age, sizeof age);
        format_kb(p->rec.rss_anon_kb, mem, sizeof mem);
        if (pg_process_is_remote(t, p)) /* no /proc: CPU and memory unknown */
                fprintf(out, "%8d %7s %5s %7s  %s", (int) p->rec.pid, age, "-", "-", graph);
        else
                fprintf(out, "%8d %7s %5.1f %7s  %s", (int) p->rec.pid, age,
                        p->rec.cpu_percent >= 0 ? p->rec.cpu_percent : 0.0, mem, graph);

        const TitleInfo *ti = &p->title;
        const ActivityRow *a = p->act;
        if (ti->backend_type == BACKEND_POSTMASTER && p->depth == 0) {
                fputs("postmaster  ", out);
                put_safe(out, p->rec.title);
                fputc('\n', out);
                return;
        }
        fputs(proc_backend_type(p), out);
        const char *user = proc_user(p), *db = proc_database(p);
        if (user || db) {
                fputs("  ", out);
                put_safe(out, user ? user : "?");
                if (db) {
                        fputc('@', out);
                        put_safe(out, db);
                }
        }
        char client[128];
        proc_client(p, client, sizeof client);
        put_field(out, client);
        const char *app = proc_application(p);
        if (app && *app) {
                fputs("  [", out);
                put_safe(out, app);
                fputc(']', out);
        }
        const char *state = proc_state(p);
        if (state) {
                put_field(out, state);
                double since = a ? (!strcmp(state, "active") ? a->query_start : a->state_change) : 0;
                if (since > 0) {
                        char d[32];
                        format_duration(t->now - since, d, sizeof d);
                        fprintf(out, " %s", d);
                }
                if (strcmp(state, "active") == 0 && ti->status[0] && ti->status[0] != '<')
                        put_field(out, ti->status); /* the command tag */
        } else if (ti->status[0])
                put_field(out, ti->status);
        else if (!a && (ti->flags & TITLE_NO_STATUS) &&
                 (ti->backend_type == BACKEND_CLIENT || ti->backend_type == BACKEND_WALSENDER))
                fputs("  [no status in its title: update_process_title = off]", out);
        /* the idle main loop (Activity) and a session waiting for its client are not news */
        if (a && a->wait_event_type && strcmp(a->wait_event_type, "Activity") != 0 &&
            strcmp(a->wait_event_type, "Client") != 0) {
                fputs("  wait ", out);
                put_safe(out, a->wait_event_type);
                fputc(':', out);
                put_safe(out, a->wait_event ? a->wait_event : "?");
        } else if (ti->flags & TITLE_WAITING)
                fputs("  waiting", out);
        if (a && a->xact_start > 0) {
                char d[32];
                format_duration(t->now - a->xact_start, d, sizeof d);
                fprintf(out, "  xact %s", d);
        }
        if (a && a->xmin_age >= 0)
                fprintf(out, "  xmin age %lld", a->xmin_age);
        if (ti->worker[0] && ti->backend_type != BACKEND_AUTOVACUUM_WORKER)
                put_field(out, ti->worker);
        if (ti->backend_type == BACKEND_AUTOVACUUM_WORKER && !user)
                put_field(out, ti->database);
        if (ti->leader_pid > 0)
                fprintf(out, "  leader %d%s", (int) ti->leader_pid, p->leader_missing ? " (gone)" : "");
        if (ti->flags & TITLE_TRUNCATED)
                fputs("  [title truncated]", out);
        if (ti->backend_type == BACKEND_UNKNOWN && p->rec.title)
                put_field(out, p->rec.title);
        if (p->act_mismatch)
                fputs("  [pid reused: activity row is another session's]", out);
        if (a && a->n_blocked_by > 0) {
                fprintf(out, "  [blocked by %d", (int) a->blocked_by[0]);
                for (size_t i = 1; i < a->n_blocked_by && i < 4; i++)
                        fprintf(out, ",%d", (int) a->blocked_by[i]);
                fputs(a->n_blocked_by > 4 ? ",…]" : "]", out);
        }
        if (p->own || pg_process_is_pgtree(p))
                fputs("  (pgtree)", out);
        if (proc_state_is_dead(p->rec.state) || p->rec.state == 'T' || p->rec.state == 'D')
                fprintf(out, "  [state %c]", p->rec.state);
        fputc('\n', out);
}

/* Columns a UTF-8 string takes (one per character: the tree's box drawing is narrow). */
static size_t columns(const char *s) {
        size_t n = 0;
        for (; *s; s++)
                n += ((unsigned char) *s & 0xc0) != 0x80;
        return n;
}

/* A process line; a client backend's query text follows it on the same line (one line: runs
 * of blanks and line breaks become one space), cut so that the line fits o->width columns. */
static void process_line(FILE *out, const PgTree *t, const PgProcess *p, const char *graph, const RenderOptions *o) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f) {
                process_fields(out, t, p, graph);
                return;
        }
        process_fields(f, t, p, graph);
        fclose(f);
        if (len > 0 && buf[len - 1] == '\n')
                buf[--len] = 0;
        fputs(buf, out);
        const char *q = p->act && p->act->query && p->title.backend_type == BACKEND_CLIENT && !p->own ? p->act->query : NULL;
        if (q && *q && o && o->query_text) {
                size_t used = columns(buf) + 2, room = o->width ? (o->width > used ? o->width - used : 0) : SIZE_MAX;
                if (room >= 8) {
                        fputs("  ", out);
                        bool blank = false;
                        size_t n = 0;
                        for (const unsigned char *c = (const unsigned char *) q; *c; c++) {
                                bool sp = *c == ' ' || *c == '\n' || *c == '\t' || *c == '\r';
                                if (sp && blank)
                                        continue;
                                blank = sp;
                                bool starts = (*c & 0xc0) != 0x80;
                                if (starts && ++n > room) {
                                        break;
                                }
                                fputc(sp ? ' ' : *c < 0x20 || *c == 0x7f ? '?' : *c, out);
                        }
                }
        }
        fputc('\n', out);
        free(buf);
}

/* One line of query text, at most room characters (SIZE_MAX: all). */
static void put_query(FILE *out, const char *q, size_t room) {
        bool blank = false;
        size_t n = 0;
        for (const unsigned char *c = (const unsigned char *) q; *c; c++) {
                bool sp = *c == ' ' || *c == '\n' || *c == '\t' || *c == '\r';
                if (sp && blank)
                        continue;
                blank = sp;
                if ((*c & 0xc0) != 0x80 && ++n > room)
                        break;
                fputc(sp ? ' ' : *c < 0x20 || *c == 0x7f ? '?' : *c, out);
        }
}

static void lock_line_text(FILE *out, const PgTree *t, size_t c, const LockLine *l, const char *indent,
                           const RenderOptions *o) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return;
        fputs(indent, f);
        for (unsigned d = 1; d < l->depth; d++)
                fputs("   ", f);
        fprintf(f, "%s%d", l->depth > 0 ? "└─ " : "", (int) l->pid);
        const ActivityRow *a = l->row;
        const PgProcess *p = lock_line_process(t, c, l);
        if (!a)
                fputs("  (not in pg_stat_activity: a prepared transaction or another database's session)", f);
        else {
                const char *user = p ? proc_user(p) : a->usename, *db = p ? proc_database(p) : a->datname;
                if (user || db) {
                        fputs("  ", f);
                        put_safe(f, user ? user : "?");
                        if (db) {
                                fputc('@', f);
                                put_safe(f, db);
                        }
                }
                if (a->application_name && *a->application_name) {
                        fputs("  [", f);
                        put_safe(f, a->application_name);
                        fputc(']', f);
                }
                if (a->state) {
                        put_field(f, a->state);
                        double since = !strcmp(a->state, "active") ? a->query_start : a->state_change;
                        if (since > 0 && t->now > 0) {
                                char d[32];
                                format_duration(t->now - since, d, sizeof d);
                                fprintf(f, " %s", d);
                        }
                }
                if (a->wait_event_type && !strcmp(a->wait_event_type, "Lock")) {
                        fputs("  waits for ", f);
                        put_safe(f, a->wait_event ? a->wait_event : "a lock");
                }
                if (a->xact_start > 0 && t->now > 0) {
                        char d[32];
                        format_duration(t->now - a->xact_start, d, sizeof d);
                        fprintf(f, "  xact %s", d);
                }
        }
        if (l->depth == 0)
                fputs(l->cycle ? "  [cycle of waiting sessions: no root blocker]" : "  [root blocker]", f);
        if (l->repeat)
                fputs("  (blocked by several: shown above)", f);
        fclose(f);
        fputs(buf, out);
        const char *q = a && a->query && *a->query && o && o->query_text && !l->repeat ? a->query : NULL;
        if (q) {
                size_t used = columns(buf) + 2, room = o->width ? (o->width > used ? o->width - used : 0) : SIZE_MAX;
                if (room >= 8) {
                        fputs("  ", out);
                        put_query(out, q, room);
                }
        }
        fputc('\n', out);
        free(buf);
}

void render_lock_chains_text(FILE *out, const PgTree *t, size_t c, const char *indent, const RenderOptions *o) {
        const ActivitySnapshot *s = t->clusters[c].snapshot;
        LockLine *lines = NULL;
        size_t n = 0;
        if (!s || lock_forest(s, &lines, &n) < 0 || n == 0) {
                free(lines);
                return;
        }
        for (size_t i = 0; i < n; i++)
                lock_line_text(out, t, c, &lines[i], indent, o);
        free(lines);
}

static bool is_nested_worker(const PgProcess *p) {
        return p->title.backend_type == BACKEND_PARALLEL_WORKER && p->leader >= 0;
}

static void print_children(FILE *out, const PgTree *t, size_t c, const int *order, size_t n, const char *indent,
                           const RenderOptions *o) {
        for (size_t k = 0; k < n; k++) {
                size_t i = (size_t) order[k];
                const PgProcess *p = &t->procs[i];
                bool is_last = k + 1 == n;
                char graph[64];
                snprintf(graph, sizeof graph, "%s%s%s", indent, p->depth > 1 ? "   " : "", is_last ? "└─ " : "├─ ");
                process_line(out, t, p, graph, o);
                size_t n_workers = 0, w = 0;
                for (size_t j = 0; j < t->n_procs; j++)
                        if (is_nested_worker(&t->procs[j]) && t->procs[j].leader == (int) i)
                                n_workers++;
                for (size_t j = 0; j < t->n_procs; j++) {
                        if (!is_nested_worker(&t->procs[j]) || t->procs[j].leader != (int) i)
                                continue;
                        snprintf(graph, sizeof graph, "%s%s%s", indent, is_last ? "   " : "│  ", ++w == n_workers ? "└─ " : "├─ ");
                        process_line(out, t, &t->procs[j], graph, o);
                }
        }
}

static const char *group_of(const PgProcess *p) {
        const char *app = proc_application(p);
        return p->title.backend_type == BACKEND_CLIENT && !p->own && app && *app ? app : NULL;
}

/* With grouping, every tagged session; else only those whose tag matches the cluster's
 * parent_tag (FakeParent:*: the seeds' stand-ins for a parent process). */
static const char *group_for(const PgTree *t, const PgProcess *p, bool group) {
        const char *g = group_of(p);
        if (!g || group)
                return g;
        const PgCluster *c = p->cluster >= 0 ? &t->clusters[p->cluster] : NULL;
        return c && c->parent_tag[0] && fnmatch(c->parent_tag, g, 0) == 0 ? g : NULL;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

void render_text(FILE *out, const PgTree *t, const Findings *f, const RenderOptions *o) {
        bool group = o && o->group_by_application;
        int *order = calloc(t->n_procs + 1, sizeof(int));
        const char **groups = calloc(t->n_procs + 1, sizeof(char *));
        if (!order || !groups) {
                free(order);
                free(groups);
                fputs("out of memory\n", out);
                return;
        }
        fprintf(out, "%8s %7s %5s %7s  %s\n", "PID", "AGE", "CPU%", "PRIV", "PROCESS");
        const char *want = o ? o->cluster : NULL;
        size_t shown = 0;
        for (size_t c = 0; c < t->n_clusters; c++) {
                const PgCluster *cl = &t->clusters[c];
                const PgProcess *pm = &t->procs[cl->postmaster];
                if (!render_cluster_matches(cl, want))
                        continue;
                shown++;
                fputs("cluster ", out);
                put_safe(out, cl->name);
                if (cl->data_directory[0] && strcmp(cl->name, cl->data_directory) != 0) {
                        fputs("  ", out);
                        put_safe(out, cl->data_directory);
                }
                if (cl->pmfile_valid && cl->pmfile.port)
                        fprintf(out, "  port %d", cl->pmfile.port);
                if (cl->pmfile_valid && cl->pmfile.status[0])
                        fprintf(out, "  %s", cl->pmfile.status);
                if (cl->container.name[0]) {
                        fputs("  container ", out);
                        put_safe(out, cl->container.name);
                        if (cl->container.hostname[0] && strcmp(cl->container.hostname, cl->container.name) != 0) {
                                fputs(" (", out);
                                put_safe(out, cl->container.hostname);
                                fputs(")", out);
                        }
                }
                if (cl->remote) {
                        fputs("  " REMOTE_VIEW_LABEL "  server ", out);
                        put_safe(out, cl->remote_server);
                }
                if (cl->activity[0] && strcmp(cl->activity, "ok") != 0) {
                        fputs("  activity ", out);
                        put_safe(out, cl->activity);
                }
                fprintf(out, "%s\n", cl->enforce ? "  [enforcing]" : "");
                if (cl->remote) {
                        fprintf(out, "%8s %7s %5s %7s  server ", "-", "-", "-", "-");
                        put_safe(out, cl->remote_server);
                        if (cl->snapshot)
                                fprintf(out, "  PostgreSQL %d.%d", cl->snapshot->server_version / 10000,
                                        cl->snapshot->server_version % 10000);
                        fputs("  (no /proc: orphan_backend, unlisted_process, client_gone, foreign_process, CPU and memory "
                              "unavailable)\n", out);
                } else
                        process_line(out, t, pm, "", o);

                /* the postmaster's children; parallel workers follow their leader; with grouping,
                 * tagged client backends come last, under their tag */
                size_t n = 0, n_groups = 0;
                for (size_t i = 0; i < t->n_procs; i++) {
                        const PgProcess *p = &t->procs[i];
                        if (p->cluster != (int) c || i == cl->postmaster || is_nested_worker(p))
                                continue;
                        const char *g = group_for(t, p, group);
                        if (!g)
                                order[n++] = (int) i;
                        else {
                                bool known = false;
                                for (size_t k = 0; k < n_groups && !known; k++)
                                        known = !strcmp(groups[k], g);
                                if (!known)
                                        groups[n_groups++] = g;
                        }
                }
                qsort(groups, n_groups, sizeof *groups, cmp_str);
                print_children(out, t, c, order, n, "", o);
                for (size_t k = 0; k < n_groups; k++) {
                        size_t m = 0;
                        for (size_t i = 0; i < t->n_procs; i++) {
                                const PgProcess *p = &t->procs[i];
                                const char *g = p->cluster == (int) c && !is_nested_worker(p) ? group_for(t, p, group) : NULL;
                                if (g && !strcmp(g, groups[k]))
                                        order[m++] = (int) i;
                        }
                        fprintf(out, "%8s %7s %5s %7s  ◆ application ", "", "", "", "");
                        put_safe(out, groups[k]);
                        fprintf(out, " (%zu session%s)\n", m, m == 1 ? "" : "s");
                        print_children(out, t, c, order, m, "   ", o);
                }
                if (cl->snapshot) {
                        LockLine *ll = NULL;
                        size_t nl = 0;
                        if (lock_forest(cl->snapshot, &ll, &nl) >= 0 && nl > 0) {
                                fprintf(out, "%8s %7s %5s %7s  ", "", "", "", "");
                                fputs("LOCK CHAINS (root blocker → the sessions it blocks)\n", out);
                                render_lock_chains_text(out, t, c, "                                ", o);
                        }
                        free(ll);
                }
                fputc('\n', out);
        }
        if (t->n_clusters == 0)
                fputs("no PostgreSQL server running on this host\n\n", out);
        else if (shown == 0) {
                fputs("no cluster named ", out);
                put_safe(out, want);
                fputs(" (a name, [cluster] section or data directory of `pgtree tree`)\n\n", out);
        }

        bool any = false;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (!pg_process_is_orphan(p) || !orphan_matches(p, want))
                        continue;
                if (!any)
                        fputs("ORPHANS — PostgreSQL processes with no live postmaster (!! blocks its restart)\n", out);
                any = true;
                char graph[PATH_MAX + 320];
                bool blocks = backend_type_holds_shared_memory(p->title.backend_type, p->server_major);
                /* "!!": attached to the dead server's shared memory, it blocks the restart; "--":
                 * the logger and the like, which hold none and exit on their own */
                snprintf(graph, sizeof graph, "%s [%s%s%s] ", blocks ? "!!" : "--", p->cwd ? p->cwd : "data directory unknown",
                         p->container ? " in container " : "", p->container ? p->container : "");
                process_line(out, t, p, graph, o);
        }
        if (any)
                fputc('\n', out);

        for (size_t i = 0; i < t->n_lookalikes; i++) {
                const PgLookalike *l = &t->lookalikes[i];
                if (i == 0)
                        fputs("NOT POSTGRESQL — processes that look like it (never signalled)\n", out);
                fprintf(out, "  pid %-7d uid %-6u ", (int) l->rec.pid,
                         (unsigned) (l->rec.ident.ids_valid ? l->rec.ident.euid : l->rec.uid));
                put_safe(out, l->rec.title ? l->rec.title : l->rec.comm);
                fputs("  — ", out);
                put_safe(out, l->why);
                fputc('\n', out);
        }
        if (t->n_lookalikes > 0)
                fputc('\n', out);

        size_t n_findings = 0;
        for (size_t i = 0; f && i < f->n; i++)
                n_findings += render_finding_matches(t, &f->items[i], want);
        if (n_findings > 0) {
                fputs("FINDINGS\n", out);
                for (size_t i = 0; i < f->n; i++) {
                        const Finding *x = &f->items[i];
                        if (!render_finding_matches(t, x, want))
                                continue;
                        char d[32];
                        format_duration(x->duration_s, d, sizeof d);
                        fprintf(out, "  %-22s pid %-7d %7s  ", finding_kind_to_string(x->kind), (int) x->pid, d);
                        put_safe(out, x->cluster[0] ? x->cluster : "-");
                        if (x->application_name[0]) {
                                fputs("  [", out);
                                put_safe(out, x->application_name);
                                fputc(']', out);
                        }
                        put_field(out, x->detail);
                        if (x->kind == FINDING_FOREIGN_PROCESS) {
                                fprintf(out, "  FOREIGN uid %lld: ", x->uid);
                                put_safe(out, x->command);
                        }
                        if (x->xmin_age >= 0 && (x->kind == FINDING_IDLE_IN_TRANSACTION || x->kind == FINDING_LONG_TRANSACTION))
                                fprintf(out, "  holds xmin back %lld transactions", x->xmin_age);
                        fputs("  → ", out);
                        if (x->rule[0]) {
                                fputs("rule ", out);
                                put_safe(out, x->rule);
                                fputs(": ", out);
                        }
                        fprintf(out, "%s%s\n", action_to_string(x->action), x->dry_run ? " (dry run)" : "");
                }
        }
        free(order);
        free(groups);
}
