/* SPDX-License-Identifier: MIT */
/* The libproc2 adapter against this host's real /proc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <cmocka.h>

#include "fake-cluster.h"
#include "proc-scan.h"
#include "proc-stat.h"

static const ProcRecord *find(const ProcRecord *r, size_t n, pid_t pid) {
        for (size_t i = 0; i < n; i++)
                if (r[i].pid == pid)
                        return &r[i];
        return NULL;
}

static void test_scan_all(void **state) {
        FakeCluster fc = {};
        assert_int_equal(fake_cluster_start(&fc, 54998), 0);
        ProcScan *s;
        assert_int_equal(proc_scan_new(&s), 0);
        ProcRecord *r;
        size_t n;
        assert_int_equal(proc_scan_all(s, &r, &n), 0);
        assert_true(n > 3);
        for (size_t i = 1; i < n; i++)
                assert_true(r[i - 1].pid < r[i].pid);

        /* ourselves: every base field, and no title (we are not PostgreSQL) */
        const ProcRecord *me = find(r, n, getpid());
        assert_non_null(me);
        ProcStat st;
        assert_int_equal(proc_stat_read(NULL, getpid(), &st), 0);
        assert_int_equal(me->ppid, getppid());
        assert_int_equal(me->uid, geteuid());
        assert_int_equal(me->start_ticks, st.start_ticks);
        assert_string_equal(me->comm, st.comm);
        assert_true(me->rss_kb > 0);
        assert_null(me->title);

        /* the fake postmaster: its whole command line; its children: their titles */
        const ProcRecord *pm = find(r, n, fc.pm);
        assert_non_null(pm);
        assert_string_equal(pm->comm, "postgres");
        assert_non_null(pm->title);
        assert_non_null(strstr(pm->title, "/pm/postgres -c cd "));
        assert_true(pm->rss_anon_kb > 0);
        assert_true(pm->rss_anon_kb <= pm->rss_kb);
        /* its identity: uids, a server binary (a root-owned copy named postgres), its data directory */
        assert_true(pm->ident.ids_valid);
        assert_int_equal(pm->ident.euid, fc.uid);
        assert_int_equal(pm->ident.ruid, fc.uid);
        assert_true(pm->ident.exe_valid);
        assert_true(pm->ident.exe_trusted);
        assert_true(pm->ident.dir_valid);
        assert_true(pm->ident.dir_pg);
        assert_int_equal(pm->ident.dir_uid, fc.uid);
        /* ourselves: not a PostgreSQL binary, not in a data directory */
        ProcRecord self = {};
        assert_int_equal(proc_read_stat_record(s, getpid(), &self), 0);
        assert_int_equal(proc_read_details(s, &self, PROC_DETAIL_IDENTITY), 0);
        assert_true(self.ident.ids_valid && self.ident.exe_valid && self.ident.dir_valid);
        assert_false(self.ident.exe_trusted);
        proc_record_clear(&self);
        pid_t kids[8];
        int k = fake_children(fc.pm, kids, 8);
        assert_int_equal(k, 2);
        for (int i = 0; i < k; i++) {
                const ProcRecord *c = find(r, n, kids[i]);
                assert_non_null(c);
                assert_int_equal(c->ppid, fc.pm);
                assert_non_null(c->title);
                char prefix[64];
                snprintf(prefix, sizeof prefix, "postgres: %s: ", fc.name);
                assert_int_equal(strncmp(c->title, prefix, strlen(prefix)), 0);
        }
        proc_records_free(r, n);
        proc_scan_free(s);
        fake_cluster_stop(&fc, NULL, 0);
}

static void test_scan_pids(void **state) {
        ProcScan *s;
        assert_int_equal(proc_scan_new(&s), 0);
        pid_t want[] = { getpid(), 0x7ffffff0, getppid() };
        ProcRecord *r;
        size_t n;
        assert_int_equal(proc_scan_pids(s, want, 3, &r, &n), 0);
        assert_int_equal(n, 2); /* the one that does not exist is missing */
        assert_non_null(find(r, n, getpid()));
        assert_non_null(find(r, n, getppid()));
        proc_records_free(r, n);
        assert_int_equal(proc_scan_pids(s, want, 0, &r, &n), 0);
        assert_int_equal(n, 0);
        proc_scan_free(s);
}

static void test_children_cwd_cmdline(void **state) {
        pid_t child = fork();
        assert_true(child >= 0);
        if (child == 0) {
                pause();
                _exit(0);
        }
        pid_t *kids;
        size_t n;
        assert_int_equal(proc_read_children(NULL, getpid(), &kids, &n), 0);
        bool found = false;
        for (size_t i = 0; i < n; i++)
                found |= kids[i] == child;
        assert_true(found);
        free(kids);
        kill(child, SIGTERM);
        waitpid(child, NULL, 0);
        assert_int_equal(proc_read_children(NULL, 0x7ffffff0, &kids, &n), -ESRCH);

        char cwd[PATH_MAX], buf[PATH_MAX];
        assert_non_null(getcwd(cwd, sizeof cwd));
        assert_int_equal(proc_read_cwd(NULL, getpid(), buf, sizeof buf), 0);
        assert_string_equal(buf, cwd);
        assert_true(proc_read_cwd(NULL, 0x7ffffff0, buf, sizeof buf) < 0);

        assert_int_equal(proc_read_cmdline(NULL, getpid(), buf, sizeof buf), 0);
        assert_non_null(strstr(buf, "test-proc-scan"));
}

/* More pids than libproc2 selects in one call (255): every one is read. */
static void test_many_pids(void **state) {
        enum { N = 300 };
        pid_t kids[N];
        for (int i = 0; i < N; i++) {
                kids[i] = fork();
                assert_true(kids[i] >= 0);
                if (kids[i] == 0) {
                        pause();
                        _exit(0);
                }
        }
        ProcScan *s;
        assert_int_equal(proc_scan_new(&s), 0);
        ProcRecord *r;
        size_t n;
        int rc = proc_scan_pids(s, kids, N, &r, &n);
        for (int i = 0; i < N; i++)
                kill(kids[i], SIGTERM);
        for (int i = 0; i < N; i++)
                waitpid(kids[i], NULL, 0);
        assert_int_equal(rc, 0);
        assert_int_equal(n, N);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(r[i].ppid, getpid());
        proc_records_free(r, n);
        proc_scan_free(s);
}

/* A process's children through its kept descriptor: none (an empty read keeps the descriptor and
 * the process's other ones), one, more than a page of them (read whole another way), and the
 * process gone. */
static void spawn_children(int cmd_fd, int ack_fd) {
        int want;
        pid_t self = getpid();
        while (read(cmd_fd, &want, sizeof want) == sizeof want) {
                for (int i = 0; i < want; i++) {
                        pid_t k = fork();
                        if (k == 0) {
                                /* ends with its parent, also if that went before this was set (else
                                 * it would outlive the test, holding its output open) */
                                prctl(PR_SET_PDEATHSIG, SIGTERM);
                                if (getppid() != self)
                                        _exit(0);
                                pause();
                                _exit(0);
                        }
                }
                char ok = 1;
                (void) !write(ack_fd, &ok, 1);
        }
        _exit(0);
}

static size_t kept_children(ProcScan *s, pid_t pid) {
        pid_t *kids = NULL;
        size_t n = 0;
        assert_int_equal(proc_scan_children(s, pid, &kids, &n), 0);
        for (size_t i = 0; i < n; i++)
                assert_true(kids[i] > 0);
        free(kids);
        return n;
}

static void test_kept_children(void **state) {
        int cmd[2], ack[2];
        assert_int_equal(pipe(cmd), 0);
        assert_int_equal(pipe(ack), 0);
        pid_t x = fork();
        assert_true(x >= 0);
        if (x == 0) {
                close(cmd[1]);
                close(ack[0]);
                spawn_children(cmd[0], ack[1]);
        }
        close(cmd[0]);
        close(ack[1]);
        ProcScan *s;
        assert_int_equal(proc_scan_new(&s), 0);
        proc_scan_begin(s);
        ProcRecord r;
        assert_int_equal(proc_read_stat_record(s, x, &r), 0);
        assert_int_equal(kept_children(s, x), 0);
        assert_int_equal(kept_children(s, x), 0);
        assert_int_equal(proc_read_stat_record(s, x, &r), 0); /* still kept and readable */
        assert_int_equal(r.pid, x);

        char ok;
        int want = 1;
        assert_int_equal(write(cmd[1], &want, sizeof want), sizeof want);
        assert_int_equal(read(ack[0], &ok, 1), 1);
        assert_int_equal(kept_children(s, x), 1);

        want = 600; /* 601 pids: more than the 4 KB one pread() of the kept descriptor takes */
        assert_int_equal(write(cmd[1], &want, sizeof want), sizeof want);
        assert_int_equal(read(ack[0], &ok, 1), 1);
        assert_int_equal(kept_children(s, x), 601);
        pid_t *all = NULL;
        size_t n_all = 0;
        assert_int_equal(proc_read_children(NULL, x, &all, &n_all), 0);
        assert_int_equal(n_all, 601);
        free(all);

        close(cmd[1]); /* x exits; its children get SIGTERM */
        assert_int_equal(waitpid(x, NULL, 0), x);
        close(ack[0]);
        pid_t *kids = NULL;
        size_t n = 0;
        int rc = proc_scan_children(s, x, &kids, &n);
        assert_true(rc == -ESRCH || (rc == 0 && n == 0));
        free(kids);
        assert_int_equal(proc_read_stat_record(s, x, &r), -ESRCH);
        proc_scan_end(s);
        proc_scan_free(s);
}

/* ---- incremental discovery: what the discovery before knew must not hide a change ---- */

#define SEC 1000000ULL

/* A copy of sleep named postgres in dir (its comm is then "postgres"). */
static void make_postgres(char *dir, char *exe, size_t size) {
        assert_non_null(mkdtemp(dir));
        snprintf(exe, size, "%s/postgres", dir);
        char cmd[512];
        snprintf(cmd, sizeof cmd, "cp /bin/sleep '%s'", exe);
        assert_int_equal(system(cmd), 0);
}

static void remove_dir(const char *dir) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

static bool has_comm(pid_t pid, const char *comm) {
        char path[64], buf[32] = "";
        snprintf(path, sizeof path, "/proc/%d/comm", (int) pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        bool yes = fgets(buf, sizeof buf, f) && strncmp(buf, comm, strlen(comm)) == 0 && buf[strlen(comm)] == '\n';
        fclose(f);
        return yes;
}

static void wait_comm(pid_t pid, const char *comm) {
        for (int i = 0; i < 1000 && !has_comm(pid, comm); i++)
                fake_sleep_ms(10);
        assert_true(has_comm(pid, comm));
}

/* Discovers (incrementally unless complete) and returns the record of pid (NULL if none). */
static const ProcRecord *discover_find(ProcScan *s, bool complete, pid_t pid, ProcRecord **r, size_t *n) {
        assert_int_equal(proc_scan_discover(s, complete, r, n), 0);
        for (size_t i = 1; i < *n; i++)
                assert_true((*r)[i - 1].pid < (*r)[i].pid);
        return find(*r, *n, pid);
}

/* A child that waits for a byte on fd, then execs exe (named postgres): a shell or an entrypoint
 * script that becomes the server. */
static pid_t spawn_exec_later(int fd, const char *exe) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char c;
                if (read(fd, &c, 1) == 1)
                        execl(exe, "postgres", "600", (char *) NULL);
                _exit(127);
        }
        return pid;
}

static void end_child(pid_t pid) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
}

/* A young process that execs postgres is found by the next incremental discovery, with its title. */
static void test_discover_young_exec(void **state) {
        char dir[] = "/tmp/pgtree-exec-XXXXXX", exe[128];
        make_postgres(dir, exe, sizeof exe);
        ProcScan *s;
        assert_int_equal(proc_scan_new(&s), 0);
        proc_scan_set_recheck(s, 3600 * SEC, 60 * SEC); /* never due for a re-read; young: a minute */
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t kid = spawn_exec_later(p[0], exe);
        ProcRecord *r;
        size_t n;
        const ProcRecord *k = discover_find(s, true, kid, &r, &n);
        assert_non_null(k);
        assert_string_not_equal(k->comm, "postgres");
        proc_records_free(r, n);
        assert_int_equal(write(p[1], "x", 1), 1);
        wait_comm(kid, "postgres");
        k = discover_find(s, false, kid, &r, &n);
        bool seen = k && strcmp(k->comm, "postgres") == 0 && k->title && strstr(k->title, "600");
        assert_true(proc_scan_was_read(s, kid));
        proc_records_free(r, n);
        end_child(kid);
        close(p[0]);
        close(p[1]);
        proc_scan_free(s);
        remove_dir(dir);
        assert_true(seen);
}

/* An old process that is the same one is not read again at every discovery (the point: the cost
 * of a discovery does not grow with the old processes of the host); one that execs postgres is
 * found by its staggered re-read and by a complete discovery. */
static void test_discover_old(void **state) {
        char dir[] = "/tmp/pgtree-exec-XXXXXX", exe[128];
        make_postgres(dir, exe, sizeof exe);
        ProcScan *s;
        assert_int_equal(proc_scan_new(&s), 0);
        proc_scan_set_recheck(s, 3600 * SEC, 0); /* every process old; re-read once an hour */
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t kid = spawn_exec_later(p[0], exe);
        ProcRecord *r;
        size_t n;
        assert_non_null(discover_find(s, false, kid, &r, &n)); /* the first one reads everything */
        assert_true(proc_scan_stats(s).complete);
        assert_true(proc_scan_was_read(s, kid));
        proc_records_free(r, n);

        /* same processes: neither it nor we are read again (unless due, once an hour: at most one
         * of the three discoveries below can be that one) */
        int read_again = 0;
        for (int i = 0; i < 3; i++) {
                const ProcRecord *k = discover_find(s, false, kid, &r, &n);
                assert_non_null(k);
                assert_int_equal(k->ppid, getpid());
                ProcScanStats st = proc_scan_stats(s);
                assert_false(st.complete);
                assert_true(st.read < st.listed);
                read_again += proc_scan_was_read(s, kid) + proc_scan_was_read(s, getpid());
                proc_records_free(r, n);
        }
        assert_true(read_again <= 2);

        /* it execs postgres: an incremental discovery does not see it (it has no reason to read
         * it), a complete one does */
        assert_int_equal(write(p[1], "x", 1), 1);
        wait_comm(kid, "postgres");
        const ProcRecord *k = discover_find(s, false, kid, &r, &n);
        assert_non_null(k);
        assert_string_not_equal(k->comm, "postgres");
        proc_records_free(r, n);
        k = discover_find(s, true, kid, &r, &n);
        assert_non_null(k);
        assert_string_equal(k->comm, "postgres");
        assert_non_null(k->title);
        assert_non_null(strstr(k->title, "600"));
        assert_true(proc_scan_stats(s).complete);
        proc_records_free(r, n);
        end_child(kid);

        /* the staggered re-read: with a period of 300 ms, an old process that execs postgres is
         * seen within a few discoveries */
        kid = spawn_exec_later(p[0], exe);
        assert_non_null(discover_find(s, true, kid, &r, &n));
        proc_records_free(r, n);
        proc_scan_set_recheck(s, 300000, 0);
        assert_int_equal(write(p[1], "x", 1), 1);
        wait_comm(kid, "postgres");
        bool seen = false;
        for (int i = 0; i < 20 && !seen; i++) {
                fake_sleep_ms(100);
                k = discover_find(s, false, kid, &r, &n);
                seen = k && strcmp(k->comm, "postgres") == 0;
                proc_records_free(r, n);
        }
        end_child(kid);
        close(p[0]);
        close(p[1]);
        /* most processes to read (all young here): one complete read (a reap) instead */
        proc_scan_set_recheck(s, 3600 * SEC, 3650 * 24 * 3600 * SEC);
        assert_int_equal(proc_scan_discover(s, false, &r, &n), 0);
        proc_records_free(r, n);
        assert_true(proc_scan_stats(s).complete);
        proc_scan_free(s);
        remove_dir(dir);
        assert_true(seen);
}

/* A process whose parent exits is re-parented (to us: a subreaper): its ppid is read again,
 * though it is old and the same process. */
static void test_discover_reparented(void **state) {
        assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t mid = fork();
        assert_true(mid >= 0);
        if (mid == 0) {
                pid_t kid = fork();
                if (kid == 0) {
                        pause();
                        _exit(0);
                }
                if (write(p[1], &kid, sizeof kid) != sizeof kid)
                        _exit(1);
                pause();
                _exit(0);
        }
        pid_t kid;
        assert_int_equal(read(p[0], &kid, sizeof kid), sizeof kid);
        ProcScan *s;
        assert_int_equal(proc_scan_new(&s), 0);
        proc_scan_set_recheck(s, 3600 * SEC, 0);
        ProcRecord *r;
        size_t n;
        const ProcRecord *k = discover_find(s, true, kid, &r, &n);
        assert_non_null(k);
        assert_int_equal(k->ppid, mid);
        proc_records_free(r, n);
        end_child(mid);
        k = discover_find(s, false, kid, &r, &n);
        assert_non_null(k);
        pid_t ppid = k->ppid;
        bool was_read = proc_scan_was_read(s, kid);
        proc_records_free(r, n);
        end_child(kid);
        close(p[0]);
        close(p[1]);
        proc_scan_free(s);
        assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
        assert_true(was_read);
        assert_int_equal(ppid, getpid());
}

/* A pid reused by a new process between two discoveries is read again, though the process before
 * on that pid was known, old and not due for a re-read: its /proc entry is another. The pid is
 * made reused with ns_last_pid (root only; retried while other forks of the host take it first). */
static void test_discover_reused_pid(void **state) {
        if (geteuid() != 0 || access("/proc/sys/kernel/ns_last_pid", W_OK) != 0)
                skip();
        char dir[] = "/tmp/pgtree-reuse-XXXXXX", exe[128];
        make_postgres(dir, exe, sizeof exe);
        ProcScan *s;
        assert_int_equal(proc_scan_new(&s), 0);
        proc_scan_set_recheck(s, 3600 * SEC, 0); /* never re-read what looks the same */
        ProcRecord *r;
        size_t n;
        pid_t got = -1, target = 0;
        for (int attempt = 0; attempt < 50 && got != target; attempt++) {
                pid_t old = fork();
                assert_true(old >= 0);
                if (old == 0) {
                        pause();
                        _exit(0);
                }
                target = old;
                const ProcRecord *k = discover_find(s, false, old, &r, &n);
                assert_non_null(k);
                assert_string_not_equal(k->comm, "postgres");
                proc_records_free(r, n);
                assert_int_equal(proc_scan_discover(s, false, &r, &n), 0); /* known now */
                proc_records_free(r, n);
                end_child(old);
                for (int i = 0; i < 200; i++) {
                        FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "we");
                        assert_non_null(f);
                        fprintf(f, "%d", (int) target - 1);
                        fclose(f);
                        got = fork();
                        assert_true(got >= 0);
                        if (got == 0) {
                                if (getpid() == target)
                                        execl(exe, "postgres", "600", (char *) NULL);
                                _exit(0);
                        }
                        if (got == target)
                                break;
                        waitpid(got, NULL, 0);
                }
        }
        if (got != target) {
                proc_scan_free(s);
                remove_dir(dir);
                print_message("could not get pid %d again: other forks of the host took it first\n", (int) target);
                skip();
        }
        wait_comm(got, "postgres");
        const ProcRecord *k = discover_find(s, false, got, &r, &n);
        bool complete = proc_scan_stats(s).complete;
        end_child(got);
        assert_false(complete);
        assert_non_null(k);
        assert_string_equal(k->comm, "postgres");
        assert_non_null(k->title);
        assert_non_null(strstr(k->title, "600"));
        proc_records_free(r, n);
        proc_scan_free(s);
        remove_dir(dir);
}

/* What makes an executable a PostgreSQL server binary of the host. */
static void test_exe_trusted(void **state) {
        char dir[] = "/tmp/pgtree-exe-XXXXXX", path[128], cmd[300];
        assert_non_null(mkdtemp(dir));
        assert_int_equal(chmod(dir, 0755), 0);
        snprintf(path, sizeof path, "%s/postgres", dir);
        snprintf(cmd, sizeof cmd, "cp /bin/true '%s' && chmod 755 '%s'", path, path);
        assert_int_equal(system(cmd), 0);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        uid_t me = geteuid();
        assert_true(proc_exe_trusted(path, &st, me));
        /* named otherwise (a symlink named postgres resolves to its target's name) */
        assert_int_equal(stat("/bin/true", &st), 0);
        assert_false(proc_exe_trusted("/bin/true", &st, me));
        assert_int_equal(stat(path, &st), 0);
        assert_false(proc_exe_trusted("relative/postgres", &st, me));
        /* writable by others: anyone could have put any program there */
        assert_int_equal(chmod(path, 0777), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_false(proc_exe_trusted(path, &st, me));
        assert_int_equal(chmod(path, 0755), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(chmod(dir, 0777), 0);
        assert_false(proc_exe_trusted(path, &st, me));
        assert_int_equal(chmod(dir, 01777), 0); /* like /tmp */
        assert_false(proc_exe_trusted(path, &st, me));
        assert_int_equal(chmod(dir, 0755), 0);
        /* owned by neither root nor the process's user */
        if (me == 0) {
                assert_true(proc_exe_trusted(path, &st, 1000));
                assert_int_equal(chown(path, 1234, 1234), 0);
                assert_int_equal(stat(path, &st), 0);
                assert_false(proc_exe_trusted(path, &st, 1000));
                assert_true(proc_exe_trusted(path, &st, 1234)); /* a user's own build, run by that user */
        }
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_scan_all),
                cmocka_unit_test(test_exe_trusted),
                cmocka_unit_test(test_scan_pids),
                cmocka_unit_test(test_children_cwd_cmdline),
                cmocka_unit_test(test_many_pids),
                cmocka_unit_test(test_kept_children),
                cmocka_unit_test(test_discover_young_exec),
                cmocka_unit_test(test_discover_old),
                cmocka_unit_test(test_discover_reparented),
                cmocka_unit_test(test_discover_reused_pid),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
