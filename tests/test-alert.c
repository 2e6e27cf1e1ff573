/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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
        /* not executable: the exec error comes back from the child, nothing is left running */
        const char *cmd = script("noexec.sh", "exit 0");
        chmod(cmd, 0644);
        assert_int_equal(alert_spawn(&ar, cmd, &f, now_monotonic_usec(), NULL), -EACCES);
        assert_int_equal(ar.n, 0);
        alert_runner_clear(&ar);
}

static pid_t runner_pid(const AlertRunner *ar, size_t i) {
        return ar->items[i]->pid;
}

/* At most max_running at once: the next one is refused (-EBUSY), nothing started; room again
 * once one ended. */
static void test_concurrency_cap(void **state) {
        const char *cmd = script("slow.sh", "exec sleep 30");
        AlertRunner ar = { .timeout_usec = 60000000, .max_running = 3 };
        Finding f = finding();
        for (int i = 0; i < 3; i++)
                assert_int_equal(alert_spawn(&ar, cmd, &f, now_monotonic_usec(), NULL), 0);
        assert_false(alert_runner_has_room(&ar));
        for (int i = 0; i < 50; i++)
                assert_int_equal(alert_spawn(&ar, cmd, &f, now_monotonic_usec(), NULL), -EBUSY);
        assert_int_equal(ar.n, 3);
        pid_t first = runner_pid(&ar, 0);
        kill(first, SIGTERM);
        Seen s = {};
        wait_done(&ar, &s, 1, 10000);
        assert_int_equal(s.n, 1);
        assert_int_equal(ar.n, 2);
        assert_true(alert_runner_has_room(&ar));
        assert_int_equal(alert_spawn(&ar, cmd, &f, now_monotonic_usec(), NULL), 0);
        for (size_t i = 0; i < ar.n; i++)
                kill(runner_pid(&ar, i), SIGTERM);
        wait_done(&ar, &s, 4, 10000);
        assert_int_equal(ar.n, 0);
        alert_runner_clear(&ar);
}

typedef struct Output {
        AlertOutput out, err;
        int n;
} Output;

static void keep_output(const AlertRun *run, AlertOutcome o, int status, void *ud) {
        Output *x = ud;
        x->out = run->out;
        x->err = run->err;
        x->n++;
}

/* A megabyte on stdout neither blocks the alert nor grows pgtreed: the first 4 KiB are kept,
 * the rest counted; stderr separately. */
static void test_output_bounded(void **state) {
        const char *cmd = script("loud.sh", "printf 'to stderr\\n' >&2\n"
                                            "i=0; while [ $i -lt 1000 ]; do printf '%01000d' 0; i=$((i+1)); done\n"
                                            "printf 'end\\n' >&2");
        AlertRunner ar = { .timeout_usec = 60000000 };
        Finding f = finding();
        assert_int_equal(alert_spawn(&ar, cmd, &f, now_monotonic_usec(), NULL), 0);
        Output x = {};
        for (int i = 0; i < 3000 && x.n == 0; i++) {
                alert_runner_check(&ar, now_monotonic_usec(), keep_output, &x);
                usleep(10000);
        }
        assert_int_equal(x.n, 1);
        assert_int_equal(x.out.len, ALERT_OUTPUT_MAX);
        assert_int_equal(x.out.dropped, 1000000 - ALERT_OUTPUT_MAX);
        for (size_t i = 0; i < x.out.len; i++)
                assert_int_equal(x.out.buf[i], '0');
        assert_int_equal(x.err.len, strlen("to stderr\nend\n"));
        assert_memory_equal(x.err.buf, "to stderr\nend\n", x.err.len);
        assert_int_equal(x.err.dropped, 0);
        char text[64];
        alert_output_escape(&x.err, text, sizeof text);
        assert_string_equal(text, "to stderr\\nend\\n");
        alert_runner_clear(&ar);
}

static void test_output_escape(void **state) {
        AlertOutput o = { .fd = -1 };
        const char raw[] = "a\tb\\c\x01\x7f\n\xc3\xa9";
        memcpy(o.buf, raw, sizeof raw - 1);
        o.len = sizeof raw - 1;
        char text[64];
        alert_output_escape(&o, text, sizeof text);
        assert_string_equal(text, "a\\tb\\\\c\\x01\\x7f\\n\xc3\xa9");
        char small[8];
        alert_output_escape(&o, small, sizeof small);
        assert_string_equal(small, "a\\tb…");
}

static size_t open_fds(void) {
        size_t n = 0;
        for (int fd = 0; fd < 1024; fd++)
                n += fcntl(fd, F_GETFD) >= 0;
        return n;
}

static char proc_state(pid_t pid) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return 0;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = 0;
        char *p = strrchr(buf, ')');
        return p && p[1] == ' ' ? p[2] : 0;
}

/* An alert that ignores SIGTERM: timed out (SIGTERM), then stuck, reported once, then no longer
 * tracked — its descriptors closed, itself alive (never SIGKILLed), reaped quietly when it ends. */
static void test_stuck_untracked(void **state) {
        const char *cmd = script("stubborn.sh", "trap '' TERM\nexec sleep 60");
        size_t fds_before = open_fds();
        AlertRunner ar = { .timeout_usec = 200000 };
        Finding f = finding();
        const AlertRun *run;
        assert_int_equal(alert_spawn(&ar, cmd, &f, now_monotonic_usec(), &run), 0);
        pid_t pid = run->pid;
        Seen s = {};
        wait_done(&ar, &s, 2, 10000);
        assert_int_equal(s.n, 2);
        assert_int_equal(s.outcome[0], ALERT_TIMED_OUT);
        assert_int_equal(s.outcome[1], ALERT_STUCK);
        assert_int_equal(ar.n, 0);
        assert_int_equal(alert_runner_next_deadline(&ar), UINT64_MAX);
        assert_int_equal(open_fds(), fds_before); /* pidfd and pipes closed */
        /* reported once: nothing more however long it stays */
        for (int i = 0; i < 30; i++) {
                alert_runner_check(&ar, now_monotonic_usec() + 3600000000ULL, done, &s);
                usleep(10000);
        }
        assert_int_equal(s.n, 2);
        char st = proc_state(pid);
        assert_true(st != 0 && st != 'Z'); /* alive */
        /* the test ends it (SIGINT: its SIGTERM is ignored); the runner reaps it, saying nothing */
        assert_int_equal(kill(pid, SIGINT), 0);
        for (int i = 0; i < 1000 && ar.n_abandoned > 0; i++) {
                alert_runner_check(&ar, now_monotonic_usec(), done, &s);
                usleep(10000);
        }
        assert_int_equal(ar.n_abandoned, 0);
        assert_int_equal(s.n, 2);
        assert_int_equal(proc_state(pid), 0); /* reaped, no zombie left */
        alert_runner_clear(&ar);
}

/* The command runs with no capability in any set and no_new_privs, even when pgtreed is root:
 * it cannot signal what pgtreed may not, nor gain anything through a setuid program. */
static void test_no_capabilities(void **state) {
        char out[300];
        snprintf(out, sizeof out, "%s/status.txt", dir);
        char body[600];
        snprintf(body, sizeof body, "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status > '%s'", out);
        const char *cmd = script("caps.sh", body);
        AlertRunner ar = { .timeout_usec = 10000000 };
        Finding f = finding();
        assert_int_equal(alert_spawn(&ar, cmd, &f, now_monotonic_usec(), NULL), 0);
        Seen s = {};
        wait_done(&ar, &s, 1, 10000);
        assert_int_equal(s.n, 1);
        assert_int_equal(s.outcome[0], ALERT_EXITED);
        assert_int_equal(s.status[0], 0);
        char text[2048] = "";
        FILE *fp = fopen(out, "r");
        assert_non_null(fp);
        size_t k = fread(text, 1, sizeof text - 1, fp);
        text[k] = 0;
        fclose(fp);
        print_message("%s", text);
        static const char *const want[] = { "CapInh:\t0000000000000000\n", "CapPrm:\t0000000000000000\n",
                                            "CapEff:\t0000000000000000\n", "CapAmb:\t0000000000000000\n",
                                            "NoNewPrivs:\t1\n" };
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
                if (!strstr(text, want[i]))
                        fail_msg("%s not in the alert's /proc/self/status:\n%s", want[i], text);
        /* the bounding set is emptied too where pgtreed may (CAP_SETPCAP, i.e. as root) */
        if (geteuid() == 0 && !strstr(text, "CapBnd:\t0000000000000000\n"))
                fail_msg("CapBnd not empty:\n%s", text);
        alert_runner_clear(&ar);
}

int main(void) {
        assert_non_null(mkdtemp(dir));
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_environment_and_exit),
                cmocka_unit_test(test_timeout),
                cmocka_unit_test(test_missing_command),
                cmocka_unit_test(test_concurrency_cap),
                cmocka_unit_test(test_output_bounded),
                cmocka_unit_test(test_output_escape),
                cmocka_unit_test(test_stuck_untracked),
                cmocka_unit_test(test_no_capabilities),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                return 1;
        return r;
}
