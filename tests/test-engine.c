/* SPDX-License-Identifier: MIT */
/* The engine's whole cycle against real processes (a fake cluster whose server cannot be
 * reached): the tree is kept, activity says why it is unavailable, findings come from titles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine.h"
#include "fake-cluster.h"

/* Whether a pid is the fake cluster's: the host may run other PostgreSQL servers (other test
 * suites), whose findings this test must not count. */
static bool ours(const FakeCluster *fc, pid_t pid) {
        pid_t kids[64];
        int n = fake_children(fc->pm, kids, 64);
        for (int i = 0; i < n; i++)
                if (kids[i] == pid)
                        return true;
        return pid == fc->pm;
}

static size_t events_of(const FakeCluster *fc, const FindingEvents *ev) {
        size_t n = 0;
        for (size_t i = 0; i < ev->n; i++)
                n += ours(fc, ev->items[i].finding.pid);
        return n;
}

static void test_cycle_without_server(void **state) {
        FakeCluster fc = {};
        assert_int_equal(fake_cluster_start(&fc, 1), 0); /* nothing listens on port 1 */
        Config *c;
        ConfigErrors errs = {};
        assert_int_equal(config_parse_string("[daemon]\nconnect_timeout = 500ms\n[rule all]\nkind = long_query, lock_wait\nafter = 100ms\n",
                                             "t.ini", &c, &errs), 0);
        Engine *e;
        assert_int_equal(engine_new(c, &e), 0);
        FindingEvents ev = {};
        assert_int_equal(engine_run_cycle_blocking(e, true, &ev), 0);
        const PgCluster *cl = NULL;
        for (size_t i = 0; i < e->tree.n_clusters; i++)
                if (e->tree.procs[e->tree.clusters[i].postmaster].rec.pid == fc.pm)
                        cl = &e->tree.clusters[i];
        assert_non_null(cl);
        assert_int_equal(strncmp(cl->activity, "unavailable: ", 13), 0);
        assert_null(cl->snapshot);
        assert_int_equal(events_of(&fc, &ev), 0); /* first sight: the time a title's state began is unknown */
        finding_events_clear(&ev);
        fake_sleep_ms(300);
        assert_int_equal(engine_run_cycle_blocking(e, false, &ev), 0);
        bool opened = false;
        for (size_t i = 0; i < ev.n; i++)
                opened |= ev.items[i].type == FINDING_OPENED && ev.items[i].finding.kind == FINDING_LONG_QUERY &&
                          ours(&fc, ev.items[i].finding.pid);
        assert_true(opened); /* alice's SELECT, counted from when it was first seen */
        assert_int_equal(e->cycles, 2);
        finding_events_clear(&ev);
        engine_free(e);
        config_free(c);
        fake_cluster_stop(&fc, NULL, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cycle_without_server),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
