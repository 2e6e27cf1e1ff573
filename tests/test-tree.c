/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "join.h"
#include "scanner.h"
#include "tree.h"

#define REC(p, pp, st, cm, ti) { .pid = (p), .ppid = (pp), .state = (st), .comm = cm, .title = (char *) (ti), .start_ticks = 1000 + (p) }

/* Two clusters, parallel workers, an orphan under a subreaper (systemd --user, pid 900), a
 * zombie, a child whose comm is not postgres, and an unrelated "postgres" whose parent is not. */
static const ProcRecord host[] = {
        REC(1, 0, 'S', "systemd", "/sbin/init"),
        REC(900, 1, 'S', "systemd", "/lib/systemd/systemd --user"),
        /* cluster A: /usr/lib/postgresql/15/bin/postgres -D /srv/a */
        REC(1000, 1, 'S', "postgres", "/usr/lib/postgresql/15/bin/postgres -D /srv/a"),
        REC(1001, 1000, 'S', "postgres", "postgres: lab15: checkpointer "),
        REC(1002, 1000, 'S', "postgres", "postgres: lab15: background writer "),
        REC(1003, 1000, 'S', "postgres", "postgres: lab15: walwriter "),
        REC(1010, 1000, 'R', "postgres", "postgres: lab15: alice shop [local] SELECT"),
        REC(1011, 1000, 'R', "postgres", "postgres: lab15: parallel worker for PID 1010 "),
        REC(1012, 1000, 'R', "postgres", "postgres: lab15: parallel worker for PID 1010 "),
        REC(1013, 1000, 'S', "postgres", "postgres: lab15: parallel worker for PID 1099 "), /* leader gone */
        REC(1014, 1000, 'Z', "postgres", NULL),                                          /* zombie child */
        REC(1015, 1000, 'S', "sh", "sh -c cp pg_wal/x /archive"),                        /* odd child */
        REC(1016, 1015, 'S', "cp", "cp pg_wal/x /archive"),                              /* grandchild, not PG */
        /* cluster B, started by a shell: no cluster_name */
        REC(2000, 1999, 'S', "postmaster", "/usr/local/pgsql/bin/postmaster -D /srv/b"),
        REC(1999, 1, 'S', "bash", "bash"),
        REC(2001, 2000, 'S', "postgres", "postgres: checkpointer "),
        REC(2002, 2000, 'S', "postgres", "postgres: bob my db 10.0.0.7(5555) idle in transaction"),
        /* the orphan: its postmaster died; re-parented to the subreaper */
        REC(3005, 900, 'R', "postgres", "postgres: carol shop 10.0.0.9(4444) SELECT"),
        /* a zombie postmaster is not a postmaster */
        REC(4000, 1, 'Z', "postgres", NULL),
        /* not PostgreSQL at all, though a child of nothing we know */
        REC(5000, 1, 'S', "sleep", "sleep 100"),
        /* "postgres" the shell user typed, titled as its command line, under bash: a postmaster */
};

static void test_two_clusters(void **state) {
        PgTree t;
        assert_int_equal(tree_build(host, sizeof host / sizeof host[0], &t), 0);
        assert_int_equal(t.n_clusters, 2);

        /* clusters in postmaster pid order */
        const PgCluster *a = &t.clusters[0], *b = &t.clusters[1];
        assert_int_equal(t.procs[a->postmaster].rec.pid, 1000);
        assert_int_equal(t.procs[b->postmaster].rec.pid, 2000);
        assert_true(a->cluster_name_known);
        assert_string_equal(a->cluster_name, "lab15");
        assert_string_equal(a->name, "lab15");
        assert_true(b->cluster_name_known);
        assert_string_equal(b->cluster_name, "");
        assert_string_equal(b->name, "pid 2000"); /* nothing else known without /proc */

        /* membership */
        pid_t in_a[] = { 1000, 1001, 1002, 1003, 1010, 1011, 1012, 1013, 1015 };
        for (size_t i = 0; i < sizeof in_a / sizeof in_a[0]; i++) {
                int k = tree_find(&t, in_a[i]);
                assert_true(k >= 0);
                assert_int_equal(t.procs[k].cluster, 0);
        }
        assert_int_equal(t.procs[tree_find(&t, 2002)].cluster, 1);
        assert_int_equal(t.procs[tree_find(&t, 2000)].title.backend_type, BACKEND_POSTMASTER);
        /* the zombie child, the zombie postmaster, the non-PG grandchild and strangers are out */
        assert_int_equal(tree_find(&t, 1014), -1);
        assert_int_equal(tree_find(&t, 4000), -1);
        assert_int_equal(tree_find(&t, 1016), -1);
        assert_int_equal(tree_find(&t, 5000), -1);
        assert_int_equal(tree_find(&t, 1), -1);
        assert_int_equal(tree_find(&t, 1999), -1);
        assert_int_equal(t.n_dead, 2);

        /* the odd child is listed, typed unknown */
        assert_int_equal(t.procs[tree_find(&t, 1015)].title.backend_type, BACKEND_UNKNOWN);
        assert_int_equal(t.procs[tree_find(&t, 1015)].depth, 1);

        /* titles parsed with the cluster's name */
        const PgProcess *alice = &t.procs[tree_find(&t, 1010)];
        assert_int_equal(alice->title.backend_type, BACKEND_CLIENT);
        assert_string_equal(alice->title.user, "alice");
        assert_string_equal(alice->title.database, "shop");
        const PgProcess *bob = &t.procs[tree_find(&t, 2002)];
        assert_string_equal(bob->title.user, "bob");
        assert_string_equal(bob->title.database, "my db");
        assert_string_equal(bob->title.state, "idle in transaction");
        tree_free(&t);
}

static void test_parallel_workers(void **state) {
        PgTree t;
        assert_int_equal(tree_build(host, sizeof host / sizeof host[0], &t), 0);
        int leader = tree_find(&t, 1010);
        for (pid_t w = 1011; w <= 1012; w++) {
                const PgProcess *p = &t.procs[tree_find(&t, w)];
                assert_int_equal(p->title.backend_type, BACKEND_PARALLEL_WORKER);
                assert_int_equal(p->leader, leader);
                assert_false(p->leader_missing);
                assert_string_equal(p->title.user, "alice"); /* the leader's */
        }
        const PgProcess *lost = &t.procs[tree_find(&t, 1013)];
        assert_true(lost->leader_missing);
        assert_int_equal(lost->leader, -1);
        tree_free(&t);
}

static void test_orphan_under_subreaper(void **state) {
        PgTree t;
        assert_int_equal(tree_build(host, sizeof host / sizeof host[0], &t), 0);
        int k = tree_find(&t, 3005);
        assert_true(k >= 0);
        const PgProcess *o = &t.procs[k];
        assert_true(pg_process_is_orphan(o));
        assert_int_equal(o->rec.ppid, 900);
        assert_int_equal(o->title.backend_type, BACKEND_CLIENT);
        assert_string_equal(o->title.user, "carol");
        /* orphans come after every cluster's processes */
        for (size_t i = (size_t) k; i < t.n_procs; i++)
                assert_true(pg_process_is_orphan(&t.procs[i]));
        tree_free(&t);
}

/* An orphan re-parented to PID 1 is an orphan just the same; a backend whose postmaster is alive
 * is not, however deep; a postgres started by a postmaster's child is part of that cluster. */
static void test_orphans_anywhere(void **state) {
        const ProcRecord recs[] = {
                REC(10, 1, 'S', "postgres", "postgres: a b [local] idle"),
                REC(20, 1, 'S', "postgres", "postgres -D /x"),
                REC(21, 20, 'S', "postgres", "postgres: archiver "),
                REC(22, 21, 'S', "sh", "sh -c archive"),
                REC(23, 22, 'S', "postgres", "postgres: stray child title"),
                REC(30, 1, 'D', "postgres", "postgres: parallel worker for PID 99 "),
        };
        PgTree t;
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &t), 0);
        assert_int_equal(t.n_clusters, 1);
        assert_true(pg_process_is_orphan(&t.procs[tree_find(&t, 10)]));
        assert_true(pg_process_is_orphan(&t.procs[tree_find(&t, 30)]));
        assert_true(t.procs[tree_find(&t, 30)].leader_missing);
        int s = tree_find(&t, 23);
        assert_true(s >= 0);
        assert_int_equal(t.procs[s].cluster, 0);
        assert_int_equal(t.procs[s].depth, 3);
        assert_int_equal(tree_find(&t, 22), -1);
        tree_free(&t);
}

/* Only a postgres whose parent is not a postmaster is one: a postmaster-titled child of a
 * postmaster (exec'd by it) is that cluster's child. */
static void test_postmaster_under_postmaster(void **state) {
        const ProcRecord recs[] = {
                REC(50, 1, 'S', "postgres", "/usr/bin/postgres -D /a"),
                REC(51, 50, 'S', "postgres", "/usr/bin/postgres --describe-config"),
        };
        PgTree t;
        assert_int_equal(tree_build(recs, 2, &t), 0);
        assert_int_equal(t.n_clusters, 1);
        assert_int_equal(t.procs[tree_find(&t, 51)].cluster, 0);
        assert_int_equal(t.procs[tree_find(&t, 51)].title.backend_type, BACKEND_UNKNOWN);
        assert_int_equal(t.procs[tree_find(&t, 50)].title.backend_type, BACKEND_POSTMASTER);
        tree_free(&t);
}

static void test_empty_and_none(void **state) {
        PgTree t;
        assert_int_equal(tree_build(NULL, 0, &t), 0);
        assert_int_equal(t.n_procs, 0);
        tree_free(&t);
        assert_int_equal(tree_build(NULL, 3, &t), -EINVAL);
        const ProcRecord recs[] = { REC(5000, 1, 'S', "sleep", "sleep 100"), REC(6, 1, 'S', "postgres", NULL) };
        assert_int_equal(tree_build(recs, 2, &t), 0);
        assert_int_equal(t.n_clusters, 0);
        assert_int_equal(t.n_procs, 0);
        tree_free(&t);
}

static void test_pmfile(void **state) {
        const char *v15 = "1000\n/srv/a\n1700000000\n5433\n/var/run/postgresql\n127.0.0.1\n  5433001     32768\nready   \n";
        PmFile f;
        assert_int_equal(pmfile_parse(v15, strlen(v15), &f), 0);
        assert_int_equal(f.pid, 1000);
        assert_string_equal(f.data_directory, "/srv/a");
        assert_int_equal(f.start_time, 1700000000);
        assert_int_equal(f.port, 5433);
        assert_string_equal(f.socket_dir, "/var/run/postgresql");
        assert_string_equal(f.listen_addr, "127.0.0.1");
        assert_string_equal(f.status, "ready");

        const char *v96 = "77\n/srv/old\n1500000000\n5432\n/tmp\n*\n  5432001   0\n";
        assert_int_equal(pmfile_parse(v96, strlen(v96), &f), 0);
        assert_string_equal(f.status, "");
        assert_string_equal(f.listen_addr, "*");

        const char *single = "-88\n/srv/a\n";
        assert_int_equal(pmfile_parse(single, strlen(single), &f), 0);
        assert_int_equal(f.pid, -88);
        assert_int_equal(f.port, 0);

        const char *bad[] = { "", "abc\n/srv\n", "0\n/srv\n", "12\nrelative\n", "12\n", "99999999999\n/x\n" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                if (pmfile_parse(bad[i], strlen(bad[i]), &f) != -EINVAL)
                        fail_msg("accepted bad postmaster.pid «%s»", bad[i]);
        const char *bad_port = "12\n/x\n1\n99999\n";
        assert_int_equal(pmfile_parse(bad_port, strlen(bad_port), &f), 0);
        assert_int_equal(f.port, 0);
}

static void test_derive_name(void **state) {
        PgCluster c = {};
        cluster_derive_name(&c, 42);
        assert_string_equal(c.name, "pid 42");
        c.pmfile_valid = true;
        c.pmfile.port = 5432;
        cluster_derive_name(&c, 42);
        assert_string_equal(c.name, "port 5432");
        strcpy(c.data_directory, "/srv/a");
        cluster_derive_name(&c, 42);
        assert_string_equal(c.name, "/srv/a");
        c.cluster_name_known = true;
        strcpy(c.cluster_name, "main");
        cluster_derive_name(&c, 42);
        assert_string_equal(c.name, "main");
}

/* Without pg_stat_activity, a process is named as its server's version names it, and the name
 * does not depend on whether the connection is up. */
static void test_types_by_server_version(void **state) {
        static const ProcRecord v16[] = {
                REC(100, 1, 'S', "postgres", "/opt/pg16/bin/postgres -D /srv/16"),
                REC(101, 100, 'S', "postgres", "postgres: s16: logical replication apply worker for subscription 16394 "),
                REC(102, 100, 'S', "postgres", "postgres: s16: logical replication launcher "),
                REC(103, 100, 'S', "postgres", "postgres: s16: checkpointer "),
        };
        PgTree t;
        assert_int_equal(tree_build(v16, 4, &t), 0);
        assert_string_equal(proc_backend_type(&t.procs[1]), "logical replication apply worker"); /* unknown version */
        tree_set_server_major(&t, 0, 16);
        assert_int_equal(t.clusters[0].server_major, 16);
        assert_string_equal(proc_backend_type(&t.procs[1]), "logical replication worker");
        assert_string_equal(proc_backend_type(&t.procs[2]), "logical replication launcher");
        tree_set_server_major(&t, 0, 17);
        assert_string_equal(proc_backend_type(&t.procs[1]), "logical replication apply worker");
        tree_free(&t);

        static const ProcRecord v10[] = {
                REC(200, 1, 'S', "postgres", "/opt/pg10/bin/postgres -D /srv/10"),
                REC(201, 200, 'R', "postgres", "postgres: alice shop [local] SELECT"),
                REC(202, 200, 'R', "postgres", "postgres: bgworker: parallel worker for PID 201   "),
                REC(203, 200, 'S', "postgres", "postgres: bgworker: logical replication launcher   "),
        };
        assert_int_equal(tree_build(v10, 4, &t), 0);
        tree_set_server_major(&t, 0, 10);
        assert_string_equal(proc_backend_type(&t.procs[2]), "background worker");
        assert_string_equal(proc_backend_type(&t.procs[3]), "background worker");
        assert_int_equal(t.procs[2].leader, 1); /* still nested under its leader */
        assert_string_equal(proc_backend_type(&t.procs[1]), "client backend");
        tree_free(&t);
}

static void test_pg_version(void **state) {
        assert_int_equal(pg_version_parse("15\n", 3), 15);
        assert_int_equal(pg_version_parse("9.6\n", 4), 9);
        assert_int_equal(pg_version_parse("18", 2), 18);
        assert_int_equal(pg_version_parse("", 0), -EINVAL);
        assert_int_equal(pg_version_parse("x15\n", 4), -EINVAL);
        assert_int_equal(pg_version_parse("15\njunk", 8), -EINVAL);
        assert_int_equal(pg_version_parse("123456\n", 7), -EINVAL);
        assert_int_equal(pg_version_parse(NULL, 3), -EINVAL);

        char dir[] = "/tmp/pgtree-pgversion-XXXXXX", path[64];
        assert_non_null(mkdtemp(dir));
        assert_int_equal(pg_version_read(dir), -ENOENT);
        snprintf(path, sizeof path, "%s/PG_VERSION", dir);
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs("17\n", f);
        fclose(f);
        assert_int_equal(pg_version_read(dir), 17);
        assert_int_equal(pg_version_read("relative"), -EINVAL);
        unlink(path);
        rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_two_clusters),
                cmocka_unit_test(test_parallel_workers),
                cmocka_unit_test(test_orphan_under_subreaper),
                cmocka_unit_test(test_orphans_anywhere),
                cmocka_unit_test(test_postmaster_under_postmaster),
                cmocka_unit_test(test_empty_and_none),
                cmocka_unit_test(test_pmfile),
                cmocka_unit_test(test_derive_name),
                cmocka_unit_test(test_types_by_server_version),
                cmocka_unit_test(test_pg_version),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
