/* SPDX-License-Identifier: MIT */
/* A fake PostgreSQL cluster made of real processes, for tests of the /proc side: a bash named
 * "postgres" plays the postmaster (its title is its own command line, its cwd the "data
 * directory"), and sleeps named "postgres" with PostgreSQL titles (bash's exec -a) play its
 * children. SIGUSR1 makes the postmaster fork one more client backend.
 * It passes pgtree's identity checks as PostgreSQL does: the programs are copies named postgres
 * (owned by root, in directories only root can change), the data directory holds PG_VERSION and
 * belongs to the uid they run as (nobody when the test runs as root: PostgreSQL never runs as
 * root), and postmaster.pid carries the postmaster's real start time. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct FakeCluster {
        char dir[256];
        char data[300];
        char name[32];          /* its cluster_name, "fake<test pid>": tests running at the same
                                 * time on the host (another build's) must not share a name */
        pid_t pm;
        int port;
        uid_t uid;              /* what its processes run as */
        gid_t gid;
        int gate_fd;            /* > 0: the postmaster's process waits for a byte on it before it
                                 * execs the postmaster (an old process becoming one); then
                                 * fake_postmaster_start does not wait for its children */
        bool hold_children;     /* the postmaster forks its children only once fake_release_children
                                 * was called (it waits on the FIFO DIR/go) */
} FakeCluster;

static inline int fake_children(pid_t pm, pid_t *out, int max) {
        char path[128];
        snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int) pm, (int) pm);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        int n = 0, v;
        while (n < max && fscanf(f, "%d", &v) == 1)
                out[n++] = v;
        fclose(f);
        return n;
}

static inline void fake_sleep_ms(int ms) {
        struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
}

/* Waits until the postmaster has n children whose titles are set. */
static inline int fake_wait_children(const FakeCluster *c, int n) {
        for (int i = 0; i < 400; i++) {
                pid_t kids[64];
                int k = fake_children(c->pm, kids, 64), titled = 0;
                for (int j = 0; j < k; j++) {
                        char path[64], buf[16] = "";
                        snprintf(path, sizeof path, "/proc/%d/cmdline", (int) kids[j]);
                        FILE *f = fopen(path, "re");
                        if (f) {
                                if (fread(buf, 1, 9, f) == 9 && strncmp(buf, "postgres:", 9) == 0)
                                        titled++;
                                fclose(f);
                        }
                }
                if (titled >= n)
                        return 0;
                fake_sleep_ms(10);
        }
        return -ETIMEDOUT;
}

/* (Re)starts the fake postmaster in the cluster's data directory, as a restart would. */
static inline int fake_postmaster_start(FakeCluster *c) {
        char script[8192];
        snprintf(script, sizeof script,
                 "cd '%s' || exit 1\n"
                 "started=$(( $(awk '/^btime/ {print $2}' /proc/stat) + $(cut -d' ' -f22 /proc/$$/stat) / $(getconf CLK_TCK) ))\n"
                 "printf '%%s\\n%%s\\n%%s\\n%%s\\n%%s\\n%%s\\n%%s\\n%%s\\n' $$ '%s' $started %d '%s' '*' '1 2' ready > postmaster.pid\n"
                 "%s%s%s"
                 "spawn() { (exec -a \"postgres: %s: $1\" '%s/kid/postgres' 600) & }\n"
                 "trap 'spawn \"bob shop 10.1.2.3(4567) idle\"' USR1\n"
                 "spawn 'checkpointer '\n"
                 "spawn 'alice shop [local] SELECT'\n"
                 "while :; do wait; done\n",
                 c->data, c->data, c->port, c->dir, c->hold_children ? "read -r _ < '" : "",
                 c->hold_children ? c->dir : "", c->hold_children ? "/go'\n" : "", c->name, c->dir);
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                if (geteuid() == 0 && (setgroups(0, NULL) < 0 || setgid(c->gid) < 0 || setuid(c->uid) < 0))
                        _exit(126);
                /* a test that dies (a failed assertion skips fake_cluster_stop) takes its fake
                 * postmaster with it (after setuid: changing credentials clears the setting) */
                if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
                        _exit(1);
                /* not the test's stdout/stderr: leftover children must not keep meson waiting */
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null >= 0) {
                        dup2(null, STDOUT_FILENO);
                        dup2(null, STDERR_FILENO);
                }
                char exe[PATH_MAX + 32], byte;
                if (c->gate_fd > 0 && read(c->gate_fd, &byte, 1) != 1)
                        _exit(1);
                snprintf(exe, sizeof exe, "%s/pm/postgres", c->dir);
                execl(exe, exe, "-c", script, (char *) NULL);
                _exit(127);
        }
        c->pm = pid;
        return c->gate_fd > 0 ? 0 : fake_wait_children(c, 2);
}

static inline int fake_cluster_start(FakeCluster *c, int port) {
        snprintf(c->dir, sizeof c->dir, "/tmp/pgtree-fake-XXXXXX");
        if (!mkdtemp(c->dir))
                return -errno;
        char pm_dir[PATH_MAX + 8], kid_dir[PATH_MAX + 8], link[PATH_MAX + 32];
        snprintf(pm_dir, sizeof pm_dir, "%s/pm", c->dir);
        snprintf(kid_dir, sizeof kid_dir, "%s/kid", c->dir);
        snprintf(c->data, sizeof c->data, "%s/data", c->dir);
        if (chmod(c->dir, 0755) < 0 || mkdir(pm_dir, 0755) < 0 || mkdir(kid_dir, 0755) < 0 || mkdir(c->data, 0700) < 0)
                return -errno;
        char cmd[3 * PATH_MAX];
        snprintf(cmd, sizeof cmd, "cp /bin/bash '%s/postgres' && cp /bin/sleep '%s/postgres' && echo 15 > '%s/PG_VERSION'",
                 pm_dir, kid_dir, c->data);
        if (system(cmd) != 0)
                return -EIO;
        (void) link;
        uid_t run_as = geteuid() == 0 ? 65534 : geteuid();
        gid_t run_gid = geteuid() == 0 ? 65534 : getegid();
        snprintf(cmd, sizeof cmd, "%s/PG_VERSION", c->data);
        if (chown(c->data, run_as, run_gid) < 0 || chown(cmd, run_as, run_gid) < 0)
                return -errno;

        snprintf(cmd, sizeof cmd, "%s/go", c->dir);
        if (c->hold_children && mkfifo(cmd, 0666) < 0)
                return -errno;
        c->port = port;
        snprintf(c->name, sizeof c->name, "fake%d", (int) getpid());
        c->uid = run_as;
        c->gid = run_gid;
        return fake_postmaster_start(c);
}

/* Lets a postmaster started with hold_children fork its children. */
static inline int fake_release_children(const FakeCluster *c) {
        char path[PATH_MAX + 8];
        snprintf(path, sizeof path, "%s/go", c->dir);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t k = write(fd, "\n", 1);
        close(fd);
        return k == 1 ? 0 : -EIO;
}

/* Ends every process of the fake cluster (ours) by pid, and removes its files. */
static inline void fake_cluster_stop(FakeCluster *c, const pid_t *extra, int n_extra) {
        pid_t kids[64];
        int k = c->pm > 0 ? fake_children(c->pm, kids, 64) : 0;
        for (int i = 0; i < k; i++)
                kill(kids[i], SIGTERM);
        for (int i = 0; i < n_extra; i++)
                kill(extra[i], SIGTERM);
        if (c->pm > 0) {
                kill(c->pm, SIGTERM);
                waitpid(c->pm, NULL, 0);
        }
        /* children re-parented to us (we may be their subreaper) */
        while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", c->dir);
}
