/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macro.h"
#include "pidref.h"
#include "proc-stat.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

int pidref_open_verified(pid_t pid, uint64_t start_ticks, pid_t ppid, PidRef *ret) {
        *ret = PIDREF_NULL;
        if (pid <= 1 || pid == getpid())
                return -EPERM;
        int fd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0)
                return errno == ESRCH ? -ESRCH : negative_errno();
        /* The pidfd now pins this very process: whatever the stat file says from here on is
         * about it, or the pid was already reused before we opened it — which the start time
         * tells. */
        ProcStat st;
        int r = proc_stat_read(NULL, pid, &st);
        if (r < 0) {
                close(fd);
                return r == -ENOENT ? -ESRCH : r;
        }
        if (st.state == 'Z' || st.state == 'X') {
                close(fd);
                return -ESRCH;
        }
        if (st.start_ticks != start_ticks || (ppid > 0 && st.ppid != ppid)) {
                close(fd);
                return -ESTALE;
        }
        *ret = (PidRef){ .pid = pid, .fd = fd, .start_ticks = start_ticks, .ppid = st.ppid };
        return 0;
}

int pidref_signal(const PidRef *ref, int sig) {
        if (sig != SIGINT && sig != SIGTERM)
                return -EPERM; /* never SIGKILL, nor anything else */
        if (!ref || ref->fd < 0 || ref->pid <= 1 || ref->pid == getpid())
                return -EPERM;
        if (syscall(SYS_pidfd_send_signal, ref->fd, sig, NULL, 0) < 0)
                return negative_errno();
        return 0;
}

bool pidref_exited(const PidRef *ref) {
        if (!ref || ref->fd < 0)
                return true;
        struct pollfd p = { .fd = ref->fd, .events = POLLIN };
        return poll(&p, 1, 0) > 0;
}

void pidref_done(PidRef *ref) {
        if (ref && ref->fd >= 0)
                close(ref->fd);
        if (ref)
                *ref = PIDREF_NULL;
}

bool signal_spelling_is_sigkill(const char *v) {
        char buf[64];
        size_t k = 0;
        if (!v)
                return false;
        for (const char *s = v; *s && k + 1 < sizeof buf; s++)
                if (*s != ' ' && *s != '-' && *s != '=' && *s != '_')
                        buf[k++] = (char) (*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s);
        buf[k] = 0;
        const char *w = buf;
        if (!strncmp(w, "signal", 6))
                w += 6;
        static const char *const spellings[] = { "kill", "9", "sigkill", "kill9", "killsigkill", "sig9", "killkill", "killsig9" };
        for (size_t i = 0; i < ELEMENTSOF(spellings); i++)
                if (!strcmp(w, spellings[i]))
                        return true;
        return false;
}

int nokill_install(void) {
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx)
                return -ENOMEM;
        static const struct {
                int nr;
                unsigned arg;
        } calls[] = {
                { SCMP_SYS(kill), 1 },
                { SCMP_SYS(tkill), 1 },
                { SCMP_SYS(tgkill), 2 },
                { SCMP_SYS(rt_sigqueueinfo), 1 },
                { SCMP_SYS(rt_tgsigqueueinfo), 2 },
                { SCMP_SYS(pidfd_send_signal), 1 },
        };
        int r = 0;
        for (size_t i = 0; r == 0 && i < ELEMENTSOF(calls); i++) {
                struct scmp_arg_cmp cmp = { .arg = calls[i].arg, .op = SCMP_CMP_MASKED_EQ, .datum_a = 0xffffffffu,
                                            .datum_b = SIGKILL };
                r = seccomp_rule_add_exact_array(ctx, SCMP_ACT_ERRNO(EPERM), calls[i].nr, 1, &cmp);
        }
        if (r == 0)
                r = seccomp_load(ctx);
        seccomp_release(ctx);
        return r;
}
