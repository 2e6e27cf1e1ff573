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

#include "parse-config.h"

#include "rules.h"


#define MIN(x) ((uint64_t) (x) * 60 * USEC_PER_SEC)

static Subject session(FindingKind k, uint64_t dur) {
        return (Subject){ .kind = k, .duration_usec = dur, .user = "report_anna", .database = "shop",
                          .application_name = "FakeParent:1001", .client = "10.1.2.3:5000",
                          .backend_type = "client backend", .state = "active", .cluster = "main" };
}

static void test_threshold_and_globs(void **state) {
        Config *c = parse_config("[rule r]\nkind = long_query\nafter = 5m\nuser = report_*\naction = terminate\n");
        Subject s = session(FINDING_LONG_QUERY, MIN(4));
        assert_null(rules_decide(c, &s));
        s.duration_usec = MIN(5);
        assert_string_equal(rules_decide(c, &s)->name, "r");
        s.user = "alice";
        assert_null(rules_decide(c, &s));
        s.user = NULL; /* unknown user never matches an include filter */
        assert_null(rules_decide(c, &s));
        s = session(FINDING_IDLE_IN_TRANSACTION, MIN(60));
        assert_null(rules_decide(c, &s)); /* kind not covered */
        config_free(c);
}

/* target = blocker: kind and threshold are the waiter's, the filters are the root blocker's, and a
 * blocker that is not a client backend is never matched. */
static void test_target_blocker(void **state) {
        Config *c = parse_config("[rule waits]\nkind = lock_wait\nafter = 1m\naction = log\n"
                                 "[rule blocker]\nkind = lock_wait\nafter = 2m\ntarget = blocker\n"
                                 "state = idle in transaction\nuser = batch\naction = terminate\n");
        assert_int_equal(c->rules[1].target, RULE_TARGET_BLOCKER);
        assert_int_equal(c->rules[0].target, RULE_TARGET_SESSION);
        Subject s = session(FINDING_LOCK_WAIT, MIN(3));
        s.state = "active";
        assert_string_equal(rules_decide(c, &s)->name, "waits"); /* no blocker known */
        Subject b = { .kind = FINDING_LOCK_WAIT, .user = "batch", .database = "shop", .backend_type = "client backend",
                      .state = "idle in transaction", .cluster = "main" };
        s.blocker = &b;
        assert_string_equal(rules_decide(c, &s)->name, "blocker");
        s.duration_usec = MIN(1); /* blocked for less than 2m */
        assert_string_equal(rules_decide(c, &s)->name, "waits");
        s.duration_usec = MIN(3);
        b.state = "active"; /* the filters are the blocker's */
        assert_string_equal(rules_decide(c, &s)->name, "waits");
        b.state = "idle in transaction";
        s.user = "someone_else"; /* the waiter's user does not matter */
        assert_string_equal(rules_decide(c, &s)->name, "blocker");
        b.backend_type = "autovacuum worker"; /* never a non-client backend */
        assert_string_equal(rules_decide(c, &s)->name, "waits");
        b.backend_type = "client backend";
        s.kind = FINDING_LONG_QUERY;
        assert_null(rules_decide(c, &s));
        config_free(c);
}

static void test_container_filter(void **state) {
        Config *c = parse_config("[rule r]\nkind = long_query\nafter = 1m\ncontainer = docker:*\naction = terminate\n"
                                 "[rule h]\nkind = long_query\nafter = 1m\nexclude_container = *\naction = cancel\n");
        Subject s = session(FINDING_LONG_QUERY, MIN(2));
        assert_string_equal(rules_decide(c, &s)->name, "h"); /* on the host: not in any container */
        s.container = "docker:0123456789ab";
        assert_string_equal(rules_decide(c, &s)->name, "r");
        s.container = "pod:7f0c";
        assert_null(rules_decide(c, &s));
        config_free(c);
}

static void test_foreign_command_and_allow(void **state) {
        Config *c = parse_config("[daemon]\nallow_foreign = /usr/bin/gzip*, pg_dump *\n"
                                 "[rule miners]\nkind = foreign_process\nexclude_command = sh -c *\naction = terminate\n");
        Subject s = session(FINDING_FOREIGN_PROCESS, 0);
        s.command = "/tmp/xmrig --donate-level 0";
        assert_string_equal(rules_decide(c, &s)->name, "miners");
        s.command = "sh -c sleep 60";
        assert_null(rules_decide(c, &s));
        assert_true(config_foreign_allowed(c, "pg_dump -Fc shop", NULL));
        assert_true(config_foreign_allowed(c, "gzip -9", "/usr/bin/gzip"));
        assert_false(config_foreign_allowed(c, "sleep 60", "/usr/bin/sleep"));
        assert_false(config_foreign_allowed(c, NULL, NULL));
        config_free(c);
}

static void test_include_exclude(void **state) {
        Config *c = parse_config("[rule r]\nkind = long_runners\nafter = 1m\nuser = report_*, etl\nexclude_user = report_admin\n"
                          "database = sh?p\nexclude_application_name = psql*\n");
        Subject s = session(FINDING_LONG_QUERY, MIN(2));
        assert_non_null(rules_decide(c, &s));
        s.user = "etl";
        assert_non_null(rules_decide(c, &s));
        s.user = "report_admin";
        assert_null(rules_decide(c, &s));
        s = session(FINDING_LONG_QUERY, MIN(2));
        s.database = "shops";
        assert_null(rules_decide(c, &s));
        s = session(FINDING_LONG_QUERY, MIN(2));
        s.application_name = "psql interactive";
        assert_null(rules_decide(c, &s));
        s.application_name = NULL; /* exclude does not fire on an unknown value */
        assert_non_null(rules_decide(c, &s));
        config_free(c);
}

/* Two clusters named main (a second one may be any user's lookalike) become main:5432 and
 * main:/home/x: rules that name "main" keep applying to the real one, and excludes keep
 * excluding it. */
static void test_cluster_renamed(void **state) {
        Config *c = parse_config("[rule only-main]\nkind = long_query\nafter = 1m\ncluster = main\naction = cancel\n"
                                 "[rule not-main]\nkind = idle_in_transaction\nafter = 1m\nexclude_cluster = main\naction = terminate\n");
        Subject s = session(FINDING_LONG_QUERY, MIN(2));
        s.cluster = "main";
        assert_non_null(rules_decide(c, &s));
        s.cluster = "main:5432";
        assert_null(rules_decide(c, &s)); /* without its cluster_name: another cluster */
        s.cluster_name = "main";
        assert_string_equal(rules_decide(c, &s)->name, "only-main");
        s.cluster = "other";
        s.cluster_name = NULL;
        assert_null(rules_decide(c, &s));

        s = session(FINDING_IDLE_IN_TRANSACTION, MIN(2));
        s.cluster = "main:5432";
        assert_string_equal(rules_decide(c, &s)->name, "not-main"); /* name unknown: not excluded */
        s.cluster_name = "main";
        assert_null(rules_decide(c, &s));                           /* excluded by its cluster_name */
        s.cluster = "main";
        s.cluster_name = "main";
        assert_null(rules_decide(c, &s));
        s.cluster = "reporting";
        s.cluster_name = NULL;
        assert_string_equal(rules_decide(c, &s)->name, "not-main");
        config_free(c);
}

static void test_cidr_filters(void **state) {
        Config *c = parse_config("[rule r]\nkind = long_query\nafter = 1m\nclient = 10.0.0.0/8, local\nexclude_client = 10.9.0.0/16\n");
        Subject s = session(FINDING_LONG_QUERY, MIN(2));
        assert_non_null(rules_decide(c, &s));
        s.client = "local";
        assert_non_null(rules_decide(c, &s));
        s.client = "10.9.1.1:4000";
        assert_null(rules_decide(c, &s));
        s.client = "192.168.0.1:4000";
        assert_null(rules_decide(c, &s));
        s.client = NULL;
        assert_null(rules_decide(c, &s));
        config_free(c);
}

/* Walsenders are always active: a long_query rule does not mean them unless it says so. */
static void test_long_runners_mean_client_backends(void **state) {
        Config *c = parse_config("[rule q]\nkind = long_query\nafter = 1m\n[rule w]\nkind = long_query\nafter = 1m\nbackend_type = walsender\naction = alert\nalert_command = /bin/true\n");
        Subject s = session(FINDING_LONG_QUERY, MIN(10));
        assert_string_equal(rules_decide(c, &s)->name, "q");
        s.backend_type = "walsender";
        assert_string_equal(rules_decide(c, &s)->name, "w");
        s.backend_type = "autovacuum worker";
        assert_null(rules_decide(c, &s));
        config_free(c);
}

static void test_strongest_action_wins(void **state) {
        Config *c = parse_config("[rule a]\nkind = long_query\nafter = 1m\n"
                          "[rule b]\nkind = long_query\nafter = 10m\naction = terminate\n"
                          "[rule c]\nkind = long_query\nafter = 2m\naction = cancel\n"
                          "[rule d]\nkind = long_query\nafter = 1m\naction = cancel\n");
        Subject s = session(FINDING_LONG_QUERY, MIN(1));
        assert_string_equal(rules_decide(c, &s)->name, "d");
        s.duration_usec = MIN(3);
        assert_string_equal(rules_decide(c, &s)->name, "c"); /* first of the cancels */
        s.duration_usec = MIN(11);
        assert_string_equal(rules_decide(c, &s)->name, "b");
        config_free(c);
}

static void test_groups_by_application_name(void **state) {
        Config *c = parse_config("[rule g1]\nkind = long_query\nafter = 30s\napplication_name = FakeParent:1001\naction = terminate\n"
                          "[rule g2]\nkind = long_query\nafter = 30s\napplication_name = FakeParent:2002\n");
        Subject s = session(FINDING_LONG_QUERY, MIN(1));
        assert_string_equal(rules_decide(c, &s)->name, "g1");
        s.application_name = "FakeParent:2002";
        assert_string_equal(rules_decide(c, &s)->name, "g2");
        s.application_name = "FakeParent:10011";
        assert_null(rules_decide(c, &s));
        config_free(c);
}

static void test_protected_wins(void **state) {
        Config *c = parse_config("[protected]\nusers = postgres\ndatabases = billing\napplications = pg_dump*\n"
                          "[rule all]\nkind = long_query\nafter = 1m\naction = terminate\n");
        const char *why;
        Subject s = session(FINDING_LONG_QUERY, MIN(10));
        assert_false(rules_protected(c, &s, &why));
        s.user = "postgres";
        assert_true(rules_protected(c, &s, &why));
        assert_string_equal(why, "protected user");
        s = session(FINDING_LONG_QUERY, MIN(10));
        s.database = "billing";
        assert_true(rules_protected(c, &s, &why));
        assert_string_equal(why, "protected database");
        s = session(FINDING_LONG_QUERY, MIN(10));
        s.application_name = "pg_dump --jobs=4";
        assert_true(rules_protected(c, &s, &why));
        assert_string_equal(why, "protected application");
        config_free(c);
}

static void test_builtin_rules(void **state) {
        Config *c;
        assert_int_equal(config_new_default(&c), 0);
        Subject s = session(FINDING_LONG_QUERY, MIN(4));
        assert_null(rules_decide(c, &s));
        s.duration_usec = MIN(5);
        const Rule *r = rules_decide(c, &s);
        assert_non_null(r);
        assert_int_equal(r->action, ACTION_LOG);
        s = session(FINDING_ORPHAN_BACKEND, 0);
        assert_non_null(rules_decide(c, &s));
        config_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_threshold_and_globs),
                cmocka_unit_test(test_target_blocker),
                cmocka_unit_test(test_include_exclude),
                cmocka_unit_test(test_cluster_renamed),
                cmocka_unit_test(test_cidr_filters),
                cmocka_unit_test(test_long_runners_mean_client_backends),
                cmocka_unit_test(test_strongest_action_wins),
                cmocka_unit_test(test_groups_by_application_name),
                cmocka_unit_test(test_protected_wins),
                cmocka_unit_test(test_builtin_rules),
                cmocka_unit_test(test_container_filter),
                cmocka_unit_test(test_foreign_command_and_allow),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
