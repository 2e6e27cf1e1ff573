/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "journal.h"

static void test_finding_fields(void **state) {
        Finding f = { .kind = FINDING_IDLE_IN_TRANSACTION, .pid = 42, .start_ticks = 7, .duration_s = 65.9, .xmin_age = 12,
                      .action = ACTION_CANCEL };
        strcpy(f.cluster, "main");
        strcpy(f.user, "alice");
        strcpy(f.application_name, "FakeParent:1001");
        strcpy(f.rule, "idle");
        LogEntry e = {};
        log_add_finding(&e, &f);
        const char *want[] = { "PGTREE_KIND=idle_in_transaction", "PGTREE_PID=42", "PGTREE_START_TICKS=7", "PGTREE_CLUSTER=main",
                               "PGTREE_USER=alice", "PGTREE_APPLICATION=FakeParent:1001", "PGTREE_DURATION=65",
                               "PGTREE_XMIN_AGE=12", "PGTREE_RULE=idle", "PGTREE_ACTION=cancel" };
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
                bool found = false;
                for (size_t k = 0; k < e.n && !found; k++)
                        found = !strcmp(e.fields[k], want[i]);
                if (!found)
                        fail_msg("missing %s", want[i]);
        }
        for (size_t k = 0; k < e.n; k++) {
                assert_null(strstr(e.fields[k], "PGTREE_DATABASE")); /* empty: left out */
                free(e.fields[k]);
        }
        /* a containerized cluster's: its container and the pid in it */
        Finding c = { .kind = FINDING_ORPHAN_BACKEND, .pid = 4242, .ns_pid = 7, .xmin_age = -1 };
        strcpy(c.container, "ctr-a");
        e = (LogEntry){};
        log_add_finding(&e, &c);
        const char *cwant[] = { "PGTREE_PID=4242", "PGTREE_NS_PID=7", "PGTREE_CONTAINER=ctr-a" };
        for (size_t i = 0; i < sizeof cwant / sizeof cwant[0]; i++) {
                bool found = false;
                for (size_t k = 0; k < e.n && !found; k++)
                        found = !strcmp(e.fields[k], cwant[i]);
                if (!found)
                        fail_msg("missing %s", cwant[i]);
        }
        for (size_t k = 0; k < e.n; k++)
                free(e.fields[k]);
        /* a manual request has no kind */
        Finding m = { .kind = _FINDING_KIND_MAX, .pid = 5, .xmin_age = -1 };
        e = (LogEntry){};
        log_add_finding(&e, &m);
        for (size_t k = 0; k < e.n; k++) {
                assert_null(strstr(e.fields[k], "PGTREE_KIND"));
                free(e.fields[k]);
        }
}

static void test_bounded(void **state) {
        LogEntry e = {};
        for (int i = 0; i < 100; i++)
                log_add(&e, "PGTREE_X", "%d", i);
        assert_true(e.n < sizeof e.fields / sizeof e.fields[0]);
        for (size_t k = 0; k < e.n; k++)
                free(e.fields[k]);
}

/* Without journald the same MESSAGE goes to stderr. */
static void test_stderr_fallback(void **state) {
        unsetenv("JOURNAL_STREAM");
        log_setup(LOG_TARGET_AUTO);
        assert_false(log_to_journal());
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        int saved = dup(STDERR_FILENO);
        dup2(fds[1], STDERR_FILENO);
        LogEntry e = {};
        log_add(&e, "PGTREE_PID", "%d", 9);
        log_send(&e, LOG_NOTICE, MSGID_ACTION_SENT, "terminate pid %d: sent SIGTERM", 9);
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(fds[1]);
        char buf[256] = "";
        ssize_t k = read(fds[0], buf, sizeof buf - 1);
        close(fds[0]);
        assert_true(k > 0);
        assert_string_equal(buf, "pgtreed: notice: terminate pid 9: sent SIGTERM\n");
        assert_int_equal(e.n, 0); /* fields were freed */
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_finding_fields),
                cmocka_unit_test(test_bounded),
                cmocka_unit_test(test_stderr_fallback),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
