/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-config.h"
#include "join.h"
#include "macro.h"
#include "metrics.h"

const char *action_result_to_string(ActionResult r) {
        static const char *const names[_RESULT_MAX] = { "sent", "dry_run", "refused", "failed", "held" };
        return (unsigned) r < _RESULT_MAX ? names[r] : "unknown";
}

/* Label values: backslash, double quote and newline escaped. */
static void label(FILE *out, const char *v) {
        fputc('"', out);
        for (; v && *v; v++) {
                if (*v == '\\' || *v == '"')
                        fprintf(out, "\\%c", *v);
                else if (*v == '\n')
                        fputs("\\n", out);
                else
                        fputc(*v, out);
        }
        fputc('"', out);
}

static void head(FILE *out, const char *name, const char *type, const char *help) {
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

const double metrics_cycle_buckets[METRICS_CYCLE_BUCKETS] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                               0.1,   0.25,   0.5,   1,    2.5,   5 };

/* The cluster label: its name, unless another cluster on the host has the same one (Debian names
 * every cluster "main"): then the name and its data directory (or port, or postmaster pid), so
 * that no two series are the same (node_exporter refuses a textfile with duplicates). */
static char *cluster_label(const PgTree *t, size_t c) {
        const PgCluster *cl = &t->clusters[c];
        bool shared = false;
        for (size_t k = 0; k < t->n_clusters && !shared; k++)
                shared = k != c && !strcmp(t->clusters[k].name, cl->name);
        char *r = NULL;
        if (!shared)
                return strdup(cl->name);
        if (cl->data_directory[0] && strcmp(cl->data_directory, cl->name))
                return asprintf(&r, "%s (%s)", cl->name, cl->data_directory) < 0 ? NULL : r;
        if (cl->pmfile_valid && cl->pmfile.port > 0)
                return asprintf(&r, "%s (port %d)", cl->name, cl->pmfile.port) < 0 ? NULL : r;
        return asprintf(&r, "%s (pid %d)", cl->name, (int) t->procs[cl->postmaster].rec.pid) < 0 ? NULL : r;
}

static void free_labels(char **labels, size_t n) {
        for (size_t i = 0; labels && i < n; i++)
                free(labels[i]);
        free(labels);
}

static char **cluster_labels(const PgTree *t) {
        char **labels = calloc(t->n_clusters + 1, sizeof *labels);
        for (size_t c = 0; labels && c < t->n_clusters; c++)
                if (!(labels[c] = cluster_label(t, c))) {
                        free_labels(labels, c);
                        return NULL;
                }
        return labels;
}

static int cpu_seen_cmp(const void *a, const void *b) {
        const CpuSeen *x = a, *y = b;
        if (x->pid != y->pid)
                return x->pid < y->pid ? -1 : 1;
        return x->start_ticks < y->start_ticks ? -1 : x->start_ticks > y->start_ticks;
}

static CpuTotal *cpu_total(ActionCounters *ac, const char *cluster) {
        for (size_t i = 0; i < ac->n_cpu_totals; i++)
                if (!strcmp(ac->cpu_totals[i].cluster, cluster))
                        return &ac->cpu_totals[i];
        return NULL;
}

int metrics_observe_cycle(ActionCounters *ac, const Engine *e, double now) {
        const PgTree *t = &e->tree;
        size_t b = 0;
        while (b < METRICS_CYCLE_BUCKETS && e->cycle_seconds > metrics_cycle_buckets[b])
                b++;
        if (b < METRICS_CYCLE_BUCKETS)
                ac->cycle_buckets[b]++;  /* cumulated when written */
        ac->cycle_count++;
        ac->cycle_sum += e->cycle_seconds;
        ac->last_cycle_time = now;

        /* totals of clusters that are gone are dropped (a counter that starts again at 0 when the
         * cluster returns is a reset Prometheus handles); new clusters start at 0 */
        CpuTotal *totals = calloc(t->n_clusters + 1, sizeof *totals);
        CpuSeen *seen = calloc(t->n_procs + 1, sizeof *seen);
        char **labels = cluster_labels(t);
        if (!totals || !seen || !labels) {
                free(totals);
                free(seen);
                free_labels(labels, t->n_clusters);
                return -ENOMEM;
        }
        for (size_t c = 0; c < t->n_clusters; c++) {
                CpuTotal *old = cpu_total(ac, labels[c]);
                totals[c] = (CpuTotal){ .cluster = TAKE_PTR(labels[c]), .seconds = old ? old->seconds : 0 };
        }
        free(labels);
        double hz = t->hz > 0 ? (double) t->hz : 100.0;
        size_t n = 0;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (p->cluster < 0 || (size_t) p->cluster >= t->n_clusters)
                        continue;
                CpuSeen key = { .pid = p->rec.pid, .start_ticks = p->rec.start_ticks, .cpu_ticks = p->rec.cpu_ticks };
                const CpuSeen *prev = ac->cpu_seen ? bsearch(&key, ac->cpu_seen, ac->n_cpu_seen, sizeof key, cpu_seen_cmp) : NULL;
                uint64_t used = prev ? (key.cpu_ticks > prev->cpu_ticks ? key.cpu_ticks - prev->cpu_ticks : 0) : key.cpu_ticks;
                /* the first cycle counts no history: the counter starts when pgtreed does */
                if (ac->cycle_count > 1 || prev)
                        totals[p->cluster].seconds += (double) used / hz;
                seen[n++] = key;
        }
        qsort(seen, n, sizeof *seen, cpu_seen_cmp);
        for (size_t i = 0; i < ac->n_cpu_totals; i++)
                free(ac->cpu_totals[i].cluster);
        free(ac->cpu_totals);
        free(ac->cpu_seen);
        ac->cpu_totals = totals;
        ac->n_cpu_totals = t->n_clusters;
        ac->cpu_seen = seen;
        ac->n_cpu_seen = n;
        return 0;
}

void metrics_counters_done(ActionCounters *ac) {
        for (size_t i = 0; i < ac->n_cpu_totals; i++)
                free(ac->cpu_totals[i].cluster);
        free(ac->cpu_totals);
        free(ac->cpu_seen);
        ac->cpu_totals = NULL;
        ac->cpu_seen = NULL;
        ac->n_cpu_totals = ac->n_cpu_seen = 0;
}

typedef struct Count {
        const char *cluster, *type, *state;
        unsigned n;
} Count;

static int write_all(FILE *out, const Engine *e, const ActionCounters *ac, double start_time, char **labels);

int metrics_write(FILE *out, const Engine *e, const ActionCounters *ac, double start_time) {
        char **labels = cluster_labels(&e->tree);
        if (!labels)
                return -ENOMEM;
        int r = write_all(out, e, ac, start_time, labels);
        free_labels(labels, e->tree.n_clusters);
        return r;
}

static int write_all(FILE *out, const Engine *e, const ActionCounters *ac, double start_time, char **labels) {
        const PgTree *t = &e->tree;
        head(out, "pgtree_up", "gauge", "pgtreed is running.");
        fputs("pgtree_up 1\n", out);
        head(out, "pgtree_build_info", "gauge", "The version of pgtreed (always 1).");
        fputs("pgtree_build_info{version=", out);
        label(out, PGTREE_VERSION);
        fputs("} 1\n", out);
        head(out, "pgtree_start_time_seconds", "gauge", "When pgtreed started (seconds since the epoch).");
        fprintf(out, "pgtree_start_time_seconds %.0f\n", start_time);
        head(out, "pgtree_cycles_total", "counter", "Scan cycles completed.");
        fprintf(out, "pgtree_cycles_total %llu\n", (unsigned long long) e->cycles);
        head(out, "pgtree_last_cycle_timestamp_seconds", "gauge",
             "When the last cycle completed (seconds since the epoch); old when pgtreed is down or stalled.");
        fprintf(out, "pgtree_last_cycle_timestamp_seconds %.3f\n", ac ? ac->last_cycle_time : 0.0);
        head(out, "pgtree_cycle_duration_seconds", "histogram", "Wall time of the cycles (scan, query, join, findings).");
        uint64_t cumulated = 0;
        for (size_t b = 0; b < METRICS_CYCLE_BUCKETS; b++) {
                cumulated += ac ? ac->cycle_buckets[b] : 0;
                fprintf(out, "pgtree_cycle_duration_seconds_bucket{le=\"%g\"} %llu\n", metrics_cycle_buckets[b],
                        (unsigned long long) cumulated);
        }
        fprintf(out, "pgtree_cycle_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long) (ac ? ac->cycle_count : 0));
        fprintf(out, "pgtree_cycle_duration_seconds_sum %.6f\n", ac ? ac->cycle_sum : 0.0);
        fprintf(out, "pgtree_cycle_duration_seconds_count %llu\n", (unsigned long long) (ac ? ac->cycle_count : 0));
        head(out, "pgtree_scan_processes", "gauge", "Process records read by the last scan.");
        fprintf(out, "pgtree_scan_processes %zu\n", e->scan.examined);

        head(out, "pgtree_postmaster_up", "gauge", "A postmaster of this cluster is running.");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_postmaster_up{cluster=", out);
                label(out, labels[c]);
                /* a managed server: up as far as it answers */
                fprintf(out, "} %d\n", t->clusters[c].remote ? t->clusters[c].snapshot != NULL : 1);
        }
        head(out, "pgtree_postmaster_start_time_seconds", "gauge", "When the postmaster started (seconds since the epoch).");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_postmaster_start_time_seconds{cluster=", out);
                label(out, labels[c]);
                fprintf(out, "} %.0f\n", pg_process_start_time(t, &t->procs[t->clusters[c].postmaster]));
        }
        head(out, "pgtree_cluster_reachable", "gauge", "pg_stat_activity could be read in the last cycle.");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_cluster_reachable{cluster=", out);
                label(out, labels[c]);
                fprintf(out, "} %d\n", t->clusters[c].snapshot != NULL);
        }

        /* backends by cluster, type and state */
        Count *counts = calloc(t->n_procs + 1, sizeof *counts);
        if (!counts)
                return -ENOMEM;
        size_t nc = 0;
        uint64_t *anon = calloc(t->n_clusters + 1, sizeof(uint64_t)), *rss = calloc(t->n_clusters + 1, sizeof(uint64_t));
        if (!anon || !rss) {
                free(counts);
                free(anon);
                free(rss);
                return -ENOMEM;
        }
        size_t orphans = 0;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (p->cluster < 0) {
                        orphans++;
                        continue;
                }
                anon[p->cluster] += p->rec.rss_anon_kb * 1024;
                rss[p->cluster] += p->rec.rss_kb * 1024;
                const char *cl = labels[p->cluster], *ty = proc_backend_type(p), *st = proc_state(p);
                if (!st)
                        st = "";
                size_t k;
                for (k = 0; k < nc; k++)
                        if (counts[k].cluster == cl && !strcmp(counts[k].type, ty) && !strcmp(counts[k].state, st))
                                break;
                if (k == nc)
                        counts[nc++] = (Count){ .cluster = cl, .type = ty, .state = st };
                counts[k].n++;
        }
        head(out, "pgtree_backends", "gauge", "PostgreSQL processes by cluster, backend type and state.");
        for (size_t k = 0; k < nc; k++) {
                fputs("pgtree_backends{cluster=", out);
                label(out, counts[k].cluster);
                fputs(",backend_type=", out);
                label(out, counts[k].type);
                fputs(",state=", out);
                label(out, counts[k].state);
                fprintf(out, "} %u\n", counts[k].n);
        }
        head(out, "pgtree_cluster_cpu_seconds_total", "counter",
             "CPU time (user + system) used by the cluster's processes since pgtreed started watching it.");
        for (size_t c = 0; c < t->n_clusters; c++) {
                const CpuTotal *ct = NULL;
                for (size_t k = 0; ac && k < ac->n_cpu_totals && !ct; k++)
                        if (!strcmp(ac->cpu_totals[k].cluster, labels[c]))
                                ct = &ac->cpu_totals[k];
                fputs("pgtree_cluster_cpu_seconds_total{cluster=", out);
                label(out, labels[c]);
                fprintf(out, "} %.2f\n", ct ? ct->seconds : 0.0);
        }
        head(out, "pgtree_cluster_private_memory_bytes", "gauge", "Sum of the processes' private memory (RssAnon).");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_cluster_private_memory_bytes{cluster=", out);
                label(out, labels[c]);
                fprintf(out, "} %llu\n", (unsigned long long) anon[c]);
        }
        head(out, "pgtree_cluster_rss_bytes", "gauge", "Sum of the processes' RSS (counts shared memory once per process).");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_cluster_rss_bytes{cluster=", out);
                label(out, labels[c]);
                fprintf(out, "} %llu\n", (unsigned long long) rss[c]);
        }
        free(counts);
        free(anon);
        free(rss);
        head(out, "pgtree_orphan_processes", "gauge", "PostgreSQL processes with no live postmaster.");
        fprintf(out, "pgtree_orphan_processes %zu\n", orphans);

        head(out, "pgtree_open_findings", "gauge", "Open findings by kind.");
        for (int k = 0; k < _FINDING_KIND_MAX; k++) {
                size_t n = 0;
                for (size_t i = 0; i < e->open.n; i++)
                        n += e->open.items[i].kind == (FindingKind) k;
                fprintf(out, "pgtree_open_findings{kind=\"%s\"} %zu\n", finding_kind_to_string((FindingKind) k), n);
        }
        head(out, "pgtree_idle_in_transaction_xmin_age", "gauge",
             "Largest age(backend_xmin) of the open idle_in_transaction findings: how far they hold back the xmin "
             "horizon (0: none, or not known).");
        for (size_t c = 0; c < t->n_clusters; c++) {
                long long age = 0;
                for (size_t i = 0; i < e->open.n; i++) {
                        const Finding *f = &e->open.items[i];
                        if (f->kind != FINDING_IDLE_IN_TRANSACTION || f->xmin_age <= age)
                                continue;
                        /* its cluster: the one its process is in now, else the one of that name */
                        ssize_t in = -1;
                        for (size_t i2 = 0; i2 < t->n_procs && in < 0; i2++)
                                if (t->procs[i2].rec.pid == f->pid && t->procs[i2].rec.start_ticks == f->start_ticks)
                                        in = t->procs[i2].cluster;
                        if (in >= 0 ? (size_t) in == c : !strcmp(f->cluster, t->clusters[c].name))
                                age = f->xmin_age;
                }
                fputs("pgtree_idle_in_transaction_xmin_age{cluster=", out);
                label(out, labels[c]);
                fprintf(out, "} %lld\n", age);
        }
        head(out, "pgtree_terminate_not_exited_total", "counter",
             "Backends still there terminate_grace after SIGTERM (pgtree never escalates: look at them by hand).");
        fprintf(out, "pgtree_terminate_not_exited_total %llu\n", (unsigned long long) (ac ? ac->not_exited : 0));
        head(out, "pgtree_actions_total", "counter", "cancel/terminate actions by result.");
        for (int a = ACTION_CANCEL; a <= ACTION_TERMINATE; a++)
                for (int r = 0; r < _RESULT_MAX; r++)
                        fprintf(out, "pgtree_actions_total{action=\"%s\",result=\"%s\"} %llu\n", action_to_string((Action) a),
                                action_result_to_string((ActionResult) r), (unsigned long long) (ac ? ac->n[a][r] : 0));
        head(out, "pgtree_alerts_total", "counter", "Alert commands run, by result.");
        fprintf(out, "pgtree_alerts_total{result=\"ok\"} %llu\n", (unsigned long long) (ac ? ac->alerts_ok : 0));
        fprintf(out, "pgtree_alerts_total{result=\"failed\"} %llu\n", (unsigned long long) (ac ? ac->alerts_failed : 0));
        fprintf(out, "pgtree_alerts_total{result=\"stuck\"} %llu\n", (unsigned long long) (ac ? ac->alerts_stuck : 0));
        head(out, "pgtree_alerts_dropped_total", "counter", "Alerts not run, by the limit that held them back.");
        fprintf(out, "pgtree_alerts_dropped_total{reason=\"max_concurrent_alerts\"} %llu\n",
                (unsigned long long) (ac ? ac->alerts_dropped_busy : 0));
        fprintf(out, "pgtree_alerts_dropped_total{reason=\"max_alerts_per_minute\"} %llu\n",
                (unsigned long long) (ac ? ac->alerts_dropped_rate : 0));
        fprintf(out, "pgtree_alerts_dropped_total{reason=\"max_alerts_per_minute_per_owner\"} %llu\n",
                (unsigned long long) (ac ? ac->alerts_dropped_owner : 0));
        head(out, "pgtree_alert_output_discarded_bytes_total", "counter",
             "Bytes alert commands wrote past the 4 KiB of stdout and of stderr kept for the journal.");
        fprintf(out, "pgtree_alert_output_discarded_bytes_total %llu\n", (unsigned long long) (ac ? ac->alert_output_discarded : 0));
        return ferror(out) ? -EIO : 0;
}

int metrics_write_file(const char *path, const Engine *e, const ActionCounters *ac, double start_time) {
        char tmp[PATH_MAX];
        if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int) sizeof tmp)
                return -ENAMETOOLONG;
        int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        FILE *f = fdopen(fd, "w");
        if (!f) {
                int r = negative_errno();
                close(fd);
                unlink(tmp);
                return r;
        }
        int r = metrics_write(f, e, ac, start_time);
        if (fchmod(fd, 0644) < 0 && r == 0)
                r = negative_errno();
        if (fclose(f) != 0 && r == 0)
                r = negative_errno();
        if (r == 0 && rename(tmp, path) < 0)
                r = negative_errno();
        if (r < 0)
                unlink(tmp);
        return r;
}
