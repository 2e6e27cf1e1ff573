/* SPDX-License-Identifier: MIT */
/* The scanner against real processes: a fake cluster (tests/fake-cluster.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <cmocka.h>

#include "fake-cluster.h"
#include "scanner.h"

static const PgCluster *find_cluster(const PgTree *t, pid_t pm) {
        for (size_t i = 0; i < t->n_clusters; i++)
                if (t->procs[t->clusters[i].postmaster].rec.pid == pm)
                        return &t->clusters[i];
        return NULL;
}

static size_t members(const PgTree *t, const PgCluster *c) {
        size_t n = 0;
        int idx = (int) (c - t->clusters);
        for (size_t i = 0; i < t->n_procs; i++)
                n += t->procs[i].cluster == idx;
        return n;
}

/* A refresh of the known clusters only (not a discovery scan). The scanner watches every
 * postmaster of the host, and another one exiting (another test suite's cluster) turns the
 * refreshes into full scans for the scanner's eager window (EAGER_WINDOW here): then wait and
 * refresh again, until a partial one comes (at most 120 s: the host must be quiet for a window
 * once; a loaded CI host with clusters starting and stopping beside this test is). */
#define EAGER_WINDOW (5 * 1000000ULL)
static void refresh_partial(Scanner *s, PgTree *t, ScanStats *st) {
        for (int i = 0; i < 1200; i++) {
                assert_int_equal(scanner_refresh(s, false, t, st), 0);
                if (!st->full)
                        return;
                if (i % 50 == 0)
                        print_message("a full scan (%s) where a refresh was expected: refreshing again\n", st->full_reason);
                tree_free(t);
                fake_sleep_ms(100);
        }
        fail_msg("two minutes of full scans where a refresh was expected");
}

static void test_discover_refresh_orphan(void **state) {
        /* Orphans of the fake postmaster are re-parented to us: a subreaper, as systemd is. */
        assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
        FakeCluster fc = {};
        assert_int_equal(fake_cluster_start(&fc, 54999), 0);

        Scanner *s;
        assert_int_equal(scanner_new(&s), 0);
        scanner_set_eager_window(s, EAGER_WINDOW);
        PgTree t;
        ScanStats st;

        /* 1. discovery */
        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        assert_true(st.full);
        const PgCluster *c = find_cluster(&t, fc.pm);
        assert_non_null(c);
        assert_string_equal(c->data_directory, fc.data);
        assert_true(c->pmfile_valid);
        assert_int_equal(c->pmfile.port, 54999);
        assert_string_equal(c->pmfile.status, "ready");
        assert_string_equal(c->name, fc.name);
        assert_int_equal(members(&t, c), 3);
        size_t host_records = st.examined;
        tree_free(&t);

        /* 2. refresh of the known cluster: only its own processes are read */
        refresh_partial(s, &t, &st);
        c = find_cluster(&t, fc.pm);
        assert_non_null(c);
        assert_int_equal(members(&t, c), 3);
        assert_true(st.examined < host_records);
        for (size_t i = 0; i < t.n_procs; i++)
                assert_true(t.procs[i].rec.cpu_percent >= 0);
        tree_free(&t);

        /* 3. a new backend is picked up by the refresh */
        assert_int_equal(kill(fc.pm, SIGUSR1), 0);
        assert_int_equal(fake_wait_children(&fc, 3), 0);
        refresh_partial(s, &t, &st);
        c = find_cluster(&t, fc.pm);
        assert_int_equal(members(&t, c), 4);
        int bob = -1;
        for (size_t i = 0; i < t.n_procs; i++)
                if (strcmp(t.procs[i].title.user, "bob") == 0)
                        bob = (int) i;
        assert_true(bob >= 0);
        assert_string_equal(t.procs[bob].title.client, "10.1.2.3:4567");
        pid_t kids[8];
        int n_kids = 0;
        for (size_t i = 0; i < t.n_procs; i++)
                if (t.procs[i].cluster == (int) (c - t.clusters) && t.procs[i].rec.pid != fc.pm)
                        kids[n_kids++] = t.procs[i].rec.pid;
        tree_free(&t);

        /* 4. the postmaster dies: the next refresh rescans the host at once and finds the orphans,
         * with their data directory */
        assert_int_equal(kill(fc.pm, SIGTERM), 0);
        assert_int_equal(waitpid(fc.pm, NULL, 0), fc.pm);
        pid_t dead_pm = fc.pm;
        fc.pm = 0;
        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        assert_true(st.full);
        assert_string_equal(st.full_reason, "postmaster gone");
        assert_null(find_cluster(&t, dead_pm));
        for (int i = 0; i < n_kids; i++) {
                int k = tree_find(&t, kids[i]);
                assert_true(k >= 0);
                assert_true(pg_process_is_orphan(&t.procs[k]));
                assert_int_equal(t.procs[k].rec.ppid, getpid());
                assert_non_null(t.procs[k].cwd);
                assert_string_equal(t.procs[k].cwd, fc.data);
                /* its uid, program and data directory agree: it may be acted on */
                assert_int_equal(t.procs[k].identity, PG_IDENTITY_VERIFIED);
        }
        tree_free(&t);

        /* 5. until a postmaster runs in that data directory again, every refresh discovers (a
         * restart is seen within one refresh, not one discovery interval later) */
        assert_true(scanner_discovering(s));
        assert_true(scanner_awaiting(s, fc.data));
        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        assert_true(st.full);
        assert_string_equal(st.full_reason, "awaiting a restarted postmaster");
        assert_true(tree_find(&t, kids[0]) >= 0);
        tree_free(&t);
        assert_int_equal(fake_postmaster_start(&fc), 0);
        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        assert_true(st.full);
        c = find_cluster(&t, fc.pm);
        assert_non_null(c);
        assert_string_equal(c->data_directory, fc.data);
        assert_true(c->pmfile_valid);
        /* not waiting for it any more (other postmasters of the host may still be awaited) */
        assert_false(scanner_awaiting(s, fc.data));
        tree_free(&t);

        /* orphans are followed by the cheap refresh too, and forgotten when they end */
        refresh_partial(s, &t, &st);
        assert_true(tree_find(&t, kids[0]) >= 0);
        tree_free(&t);
        kill(kids[0], SIGTERM);
        assert_int_equal(waitpid(kids[0], NULL, 0), kids[0]);
        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        assert_int_equal(tree_find(&t, kids[0]), -1);
        assert_true(tree_find(&t, kids[1]) >= 0);
        tree_free(&t);

        scanner_free(s);
        fake_cluster_stop(&fc, kids + 1, n_kids - 1);
}

/* Idle sessions that pg_stat_activity covers are not read every time: their pidfds say they are
 * alive. One that exits must still leave the tree at the next refresh.
 * The scanner watches every postmaster of the host: when another one (another test suite's
 * cluster) exits, that refresh is a full scan, which is not the path under test. Such a round
 * is started over (a few times); whatever the kind of refresh, the tree must be right. */
static bool skipped_round(void) {
        FakeCluster fc = {};
        assert_int_equal(fake_cluster_start(&fc, 54997), 0);
        Scanner *s;
        assert_int_equal(scanner_new(&s), 0);
        scanner_set_eager_window(s, EAGER_WINDOW);
        PgTree t;
        ScanStats st;
        assert_int_equal(scanner_refresh(s, true, &t, &st), 0);
        pid_t kids[8];
        int n = 0;
        for (size_t i = 0; i < t.n_procs; i++)
                if (t.procs[i].rec.ppid == fc.pm) {
                        scanner_title_stable(s, t.procs[i].rec.pid, t.procs[i].rec.start_ticks);
                        kids[n++] = t.procs[i].rec.pid;
                }
        assert_int_equal(n, 2);
        tree_free(&t);
        /* several refreshes: most of them read nothing of the two */
        for (int k = 0; k < 6; k++) {
                refresh_partial(s, &t, &st);
                for (int j = 0; j < n; j++) {
                        int x = tree_find(&t, kids[j]);
                        assert_true(x >= 0);
                        assert_non_null(t.procs[x].rec.title);
                        assert_true(t.procs[x].rec.cpu_percent >= 0);
                        scanner_title_stable(s, t.procs[x].rec.pid, t.procs[x].rec.start_ticks);
                }
                tree_free(&t);
        }
        kill(kids[0], SIGTERM);
        /* wait until the fake postmaster has reaped it (at most 10 s): gone from /proc */
        char gone[64];
        snprintf(gone, sizeof gone, "/proc/%d", (int) kids[0]);
        for (int i = 0; i < 1000 && access(gone, F_OK) == 0; i++)
                fake_sleep_ms(10);
        assert_int_equal(access(gone, F_OK), -1);
        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        bool tested = !st.full;
        if (st.full)
                print_message("refresh after the exit was a full scan (%s); starting over\n", st.full_reason);
        assert_int_equal(tree_find(&t, kids[0]), -1);
        assert_true(tree_find(&t, kids[1]) >= 0);
        tree_free(&t);
        scanner_free(s);
        fake_cluster_stop(&fc, NULL, 0);
        return tested;
}

static void test_skipped_processes_leave_when_they_exit(void **state) {
        bool tested = false;
        for (int round = 0; round < 10 && !tested; round++)
                tested = skipped_round();
        assert_true(tested);
}

static void touch(const char *dir, const char *name) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        close(fd);
}

/* An old process that execs a postmaster (no children yet) is not read again by incremental
 * discoveries (it is the same process, and not young); its socket appearing in a watched
 * directory makes the next refresh a complete discovery, which finds it — at most one per the
 * bound, the request waiting meanwhile. */
static void test_socket_trigger(void **state) {
        int gate[2];
        assert_int_equal(pipe(gate), 0);
        FakeCluster fc = { .gate_fd = gate[0], .hold_children = true };
        assert_int_equal(fake_cluster_start(&fc, 54996), 0); /* waits at the gate: not postgres yet */
        char sock[PATH_MAX];
        snprintf(sock, sizeof sock, "%s/sock", fc.dir);
        assert_int_equal(mkdir(sock, 0755), 0);

        Scanner *s;
        assert_int_equal(scanner_new(&s), 0);
        scanner_set_recheck(s, 3600 * 1000000ULL, 0); /* every process old, re-read once an hour */
        assert_int_equal(scanner_watch_socket_dir(s, sock), 0);
        PgTree t;
        ScanStats st;

        /* only PostgreSQL's socket names count */
        touch(sock, "not-a-socket");
        assert_int_equal(scanner_socket_events(s), 0);
        assert_null(scanner_pending_complete(s));

        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        assert_true(st.full);
        assert_true(st.complete);
        assert_null(find_cluster(&t, fc.pm));
        tree_free(&t);

        /* the first socket to appear is looked for at once (the bound is between the complete
         * discoveries sockets ask for, not from pgtreed's start): another cluster's */
        scanner_set_complete_min_interval(s, 3600 * 1000000ULL);
        touch(sock, ".s.PGSQL.1.lock");
        assert_int_equal(scanner_socket_events(s), 1);
        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        assert_true(st.complete);
        assert_null(find_cluster(&t, fc.pm)); /* not postgres yet */
        tree_free(&t);
        assert_null(scanner_pending_complete(s));

        /* then no complete discovery for an hour: another cluster starting cannot make one */
        assert_int_equal(write(gate[1], "x", 1), 1);
        char comm[64] = "";
        for (int i = 0; i < 1000 && strcmp(comm, "postgres\n") != 0; i++) {
                char path[64];
                snprintf(path, sizeof path, "/proc/%d/comm", (int) fc.pm);
                FILE *f = fopen(path, "re");
                if (f) {
                        if (!fgets(comm, sizeof comm, f))
                                comm[0] = 0;
                        fclose(f);
                }
                fake_sleep_ms(10);
        }
        assert_string_equal(comm, "postgres\n");
        assert_int_equal(scanner_refresh(s, true, &t, &st), 0);
        assert_true(st.full);
        assert_false(st.complete);
        assert_null(find_cluster(&t, fc.pm)); /* the same old process: not read again */
        tree_free(&t);

        /* its socket appears: a complete discovery is wanted, but not before the bound */
        touch(sock, ".s.PGSQL.54996.lock");
        touch(sock, ".s.PGSQL.54996");
        assert_int_equal(scanner_socket_events(s), 0);
        assert_non_null(scanner_pending_complete(s));
        assert_int_equal(scanner_refresh(s, true, &t, &st), 0);
        assert_false(st.complete);
        assert_null(find_cluster(&t, fc.pm));
        tree_free(&t);
        assert_non_null(scanner_pending_complete(s)); /* still wanted */

        /* the bound passed: the next refresh discovers completely and finds the postmaster */
        scanner_set_complete_min_interval(s, 1);
        assert_int_equal(scanner_socket_events(s), 1);
        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        assert_true(st.full);
        assert_true(st.complete);
        assert_non_null(strstr(st.full_reason, "PostgreSQL socket .s.PGSQL."));
        const PgCluster *c = find_cluster(&t, fc.pm);
        assert_non_null(c);
        assert_string_equal(c->data_directory, fc.data);
        tree_free(&t);
        assert_null(scanner_pending_complete(s));

        scanner_free(s);
        close(gate[0]);
        close(gate[1]);
        assert_int_equal(fake_release_children(&fc), 0);
        assert_int_equal(fake_wait_children(&fc, 2), 0);
        fake_cluster_stop(&fc, NULL, 0);
}

/* An old process that exec'd a postmaster which forked its children is found by the next
 * incremental discovery (the parent of PostgreSQL processes is read), and its children are its
 * members, not orphans of an unknown parent. */
static void test_old_postmaster_with_children(void **state) {
        int gate[2];
        assert_int_equal(pipe(gate), 0);
        FakeCluster fc = { .gate_fd = gate[0] };
        assert_int_equal(fake_cluster_start(&fc, 54995), 0);
        Scanner *s;
        assert_int_equal(scanner_new(&s), 0);
        scanner_set_recheck(s, 3600 * 1000000ULL, 0);
        scanner_set_complete_min_interval(s, 3600 * 1000000ULL);
        PgTree t;
        ScanStats st;
        assert_int_equal(scanner_refresh(s, false, &t, &st), 0);
        assert_true(st.complete);
        assert_null(find_cluster(&t, fc.pm));
        tree_free(&t);
        assert_int_equal(write(gate[1], "x", 1), 1);
        assert_int_equal(fake_wait_children(&fc, 2), 0);
        assert_int_equal(scanner_refresh(s, true, &t, &st), 0);
        assert_true(st.full);
        assert_false(st.complete);
        const PgCluster *c = find_cluster(&t, fc.pm);
        assert_non_null(c);
        assert_int_equal(members(&t, c), 3);
        pid_t kids[8];
        int n = fake_children(fc.pm, kids, 8);
        assert_int_equal(n, 2);
        for (int i = 0; i < n; i++) {
                int k = tree_find(&t, kids[i]);
                assert_true(k >= 0);
                assert_false(pg_process_is_orphan(&t.procs[k]));
        }
        tree_free(&t);
        scanner_free(s);
        close(gate[0]);
        close(gate[1]);
        fake_cluster_stop(&fc, NULL, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_discover_refresh_orphan),
                cmocka_unit_test(test_skipped_processes_leave_when_they_exit),
                cmocka_unit_test(test_socket_trigger),
                cmocka_unit_test(test_old_postmaster_with_children),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
