/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/* Moves fd to a descriptor ≥ 10 (so that placing 0, 1, 2 cannot overwrite it), close-on-exec;
 * async-signal-safe. */
static int high_fd(int fd) {
        return fd >= 10 ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 10);
}

static _Noreturn void child_fail(int errfd, int err) {
        (void) !write(errfd, &err, sizeof err);
        _exit(127);
}

/* In the child between fork() and execve(): async-signal-safe calls only. */
static _Noreturn void alert_child(const char *command, char **argv, char **env, int in, int out, int err, int errfd) {
        /* default dispositions first, then an empty mask: nothing pending runs pgtreed's handling */
        struct sigaction dfl = { .sa_handler = SIG_DFL };
        for (int sig = 1; sig < NSIG; sig++)
                (void) sigaction(sig, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
        if (setsid() < 0)
                child_fail(errfd, errno);
        if ((errfd = high_fd(errfd)) < 0 || (in = high_fd(in)) < 0 || (out = high_fd(out)) < 0 || (err = high_fd(err)) < 0)
                child_fail(errfd < 0 ? 2 : errfd, errno);
        if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0)
                child_fail(errfd, errno);
        /* nothing of pgtreed's is inherited but the three and the exec-error pipe (close-on-exec) */
        if (syscall(SYS_close_range, 3, errfd - 1, 0) < 0 || syscall(SYS_close_range, errfd + 1, ~0U, 0) < 0) {
                for (int fd = 3; fd < 65536; fd++)
                        if (fd != errfd)
                                (void) close(fd);
        }
        /* No capabilities: the bounding set first (needs CAP_SETPCAP, which is about to go; a
         * process without it has nothing to drop there that matters once the rest is empty),
         * then ambient, then inheritable/permitted/effective. With no_new_privs an execve()
         * cannot give any back, even to uid 0 (the kernel intersects with the old permitted set). */
        for (int cap = 0; cap < 64; cap++)
                (void) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                child_fail(errfd, errno);
        struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
        struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
        if (syscall(SYS_capset, &hdr, data) < 0)
                child_fail(errfd, errno);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                child_fail(errfd, errno);
        execve(command, argv, env);
        child_fail(errfd, errno);
}

static void output_close(AlertOutput *o) {
        if (o->fd >= 0)
                close(o->fd);
        o->fd = -1;
}

/* Reads what is there without blocking; at end of file the descriptor is closed. */
static void output_read(AlertOutput *o) {
        char scratch[4096];
        while (o->fd >= 0) {
                bool keep = o->len < sizeof o->buf;
                char *to = keep ? o->buf + o->len : scratch;
                size_t room = keep ? sizeof o->buf - o->len : sizeof scratch;
                ssize_t k = read(o->fd, to, room);
                if (k > 0) {
                        if (keep)
                                o->len += (size_t) k;
                        else
                                o->dropped += (uint64_t) k;
                        continue;
                }
                if (k < 0 && errno == EINTR)
                        continue;
                if (k == 0 || errno != EAGAIN)
                        output_close(o);
                break;
        }
}

static void run_free(AlertRun *run) {
        if (!run)
                return;
        if (run->pidfd >= 0)
                close(run->pidfd);
        output_close(&run->out);
        output_close(&run->err);
        free(run);
}

bool alert_runner_has_room(const AlertRunner *ar) {
        return ar->max_running == 0 || ar->n < ar->max_running;
}

int alert_spawn(AlertRunner *ar, const char *command, const Finding *f, uint64_t now, const AlertRun **ret) {
        if (!alert_runner_has_room(ar))
                return -EBUSY;
        if (GROW(ar->items, ar->allocated, ar->n + 1) < 0)
                return -ENOMEM;
        AlertRun *run = calloc(1, sizeof *run);
        char **env = alert_environment(f, false);
        if (!run || !env) {
                free(run);
                strv_free(env);
                return -ENOMEM;
        }
        *run = (AlertRun){ .pid = -1, .pidfd = -1, .out.fd = -1, .err.fd = -1 };
        int in = -1, out[2] = { -1, -1 }, err[2] = { -1, -1 }, ex[2] = { -1, -1 }, r = 0;
        if ((in = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
            pipe2(ex, O_CLOEXEC) < 0)
                r = negative_errno();
        char *argv[] = { (char *) command, NULL };
        pid_t pid = -1;
        if (r == 0) {
                pid = fork();
                if (pid < 0)
                        r = negative_errno();
                else if (pid == 0)
                        alert_child(command, argv, env, in, out[1], err[1], ex[1]);
        }
        strv_free(env);
        int keep[] = { in, out[1], err[1], ex[1] };
        for (size_t i = 0; i < ELEMENTSOF(keep); i++)
                if (keep[i] >= 0)
                        close(keep[i]);
        if (r == 0) {
                /* the exec-error pipe closes on a successful execve(), or carries its errno */
                int child_errno = 0;
                ssize_t k;
                do
                        k = read(ex[0], &child_errno, sizeof child_errno);
                while (k < 0 && errno == EINTR);
                if (k == (ssize_t) sizeof child_errno) {
                        (void) waitpid(pid, NULL, 0);
                        r = -(child_errno > 0 ? child_errno : EIO);
                }
        }
        if (ex[0] >= 0)
                close(ex[0]);
        if (r < 0) {
                if (out[0] >= 0)
                        close(out[0]);
                if (err[0] >= 0)
                        close(err[0]);
                free(run);
                return r;
        }
        run->pid = pid;
        run->out.fd = out[0];
        run->err.fd = err[0];
        (void) fcntl(out[0], F_SETFL, O_NONBLOCK);
        (void) fcntl(err[0], F_SETFL, O_NONBLOCK);
        /* our unreaped child: its pid cannot be reused, so this pidfd is race-free */
        run->pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        run->started = now;
        run->deadline = now + ar->timeout_usec;
        run->kind = f->kind;
        run->target = f->pid;
        snprintf(run->command, sizeof run->command, "%s", command);
        snprintf(run->rule, sizeof run->rule, "%s", f->rule);
        snprintf(run->cluster, sizeof run->cluster, "%s", f->cluster);
        ar->items[ar->n++] = run;
        if (ret)
                *ret = run;
        return 0;
}

void alert_runner_check(AlertRunner *ar, uint64_t now, AlertDone done, void *userdata) {
        /* the stuck ones given up on: reaped if they ever end, nothing else */
        for (size_t i = 0; i < ar->n_abandoned;) {
                pid_t w = waitpid(ar->abandoned[i], NULL, WNOHANG);
                if (w == ar->abandoned[i] || (w < 0 && errno == ECHILD))
                        ar->abandoned[i] = ar->abandoned[--ar->n_abandoned];
                else
                        i++;
        }
        for (size_t i = 0; i < ar->n;) {
                AlertRun *run = ar->items[i];
                output_read(&run->out);
                output_read(&run->err);
                int status;
                pid_t w = waitpid(run->pid, &status, WNOHANG);
                if (w == run->pid || (w < 0 && errno == ECHILD)) {
                        /* what it wrote before it ended (a descendant holding the pipe is not waited for) */
                        output_read(&run->out);
                        output_read(&run->err);
                        if (done) {
                                if (w < 0)
                                        done(run, ALERT_EXITED, -1, userdata);
                                else if (WIFSIGNALED(status))
                                        done(run, ALERT_KILLED, WTERMSIG(status), userdata);
                                else
                                        done(run, ALERT_EXITED, WEXITSTATUS(status), userdata);
                        }
                        run_free(run);
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
                                /* said once, then let go: no SIGKILL, no descriptors kept */
                                if (done)
                                        done(run, ALERT_STUCK, 0, userdata);
                                if (GROW(ar->abandoned, ar->abandoned_allocated, ar->n_abandoned + 1) >= 0)
                                        ar->abandoned[ar->n_abandoned++] = run->pid;
                                run_free(run);
                                ar->items[i] = ar->items[--ar->n];
                                continue;
                        }
                }
                i++;
        }
}

uint64_t alert_runner_next_deadline(const AlertRunner *ar) {
        uint64_t d = UINT64_MAX;
        for (size_t i = 0; i < ar->n; i++)
                if (ar->items[i]->deadline < d)
                        d = ar->items[i]->deadline;
        return d;
}

void alert_runner_clear(AlertRunner *ar) {
        for (size_t i = 0; i < ar->n; i++)
                run_free(ar->items[i]);
        free(ar->items);
        free(ar->abandoned);
        *ar = (AlertRunner){ .timeout_usec = ar->timeout_usec, .max_running = ar->max_running };
}

void alert_output_escape(const AlertOutput *o, char *buf, size_t size) {
        if (size == 0)
                return;
        size_t k = 0;
        bool cut = false;
        for (size_t i = 0; i < o->len && !cut; i++) {
                unsigned char c = (unsigned char) o->buf[i];
                char tmp[8];
                if (c == '\n')
                        strcpy(tmp, "\\n");
                else if (c == '\t')
                        strcpy(tmp, "\\t");
                else if (c == '\\')
                        strcpy(tmp, "\\\\");
                else if (c < 0x20 || c == 0x7f)
                        snprintf(tmp, sizeof tmp, "\\x%02x", c);
                else {
                        tmp[0] = (char) c;
                        tmp[1] = 0;
                }
                size_t l = strlen(tmp);
                if (k + l + 4 > size) { /* room for "…" (3 bytes) and the NUL */
                        cut = true;
                        break;
                }
                memcpy(buf + k, tmp, l);
                k += l;
        }
        if (cut && k + 4 <= size) {
                memcpy(buf + k, "…", 3);
                k += 3;
        }
        buf[k] = 0;
}
