/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

typedef struct Count {
        const char *cluster, *type, *state;
        unsigned n;
} Count;

int metrics_write(FILE *out, const Engine *e, const ActionCounters *ac, double start_time) {
        const PgTree *t = &e->tree;
        head(out, "pgtree_up", "gauge", "pgtreed is running.");
        fputs("pgtree_up 1\n", out);
        head(out, "pgtree_start_time_seconds", "gauge", "When pgtreed started (seconds since the epoch).");
        fprintf(out, "pgtree_start_time_seconds %.0f\n", start_time);
        head(out, "pgtree_cycles_total", "counter", "Scan cycles completed.");
        fprintf(out, "pgtree_cycles_total %llu\n", (unsigned long long) e->cycles);
        head(out, "pgtree_cycle_duration_seconds", "gauge", "Wall time of the last cycle (scan, query, join, findings).");
        fprintf(out, "pgtree_cycle_duration_seconds %.6f\n", e->cycle_seconds);
        head(out, "pgtree_scan_processes", "gauge", "Process records read by the last scan.");
        fprintf(out, "pgtree_scan_processes %zu\n", e->scan.examined);

        head(out, "pgtree_postmaster_up", "gauge", "A postmaster of this cluster is running.");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_postmaster_up{cluster=", out);
                label(out, t->clusters[c].name);
                fputs("} 1\n", out);
        }
        head(out, "pgtree_postmaster_start_time_seconds", "gauge", "When the postmaster started (seconds since the epoch).");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_postmaster_start_time_seconds{cluster=", out);
                label(out, t->clusters[c].name);
                fprintf(out, "} %.0f\n", pg_process_start_time(t, &t->procs[t->clusters[c].postmaster]));
        }
        head(out, "pgtree_cluster_reachable", "gauge", "pg_stat_activity could be read in the last cycle.");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_cluster_reachable{cluster=", out);
                label(out, t->clusters[c].name);
                fprintf(out, "} %d\n", t->clusters[c].snapshot != NULL);
        }

        /* backends by cluster, type and state */
        Count *counts = calloc(t->n_procs + 1, sizeof *counts);
        if (!counts)
                return -ENOMEM;
        size_t nc = 0;
        double *cpu = calloc(t->n_clusters + 1, sizeof(double));
        uint64_t *anon = calloc(t->n_clusters + 1, sizeof(uint64_t)), *rss = calloc(t->n_clusters + 1, sizeof(uint64_t));
        if (!cpu || !anon || !rss) {
                free(counts);
                free(cpu);
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
                cpu[p->cluster] += p->rec.cpu_percent > 0 ? p->rec.cpu_percent : 0;
                anon[p->cluster] += p->rec.rss_anon_kb * 1024;
                rss[p->cluster] += p->rec.rss_kb * 1024;
                const char *cl = t->clusters[p->cluster].name, *ty = proc_backend_type(p), *st = proc_state(p);
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
        head(out, "pgtree_cluster_cpu_ratio", "gauge", "CPU used by the cluster's processes over the last interval, in cores.");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_cluster_cpu_ratio{cluster=", out);
                label(out, t->clusters[c].name);
                fprintf(out, "} %.4f\n", cpu[c] / 100.0);
        }
        head(out, "pgtree_cluster_private_memory_bytes", "gauge", "Sum of the processes' private memory (RssAnon).");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_cluster_private_memory_bytes{cluster=", out);
                label(out, t->clusters[c].name);
                fprintf(out, "} %llu\n", (unsigned long long) anon[c]);
        }
        head(out, "pgtree_cluster_rss_bytes", "gauge", "Sum of the processes' RSS (counts shared memory once per process).");
        for (size_t c = 0; c < t->n_clusters; c++) {
                fputs("pgtree_cluster_rss_bytes{cluster=", out);
                label(out, t->clusters[c].name);
                fprintf(out, "} %llu\n", (unsigned long long) rss[c]);
        }
        free(counts);
        free(cpu);
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
