/* SPDX-License-Identifier: MIT */
/* The libproc2 adapter against this host's real /proc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/prctl.h>

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
        while (read(cmd_fd, &want, sizeof want) == sizeof want) {
                for (int i = 0; i < want; i++) {
                        pid_t k = fork();
                        if (k == 0) {
                                prctl(PR_SET_PDEATHSIG, SIGTERM);
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
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
