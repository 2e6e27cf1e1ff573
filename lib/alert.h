/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "findings.h"

/* Runs alert commands without waiting for them: each gets the finding in PGTREE_* environment
 * variables, stdin from /dev/null, stdout and stderr into pipes read by pgtreed (the first
 * ALERT_OUTPUT_MAX bytes of each kept for the journal, the rest counted and discarded), its own
 * session, no capabilities at all (bounding, ambient, inheritable, permitted and effective sets
 * emptied) and no_new_privs, and a timeout after which its process group gets SIGTERM — once.
 * One still there another timeout later is reported as stuck and no longer tracked: pgtreed
 * never sends SIGKILL. At most max_running run at once. Failures are reported, never fatal. */

#define ALERT_OUTPUT_MAX 4096

typedef struct AlertOutput {
        int fd;                 /* read end, −1 once at end of file (or never opened) */
        size_t len;             /* bytes kept in buf */
        uint64_t dropped;       /* bytes read past ALERT_OUTPUT_MAX and discarded */
        char buf[ALERT_OUTPUT_MAX];
} AlertOutput;

typedef struct AlertRun {
        pid_t pid;
        int pidfd;              /* readable when it exits (for an event loop), −1 if unavailable */
        uint64_t started, deadline;
        bool term_sent;
        AlertOutput out, err;
        char command[256];
        char rule[128];
        char cluster[sizeof(((Finding *) 0)->cluster)];
        FindingKind kind;
        pid_t target;
} AlertRun;

typedef struct AlertRunner {
        AlertRun **items;
        size_t n, allocated;
        uint64_t timeout_usec;
        unsigned max_running;   /* 0: no cap */
        /* stuck alerts no longer tracked: only reaped (without a word) if they ever exit */
        pid_t *abandoned;
        size_t n_abandoned, abandoned_allocated;
} AlertRunner;

typedef enum AlertOutcome {
        ALERT_EXITED,           /* status: exit code */
        ALERT_KILLED,           /* status: signal */
        ALERT_TIMED_OUT,        /* SIGTERM sent to its process group */
        ALERT_STUCK,            /* still there after SIGTERM and another timeout: untracked now */
} AlertOutcome;

typedef void (*AlertDone)(const AlertRun *run, AlertOutcome outcome, int status, void *userdata);

/* The PGTREE_* environment of a finding (NULL-terminated, strings owned by the array). */
char **alert_environment(const Finding *f, bool dry_run);
void strv_free(char **v);

/* Starts command for f. -EBUSY when max_running alerts run already (nothing started); -errno
 * when it cannot be started (exec failure included: -ENOENT, -EACCES, …). */
int alert_spawn(AlertRunner *ar, const char *command, const Finding *f, uint64_t now_usec, const AlertRun **ret);
/* Reads what the alerts wrote, reaps the ones that ended, signals the ones past their deadline;
 * reports each outcome (the run's output is complete when it is reported ended). */
void alert_runner_check(AlertRunner *ar, uint64_t now_usec, AlertDone done, void *userdata);
/* The earliest deadline of a running alert, or UINT64_MAX. */
uint64_t alert_runner_next_deadline(const AlertRunner *ar);
/* Does the runner have room for one more alert? */
bool alert_runner_has_room(const AlertRunner *ar);
void alert_runner_clear(AlertRunner *ar);

/* The output as one line of text: printable ASCII and UTF-8 kept, \n \t \\ escaped, other bytes
 * as \xNN; cut (with "…") to fit size. */
void alert_output_escape(const AlertOutput *o, char *buf, size_t size);
