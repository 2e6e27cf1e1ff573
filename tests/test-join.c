/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "join.h"

#define BOOT 1700000000.0
#define REC(p, pp, ti) { .pid = (p), .ppid = (pp), .state = 'S', .comm = "postgres", .title = (char *) (ti), .start_ticks = 100ULL * (p) }

static const ProcRecord recs[] = {
        REC(100, 1, "/usr/bin/postgres -D /srv/a"),
        REC(110, 100, "postgres: alice shop [local] idle"),
        REC(120, 100, "postgres: bob shop ::1(4000) SELECT"),
        REC(130, 100, "postgres: carol shop 10.1.1.1(5000) idle"),
};

static void test_join_and_reuse(void **state) {
        PgTree t;
        assert_int_equal(tree_build(recs, 4, &t), 0);
        t.hz = 100;
        t.boot_time = BOOT;
        t.now = BOOT + 1000;
        ActivityRow rows[] = {
                { .pid = 110, .usename = "alice", .datname = "shop", .application_name = "app", .client_port = -1,
                  .backend_type = "client backend", .state = "idle in transaction", .backend_start = BOOT + 110.3 },
                { .pid = 120, .usename = "bob", .datname = "shop", .client_addr = "::1", .client_port = 4000,
                  .backend_type = "client backend", .state = "active", .backend_start = BOOT + 121.5 },
                /* 130's row started an hour before the process: another session, pid reused */
                { .pid = 130, .usename = "zed", .backend_type = "client backend", .state = "active", .backend_start = BOOT + 130 - 3600 },
                { .pid = 999, .usename = "ghost", .backend_type = "client backend", .backend_start = BOOT },
        };
        ActivitySnapshot snap = { .rows = rows, .n = 4, .own_pid = 120 };
        JoinStats st;
        join_activity(&t, 0, &snap, &st);
        assert_int_equal(st.joined, 2);
        assert_int_equal(st.mismatched, 1);
        assert_int_equal(st.rows_without_process, 1);

        const PgProcess *alice = &t.procs[tree_find(&t, 110)];
        assert_ptr_equal(alice->act, &rows[0]);
        assert_string_equal(proc_state(alice), "idle in transaction"); /* activity wins over the title */
        assert_string_equal(proc_application(alice), "app");
        char client[64];
        proc_client(alice, client, sizeof client);
        assert_string_equal(client, "local");
        assert_true(proc_is_client_backend(alice));

        const PgProcess *bob = &t.procs[tree_find(&t, 120)];
        proc_client(bob, client, sizeof client);
        assert_string_equal(client, "[::1]:4000");
        assert_true(bob->own);
        assert_false(proc_is_client_backend(bob)); /* pgtree's own connection is never acted on */

        const PgProcess *carol = &t.procs[tree_find(&t, 130)];
        assert_null(carol->act);
        assert_true(carol->act_mismatch);
        assert_string_equal(proc_user(carol), "carol"); /* from the title, not the stale row */
        assert_string_equal(proc_state(carol), "idle");
        proc_client(carol, client, sizeof client);
        assert_string_equal(client, "10.1.1.1:5000");
        assert_null(proc_application(carol));

        const PgProcess *pm = &t.procs[tree_find(&t, 100)];
        assert_null(pm->act);
        assert_string_equal(proc_backend_type(pm), "postmaster");
        tree_free(&t);
}

/* Without a clock (start time unknown) the pid alone joins. */
static void test_join_without_clock(void **state) {
        PgTree t;
        assert_int_equal(tree_build(recs, 4, &t), 0);
        ActivityRow rows[] = { { .pid = 130, .usename = "zed", .backend_start = 5 } };
        ActivitySnapshot snap = { .rows = rows, .n = 1 };
        join_activity(&t, 0, &snap, NULL);
        assert_non_null(t.procs[tree_find(&t, 130)].act);
        tree_free(&t);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_join_and_reuse),
                cmocka_unit_test(test_join_without_clock),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
