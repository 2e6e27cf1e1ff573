/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "proc-stat.h"

/* Fields 4.. of a real stat line of a postgres backend (ppid 1234, utime 17, stime 5, start 987654,
 * rss 1535). */
#define TAIL " S 1234 1234 1234 0 -1 4194560 1234 0 0 0 17 5 0 0 20 0 1 0 987654 230158336 1535 " \
             "18446744073709551615 1 1 0 0 0 0 4194304 19935232 1536 0 0 0 17 1 0 0 0 0 0\n"

static void parse_ok(const char *comm_part, const char *expect_comm) {
        char buf[1024];
        int n = snprintf(buf, sizeof buf, "4321 (%s)" TAIL, comm_part);
        ProcStat st;
        assert_int_equal(proc_stat_parse(buf, (size_t) n, &st), 0);
        assert_int_equal(st.pid, 4321);
        assert_string_equal(st.comm, expect_comm);
        assert_int_equal(st.state, 'S');
        assert_int_equal(st.ppid, 1234);
        assert_int_equal(st.utime, 17);
        assert_int_equal(st.stime, 5);
        assert_int_equal(st.start_ticks, 987654);
        assert_int_equal(st.rss_pages, 1535);
}

static void test_plain(void **state) {
        parse_ok("postgres", "postgres");
}

/* comm is chosen by whoever runs the program: it may hold anything but NUL, at most 15 bytes. */
static void test_hostile_comm(void **state) {
        parse_ok("a) (b", "a) (b");
        parse_ok("a) S 1 1 1 0", "a) S 1 1 1 0");
        parse_ok("with space", "with space");
        parse_ok("new\nline", "new\nline");
        parse_ok("", "");
        parse_ok(")", ")");
        parse_ok("))))))))))))))", "))))))))))))))");
        parse_ok("(((", "(((");
        parse_ok(") 5 6 (", ") 5 6 (");
}

static void test_malformed(void **state) {
        ProcStat st;
        const char *bad[] = {
                "",
                "4321",
                "4321 (postgres",
                "4321 postgres) S 1",
                "x (postgres) S 1 1",
                "-5 (postgres)" TAIL,
                "4321 (postgres) S",
                "4321 (postgres) S 1 2 3",
                "4321 (postgres)S 1234 1234",
                "4321 (postgres) S abc 1234 1234 0 -1 4194560 1234 0 0 0 17 5 0 0 20 0 1 0 987654 230158336 1535",
                "4321 (postgres) S 1234 1234 1234 0 -1 4194560 1234 0 0 0 17 5 0 0 20 0 1 0 99999999999999999999999 230158336 1535",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                if (proc_stat_parse(bad[i], strlen(bad[i]), &st) != -EINVAL)
                        fail_msg("accepted malformed stat «%s»", bad[i]);
        assert_int_equal(proc_stat_parse(NULL, 0, &st), -EINVAL);
}

static void test_zombie_state(void **state) {
        const char *z = "77 (postgres) Z 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 0";
        ProcStat st;
        assert_int_equal(proc_stat_parse(z, strlen(z), &st), 0);
        assert_int_equal(st.state, 'Z');
        assert_int_equal(st.rss_pages, 0);
}

static void test_read_self(void **state) {
        ProcStat st;
        assert_int_equal(proc_stat_read(NULL, getpid(), &st), 0);
        assert_int_equal(st.pid, getpid());
        assert_int_equal(st.ppid, getppid());
        assert_true(st.start_ticks > 0);
        assert_int_equal(proc_stat_read("/nonexistent-proc", getpid(), &st), -ESRCH);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_plain),
                cmocka_unit_test(test_hostile_comm),
                cmocka_unit_test(test_malformed),
                cmocka_unit_test(test_zombie_state),
                cmocka_unit_test(test_read_self),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
