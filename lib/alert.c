/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alert.h"
#include "macro.h"

void strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

char **alert_environment(const Finding *f, bool dry_run) {
        char **env = calloc(24, sizeof(char *));
        if (!env)
                return NULL;
        size_t n = 0;
        bool ok = true;
#define PUT(fmt, ...)                                                           \
        do {                                                                    \
                if (ok && asprintf(&env[n], fmt, __VA_ARGS__) < 0) {            \
                        env[n] = NULL;                                          \
                        ok = false;                                             \
                } else if (ok)                                                  \
                        n++;                                                    \
        } while (0)
        PUT("PATH=%s", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        PUT("PGTREE_KIND=%s", finding_kind_to_string(f->kind));
        PUT("PGTREE_PID=%d", (int) f->pid);
        PUT("PGTREE_START_TICKS=%llu", (unsigned long long) f->start_ticks);
        PUT("PGTREE_CLUSTER=%s", f->cluster);
        PUT("PGTREE_USER=%s", f->user);
        PUT("PGTREE_DATABASE=%s", f->database);
        PUT("PGTREE_APPLICATION=%s", f->application_name);
        PUT("PGTREE_CLIENT=%s", f->client);
        PUT("PGTREE_BACKEND_TYPE=%s", f->backend_type);
        PUT("PGTREE_STATE=%s", f->state);
        PUT("PGTREE_DURATION=%lld", (long long) f->duration_s);
        PUT("PGTREE_RULE=%s", f->rule);
        PUT("PGTREE_ACTION=%s", action_to_string(f->action));
        PUT("PGTREE_DRY_RUN=%s", dry_run ? "yes" : "no");
        PUT("PGTREE_DETAIL=%s", f->detail);
        if (f->xmin_age >= 0)
                PUT("PGTREE_XMIN_AGE=%lld", f->xmin_age);
#undef PUT
        if (!ok) {
                strv_free(env);
                return NULL;
        }
        return env;
}

int alert_spawn(AlertRunner *ar, const char *command, const Finding *f, uint64_t now, const AlertRun **ret) {
        char **env = alert_environment(f, false);
        if (!env)
                return -ENOMEM;
        if (GROW(ar->items, ar->allocated, ar->n + 1) < 0) {
                strv_free(env);
                return -ENOMEM;
        }
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawnattr_init(&attr);
        sigset_t none;
        sigemptyset(&none);
        posix_spawnattr_setsigmask(&attr, &none);
        sigset_t all;
        sigfillset(&all);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        pid_t pid;
        char *argv[] = { (char *) command, NULL };
        int r = posix_spawn(&pid, command, &fa, &attr, argv, env);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        strv_free(env);
        if (r != 0)
                return -r;
        AlertRun *run = &ar->items[ar->n++];
        *run = (AlertRun){ .pid = pid, .started = now, .deadline = now + ar->timeout_usec, .kind = f->kind, .target = f->pid };
        run->pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        snprintf(run->command, sizeof run->command, "%s", command);
        snprintf(run->rule, sizeof run->rule, "%s", f->rule);
        if (ret)
                *ret = run;
        return 0;
}

void alert_runner_check(AlertRunner *ar, uint64_t now, AlertDone done, void *userdata) {
        for (size_t i = 0; i < ar->n;) {
                AlertRun *run = &ar->items[i];
                int status;
                pid_t w = waitpid(run->pid, &status, WNOHANG);
                if (w == run->pid || (w < 0 && errno == ECHILD)) {
                        if (done) {
                                if (w < 0)
                                        done(run, ALERT_EXITED, -1, userdata);
                                else if (WIFSIGNALED(status))
                                        done(run, ALERT_KILLED, WTERMSIG(status), userdata);
                                else
                                        done(run, ALERT_EXITED, WEXITSTATUS(status), userdata);
                        }
                        if (run->pidfd >= 0)
                                close(run->pidfd);
                        ar->items[i] = ar->items[--ar->n];
                        continue;
                }
                if (now >= run->deadline) {
                        if (!run->term_sent) {
                                /* its own session: end it and whatever it started */
                                (void) kill(-run->pid, SIGTERM);
                                run->term_sent = true;
                                run->deadline = now + ar->timeout_usec;
                                if (done)
                                        done(run, ALERT_TIMED_OUT, 0, userdata);
                        } else {
                                run->deadline = UINT64_MAX;
                                if (done)
                                        done(run, ALERT_STUCK, 0, userdata);
                        }
                }
                i++;
        }
}

uint64_t alert_runner_next_deadline(const AlertRunner *ar) {
        uint64_t d = UINT64_MAX;
        for (size_t i = 0; i < ar->n; i++)
                if (ar->items[i].deadline < d)
                        d = ar->items[i].deadline;
        return d;
}

void alert_runner_clear(AlertRunner *ar) {
        for (size_t i = 0; i < ar->n; i++)
                if (ar->items[i].pidfd >= 0)
                        close(ar->items[i].pidfd);
        free(ar->items);
        *ar = (AlertRunner){ .timeout_usec = ar->timeout_usec };
}
