/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "build-config.h"
#include "join.h"
#include "metrics.h"

#define REC(p, pp, ti) { .pid = (p), .ppid = (pp), .state = 'S', .comm = "postgres", .title = (char *) (ti), .start_ticks = 100ULL * (p), .rss_kb = 1000, .rss_anon_kb = 100, .cpu_percent = 50 }

static void build(Engine *e) {
        static const ProcRecord recs[] = {
                REC(100, 1, "/usr/bin/postgres -D /srv/a"),
                REC(101, 100, "postgres: we\"ird\\name: checkpointer "),
                REC(110, 100, "postgres: we\"ird\\name: alice shop [local] idle"),
                REC(111, 100, "postgres: we\"ird\\name: bob shop [local] idle"),
                REC(300, 1, "postgres: carol shop [local] SELECT"),
        };
        memset(e, 0, sizeof *e);
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &e->tree), 0);
        e->tree.hz = 100;
        e->tree.boot_time = 1700000000;
        e->tree.now = 1700001000;
        e->cycles = 42;
        e->cycle_seconds = 0.0125;
        Finding *f = findings_add(&e->open);
        f->kind = FINDING_ORPHAN_BACKEND;
        f->pid = 300;
}

static char *render(Engine *e, ActionCounters *ac) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        assert_int_equal(metrics_write(f, e, ac, 1700000500), 0);
        fclose(f);
        return buf;
}

static void test_exposition(void **state) {
        Engine e;
        build(&e);
        ActionCounters ac = {};
        ac.n[ACTION_TERMINATE][RESULT_SENT] = 3;
        char *t = render(&e, &ac);
        assert_non_null(strstr(t, "# HELP pgtree_up "));
        assert_non_null(strstr(t, "# TYPE pgtree_cycles_total counter\npgtree_cycles_total 42\n"));
        assert_non_null(strstr(t, "pgtree_build_info{version=\"" PGTREE_VERSION "\"} 1\n"));
        assert_non_null(strstr(t, "# TYPE pgtree_cycle_duration_seconds histogram\n"));
        assert_non_null(strstr(t, "# TYPE pgtree_cluster_cpu_seconds_total counter\n"));
        assert_null(strstr(t, "cpu_ratio"));
        /* label values escaped */
        assert_non_null(strstr(t, "pgtree_postmaster_up{cluster=\"we\\\"ird\\\\name\"} 1\n"));
        assert_non_null(strstr(t, "pgtree_backends{cluster=\"we\\\"ird\\\\name\",backend_type=\"client backend\",state=\"idle\"} 2\n"));
        assert_non_null(strstr(t, "pgtree_cluster_private_memory_bytes{cluster=\"we\\\"ird\\\\name\"} 409600\n"));
        assert_non_null(strstr(t, "pgtree_orphan_processes 1\n"));
        assert_non_null(strstr(t, "pgtree_open_findings{kind=\"orphan_backend\"} 1\n"));
        assert_non_null(strstr(t, "pgtree_actions_total{action=\"terminate\",result=\"sent\"} 3\n"));
        assert_non_null(strstr(t, "pgtree_postmaster_start_time_seconds{cluster=\"we\\\"ird\\\\name\"} 1700000100\n"));
        /* no pid or query as a label, ever */
        assert_null(strstr(t, "pid="));
        assert_null(strstr(t, "query="));
        /* every sample's family has HELP and TYPE */
        for (char *line = t; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
                if (*line == '#' || *line == '\n')
                        continue;
                char name[128];
                size_t k = strcspn(line, "{ ");
                /* a histogram's samples belong to the family without the suffix */
                static const char *const suffixes[] = { "_bucket", "_sum", "_count" };
                for (size_t s = 0; s < 3; s++) {
                        size_t l = strlen(suffixes[s]);
                        if (k > l && !strncmp(line + k - l, suffixes[s], l) && strncmp(line, "pgtree_cycles", 13)) {
                                char base[128];
                                snprintf(base, sizeof base, "# TYPE %.*s histogram", (int) (k - l), line);
                                if (strstr(t, base))
                                        k -= l;
                        }
                }
                snprintf(name, sizeof name, "# TYPE %.*s ", (int) k, line);
                if (!strstr(t, name))
                        fail_msg("no TYPE for %s", name);
        }
        free(t);
        findings_free(&e.open);
        tree_free(&e.tree);
}

/* Counters kept across cycles: the cycle histogram, the last cycle's time, cluster CPU seconds
 * (only what processes used while watched), backends that did not exit, the xmin age held back. */
static void test_observe_cycles(void **state) {
        Engine e;
        build(&e);
        ActionCounters ac = {};
        for (size_t i = 0; i < e.tree.n_procs; i++)
                e.tree.procs[i].rec.cpu_ticks = 1000;        /* 10 s each before pgtreed started */
        e.cycle_seconds = 0.003;
        assert_int_equal(metrics_observe_cycle(&ac, &e, 1700001000.5), 0);
        for (size_t i = 0; i < e.tree.n_procs; i++)
                if (e.tree.procs[i].rec.pid == 110)
                        e.tree.procs[i].rec.cpu_ticks = 1250; /* 2.5 s more */
        e.cycle_seconds = 0.7;
        assert_int_equal(metrics_observe_cycle(&ac, &e, 1700001002.5), 0);
        ac.not_exited = 2;
        Finding *f = findings_add(&e.open);
        f->kind = FINDING_IDLE_IN_TRANSACTION;
        f->pid = 111;
        f->xmin_age = 4242;
        strcpy(f->cluster, "we\"ird\\name");
        char *t = render(&e, &ac);
        assert_non_null(strstr(t, "pgtree_cluster_cpu_seconds_total{cluster=\"we\\\"ird\\\\name\"} 2.50\n"));
        assert_non_null(strstr(t, "pgtree_cycle_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert_non_null(strstr(t, "pgtree_cycle_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert_non_null(strstr(t, "pgtree_cycle_duration_seconds_bucket{le=\"0.5\"} 1\n"));
        assert_non_null(strstr(t, "pgtree_cycle_duration_seconds_bucket{le=\"1\"} 2\n"));
        assert_non_null(strstr(t, "pgtree_cycle_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert_non_null(strstr(t, "pgtree_cycle_duration_seconds_sum 0.703000\n"));
        assert_non_null(strstr(t, "pgtree_cycle_duration_seconds_count 2\n"));
        assert_non_null(strstr(t, "pgtree_last_cycle_timestamp_seconds 1700001002.500\n"));
        assert_non_null(strstr(t, "pgtree_terminate_not_exited_total 2\n"));
        assert_non_null(strstr(t, "pgtree_idle_in_transaction_xmin_age{cluster=\"we\\\"ird\\\\name\"} 4242\n"));
        free(t);
        /* a process that exited and one that is new: the counter never goes back */
        for (size_t i = 0; i < e.tree.n_procs; i++)
                if (e.tree.procs[i].rec.pid == 110) {
                        e.tree.procs[i].rec.pid = 120;        /* "new" process, 10 s since its start */
                        e.tree.procs[i].rec.cpu_ticks = 1000;
                }
        assert_int_equal(metrics_observe_cycle(&ac, &e, 1700001004.5), 0);
        t = render(&e, &ac);
        assert_non_null(strstr(t, "pgtree_cluster_cpu_seconds_total{cluster=\"we\\\"ird\\\\name\"} 12.50\n"));
        free(t);
        metrics_counters_done(&ac);
        findings_free(&e.open);
        tree_free(&e.tree);
}

/* Two clusters named alike (Debian: "main" for every version): no duplicate series. */
static void test_same_cluster_name(void **state) {
        static const ProcRecord recs[] = {
                REC(100, 1, "/usr/lib/postgresql/15/bin/postgres -D /srv/a"),
                REC(101, 100, "postgres: main: checkpointer "),
                REC(200, 1, "/usr/lib/postgresql/16/bin/postgres -D /srv/b"),
                REC(201, 200, "postgres: main: checkpointer "),
        };
        Engine e = {};
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &e.tree), 0);
        assert_int_equal(e.tree.n_clusters, 2);
        assert_string_equal(e.tree.clusters[0].name, e.tree.clusters[1].name);
        snprintf(e.tree.clusters[0].data_directory, sizeof e.tree.clusters[0].data_directory, "/srv/a");
        snprintf(e.tree.clusters[1].data_directory, sizeof e.tree.clusters[1].data_directory, "/srv/b");
        char *t = render(&e, NULL);
        assert_non_null(strstr(t, "pgtree_postmaster_up{cluster=\"main (/srv/a)\"} 1\n"));
        assert_non_null(strstr(t, "pgtree_postmaster_up{cluster=\"main (/srv/b)\"} 1\n"));
        /* no sample line twice */
        for (char *line = t; *line; line = strchr(line, '\n') + 1) {
                size_t l = strcspn(line, "\n");
                if (*line != '#')
                        for (char *other = strchr(line, '\n') + 1; *other; other = strchr(other, '\n') + 1)
                                if (!strncmp(line, other, l) && other[l] == '\n')
                                        fail_msg("duplicate: %.*s", (int) l, line);
        }
        free(t);
        tree_free(&e.tree);
}

static void test_atomic_file(void **state) {
        Engine e;
        build(&e);
        char dir[] = "/tmp/pgtree-metrics-XXXXXX";
        assert_non_null(mkdtemp(dir));
        char path[128];
        snprintf(path, sizeof path, "%s/pgtree.prom", dir);
        assert_int_equal(metrics_write_file(path, &e, NULL, 0), 0);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0644);
        assert_true(st.st_size > 100);
        assert_int_equal(metrics_write_file("/nonexistent-dir/x.prom", &e, NULL, 0) < 0, 1);
        unlink(path);
        rmdir(dir);
        findings_free(&e.open);
        tree_free(&e.tree);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_exposition),
                cmocka_unit_test(test_observe_cycles),
                cmocka_unit_test(test_same_cluster_name),
                cmocka_unit_test(test_atomic_file),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
