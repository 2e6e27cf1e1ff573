/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
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

/* Every way we know for this process, or a program it starts (alert commands inherit the
 * filter), to have the kernel deliver SIGKILL to another process, and what stops each:
 *
 *  kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo, pidfd_send_signal with SIGKILL:
 *      EPERM here (any target, also process groups and -1).
 *  fcntl(F_SETSIG, SIGKILL) after F_SETOWN/F_SETOWN_EX + O_ASYNC (reproduced: a pipe becoming
 *      readable SIGKILLed the owner): EPERM here. F_SETOWN/F_SETOWN_EX only choose the target;
 *      the signal is the one F_SETSIG set (SIGIO otherwise), which also covers leases (F_SETLEASE)
 *      and dnotify (F_NOTIFY): they send the same owner signal.
 *  prlimit64(pid ≠ 0, RLIMIT_CPU or RLIMIT_RTTIME, new limit): the kernel SIGKILLs a process past
 *      its hard CPU/RT-time limit, so lowering another process's limit kills it. Setting limits of
 *      another process is refused entirely (pid 0 — this process, what setrlimit() uses — stays).
 *  ptrace: PTRACE_KILL sends SIGKILL, and an attached tracer can make the tracee call kill()
 *      itself, outside this filter. Refused entirely; process_vm_writev likewise (it rewrites
 *      another process's memory). pgtreed needs neither.
 *  io_uring_setup/enter/register: its operations are not seen by seccomp at all. Refused with
 *      ENOSYS (programs then fall back to plain system calls); pgtreed does not use it.
 *  bpf: a BPF program can call bpf_send_signal(SIGKILL) in another process's context. Refused
 *      with ENOSYS. init_module/finit_module (kernel code can do anything): refused as well.
 *
 * Evaluated and left open, because they can only reach the caller itself:
 *  timer_create/timer_settime with SIGEV_SIGNAL SIGKILL: the signal goes to the caller's own
 *      thread group (SIGEV_THREAD_ID must name one of its own threads: EINVAL otherwise).
 *  mq_notify with SIGEV_SIGNAL: the signal goes to the process that registered.
 *  prctl(PR_SET_PDEATHSIG, SIGKILL): sets the signal the *caller* gets when its parent dies.
 *  clone()/clone3() exit_signal = SIGKILL: sent to the caller (the new child's parent) when the
 *      child exits; with CLONE_PARENT the child inherits the caller's exit signal (SIGCHLD for
 *      what pgtreed starts) instead, and the kernel falls back to SIGCHLD after an exec.
 *  process_madvise, pidfd_getfd, kcmp: cannot send signals.
 * Outside a system-call filter's reach, for the unit's sandbox (ProtectKernelTunables=,
 * ProtectControlGroups=, ProtectProc=) and for the capabilities alerts run without:
 * /proc/sysrq-trigger ('i': SIGKILL to every process), cgroup.kill, /proc/PID/oom_score_adj. */
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
        /* fcntl(fd, F_SETSIG, SIGKILL) (fcntl64 exists on 32-bit architectures only: rule_add
         * without _exact skips it where it does not exist) */
        static const int fcntls[] = { SCMP_SYS(fcntl), SCMP_SYS(fcntl64) };
        for (size_t i = 0; r == 0 && i < ELEMENTSOF(fcntls); i++) {
                struct scmp_arg_cmp cmp[] = {
                        { .arg = 1, .op = SCMP_CMP_MASKED_EQ, .datum_a = 0xffffffffu, .datum_b = F_SETSIG },
                        { .arg = 2, .op = SCMP_CMP_MASKED_EQ, .datum_a = 0xffffffffu, .datum_b = SIGKILL },
                };
                r = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), fcntls[i], ELEMENTSOF(cmp), cmp);
        }
        /* prlimit64(pid ≠ 0, …, new ≠ NULL, …) */
        if (r == 0) {
                struct scmp_arg_cmp cmp[] = {
                        { .arg = 0, .op = SCMP_CMP_NE, .datum_a = 0 },
                        { .arg = 2, .op = SCMP_CMP_NE, .datum_a = 0 },
                };
                r = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prlimit64), ELEMENTSOF(cmp), cmp);
        }
        static const struct {
                int nr;
                int err;
        } denied[] = {
                { SCMP_SYS(ptrace), EPERM },
                { SCMP_SYS(process_vm_writev), EPERM },
                { SCMP_SYS(io_uring_setup), ENOSYS },
                { SCMP_SYS(io_uring_enter), ENOSYS },
                { SCMP_SYS(io_uring_register), ENOSYS },
                { SCMP_SYS(bpf), ENOSYS },
                { SCMP_SYS(init_module), EPERM },
                { SCMP_SYS(finit_module), EPERM },
        };
        for (size_t i = 0; r == 0 && i < ELEMENTSOF(denied); i++)
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(denied[i].err), denied[i].nr, 0);
        if (r == 0)
                r = seccomp_load(ctx);
        seccomp_release(ctx);
        return r;
}
