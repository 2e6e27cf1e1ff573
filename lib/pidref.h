/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A process pinned by a pidfd and verified to be the one that was scanned. Signals go through
 * the pidfd, so a pid reused after the check cannot be hit. */
typedef struct PidRef {
        pid_t pid;
        int fd;                 /* pidfd, −1 if not open */
        uint64_t start_ticks;
        pid_t ppid;
} PidRef;

#define PIDREF_NULL ((PidRef){ .pid = 0, .fd = -1 })

/* Opens a pidfd for pid *first*, then re-reads /proc/PID/stat and checks that the process has
 * the expected start time and parent (ppid 0: do not check the parent) and is not a zombie.
 * Returns 0; -ESRCH if it is gone or dead; -ESTALE if it is another process now (pid reused,
 * or re-parented); -EPERM for pid ≤ 1 or ourselves. */
int pidref_open_verified(pid_t pid, uint64_t start_ticks, pid_t ppid, PidRef *ret);

/* Sends SIGINT or SIGTERM through the pidfd. Any other signal — SIGKILL above all — is refused
 * with -EPERM and nothing is sent. */
int pidref_signal(const PidRef *ref, int sig);

/* Has the process exited (pidfd readable)? */
bool pidref_exited(const PidRef *ref);

void pidref_done(PidRef *ref);

/* Why pgtree refuses SIGKILL, in one place (config errors, socket replies). */
#define SIGKILL_REFUSAL                                                                              \
        "SIGKILL is refused: on a backend it makes the postmaster end every session and run crash " \
        "recovery; use terminate (SIGTERM)"

/* Does this spell SIGKILL? "kill", "9", "SIGKILL", "KILL", "kill -9", "-9", "--signal=9",
 * "signal 9", any case, with dashes and spaces ignored. */
bool signal_spelling_is_sigkill(const char *s);

/* Installs a seccomp filter on the calling process that makes every known route to SIGKILL
 * another process fail: kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo and
 * pidfd_send_signal with SIGKILL, fcntl(F_SETSIG, SIGKILL), prlimit64 on another process, ptrace,
 * process_vm_writev, io_uring, bpf, module loading (the list and the reasons: pidref.c).
 * Inherited by children, alert commands included. */
int nokill_install(void);
