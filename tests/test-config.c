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

#include "config.h"
#include "parse-config.h"
#include "rules.h"

typedef struct Bad {
        const char *text;
        const char *message;    /* the exact first "FILE:LINE: message" */
} Bad;

#define KILL_WHY "SIGKILL is refused: on a backend it makes the postmaster end every session and run crash recovery; use terminate (SIGTERM)"

static const Bad bad_configs[] = {
        { "[foo]\n", "t.ini:1: unknown section [foo] (expected [daemon], [protected], [cluster NAME] or [rule NAME])" },
        { "[rule]\nkind = long_query\n", "t.ini:1: section [rule] needs a name: [rule NAME]" },
        { "[cluster]\n", "t.ini:1: section [cluster] needs a name: [cluster NAME]" },
        { "[daemon x]\n", "t.ini:1: section [daemon] takes no name" },
        { "[daemon]\n[daemon]\n", "t.ini:2: duplicate section [daemon] (first at line 1)" },
        { "[rule a]\nkind = orphan_backend\n\n[rule a]\nkind = orphan_backend\n", "t.ini:4: duplicate rule 'a' (first defined at line 1)" },
        { "[cluster m]\nport = 5432\n[cluster m]\nport = 5433\n", "t.ini:3: duplicate cluster 'm' (first defined at line 1)" },
        { "[daemon]\nfoo = 1\n", "t.ini:2: unknown key 'foo' in [daemon]" },
        { "[rule r]\nkind = long_query\nafter = 1m\nspeed = 3\n", "t.ini:4: unknown key 'speed' in [rule r]" },
        { "[cluster m]\nhostname = x\n", "t.ini:2: unknown key 'hostname' in [cluster m]" },
        { "[protected]\nroles = x\n", "t.ini:2: unknown key 'roles' in [protected] (expected users, databases or applications)" },
        { "[daemon]\ninterval = 5x\n", "t.ini:2: interval: invalid duration '5x' (a number with a unit: ms, s, m, h or d, e.g. 90s or 1h30m)" },
        { "[daemon]\ninterval = 5\n", "t.ini:2: interval: invalid duration '5' (a number with a unit: ms, s, m, h or d, e.g. 90s or 1h30m)" },
        { "[daemon]\n\ninterval = 0s\n", "t.ini:3: interval: a duration of zero is not allowed" },
        { "[daemon]\ninterval = 10ms\n", "t.ini:2: interval: must be between 100ms and 1h, got '10ms'" },
        { "[rule r]\nkind = long_query\nafter = 0s\n", "t.ini:3: after: a threshold of zero would act on every session at once; give a duration such as 30s" },
        { "[rule r]\nkind = long_query\nafter = soon\n", "t.ini:3: after: invalid duration 'soon' (a number with a unit: ms, s, m, h or d, e.g. 90s or 1h30m)" },
        { "[daemon]\nenforce = maybe\n", "t.ini:2: enforce: expected yes or no, got 'maybe'" },
        { "[cluster m]\nenforce = sometimes\n", "t.ini:2: enforce: expected yes or no, got 'sometimes'" },
        { "[rule r]\nkind = long_query\nafter = 1m\naction = stop\n", "t.ini:4: action: unknown action 'stop' (expected log, alert, cancel or terminate)" },
        { "[rule r]\nkind = long_query\nafter = 1m\naction = kill\n", "t.ini:4: action: 'kill': " KILL_WHY },
        { "[rule r]\nkind = long_query\nafter = 1m\naction = kill -9\n", "t.ini:4: action: 'kill -9': " KILL_WHY },
        { "[rule r]\nkind = long_query\nafter = 1m\naction = SIGKILL\n", "t.ini:4: action: 'SIGKILL': " KILL_WHY },
        { "[rule r]\nkind = long_query\nafter = 1m\nsignal = 9\n", "t.ini:4: signal: '9': " KILL_WHY },
        { "[rule r]\nkind = long_query\nafter = 1m\nsignal = SIGKILL\n", "t.ini:4: signal: 'SIGKILL': " KILL_WHY },
        { "[rule r]\nkind = long_query\nafter = 1m\nsignal = SIGTERM\n", "t.ini:4: unknown key 'signal' in [rule r]: say action = cancel (SIGINT) or action = terminate (SIGTERM)" },
        { "[rule r]\nkind = slow_query\n", "t.ini:2: kind: unknown finding kind 'slow_query' (expected orphan_backend, stale_activity, unlisted_process, orphan_parallel_worker, client_gone, long_query, idle_in_transaction, long_transaction, lock_wait, foreign_process, orphans or long_runners)" },
        { "[rule r]\naction = log\n", "t.ini:1: rule 'r' has no kind (one or more finding kinds)" },
        { "[rule r]\nkind = long_query\n", "t.ini:1: rule 'r' covers long runners and needs 'after' (a threshold such as 5m)" },
        { "[rule r]\nkind = orphan_backend\naction = alert\n", "t.ini:1: rule 'r' has action = alert but no alert_command" },
        { "[rule r]\nkind = orphan_backend\naction = alert\nalert_command = page-oncall\n", "t.ini:4: alert_command: must be an absolute path, got 'page-oncall'" },
        { "[rule r]\nkind = long_query\nafter = 1m\nuser = [abc\n", "t.ini:4: user: pattern '[abc' has an unterminated '['" },
        { "[rule r]\nkind = long_query\nafter = 1m\nuser = a,,b\n", "t.ini:4: user: empty element in list 'a,,b'" },
        { "[rule r]\nkind = long_query\nafter = 1m\nclient = 10.0.0.0/33\n", "t.ini:4: client: invalid address or CIDR '10.0.0.0/33' (expected e.g. 10.0.0.0/8, ::1 or local)" },
        { "[rule r]\nkind = long_query\nafter = 1m\nexclude_client = nowhere\n", "t.ini:4: exclude_client: invalid address or CIDR 'nowhere' (expected e.g. 10.0.0.0/8, ::1 or local)" },
        { "[rule r]\nkind = long_query\nafter = 1m\nbackend_type = walsendr\n", "t.ini:4: backend_type: unknown backend type 'walsendr'" },
        { "[rule r]\nkind = long_query\nafter = 1m\nstate = sleeping\n", "t.ini:4: state: unknown state 'sleeping'" },
        { "[cluster m]\ndata_directory = var/lib/pg\n", "t.ini:2: data_directory: must be an absolute path, got 'var/lib/pg'" },
        { "[cluster m]\nport = 70000\n", "t.ini:2: port: expected a whole number from 1 to 65535, got '70000'" },
        { "[daemon]\nmax_actions_per_minute = -1\n", "t.ini:2: max_actions_per_minute: expected a whole number from 0 to 10000, got '-1'" },
        { "[daemon]\nmax_concurrent_alerts = 0\n", "t.ini:2: max_concurrent_alerts: expected a whole number from 1 to 1000, got '0'" },
        { "[daemon]\nmax_concurrent_alerts = 1001\n", "t.ini:2: max_concurrent_alerts: expected a whole number from 1 to 1000, got '1001'" },
        { "[daemon]\n\nmax_concurrent_alerts = many\n", "t.ini:3: max_concurrent_alerts: expected a whole number from 1 to 1000, got 'many'" },
        { "[daemon]\nmax_alerts_per_minute = 10001\n", "t.ini:2: max_alerts_per_minute: expected a whole number from 0 to 10000, got '10001'" },
        { "[daemon]\nmax_alerts_per_minute = 5/m\n", "t.ini:2: max_alerts_per_minute: expected a whole number from 0 to 10000, got '5/m'" },
        { "[daemon]\nmax_alerts_per_minute_per_owner = 10001\n", "t.ini:2: max_alerts_per_minute_per_owner: expected a whole number from 0 to 10000, got '10001'" },
        { "[daemon]\nmax_alerts_per_minute_per_owner = -3\n", "t.ini:2: max_alerts_per_minute_per_owner: expected a whole number from 0 to 10000, got '-3'" },
        { "[daemon]\nsocket = pgtree.sock\n", "t.ini:2: socket: must be an absolute path, got 'pgtree.sock'" },
        { "[daemon]\nconninfo = host=x port\n", "t.ini:2: conninfo: invalid connection string: missing \"=\" after \"port\" in connection info string" },
        { "[daemon]\ninterval = 2s\ninterval = 3s\n", "t.ini:3: duplicate key 'interval' (first set at line 2)" },
        { "interval = 2s\n", "t.ini:1: key 'interval' outside any section (put it under [daemon], [protected], [cluster NAME] or [rule NAME])" },
        { "[daemon]\njust some words\n", "t.ini:2: expected 'key = value' or '[section]', got 'just some words'" },
        { "[rule r\nkind = orphan_backend\n", "t.ini:1: section header lacks ']'" },
        { "[daemon] extra\n", "t.ini:1: unexpected text after section header" },
        { "[daemon]\nsocket_group =\n", "t.ini:2: socket_group: empty value" },
        { "[daemon]\nmetrics_file = /x\nconninfo = user=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
          "t.ini:3: line too long (at most 198 characters)" },
        { "[daemon]\nquery_max_length = lots\n", "t.ini:2: query_max_length: expected a whole number from 0 to 100000, got 'lots'" },
        { "[rule r*]\nkind = orphan_backend\n", "t.ini:1: rule name 'r*' must be at most 100 characters, without glob characters" },
        { "[rule r]\nkind = lock_wait\nafter = 1m\ntarget = root\n",
          "t.ini:4: target: unknown target 'root' (expected session, or blocker: the root of the lock chain that blocks a lock_wait session)" },
        { "[rule r]\nkind = lock_wait, long_query\nafter = 1m\ntarget = blocker\naction = terminate\n",
          "t.ini:4: target = blocker: rule 'r' must cover kind = lock_wait only (only a lock wait has a blocker)" },
        /* cancel/terminate rules naming what pgtree never signals: refused at the backend_type line */
        { "[rule r]\nkind = long_query\nafter = 1m\nbackend_type = checkpointer\naction = terminate\n",
          "t.ini:4: backend_type: 'checkpointer' with action = terminate: pgtree signals only client backends (parallel workers "
          "through their leader), never the postmaster or auxiliary processes; use action = log or alert" },
        { "[rule r]\naction = cancel\nbackend_type = client backend, postmaster\nkind = orphans\n",
          "t.ini:3: backend_type: 'postmaster' with action = cancel: pgtree signals only client backends (parallel workers "
          "through their leader), never the postmaster or auxiliary processes; use action = log or alert" },
        { "[rule r]\nkind = long_runners\nafter = 1m\naction = terminate\nbackend_type = auto*, walwriter\n",
          "t.ini:5: backend_type: 'auto*' with action = terminate: pgtree signals only client backends (parallel workers "
          "through their leader), never the postmaster or auxiliary processes; use action = log or alert" },
};

/* The backend types a cancel/terminate rule may name: what can be signalled (a glob that covers
 * a client backend or a parallel worker); log and alert rules may name any. */
static void test_signalled_backend_types(void **state) {
        const char *ok[] = { "client backend", "parallel worker", "*", "client*", "*worker", "client backend, parallel worker" };
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
                char text[256];
                snprintf(text, sizeof text, "[rule r]\nkind = long_query\nafter = 1m\nbackend_type = %s\naction = terminate\n", ok[i]);
                Config *c = parse_config(text);
                config_free(c);
        }
        const char *never[] = { "postmaster", "checkpointer", "background writer", "walwriter", "autovacuum launcher",
                                "autovacuum worker", "walsender", "logger", "startup" };
        for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
                for (int a = 0; a < 4; a++) {
                        const char *action = (const char *[]){ "log", "alert", "cancel", "terminate" }[a];
                        char text[256];
                        snprintf(text, sizeof text, "[rule r]\nkind = long_query\nafter = 1m\nbackend_type = %s\naction = %s\n%s",
                                 never[i], action, a == 1 ? "alert_command = /bin/true\n" : "");
                        Config *c;
                        ConfigErrors errs = {};
                        int r = config_parse_string(text, "t.ini", &c, &errs);
                        if (a < 2) {
                                if (r < 0) {
                                        config_errors_print(&errs, stderr);
                                        fail_msg("%s rule on %s refused", action, never[i]);
                                }
                                config_free(c);
                        } else {
                                if (r != -EINVAL || errs.n != 1 || errs.items[0].line != 4 ||
                                    !strstr(errs.items[0].message, "pgtree signals only client backends"))
                                        fail_msg("%s rule on %s accepted", action, never[i]);
                                config_errors_clear(&errs);
                        }
                }
}

static void test_bad_corpus(void **state) {
        assert_true(sizeof bad_configs / sizeof bad_configs[0] >= 30);
        for (size_t i = 0; i < sizeof bad_configs / sizeof bad_configs[0]; i++) {
                Config *c = (Config *) 1;
                ConfigErrors errs = {};
                int r = config_parse_string(bad_configs[i].text, "t.ini", &c, &errs);
                if (r != -EINVAL || c != NULL || errs.n == 0)
                        fail_msg("accepted bad config #%zu:\n%s", i, bad_configs[i].text);
                char got[1024];
                snprintf(got, sizeof got, "%s:%u: %s", errs.items[0].file, errs.items[0].line, errs.items[0].message);
                if (strcmp(got, bad_configs[i].message) != 0)
                        fail_msg("config #%zu:\n got      %s\n expected %s", i, got, bad_configs[i].message);
                config_errors_clear(&errs);
        }
}

/* Every problem is reported, not only the first. */
static void test_all_errors_reported(void **state) {
        const char *text = "[daemon]\ninterval = x\nenforce = perhaps\n[rule r]\nkind = long_query\nafter = 1m\naction = kill\n[bogus]\n";
        Config *c;
        ConfigErrors errs = {};
        assert_int_equal(config_parse_string(text, "t.ini", &c, &errs), -EINVAL);
        assert_int_equal(errs.n, 4);
        assert_int_equal(errs.items[0].line, 2);
        assert_int_equal(errs.items[1].line, 3);
        assert_int_equal(errs.items[2].line, 7);
        assert_int_equal(errs.items[3].line, 8);
        char *buf = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&buf, &len);
        config_errors_print(&errs, out);
        fclose(out);
        assert_non_null(strstr(buf, "t.ini:7: action: 'kill': SIGKILL is refused"));
        free(buf);
        config_errors_clear(&errs);
}

static void test_good_config(void **state) {
        const char *text =
                "; comment\n"
                "# another\n"
                "[daemon]\n"
                "  interval = 500ms      ; indented lines are plain keys\n"
                "enforce = no\n"
                "socket = /run/pgtree/test.sock\n"
                "max_actions_per_minute = 3\n"
                "max_concurrent_alerts = 2\n"
                "max_alerts_per_minute = 0\n"
                "metrics_file =\n"
                "query_max_length = 0\n"
                "[protected]\n"
                "users = postgres, replication*\n"
                "[cluster main]\n"
                "data_directory = /var/lib/postgresql/15/main\n"
                "enforce = yes\n"
                "[cluster other]\n"
                "port = 5433\n"
                "conninfo = host=/tmp user=pgtree\n"
                "[rule report-queries]\n"
                "kind = long_query, idle_in_transaction\n"
                "after = 1h30m\n"
                "user = report_*\n"
                "exclude_user = postgres\n"
                "client = 10.0.0.0/8, local, ::1\n"
                "application_name = FakeParent:1001\n"
                "action = terminate\n"
                "[rule \"orphans\"]\n"
                "kind = orphans\n"
                "action = alert\n"
                "alert_command = /usr/local/bin/page-oncall\n";
        Config *c;
        ConfigErrors errs = {};
        int r = config_parse_string(text, "good.ini", &c, &errs);
        if (r < 0)
                config_errors_print(&errs, stderr);
        assert_int_equal(r, 0);
        assert_int_equal(c->interval_usec, 500 * USEC_PER_MSEC);
        assert_false(c->enforce);
        assert_string_equal(c->socket_path, "/run/pgtree/test.sock");
        assert_int_equal(c->max_actions_per_minute, 3);
        assert_int_equal(c->max_concurrent_alerts, 2);
        assert_int_equal(c->max_alerts_per_minute, 0);
        assert_null(c->metrics_file);
        assert_int_equal(c->query_max_length, 0);
        assert_int_equal(c->protected_users.n, 2);
        assert_int_equal(c->n_clusters, 2);
        assert_int_equal(c->clusters[0].enforce, 1);
        assert_int_equal(c->clusters[1].port, 5433);
        assert_int_equal(c->n_rules, 2);
        assert_false(c->builtin_rules);
        const Rule *rr = &c->rules[0];
        assert_string_equal(rr->name, "report-queries");
        assert_int_equal(rr->kinds, 1u << FINDING_LONG_QUERY | 1u << FINDING_IDLE_IN_TRANSACTION);
        assert_int_equal(rr->after_usec, 5400 * USEC_PER_SEC);
        assert_int_equal(rr->action, ACTION_TERMINATE);
        assert_int_equal(rr->client.n, 3);
        assert_string_equal(c->rules[1].name, "orphans");
        assert_int_equal(c->rules[1].action, ACTION_ALERT);

        assert_ptr_equal(config_find_cluster(c, "x", "/var/lib/postgresql/15/main", 5432), &c->clusters[0]);
        assert_ptr_equal(config_find_cluster(c, "x", "/elsewhere", 5433), &c->clusters[1]);
        assert_null(config_find_cluster(c, "x", "/elsewhere", 5432));
        assert_true(config_cluster_enforce(c, &c->clusters[0]));
        assert_false(config_cluster_enforce(c, &c->clusters[1]));
        assert_false(config_cluster_enforce(c, NULL));
        config_free(c);
}

static void test_defaults(void **state) {
        Config *c;
        assert_int_equal(config_new_default(&c), 0);
        assert_int_equal(c->interval_usec, 2 * USEC_PER_SEC);
        assert_false(c->enforce); /* out of the box pgtree observes */
        assert_true(c->builtin_rules);
        for (size_t i = 0; i < c->n_rules; i++)
                assert_int_equal(c->rules[i].action, ACTION_LOG);
        assert_string_equal(c->socket_path, "/run/pgtree/pgtree.sock");
        config_free(c);
}

static void test_example_file(void **state) {
        const char *path = getenv("PGTREE_EXAMPLE_CONFIG");
        assert_non_null(path);
        Config *c;
        ConfigErrors errs = {};
        int r = config_parse_file(path, &c, &errs);
        if (r < 0)
                config_errors_print(&errs, stderr);
        assert_int_equal(r, 0);
        assert_false(c->enforce);
        config_free(c);
        assert_int_equal(config_parse_file("/nonexistent/pgtree.ini", &c, &errs), -ENOENT);
        assert_int_equal(errs.n, 1);
        assert_int_equal(errs.items[0].line, 0);
        config_errors_clear(&errs);
}

static void test_durations(void **state) {
        uint64_t d;
        assert_int_equal(parse_duration("500ms", &d), 0);
        assert_int_equal(d, 500000);
        assert_int_equal(parse_duration("90s", &d), 0);
        assert_int_equal(d, 90 * USEC_PER_SEC);
        assert_int_equal(parse_duration("5m", &d), 0);
        assert_int_equal(d, 300 * USEC_PER_SEC);
        assert_int_equal(parse_duration("2h", &d), 0);
        assert_int_equal(d, 7200 * USEC_PER_SEC);
        assert_int_equal(parse_duration("1d", &d), 0);
        assert_int_equal(parse_duration("1h30m", &d), 0);
        assert_int_equal(d, 5400 * USEC_PER_SEC);
        assert_int_equal(parse_duration("1m30s500ms", &d), 0);
        assert_int_equal(d, 90500 * USEC_PER_MSEC);
        const char *bad[] = { "", "5", "m", "5 m", "-5s", "5mm", "5sec", "1.5s", "99999999999999s", "5s ", "s5" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                if (parse_duration(bad[i], &d) == 0)
                        fail_msg("accepted duration «%s»", bad[i]);
}

static void test_cidr(void **state) {
        ClientMatch m;
        assert_int_equal(client_match_parse("10.0.0.0/8", &m), 0);
        assert_true(client_match(&m, "10.1.2.3:5000"));
        assert_false(client_match(&m, "11.1.2.3:5000"));
        assert_false(client_match(&m, "local"));
        assert_false(client_match(&m, "[::1]:5000"));
        assert_int_equal(client_match_parse("10.0.0.5", &m), 0);
        assert_true(client_match(&m, "10.0.0.5:1"));
        assert_false(client_match(&m, "10.0.0.6:1"));
        assert_int_equal(client_match_parse("2001:db8::/32", &m), 0);
        assert_true(client_match(&m, "[2001:db8::17]:5433"));
        assert_false(client_match(&m, "[2001:db9::17]:5433"));
        assert_int_equal(client_match_parse("192.168.1.128/25", &m), 0);
        assert_true(client_match(&m, "192.168.1.200:9"));
        assert_false(client_match(&m, "192.168.1.100:9"));
        assert_int_equal(client_match_parse("local", &m), 0);
        assert_true(client_match(&m, "local"));
        assert_false(client_match(&m, "127.0.0.1:5"));
        assert_int_equal(client_match_parse("0.0.0.0/0", &m), 0);
        assert_true(client_match(&m, "8.8.8.8:53"));
        const char *bad[] = { "10.0.0.0/33", "::/129", "x", "10.0.0/8", "10.0.0.0/", "10.0.0.0/-1", "" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                assert_int_equal(client_match_parse(bad[i], &m), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_bad_corpus),
                cmocka_unit_test(test_all_errors_reported),
                cmocka_unit_test(test_good_config),
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_example_file),
                cmocka_unit_test(test_durations),
                cmocka_unit_test(test_cidr),
                cmocka_unit_test(test_signalled_backend_types),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
