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
        assert_non_null(strstr(sql, "NULL::int4, backend_xmin"));     /* no leader_pid before 13 */
        assert_non_null(strstr(sql, "backend_xmin, NULL::text,")); /* no query text */
        assert_non_null(strstr(sql, "txid_snapshot_xmax(pg_catalog.txid_current_snapshot())"));
        free(sql);
        assert_int_equal(activity_query_sql(120000, 100, &sql), 0);
        assert_non_null(strstr(sql, "backend_type, state"));
        assert_non_null(strstr(sql, "NULL::int4, backend_xmin"));
        assert_non_null(strstr(sql, "CASE WHEN state IS DISTINCT FROM 'idle' OR query_start >= $1 THEN left(query, 100) END"));
        free(sql);
        assert_int_equal(activity_query_sql(150018, 256, &sql), 0);
        assert_non_null(strstr(sql, "leader_pid, backend_xmin"));
        assert_non_null(strstr(sql, "pg_snapshot_xmax(pg_catalog.pg_current_snapshot())"));
        /* no function per row but the query text's cut */
        assert_null(strstr(sql, "extract("));
        assert_null(strstr(sql, "age("));
        assert_null(strstr(sql, "host("));
        free(sql);
}

static void test_binary_integers(void **state) {
        const unsigned char i4[] = { 0x00, 0x01, 0xe2, 0x40 }, neg[] = { 0xff, 0xff, 0xff, 0xfe };
        int32_t v;
        assert_int_equal(activity_binary_int4(i4, 4, &v), 0);
        assert_int_equal(v, 123456);
        assert_int_equal(activity_binary_int4(neg, 4, &v), 0);
        assert_int_equal(v, -2);
        assert_int_equal(activity_binary_int4(i4, 3, &v), -EBADMSG);
        assert_int_equal(activity_binary_int4(i4, 8, &v), -EBADMSG);
        const unsigned char i8[] = { 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05 };
        int64_t w;
        assert_int_equal(activity_binary_int8(i8, 8, &w), 0);
        assert_true(w == 4294967301LL);
        assert_int_equal(activity_binary_int8(i8, 4, &w), -EBADMSG);
}

static void put64(unsigned char b[8], int64_t v) {
        uint64_t u = (uint64_t) v;
        for (int i = 7; i >= 0; i--, u >>= 8)
                b[i] = (unsigned char) (u & 0xff);
}

/* pg_blocking_pids() in binary: int4[] */
static void test_binary_pid_array(void **state) {
        pid_t pids[4];
        static const unsigned char empty[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23 };
        assert_int_equal(activity_binary_pid_array(empty, sizeof empty, pids, 4), 0);
        static const unsigned char three[] = { 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 3, 0, 0, 0, 1,
                                               0, 0, 0, 4, 0, 0, 0x30, 0x39, 0, 0, 0, 4, 0, 0, 0, 0,
                                               0, 0, 0, 4, 0, 1, 0, 0 };
        assert_int_equal(activity_binary_pid_array(three, sizeof three, pids, 4), 2); /* 0: a prepared xact */
        assert_int_equal(pids[0], 12345);
        assert_int_equal(pids[1], 65536);
        assert_int_equal(activity_binary_pid_array(three, sizeof three, pids, 1), 1); /* bounded */
        assert_int_equal(activity_binary_pid_array(three, sizeof three - 1, pids, 4), -EBADMSG); /* cut */
        unsigned char wrongtype[sizeof three];
        memcpy(wrongtype, three, sizeof three);
        wrongtype[11] = 20; /* int8 elements */
        assert_int_equal(activity_binary_pid_array(wrongtype, sizeof wrongtype, pids, 4), -EBADMSG);
        unsigned char huge[sizeof three];
        memcpy(huge, three, sizeof three);
        huge[12] = 0x7f; /* a count far past the data */
        assert_int_equal(activity_binary_pid_array(huge, sizeof huge, pids, 4), -EBADMSG);
        assert_int_equal(activity_binary_pid_array(empty, 5, pids, 4), -EBADMSG);
}

static void test_binary_timestamps(void **state) {
        unsigned char b[8];
        double t;
        /* 2026-11-21 21:00:00.123456 UTC = 1795294800.123456 Unix; 2000-01-01 = 946684800 */
        put64(b, (1795294800LL - 946684800LL) * 1000000LL + 123456);
        assert_int_equal(activity_binary_timestamptz(b, 8, true, &t), 0);
        assert_true(t > 1795294800.123455 && t < 1795294800.123457); /* within a microsecond (a double's step here is 0.24 µs) */
        /* before 2000: negative microseconds */
        put64(b, -1000000LL * 86400 - 250000);
        assert_int_equal(activity_binary_timestamptz(b, 8, true, &t), 0);
        assert_true(t > 946598399.749999 && t < 946598399.750001);
        /* -infinity and infinity are "none" */
        put64(b, INT64_MIN);
        assert_int_equal(activity_binary_timestamptz(b, 8, true, &t), 0);
        assert_true(t == 0);
        put64(b, INT64_MAX);
        assert_int_equal(activity_binary_timestamptz(b, 8, true, &t), 0);
        assert_true(t == 0);
        /* a server built with float timestamps (9.6 --disable-integer-datetimes): float8 seconds */
        double secs = 86400.5;
        uint64_t u;
        memcpy(&u, &secs, 8);
        put64(b, (int64_t) u);
        assert_int_equal(activity_binary_timestamptz(b, 8, false, &t), 0);
        assert_true(t == 946684800.0 + 86400.5);
        assert_int_equal(activity_binary_timestamptz(b, 7, true, &t), -EBADMSG);
}

static void test_binary_inet(void **state) {
        char buf[64];
        const unsigned char v4[] = { 2, 32, 0, 4, 10, 0, 0, 5 };
        assert_int_equal(activity_binary_inet(v4, sizeof v4, buf, sizeof buf), 0);
        assert_string_equal(buf, "10.0.0.5");
        unsigned char v6[20] = { 3, 128, 0, 16 };
        v6[4 + 15] = 1;
        assert_int_equal(activity_binary_inet(v6, sizeof v6, buf, sizeof buf), 0);
        assert_string_equal(buf, "::1");
        /* hostile: wrong family, length not matching nb, nb of the other family, short */
        const unsigned char fam[] = { 9, 32, 0, 4, 1, 2, 3, 4 }, len[] = { 2, 32, 0, 4, 1, 2, 3 },
                            nb[] = { 2, 32, 0, 16, 1, 2, 3, 4 };
        assert_int_equal(activity_binary_inet(fam, sizeof fam, buf, sizeof buf), -EBADMSG);
        assert_int_equal(activity_binary_inet(len, sizeof len, buf, sizeof buf), -EBADMSG);
        assert_int_equal(activity_binary_inet(nb, sizeof nb, buf, sizeof buf), -EBADMSG);
        assert_int_equal(activity_binary_inet(v4, 2, buf, sizeof buf), -EBADMSG);
        assert_int_equal(activity_binary_inet(v4, sizeof v4, buf, 4), -ENOSPC);
}

static void test_xid_age(void **state) {
        assert_int_equal(activity_xid_age(1000, 990), 10);
        assert_int_equal(activity_xid_age(5, 4294967290u), 11); /* across the wrap-around */
        assert_int_equal(activity_xid_age(1000, 2), INT32_MAX); /* frozen */
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

/* When may an active session's title read between two answers be kept (scanner_title_keep)?
 * Only while both show the same statement: any change must make the title be read again. */
static void test_same_statement(void **state) {
        ActivityRow a = { .pid = 42, .backend_type = (char *) "client backend", .state = (char *) "active",
                          .backend_start = 100, .xact_start = 200, .query_start = 200, .state_change = 200,
                          .wait_event_type = (char *) "Timeout", .wait_event = (char *) "PgSleep" };
        ActivityRow b = a;
        assert_true(activity_row_same_statement(&a, &b));
        assert_false(activity_row_same_statement(NULL, &b));
        assert_false(activity_row_same_statement(&a, NULL));
        /* another statement: a new query_start (and state_change, xact_start) */
        b.query_start = 201;
        assert_false(activity_row_same_statement(&a, &b));
        b = a;
        b.state_change = 201; /* went idle and active again within the same query_start: never */
        assert_false(activity_row_same_statement(&a, &b));
        b = a;
        b.xact_start = 150;
        assert_false(activity_row_same_statement(&a, &b));
        /* a reused pid: another backend */
        b = a;
        b.backend_start = 101;
        assert_false(activity_row_same_statement(&a, &b));
        b = a;
        b.pid = 43;
        assert_false(activity_row_same_statement(&a, &b));
        /* not active in one of them */
        b = a;
        b.state = (char *) "idle in transaction";
        assert_false(activity_row_same_statement(&a, &b));
        assert_false(activity_row_same_statement(&b, &a));
        b.state = NULL;
        assert_false(activity_row_same_statement(&a, &b));
        /* a lock wait (the title says "waiting") before or now */
        b = a;
        b.wait_event_type = (char *) "Lock";
        assert_false(activity_row_same_statement(&a, &b));
        assert_false(activity_row_same_statement(&b, &a));
        /* processes that retitle themselves while "active" */
        b = a;
        b.backend_type = (char *) "walsender";
        assert_false(activity_row_same_statement(&b, &b));
        b.backend_type = (char *) "parallel worker";
        assert_false(activity_row_same_statement(&b, &b));
        b.backend_type = NULL;
        assert_false(activity_row_same_statement(&b, &b));
        /* no query_start (hidden from the role): nothing to compare */
        b = a;
        b.query_start = 0;
        assert_false(activity_row_same_statement(&b, &b));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sql_per_version),
                cmocka_unit_test(test_binary_integers),
                cmocka_unit_test(test_binary_pid_array),
                cmocka_unit_test(test_binary_timestamps),
                cmocka_unit_test(test_binary_inet),
                cmocka_unit_test(test_xid_age),
                cmocka_unit_test(test_refused),
                cmocka_unit_test(test_hung_server),
                cmocka_unit_test(test_describe_hides_password),
                cmocka_unit_test(test_snapshot_find),
                cmocka_unit_test(test_same_statement),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
