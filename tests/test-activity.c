/* SPDX-License-Identifier: MIT */
/* The libpq side without a server: SQL per version, and failures that must not block. (A real
 * server is in the integration tests.) */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "activity.h"

static void test_sql_per_version(void **state) {
        char *sql;
        assert_int_equal(activity_query_sql(90500, 0, &sql), -EPROTONOSUPPORT);
        assert_int_equal(activity_query_sql(90624, 0, &sql), 0);
        assert_non_null(strstr(sql, "NULL::text, state"));  /* no backend_type in 9.6 */
        assert_non_null(strstr(sql, "NULL::int, age"));     /* no leader_pid before 13 */
        assert_non_null(strstr(sql, "NULL::text, extract")); /* no query text */
        free(sql);
        assert_int_equal(activity_query_sql(120000, 100, &sql), 0);
        assert_non_null(strstr(sql, "backend_type, state"));
        assert_non_null(strstr(sql, "NULL::int, age"));
        assert_non_null(strstr(sql, "left(query, 100)"));
        free(sql);
        assert_int_equal(activity_query_sql(150018, 256, &sql), 0);
        assert_non_null(strstr(sql, "leader_pid, age"));
        free(sql);
}

static int listener(int *port) {
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        assert_int_equal(bind(l, (struct sockaddr *) &a, sizeof a), 0);
        assert_int_equal(listen(l, 8), 0);
        socklen_t al = sizeof a;
        getsockname(l, (struct sockaddr *) &a, &al);
        *port = ntohs(a.sin_port);
        return l;
}

static ActivityConn *conn_to(int port, uint64_t timeout) {
        ActivityOptions o = { .connect_timeout_usec = timeout, .query_timeout_usec = timeout, .query_max_length = 10 };
        ActivityConn *a;
        assert_int_equal(activity_conn_new("dbname=postgres user=pgtree sslmode=disable", "127.0.0.1", port, &o, &a), 0);
        return a;
}

static void test_refused(void **state) {
        int port, l = listener(&port);
        close(l); /* nothing listens there now */
        ActivityConn *a = conn_to(port, 2000000);
        uint64_t t0 = now_monotonic_usec();
        activity_conn_start(a, t0);
        activity_conns_run(&a, 1, t0 + 5000000);
        assert_false(activity_conn_busy(a));
        assert_null(activity_conn_snapshot(a));
        assert_non_null(strstr(activity_conn_status(a), "unavailable: cannot connect"));
        assert_non_null(strstr(activity_conn_status(a), "refused"));
        /* backing off: a new start does not try again at once, and says why */
        activity_conn_start(a, now_monotonic_usec());
        assert_false(activity_conn_busy(a));
        assert_non_null(strstr(activity_conn_status(a), "refused"));
        activity_conn_free(a);
}

/* A server that accepts and never answers must not block: the deadline ends the attempt. */
static void test_hung_server(void **state) {
        int port, l = listener(&port);
        ActivityConn *a = conn_to(port, 300000);
        uint64_t t0 = now_monotonic_usec();
        activity_conn_start(a, t0);
        assert_true(activity_conn_busy(a));
        int fd;
        short ev;
        uint64_t deadline;
        assert_true(activity_conn_wants(a, &fd, &ev, &deadline));
        assert_true(fd >= 0);
        assert_true(deadline <= t0 + 300000 + 1000);
        activity_conns_run(&a, 1, t0 + 5000000);
        uint64_t took = now_monotonic_usec() - t0;
        assert_true(took < 2000000);
        assert_false(activity_conn_busy(a));
        assert_string_equal(activity_conn_status(a), "unavailable: connection timed out");
        activity_conn_free(a);
        close(l);
}

static void test_describe_hides_password(void **state) {
        ActivityOptions o = { .connect_timeout_usec = 1, .query_timeout_usec = 1 };
        ActivityConn *a;
        assert_int_equal(activity_conn_new("user=x password=secret", "/run/postgresql", 5432, &o, &a), 0);
        assert_null(strstr(activity_conn_describe(a), "secret"));
        assert_non_null(strstr(activity_conn_describe(a), "host=/run/postgresql"));
        assert_non_null(strstr(activity_conn_describe(a), "port=5432"));
        assert_non_null(strstr(activity_conn_describe(a), "application_name=pgtreed"));
        activity_conn_free(a);
        assert_int_equal(activity_conn_new("user=x port", NULL, 0, &o, &a), -EINVAL);
}

static void test_snapshot_find(void **state) {
        ActivityRow rows[] = { { .pid = 3 }, { .pid = 7 }, { .pid = 9 } };
        ActivitySnapshot s = { .rows = rows, .n = 3 };
        assert_ptr_equal(activity_snapshot_find(&s, 7), &rows[1]);
        assert_null(activity_snapshot_find(&s, 8));
        assert_null(activity_snapshot_find(NULL, 8));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sql_per_version),
                cmocka_unit_test(test_refused),
                cmocka_unit_test(test_hung_server),
                cmocka_unit_test(test_describe_hides_password),
                cmocka_unit_test(test_snapshot_find),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
