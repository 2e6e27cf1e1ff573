/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "activity.h"
#include "alert.h"

static char dir[] = "/tmp/pgtree-alert-XXXXXX";

static const char *script(const char *name, const char *body) {
        static char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        FILE *f = fopen(path, "w");
        fprintf(f, "#!/bin/sh\n%s\n", body);
        fclose(f);
        chmod(path, 0755);
        return path;
}

static Finding finding(void) {
        Finding f = { .kind = FINDING_LONG_QUERY, .pid = 4242, .start_ticks = 99, .duration_s = 301, .action = ACTION_ALERT,
                      .xmin_age = 17 };
        strcpy(f.cluster, "main");
        strcpy(f.user, "alice");
        strcpy(f.database, "shop");
        strcpy(f.application_name, "FakeParent:1001");
        strcpy(f.client, "10.0.0.5:50156");
        strcpy(f.rule, "page-on-long");
        strcpy(f.detail, "it's; $(not) `run`");
        return f;
}

typedef struct Seen {
        int n;
        AlertOutcome outcome[8];
        int status[8];
} Seen;

static void done(const AlertRun *run, AlertOutcome o, int status, void *ud) {
        Seen *s = ud;
        s->outcome[s->n] = o;
        s->status[s->n++] = status;
}

static void wait_done(AlertRunner *ar, Seen *s, int want, int timeout_ms) {
        for (int i = 0; i < timeout_ms / 10 && s->n < want; i++) {
                alert_runner_check(ar, now_monotonic_usec(), done, s);
                usleep(10000);
        }
}

static void test_environment_and_exit(void **state) {
        char out[300];
        snprintf(out, sizeof out, "%s/env.txt", dir);
        char body[600];
        snprintf(body, sizeof body, "env | grep ^PGTREE_ | sort > '%s'\nexit 3", out);
        const char *cmd = script("alert.sh", body);
        AlertRunner ar = { .timeout_usec = 5000000 };
        Finding f = finding();
        const AlertRun *run;
        assert_int_equal(alert_spawn(&ar, cmd, &f, now_monotonic_usec(), &run), 0);
        assert_true(run->pid > 0);
        Seen s = {};
        wait_done(&ar, &s, 1, 5000);
        assert_int_equal(s.n, 1);
        assert_int_equal(s.outcome[0], ALERT_EXITED);
        assert_int_equal(s.status[0], 3);
        assert_int_equal(ar.n, 0);

        char text[4096] = "";
        FILE *fp = fopen(out, "r");
        assert_non_null(fp);
        size_t k = fread(text, 1, sizeof text - 1, fp);
        text[k] = 0;
        fclose(fp);
        assert_non_null(strstr(text, "PGTREE_KIND=long_query\n"));
        assert_non_null(strstr(text, "PGTREE_PID=4242\n"));
        assert_non_null(strstr(text, "PGTREE_CLUSTER=main\n"));
        assert_non_null(strstr(text, "PGTREE_USER=alice\n"));
        assert_non_null(strstr(text, "PGTREE_APPLICATION=FakeParent:1001\n"));
        assert_non_null(strstr(text, "PGTREE_DURATION=301\n"));
        assert_non_null(strstr(text, "PGTREE_RULE=page-on-long\n"));
        assert_non_null(strstr(text, "PGTREE_XMIN_AGE=17\n"));
        /* values are data: nothing in them was run */
        assert_non_null(strstr(text, "PGTREE_DETAIL=it's; $(not) `run`\n"));
        alert_runner_clear(&ar);
}

static void test_timeout(void **state) {
        const char *cmd = script("hang.sh", "exec sleep 30");
        AlertRunner ar = { .timeout_usec = 200000 };
        Finding f = finding();
        assert_int_equal(alert_spawn(&ar, cmd, &f, now_monotonic_usec(), NULL), 0);
        Seen s = {};
        wait_done(&ar, &s, 2, 5000);
        assert_int_equal(s.n, 2);
        assert_int_equal(s.outcome[0], ALERT_TIMED_OUT);
        assert_int_equal(s.outcome[1], ALERT_KILLED);
        assert_int_equal(s.status[1], 15);
        assert_int_equal(ar.n, 0);
        alert_runner_clear(&ar);
}

static void test_missing_command(void **state) {
        AlertRunner ar = { .timeout_usec = 200000 };
        Finding f = finding();
        assert_int_equal(alert_spawn(&ar, "/nonexistent/page-oncall", &f, now_monotonic_usec(), NULL), -ENOENT);
        assert_int_equal(ar.n, 0);
        alert_runner_clear(&ar);
}

int main(void) {
        assert_non_null(mkdtemp(dir));
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_environment_and_exit),
                cmocka_unit_test(test_timeout),
                cmocka_unit_test(test_missing_command),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                return 1;
        return r;
}
