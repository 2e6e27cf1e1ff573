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

#include "render.h"

#define REC(p, pp, st, cm, ti) { .pid = (p), .ppid = (pp), .state = (st), .comm = cm, .title = (char *) (ti), .start_ticks = 100 * (p), .rss_anon_kb = 2048, .cpu_percent = 12.34 }

static const ProcRecord recs[] = {
        REC(100, 1, 'S', "postgres", "/usr/lib/postgresql/15/bin/postgres -D /srv/a"),
        REC(101, 100, 'S', "postgres", "postgres: lab: checkpointer "),
        REC(110, 100, 'R', "postgres", "postgres: lab: alice shop 10.0.0.5(50156) UPDATE waiting"),
        REC(111, 100, 'R', "postgres", "postgres: lab: parallel worker for PID 110 "),
        REC(120, 100, 'S', "postgres", "postgres: lab: ev\x1b[31mil shop [local] idle"),
        REC(300, 1, 'R', "postgres", "postgres: carol shop [local] SELECT"),
};

static void build(PgTree *t, Findings *f) {
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], t), 0);
        t->hz = 100;
        t->boot_time = 1700000000;
        t->now = 1700000000 + 200;   /* pid 100 started at 100 s after boot: age 100 s */
        *f = (Findings){};
        Finding *x = findings_add(f);
        assert_non_null(x);
        *x = (Finding){ .kind = FINDING_ORPHAN_BACKEND, .pid = 300, .start_ticks = 30000, .proc = tree_find(t, 300),
                        .xmin_age = -1, .duration_s = 12, .detail = "client backend has no live postmaster" };
        strcpy(x->cluster, "/srv/a");
}

static json_object *get(json_object *o, const char *key) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v))
                fail_msg("missing key %s", key);
        return v;
}

static void test_json_contract(void **state) {
        PgTree t;
        Findings f;
        build(&t, &f);
        json_object *root = render_json(&t, &f);
        json_object *clusters = get(root, "clusters");
        assert_int_equal(json_object_array_length(clusters), 1);
        json_object *c = json_object_array_get_idx(clusters, 0);
        assert_string_equal(json_object_get_string(get(c, "name")), "lab");
        json_object *pm = get(c, "postmaster");
        assert_int_equal(json_object_get_int(get(pm, "pid")), 100);
        assert_string_equal(json_object_get_string(get(pm, "start_time")), "2023-11-14T22:15:00Z");
        get(pm, "data_directory");
        get(pm, "port");
        assert_non_null(strstr(json_object_get_string(get(c, "activity")), "unavailable"));
        json_object *procs = get(c, "processes");
        assert_int_equal(json_object_array_length(procs), 5);
        const char *fields[] = { "pid", "ppid", "backend_type", "title", "user", "database", "client", "state",
                                 "leader_pid", "application_name", "query_start", "xact_start",
                                 "wait_event_type", "wait_event", "cpu_percent", "rss_anon_kb" };
        for (size_t i = 0; i < json_object_array_length(procs); i++)
                for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++)
                        get(json_object_array_get_idx(procs, i), fields[k]);
        json_object *alice = json_object_array_get_idx(procs, 2);
        assert_int_equal(json_object_get_int(get(alice, "pid")), 110);
        assert_string_equal(json_object_get_string(get(alice, "backend_type")), "client backend");
        assert_string_equal(json_object_get_string(get(alice, "client")), "10.0.0.5:50156");
        assert_string_equal(json_object_get_string(get(alice, "state")), "active");
        assert_string_equal(json_object_get_string(get(alice, "wait_event_type")), "Lock");
        assert_true(json_object_get_double(get(alice, "cpu_percent")) > 12.2);
        assert_int_equal(json_object_get_int(get(alice, "rss_anon_kb")), 2048);
        json_object *worker = json_object_array_get_idx(procs, 3);
        assert_int_equal(json_object_get_int(get(worker, "leader_pid")), 110);
        assert_null(get(alice, "leader_pid"));

        json_object *orphans = get(root, "orphans");
        assert_int_equal(json_object_array_length(orphans), 1);
        json_object *findings = get(root, "findings");
        assert_int_equal(json_object_array_length(findings), 1);
        json_object *x = json_object_array_get_idx(findings, 0);
        assert_string_equal(json_object_get_string(get(x, "kind")), "orphan_backend");
        assert_int_equal(json_object_get_int(get(x, "pid")), 300);
        get(x, "rule");
        get(x, "duration_s");
        assert_string_equal(json_object_get_string(get(x, "action")), "log");
        assert_false(json_object_get_boolean(get(x, "dry_run")));
        json_object_put(root);
        findings_free(&f);
        tree_free(&t);
}

static void test_text_forest(void **state) {
        PgTree t;
        Findings f;
        build(&t, &f);
        char *buf = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&buf, &len);
        render_text(out, &t, &f, NULL);
        fclose(out);
        assert_non_null(strstr(buf, "cluster lab"));
        assert_non_null(strstr(buf, "postmaster  /usr/lib/postgresql/15/bin/postgres -D /srv/a"));
        assert_non_null(strstr(buf, "├─ checkpointer"));
        assert_non_null(strstr(buf, "client backend  alice@shop  10.0.0.5:50156  active  UPDATE  waiting"));
        /* the worker is nested under its leader */
        char *leader = strstr(buf, "alice@shop  10.0.0.5"), *worker = strstr(buf, "│  └─ parallel worker");
        assert_non_null(worker);
        assert_true(worker > leader);
        /* control characters from a user name never reach the terminal */
        assert_null(strchr(buf, '\x1b'));
        assert_non_null(strstr(buf, "ev?[31mil@shop"));
        assert_non_null(strstr(buf, "ORPHANS"));
        assert_non_null(strstr(buf, "orphan_backend"));
        assert_non_null(strstr(buf, "     100   1m40s"));
        free(buf);
        findings_free(&f);
        tree_free(&t);
}

static void test_durations(void **state) {
        char b[32];
        format_duration(3, b, sizeof b);
        assert_string_equal(b, "3s");
        format_duration(252, b, sizeof b);
        assert_string_equal(b, "4m12s");
        format_duration(7500, b, sizeof b);
        assert_string_equal(b, "2h05m");
        format_duration(3 * 86400 + 4 * 3600, b, sizeof b);
        assert_string_equal(b, "3d04h");
        format_duration(-5, b, sizeof b);
        assert_string_equal(b, "0s");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_json_contract),
                cmocka_unit_test(test_text_forest),
                cmocka_unit_test(test_durations),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
