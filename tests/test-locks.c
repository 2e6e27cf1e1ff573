/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "activity.h"
#include "locks.h"

/* A snapshot of rows {pid, xact_start, blockers…, 0}, sorted by pid as the real one is. */
static ActivitySnapshot snap(size_t n, const int rows[][8]) {
        ActivitySnapshot s = { .rows = calloc(n, sizeof(ActivityRow)), .n = n };
        assert_non_null(s.rows);
        for (size_t i = 0; i < n; i++) {
                ActivityRow *r = &s.rows[i];
                r->pid = rows[i][0];
                r->xact_start = rows[i][1];
                size_t k = 0;
                while (k < 6 && rows[i][2 + k])
                        k++;
                if (k) {
                        r->blocked_by = calloc(k, sizeof(pid_t));
                        for (size_t j = 0; j < k; j++)
                                r->blocked_by[j] = rows[i][2 + j];
                        r->n_blocked_by = k;
                }
                if (i > 0)
                        assert_true(rows[i - 1][0] < rows[i][0]);
        }
        return s;
}

static void expect_forest(const ActivitySnapshot *s, const char *want) {
        LockLine *l;
        size_t n;
        assert_int_equal(lock_forest(s, &l, &n), 0);
        char got[1024] = "";
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(got);
                snprintf(got + len, sizeof got - len, "%s%u:%d%s%s%s", i ? " " : "", l[i].depth, (int) l[i].pid,
                         l[i].row ? "" : "?", l[i].repeat ? "r" : "", l[i].cycle ? "c" : "");
        }
        free(l);
        if (strcmp(got, want) != 0)
                fail_msg("forest\n got  %s\n want %s", got, want);
}

/* A holds a row lock, B waits for A and holds another one, C waits for B. */
static void test_three_levels(void **state) {
        static const int rows[][8] = { { 100, 1000 }, { 200, 1100, 100 }, { 300, 1200, 200 }, { 400, 900 } };
        ActivitySnapshot s = snap(4, rows);
        pid_t root;
        unsigned depth;
        assert_int_equal(lock_root_blocker(&s, 300, &root, &depth), 0);
        assert_int_equal(root, 100);
        assert_int_equal(depth, 2);
        assert_int_equal(lock_root_blocker(&s, 200, &root, &depth), 0);
        assert_int_equal(root, 100);
        assert_int_equal(depth, 1);
        assert_int_equal(lock_root_blocker(&s, 100, &root, &depth), -ENOENT);
        assert_int_equal(lock_root_blocker(&s, 400, &root, &depth), -ENOENT);
        assert_int_equal(lock_root_blocker(&s, 12345, &root, &depth), -ENOENT);
        assert_int_equal(lock_count_blocked(&s, 100), 1);
        assert_int_equal(lock_count_blocked(&s, 300), 0);
        expect_forest(&s, "0:100 1:200 2:300");
        activity_snapshot_clear(&s);
}

/* A cycle of waiters (a deadlock the detector has not seen yet, or answers taken at different
 * moments): no root, and nothing loops. */
static void test_cycles_end(void **state) {
        static const int rows[][8] = { { 150, 0, 400 }, { 200, 0, 300 }, { 300, 0, 200 }, { 400, 0, 200 }, { 500, 0, 500 } };
        ActivitySnapshot s = snap(5, rows);
        pid_t root;
        assert_int_equal(lock_root_blocker(&s, 200, &root, NULL), -ELOOP);
        assert_int_equal(lock_root_blocker(&s, 400, &root, NULL), -ELOOP);
        assert_int_equal(lock_root_blocker(&s, 150, &root, NULL), -ELOOP); /* hangs off the cycle */
        assert_int_equal(lock_root_blocker(&s, 500, &root, NULL), -ELOOP); /* waits for itself */
        /* the cycle is headed by a member of it (200), not by 150 which only hangs off it */
        expect_forest(&s, "0:200c 1:300 2:200r 1:400 2:150 0:500c 1:500r");
        activity_snapshot_clear(&s);
}

/* A long ring: bounded work, no deep loop. */
static void test_long_ring(void **state) {
        enum { N = 5000 };
        int (*rows)[8] = calloc(N, sizeof *rows);
        for (int i = 0; i < N; i++) {
                rows[i][0] = i + 1;
                rows[i][2] = i == 0 ? N : i; /* 1 waits for N, 2 for 1, … */
        }
        ActivitySnapshot s = snap(N, (const int(*)[8]) rows);
        pid_t root;
        assert_int_equal(lock_root_blocker(&s, 1, &root, NULL), -ELOOP);
        LockLine *l;
        size_t n;
        assert_int_equal(lock_forest(&s, &l, &n), 0);
        assert_int_equal(n, N + 1); /* each once, and the head again as a repeat */
        free(l);
        free(rows);
        activity_snapshot_clear(&s);
}

/* Several blockers: the oldest transaction is the root; a session shown under its first blocker
 * is named, not expanded, under the others; a blocker the snapshot does not list (a prepared
 * transaction's is 0 and left out when parsed; another's may be missing) is a root last. */
static void test_several_blockers(void **state) {
        static const int rows[][8] = { { 10, 500 }, { 20, 400 }, { 30, 0, 10, 20 }, { 40, 0, 30, 20 }, { 50, 0, 77 },
                                       { 60, 0, 77, 10 } };
        ActivitySnapshot s = snap(6, rows);
        pid_t root;
        unsigned depth;
        assert_int_equal(lock_root_blocker(&s, 30, &root, &depth), 0);
        assert_int_equal(root, 20); /* xact 400 is older than 500 */
        assert_int_equal(depth, 1);
        assert_int_equal(lock_root_blocker(&s, 40, &root, NULL), 0);
        assert_int_equal(root, 20);
        assert_int_equal(lock_root_blocker(&s, 50, &root, NULL), 0);
        assert_int_equal(root, 77); /* all there is */
        assert_int_equal(lock_root_blocker(&s, 60, &root, NULL), 0);
        assert_int_equal(root, 10); /* a listed session before an unlisted pid */
        expect_forest(&s, "0:10 1:30 2:40 1:60 0:20 1:30r 1:40r 0:77? 1:50 1:60r");
        activity_snapshot_clear(&s);
}

static void test_parse_pid_array(void **state) {
        pid_t p[4];
        assert_int_equal(activity_parse_pid_array("{}", p, 4), 0);
        assert_int_equal(activity_parse_pid_array("{123}", p, 4), 1);
        assert_int_equal(p[0], 123);
        assert_int_equal(activity_parse_pid_array("{1,0,2,-3}", p, 4), 2); /* 0: a prepared transaction */
        assert_int_equal(p[1], 2);
        assert_int_equal(activity_parse_pid_array("{1,2,3,4,5,6}", p, 4), 4); /* bounded */
        assert_int_equal(activity_parse_pid_array(NULL, p, 4), -EINVAL);
        assert_int_equal(activity_parse_pid_array("1,2", p, 4), -EINVAL);
        assert_int_equal(activity_parse_pid_array("{1,", p, 4), -EINVAL);
        assert_int_equal(activity_parse_pid_array("{a}", p, 4), -EINVAL);
        assert_int_equal(activity_parse_pid_array("{1}x", p, 4), -EINVAL);
        assert_int_equal(activity_parse_pid_array("{99999999999}", p, 4), -EINVAL);
}

/* pg_blocking_pids() is asked only of waiting sessions. */
static void test_query_asks_waiters_only(void **state) {
        char *sql;
        assert_int_equal(activity_query_sql(150000, 0, &sql), 0);
        assert_non_null(strstr(sql, "CASE WHEN wait_event_type = 'Lock' THEN pg_catalog.pg_blocking_pids(pid) END"));
        free(sql);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_three_levels),
                cmocka_unit_test(test_cycles_end),
                cmocka_unit_test(test_long_ring),
                cmocka_unit_test(test_several_blockers),
                cmocka_unit_test(test_parse_pid_array),
                cmocka_unit_test(test_query_asks_waiters_only),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
