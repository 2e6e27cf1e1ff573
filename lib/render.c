/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "render.h"

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

static json_object *round1(double v) {
        return json_object_new_double(round(v * 10.0) / 10.0);
}

static json_object *process_json(const PgTree *t, const PgProcess *p) {
        json_object *o = json_object_new_object();
        const TitleInfo *ti = &p->title;
        bool session = ti->backend_type == BACKEND_CLIENT || ti->backend_type == BACKEND_WALSENDER ||
                       ti->backend_type == BACKEND_PARALLEL_WORKER;
        json_object_object_add(o, "pid", json_object_new_int(p->rec.pid));
        json_object_object_add(o, "ppid", json_object_new_int(p->rec.ppid));
        json_object_object_add(o, "backend_type", json_object_new_string(backend_type_to_string(ti->backend_type)));
        json_object_object_add(o, "title", str_or_null(p->rec.title));
        json_object_object_add(o, "user", str_or_null(ti->user));
        json_object_object_add(o, "database", str_or_null(ti->database));
        json_object_object_add(o, "client", str_or_null(ti->client));
        json_object_object_add(o, "state", str_or_null(ti->state));
        json_object_object_add(o, "status", str_or_null(ti->status));
        json_object_object_add(o, "leader_pid", ti->leader_pid > 0 ? json_object_new_int(ti->leader_pid) : NULL);
        json_object_object_add(o, "application_name", NULL);
        json_object_object_add(o, "query_start", NULL);
        json_object_object_add(o, "xact_start", NULL);
        json_object_object_add(o, "wait_event_type",
                               session && (ti->flags & TITLE_WAITING) ? json_object_new_string("Lock") : NULL);
        json_object_object_add(o, "wait_event", NULL);
        json_object_object_add(o, "cpu_percent", round1(p->rec.cpu_percent >= 0 ? p->rec.cpu_percent : 0));
        json_object_object_add(o, "rss_anon_kb", json_object_new_int64((int64_t) p->rec.rss_anon_kb));
        json_object_object_add(o, "rss_kb", json_object_new_int64((int64_t) p->rec.rss_kb));
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
        if (pg_process_is_orphan(p))
                json_object_object_add(o, "data_directory", str_or_null(p->cwd));
        return o;
}

json_object *render_json(const PgTree *t, const Findings *f) {
        json_object *root = json_object_new_object();
        json_object *clusters = json_object_new_array();
        for (size_t c = 0; c < t->n_clusters; c++) {
                const PgCluster *cl = &t->clusters[c];
                const PgProcess *pm = &t->procs[cl->postmaster];
                json_object *o = json_object_new_object(), *pmo = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(cl->name));
                json_object_object_add(o, "cluster_name", cl->cluster_name_known ? json_object_new_string(cl->cluster_name) : NULL);
                json_object_object_add(pmo, "pid", json_object_new_int(pm->rec.pid));
                json_object_object_add(pmo, "data_directory", str_or_null(cl->data_directory));
                json_object_object_add(pmo, "port", cl->pmfile_valid && cl->pmfile.port ? json_object_new_int(cl->pmfile.port) : NULL);
                json_object_object_add(pmo, "socket_directory", cl->pmfile_valid ? str_or_null(cl->pmfile.socket_dir) : NULL);
                json_object_object_add(pmo, "status", cl->pmfile_valid ? str_or_null(cl->pmfile.status) : NULL);
                json_object_object_add(pmo, "start_time", iso_time(pg_process_start_time(t, pm)));
                json_object_object_add(o, "postmaster", pmo);
                json_object_object_add(o, "activity", json_object_new_string("unavailable: not queried (process tree only)"));
                json_object *procs = json_object_new_array();
                for (size_t i = 0; i < t->n_procs; i++)
                        if (t->procs[i].cluster == (int) c)
                                json_object_array_add(procs, process_json(t, &t->procs[i]));
                json_object_object_add(o, "processes", procs);
                json_object_array_add(clusters, o);
        }
        json_object_object_add(root, "clusters", clusters);

        json_object *orphans = json_object_new_array();
        for (size_t i = 0; i < t->n_procs; i++)
                if (pg_process_is_orphan(&t->procs[i]))
                        json_object_array_add(orphans, process_json(t, &t->procs[i]));
        json_object_object_add(root, "orphans", orphans);

        json_object *fa = json_object_new_array();
        for (size_t i = 0; f && i < f->n; i++) {
                const Finding *x = &f->items[i];
                json_object *o = json_object_new_object();
                json_object_object_add(o, "kind", json_object_new_string(finding_kind_to_string(x->kind)));
                json_object_object_add(o, "pid", json_object_new_int(x->pid));
                json_object_object_add(o, "cluster", str_or_null(x->cluster));
                json_object_object_add(o, "rule", str_or_null(x->rule));
                json_object_object_add(o, "duration_s", json_object_new_int64((int64_t) x->duration_s));
                json_object_object_add(o, "action", json_object_new_string(action_to_string(x->action)));
                json_object_object_add(o, "dry_run", json_object_new_boolean(x->dry_run));
                json_object_object_add(o, "start_ticks", json_object_new_uint64(x->start_ticks));
                json_object_object_add(o, "detail", str_or_null(x->detail));
                json_object_array_add(fa, o);
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

static void format_kb(uint64_t kb, char *buf, size_t size) {
        if (kb < 1024)
                snprintf(buf, size, "%lluK", (unsigned long long) kb);
        else if (kb < 1024 * 1024)
                snprintf(buf, size, "%.1fM", (double) kb / 1024);
        else
                snprintf(buf, size, "%.1fG", (double) kb / (1024 * 1024));
}

static void process_line(FILE *out, const PgTree *t, const PgProcess *p, const char *graph) {
        char age[32] = "-", mem[32];
        double start = pg_process_start_time(t, p);
        if (start > 0)
                format_duration(t->now - start, age, sizeof age);
        format_kb(p->rec.rss_anon_kb, mem, sizeof mem);
        fprintf(out, "%8d %7s %5.1f %7s  %s", (int) p->rec.pid, age,
                p->rec.cpu_percent >= 0 ? p->rec.cpu_percent : 0.0, mem, graph);

        const TitleInfo *ti = &p->title;
        if (ti->backend_type == BACKEND_POSTMASTER) {
                fputs("postmaster  ", out);
                put_safe(out, p->rec.title);
        } else {
                fputs(backend_type_to_string(ti->backend_type), out);
                if (ti->user[0]) {
                        fputs("  ", out);
                        put_safe(out, ti->user);
                        if (ti->database[0]) {
                                fputc('@', out);
                                put_safe(out, ti->database);
                        }
                } else if (ti->database[0]) {
                        fputs("  ", out);
                        put_safe(out, ti->database);
                }
                if (ti->client[0]) {
                        fputs("  ", out);
                        put_safe(out, ti->client);
                }
                if (ti->status[0]) {
                        fputs("  ", out);
                        put_safe(out, ti->status);
                }
                if (ti->worker[0] && ti->backend_type != BACKEND_AUTOVACUUM_WORKER) {
                        fputs("  ", out);
                        put_safe(out, ti->worker);
                }
                if (ti->flags & TITLE_WAITING)
                        fputs("  waiting", out);
                if (ti->leader_pid > 0)
                        fprintf(out, "  leader %d%s", (int) ti->leader_pid, p->leader_missing ? " (gone)" : "");
                if (ti->flags & TITLE_TRUNCATED)
                        fputs("  [title truncated]", out);
                if (ti->backend_type == BACKEND_UNKNOWN && p->rec.title) {
                        fputs("  ", out);
                        put_safe(out, p->rec.title);
                }
        }
        if (proc_state_is_dead(p->rec.state) || p->rec.state == 'T' || p->rec.state == 'D')
                fprintf(out, "  [state %c]", p->rec.state);
        fputc('\n', out);
}

static bool is_nested_worker(const PgProcess *p) {
        return p->title.backend_type == BACKEND_PARALLEL_WORKER && p->leader >= 0;
}

void render_text(FILE *out, const PgTree *t, const Findings *f) {
        fprintf(out, "%8s %7s %5s %7s  %s\n", "PID", "AGE", "CPU%", "PRIV", "PROCESS");
        for (size_t c = 0; c < t->n_clusters; c++) {
                const PgCluster *cl = &t->clusters[c];
                const PgProcess *pm = &t->procs[cl->postmaster];
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
                fputc('\n', out);
                process_line(out, t, pm, "");

                /* The postmaster's children; parallel workers follow their leader. */
                size_t last = SIZE_MAX;
                for (size_t i = 0; i < t->n_procs; i++)
                        if (t->procs[i].cluster == (int) c && i != cl->postmaster && !is_nested_worker(&t->procs[i]))
                                last = i;
                for (size_t i = 0; i < t->n_procs; i++) {
                        const PgProcess *p = &t->procs[i];
                        if (p->cluster != (int) c || i == cl->postmaster || is_nested_worker(p))
                                continue;
                        bool is_last = i == last;
                        char graph[64];
                        snprintf(graph, sizeof graph, "%s%s", p->depth > 1 ? "   " : "", is_last ? "└─ " : "├─ ");
                        process_line(out, t, p, graph);
                        size_t n_workers = 0, k = 0;
                        for (size_t j = 0; j < t->n_procs; j++)
                                if (is_nested_worker(&t->procs[j]) && t->procs[j].leader == (int) i)
                                        n_workers++;
                        for (size_t j = 0; j < t->n_procs; j++) {
                                if (!is_nested_worker(&t->procs[j]) || t->procs[j].leader != (int) i)
                                        continue;
                                snprintf(graph, sizeof graph, "%s%s", is_last ? "   " : "│  ",
                                         ++k == n_workers ? "└─ " : "├─ ");
                                process_line(out, t, &t->procs[j], graph);
                        }
                }
                fputc('\n', out);
        }
        if (t->n_clusters == 0)
                fputs("no PostgreSQL server running on this host\n\n", out);

        bool any = false;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (!pg_process_is_orphan(p))
                        continue;
                if (!any)
                        fputs("ORPHANS — PostgreSQL processes with no live postmaster\n", out);
                any = true;
                char graph[PATH_MAX + 32];
                snprintf(graph, sizeof graph, "!! [%s] ", p->cwd ? p->cwd : "data directory unknown");
                process_line(out, t, p, graph);
        }
        if (any)
                fputc('\n', out);

        if (f && f->n > 0) {
                fputs("FINDINGS\n", out);
                for (size_t i = 0; i < f->n; i++) {
                        const Finding *x = &f->items[i];
                        fprintf(out, "  %-22s pid %-7d ", finding_kind_to_string(x->kind), (int) x->pid);
                        put_safe(out, x->cluster[0] ? x->cluster : "-");
                        fputs("  ", out);
                        put_safe(out, x->detail);
                        if (x->rule[0]) {
                                fputs("  rule ", out);
                                put_safe(out, x->rule);
                                fprintf(out, " → %s%s", action_to_string(x->action), x->dry_run ? " (dry run)" : "");
                        }
                        fputc('\n', out);
                }
        }
}
