/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "findings.h"

#define REC(p, pp, st, cm, ti) { .pid = (p), .ppid = (pp), .state = (st), .comm = cm, .title = (char *) (ti), .start_ticks = 500 + (p) }

static void test_orphans_from_tree(void **state) {
        const ProcRecord recs[] = {
                REC(100, 1, 'S', "postgres", "/usr/lib/postgresql/15/bin/postgres -D /srv/a"),
                REC(101, 100, 'S', "postgres", "postgres: checkpointer "),
                REC(110, 100, 'R', "postgres", "postgres: alice shop [local] SELECT"),
                REC(111, 100, 'R', "postgres", "postgres: parallel worker for PID 110 "),
                REC(112, 100, 'R', "postgres", "postgres: parallel worker for PID 199 "),
                REC(300, 1, 'R', "postgres", "postgres: carol shop 10.0.0.9(4444) SELECT"),
                REC(301, 1, 'Z', "postgres", NULL),
        };
        PgTree t;
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &t), 0);
        Findings f = {};
        assert_int_equal(findings_from_tree(&t, &f), 0);
        assert_int_equal(f.n, 2);
        assert_int_equal(f.items[0].kind, FINDING_ORPHAN_PARALLEL_WORKER);
        assert_int_equal(f.items[0].pid, 112);
        assert_int_equal(f.items[0].start_ticks, 612);
        assert_int_equal(f.items[1].kind, FINDING_ORPHAN_BACKEND);
        assert_int_equal(f.items[1].pid, 300);
        assert_int_equal(f.items[1].action, ACTION_LOG);
        assert_false(f.items[1].dry_run);
        assert_non_null(strstr(f.items[1].detail, "no live postmaster"));
        findings_free(&f);
        tree_free(&t);
}

static void test_names(void **state) {
        for (int k = 0; k < _FINDING_KIND_MAX; k++)
                assert_int_equal(finding_kind_from_string(finding_kind_to_string((FindingKind) k)), k);
        for (int a = 0; a < _ACTION_MAX; a++)
                assert_int_equal(action_from_string(action_to_string((Action) a)), a);
        assert_int_equal(finding_kind_from_string("orphan"), -EINVAL);
        assert_int_equal(action_from_string("kill"), -EINVAL);
        assert_int_equal(action_from_string(NULL), -EINVAL);
        assert_string_equal(finding_kind_to_string(FINDING_CLIENT_GONE), "client_gone");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_orphans_from_tree),
                cmocka_unit_test(test_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
