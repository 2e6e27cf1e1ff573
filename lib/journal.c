/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
/* sd_journal_sendv would add CODE_* of emit() itself: the call site's are added by log_send */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "journal.h"
#include "macro.h"

static LogTarget target = LOG_TARGET_STDERR;

/* Is stderr the journal's stream (systemd sets JOURNAL_STREAM=dev:ino for it)? */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        if (!e)
                return false;
        unsigned long long dev, ino;
        if (sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        struct stat st;
        return fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

void log_setup(LogTarget t) {
        if (t == LOG_TARGET_AUTO)
                t = stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
        target = t;
}

bool log_to_journal(void) {
        return target == LOG_TARGET_JOURNAL || target == LOG_TARGET_BOTH;
}

int log_target_from_string(const char *s) {
        static const char *const names[] = { "auto", "journal", "stderr", "both" };
        for (size_t i = 0; s && i < ELEMENTSOF(names); i++)
                if (!strcmp(s, names[i]))
                        return (int) i;
        return -EINVAL;
}

/* Appends KEY=value while fewer than limit fields are there. */
static void add_field(LogEntry *e, size_t limit, const char *key, const char *fmt, va_list ap) {
        if (e->n >= limit)
                return;
        char *value = NULL;
        if (vasprintf(&value, fmt, ap) < 0)
                return;
        char *field = NULL;
        if (asprintf(&field, "%s=%s", key, value) >= 0)
                e->fields[e->n++] = field;
        free(value);
}

void log_add(LogEntry *e, const char *key, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        add_field(e, ELEMENTSOF(e->fields) - 4, key, fmt, ap);
        va_end(ap);
}

void log_add_finding(LogEntry *e, const Finding *f) {
        if ((unsigned) f->kind < _FINDING_KIND_MAX)
                log_add(e, "PGTREE_KIND", "%s", finding_kind_to_string(f->kind));
        log_add(e, "PGTREE_PID", "%d", (int) f->pid);
        log_add(e, "PGTREE_START_TICKS", "%llu", (unsigned long long) f->start_ticks);
        if (f->cluster[0])
                log_add(e, "PGTREE_CLUSTER", "%s", f->cluster);
        if (f->container[0])
                log_add(e, "PGTREE_CONTAINER", "%s", f->container);
        if (f->ns_pid > 0)
                log_add(e, "PGTREE_NS_PID", "%d", (int) f->ns_pid);
        if (f->user[0])
                log_add(e, "PGTREE_USER", "%s", f->user);
        if (f->database[0])
                log_add(e, "PGTREE_DATABASE", "%s", f->database);
        if (f->application_name[0])
                log_add(e, "PGTREE_APPLICATION", "%s", f->application_name);
        if (f->client[0])
                log_add(e, "PGTREE_CLIENT", "%s", f->client);
        if (f->backend_type[0])
                log_add(e, "PGTREE_BACKEND_TYPE", "%s", f->backend_type);
        if (f->state[0])
                log_add(e, "PGTREE_STATE", "%s", f->state);
        log_add(e, "PGTREE_DURATION", "%lld", (long long) f->duration_s);
        if (f->xmin_age >= 0)
                log_add(e, "PGTREE_XMIN_AGE", "%lld", f->xmin_age);
        if (f->rule[0])
                log_add(e, "PGTREE_RULE", "%s", f->rule);
        log_add(e, "PGTREE_ACTION", "%s", action_to_string(f->action));
        if (f->blocker_pid > 0) {
                log_add(e, "PGTREE_BLOCKER_PID", "%d", (int) f->blocker_pid);
                if (f->blocker_state[0])
                        log_add(e, "PGTREE_BLOCKER_STATE", "%s", f->blocker_state);
        }
        if (f->kind == FINDING_FOREIGN_PROCESS) {
                log_add(e, "PGTREE_COMMAND", "%s", f->command);
                if (f->exe[0])
                        log_add(e, "PGTREE_EXE", "%s", f->exe);
                if (f->uid >= 0)
                        log_add(e, "PGTREE_UID", "%lld", f->uid);
                if (f->via_pid > 0)
                        log_add(e, "PGTREE_VIA_PID", "%d", (int) f->via_pid);
                if (f->query[0]) /* the journal is root's and the adm group's */
                        log_add(e, "PGTREE_QUERY", "%s", f->query);
        }
}

static void emit(LogEntry *e, int priority, const char *message) {
        static const char *const level[] = { "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug" };
        if (target == LOG_TARGET_BOTH && priority <= LOG_INFO)
                fprintf(stderr, "pgtreed: %s: %s\n", level[priority & 7], message);
        if (target == LOG_TARGET_JOURNAL || target == LOG_TARGET_BOTH) {
                struct iovec iov[ELEMENTSOF(e->fields) + 4];
                size_t n = 0;
                char prio[16], *msg = NULL;
                snprintf(prio, sizeof prio, "PRIORITY=%d", priority);
                if (asprintf(&msg, "MESSAGE=%s", message) < 0)
                        msg = NULL;
                iov[n++] = (struct iovec){ prio, strlen(prio) };
                iov[n++] = (struct iovec){ (char *) "SYSLOG_IDENTIFIER=pgtreed", 25 };
                if (msg)
                        iov[n++] = (struct iovec){ msg, strlen(msg) };
                for (size_t i = 0; i < e->n; i++)
                        iov[n++] = (struct iovec){ e->fields[i], strlen(e->fields[i]) };
                if (sd_journal_sendv(iov, (int) n) < 0)
                        fprintf(stderr, "<%d>%s\n", priority, message);
                free(msg);
        } else
                fprintf(stderr, "pgtreed: %s: %s\n", level[priority & 7], message);
        for (size_t i = 0; i < e->n; i++)
                free(e->fields[i]);
        e->n = 0;
}

/* Adds a field even when the entry is full: MESSAGE_ID and CODE_* take the slots log_add keeps. */
static void add_reserved(LogEntry *e, const char *key, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        add_field(e, ELEMENTSOF(e->fields), key, fmt, ap);
        va_end(ap);
}

void log_send_full(const char *file, int line, const char *func, LogEntry *e, int priority, const char *message_id,
                   const char *fmt, ...) {
        /* first: the format may use %m */
        va_list ap;
        va_start(ap, fmt);
        char *message = NULL;
        int r = vasprintf(&message, fmt, ap);
        va_end(ap);
        LogEntry local = {};
        if (!e)
                e = &local;
        add_reserved(e, "MESSAGE_ID", "%s", message_id ? message_id : MSGID_OTHER);
        add_reserved(e, "CODE_FILE", "%s", file);
        add_reserved(e, "CODE_LINE", "%d", line);
        add_reserved(e, "CODE_FUNC", "%s", func);
        emit(e, priority, r < 0 ? "(out of memory)" : message);
        free(message);
}
