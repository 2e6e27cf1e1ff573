/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "findings.h"

/* Runs alert commands without waiting for them: each gets the finding in PGTREE_* environment
 * variables, stdin from /dev/null, its own session, and a timeout after which its process
 * group gets SIGTERM. Its failures are reported, never fatal. */
typedef struct AlertRun {
        pid_t pid;
        int pidfd;              /* readable when it exits (for an event loop), −1 if unavailable */
        uint64_t started, deadline;
        bool term_sent;
        char command[256];
        char rule[128];
        FindingKind kind;
        pid_t target;
} AlertRun;

typedef struct AlertRunner {
        AlertRun *items;
        size_t n, allocated;
        uint64_t timeout_usec;
} AlertRunner;

typedef enum AlertOutcome {
        ALERT_EXITED,           /* status: exit code */
        ALERT_KILLED,           /* status: signal */
        ALERT_TIMED_OUT,        /* SIGTERM sent to its process group */
        ALERT_STUCK,            /* still there after SIGTERM and another timeout */
} AlertOutcome;

typedef void (*AlertDone)(const AlertRun *run, AlertOutcome outcome, int status, void *userdata);

/* The PGTREE_* environment of a finding (NULL-terminated, strings owned by the array). */
char **alert_environment(const Finding *f, bool dry_run);
void strv_free(char **v);

int alert_spawn(AlertRunner *ar, const char *command, const Finding *f, uint64_t now_usec, const AlertRun **ret);
/* Reaps the alerts that ended, signals the ones past their deadline; reports each outcome. */
void alert_runner_check(AlertRunner *ar, uint64_t now_usec, AlertDone done, void *userdata);
/* The earliest deadline of a running alert, or UINT64_MAX. */
uint64_t alert_runner_next_deadline(const AlertRunner *ar);
void alert_runner_clear(AlertRunner *ar);
