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
        assert_non_null(strstr(t, "pgtree_cycle_duration_seconds 0.012500\n"));
        /* label values escaped */
        assert_non_null(strstr(t, "pgtree_postmaster_up{cluster=\"we\\\"ird\\\\name\"} 1\n"));
        assert_non_null(strstr(t, "pgtree_backends{cluster=\"we\\\"ird\\\\name\",backend_type=\"client backend\",state=\"idle\"} 2\n"));
        assert_non_null(strstr(t, "pgtree_cluster_cpu_ratio{cluster=\"we\\\"ird\\\\name\"} 2.0000\n")); /* 4 × 50 % */
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
                snprintf(name, sizeof name, "# TYPE %.*s ", (int) k, line);
                if (!strstr(t, name))
                        fail_msg("no TYPE for %s", name);
        }
        free(t);
        findings_free(&e.open);
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
                cmocka_unit_test(test_atomic_file),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
