/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <syslog.h>

#include "findings.h"

/* Structured log entries: to journald (sd_journal_sendv) with SYSLOG_IDENTIFIER=pgtreed, a
 * MESSAGE_ID per event type and PGTREE_* fields; in the foreground without journald, the same
 * MESSAGE lines go to stderr. Every MESSAGE_ID is explained in systemd/pgtree.catalog. */

/* The MESSAGE_IDs (128-bit, as journalctl MESSAGE_ID= takes them). */
#define MSGID_STARTED             "6d1ac0a3b3e04bcb9f1c2d62f7a9e001"
#define MSGID_STOPPED             "6d1ac0a3b3e04bcb9f1c2d62f7a9e002"
#define MSGID_RELOADED            "6d1ac0a3b3e04bcb9f1c2d62f7a9e003"
#define MSGID_CONFIG_INVALID      "6d1ac0a3b3e04bcb9f1c2d62f7a9e004"
#define MSGID_CLUSTER_UNREACHABLE "6d1ac0a3b3e04bcb9f1c2d62f7a9e005"
#define MSGID_CLUSTER_REACHABLE   "6d1ac0a3b3e04bcb9f1c2d62f7a9e006"
#define MSGID_FINDING_OPENED      "6d1ac0a3b3e04bcb9f1c2d62f7a9e010"
#define MSGID_FINDING_ESCALATED   "6d1ac0a3b3e04bcb9f1c2d62f7a9e011"
#define MSGID_FINDING_RESOLVED    "6d1ac0a3b3e04bcb9f1c2d62f7a9e012"
#define MSGID_ACTION_SENT         "6d1ac0a3b3e04bcb9f1c2d62f7a9e020"
#define MSGID_ACTION_DRY_RUN      "6d1ac0a3b3e04bcb9f1c2d62f7a9e021"
#define MSGID_ACTION_REFUSED      "6d1ac0a3b3e04bcb9f1c2d62f7a9e022"
#define MSGID_ACTION_FAILED       "6d1ac0a3b3e04bcb9f1c2d62f7a9e023"
#define MSGID_ACTION_DID_NOT_EXIT "6d1ac0a3b3e04bcb9f1c2d62f7a9e024"
#define MSGID_ACTION_HELD_BACK    "6d1ac0a3b3e04bcb9f1c2d62f7a9e025"
#define MSGID_ACTION_EXITED       "6d1ac0a3b3e04bcb9f1c2d62f7a9e026"
#define MSGID_ALERT_RAN           "6d1ac0a3b3e04bcb9f1c2d62f7a9e030"
#define MSGID_ALERT_FAILED        "6d1ac0a3b3e04bcb9f1c2d62f7a9e031"
#define MSGID_ALERT_DROPPED       "6d1ac0a3b3e04bcb9f1c2d62f7a9e032"
#define MSGID_SCAN_FAILED         "6d1ac0a3b3e04bcb9f1c2d62f7a9e040"
#define MSGID_POSTMASTER_EXITED   "6d1ac0a3b3e04bcb9f1c2d62f7a9e007"
#define MSGID_METRICS_FAILED      "6d1ac0a3b3e04bcb9f1c2d62f7a9e041"
#define MSGID_CLIENT_DENIED       "6d1ac0a3b3e04bcb9f1c2d62f7a9e050"
#define MSGID_REMOTE_SERVER_CHANGED "6d1ac0a3b3e04bcb9f1c2d62f7a9e008"
/* Any other message (a caller that passes no id, log_plain): still one id, so that
 * MESSAGE_ID= matches every entry of pgtreed and journalctl -x explains it. */
#define MSGID_OTHER               "6d1ac0a3b3e04bcb9f1c2d62f7a9e0ff"

typedef enum LogTarget {
        LOG_TARGET_AUTO,        /* journald when stderr is connected to it (JOURNAL_STREAM), else stderr */
        LOG_TARGET_JOURNAL,
        LOG_TARGET_STDERR,
        LOG_TARGET_BOTH,        /* journald, and the same MESSAGE lines on stderr */
} LogTarget;

/* "auto", "journal", "stderr", "both"; −EINVAL otherwise. */
int log_target_from_string(const char *s);

void log_setup(LogTarget t);
bool log_to_journal(void);

typedef struct LogEntry {
        char *fields[48];       /* "KEY=value", owned */
        size_t n;
} LogEntry;

/* Adds KEY=value (printf). Overlong or failed additions are dropped, never fatal. */
__attribute__((format(printf, 3, 4))) void log_add(LogEntry *e, const char *key, const char *fmt, ...);
/* The PGTREE_* fields of a finding (PGTREE_DRY_RUN is the caller's: it knows). */
void log_add_finding(LogEntry *e, const Finding *f);
/* Sends with PRIORITY, MESSAGE_ID (MSGID_OTHER if NULL), MESSAGE (printf) and the caller's
 * CODE_FILE/CODE_LINE/CODE_FUNC, then frees the fields. Use the macros: they pass the call site. */
__attribute__((format(printf, 7, 8))) void log_send_full(const char *file, int line, const char *func, LogEntry *e,
                                                         int priority, const char *message_id, const char *fmt, ...);
#define log_send(e, priority, message_id, ...) \
        log_send_full(__FILE__, __LINE__, __func__, (e), (priority), (message_id), __VA_ARGS__)

/* A plain message (debugging, startup problems), with MSGID_OTHER. */
#define log_plain(priority, ...) log_send_full(__FILE__, __LINE__, __func__, NULL, (priority), NULL, __VA_ARGS__)
