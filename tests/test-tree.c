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

/* Identity facts as the scanner reads them: a real PostgreSQL process of uid 105 in a data
 * directory of its own, running /usr/lib/postgresql/15/bin/postgres (dev 8, inode 77). */
#define PG_IDENT(u) { .ids_valid = true, .ruid = (u), .euid = (u), .exe_valid = true, .exe_trusted = true, \
                      .exe_dev = 8, .exe_ino = 77, .dir_valid = true, .dir_pg = true, .dir_uid = (u) }
#define IREC(p, pp, cm, ti, id) { .pid = (p), .ppid = (pp), .state = 'S', .comm = cm, .title = (char *) (ti), \
                                  .start_ticks = 1000 + (p), .uid = (id).euid, .ident = id }

static const PgLookalike *lookalike(const PgTree *t, pid_t pid) {
        for (size_t i = 0; i < t->n_lookalikes; i++)
                if (t->lookalikes[i].rec.pid == pid)
                        return &t->lookalikes[i];
        return NULL;
}

static void test_identity_orphans(void **state) {
        ProcIdentity pg = PG_IDENT(105);
        /* a symlink named postgres to another program, run by alice (uid 1000) in her own dir */
        ProcIdentity alice = { .ids_valid = true, .ruid = 1000, .euid = 1000, .exe_valid = true, .exe_dev = 8,
                               .exe_ino = 12, .dir_valid = true, .dir_pg = false, .dir_uid = 1000 };
        /* a setuid-root program run by alice */
        ProcIdentity setuid = { .ids_valid = true, .ruid = 1000, .euid = 0, .exe_valid = true, .exe_dev = 8,
                                .exe_ino = 13, .dir_valid = true, .dir_pg = false, .dir_uid = 1000 };
        /* root running something titled like a backend */
        ProcIdentity root = { .ids_valid = true, .ruid = 0, .euid = 0, .exe_valid = true, .exe_trusted = true,
                              .exe_dev = 8, .exe_ino = 77, .dir_valid = true, .dir_pg = true, .dir_uid = 0 };
        /* the postgres binary, run by alice inside postgres's data directory (she cannot, but say so) */
        ProcIdentity other_uid = PG_IDENT(1000);
        other_uid.dir_uid = 105;
        /* alice's own program with PG_VERSION in her own directory: not a PostgreSQL binary */
        ProcIdentity own_prog = { .ids_valid = true, .ruid = 1000, .euid = 1000, .exe_valid = true, .exe_dev = 8,
                                  .exe_ino = 14, .dir_valid = true, .dir_pg = true, .dir_uid = 1000 };
        /* pgtree unprivileged: exe and cwd unreadable */
        ProcIdentity unreadable = { .ids_valid = true, .ruid = 105, .euid = 105, .exe_error = EACCES, .dir_error = EACCES };
        const ProcRecord recs[] = {
                REC(1, 0, 'S', "systemd", "/sbin/init"),
                IREC(10, 1, "postgres", "postgres: carol shop [local] SELECT", pg),
                IREC(11, 1, "postgres", "postgres: alice shop [local] idle", alice),
                IREC(12, 1, "postgres", "postgres: alice shop [local] idle", setuid),
                IREC(13, 1, "postgres", "postgres: alice shop [local] idle", root),
                IREC(14, 1, "postgres", "postgres: alice shop [local] idle", other_uid),
                IREC(15, 1, "postgres", "postgres: alice shop [local] idle", own_prog),
                IREC(16, 1, "postgres", "postgres: carol shop [local] idle", unreadable),
        };
        PgTree t;
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &t), 0);
        assert_int_equal(t.n_clusters, 0);
        int k = tree_find(&t, 10);
        assert_true(k >= 0 && pg_process_is_orphan(&t.procs[k]));
        assert_int_equal(t.procs[k].identity, PG_IDENTITY_VERIFIED);
        assert_string_equal(t.procs[k].identity_why, "");
        k = tree_find(&t, 16);
        assert_true(k >= 0 && pg_process_is_orphan(&t.procs[k])); /* shown, but never signalled */
        assert_int_equal(t.procs[k].identity, PG_IDENTITY_UNVERIFIED);
        assert_non_null(strstr(t.procs[k].identity_why, "cannot read /proc/16/exe"));
        struct {
                pid_t pid;
                const char *why;
        } fakes[] = {
                { 11, "no PG_VERSION" },
                { 12, "real uid 1000 differs from its effective uid 0" },
                { 13, "runs as root" },
                { 14, "runs as uid 1000 but its data directory belongs to uid 105" },
                { 15, "not a PostgreSQL server binary" },
        };
        for (size_t i = 0; i < sizeof fakes / sizeof fakes[0]; i++) {
                assert_int_equal(tree_find(&t, fakes[i].pid), -1);
                const PgLookalike *l = lookalike(&t, fakes[i].pid);
                assert_non_null(l);
                if (!strstr(l->why, fakes[i].why))
                        fail_msg("pid %d: «%s» does not say «%s»", (int) fakes[i].pid, l->why, fakes[i].why);
                assert_non_null(l->rec.title);
        }
        assert_int_equal(t.n_lookalikes, 5);
        tree_free(&t);
}

static void test_identity_postmaster_and_children(void **state) {
        ProcIdentity pg = PG_IDENT(105), root = PG_IDENT(0);
        ProcIdentity sh = PG_IDENT(105); /* archive_command's shell: another program */
        sh.exe_trusted = false;
        sh.exe_ino = 99;
        ProcIdentity sudo = PG_IDENT(105); /* a setuid program run from COPY … PROGRAM */
        sudo.euid = 0;
        ProcIdentity other = PG_IDENT(106);
        ProcIdentity self_built = PG_IDENT(105); /* a copy of the server binary */
        self_built.exe_ino = 78;
        ProcIdentity unreadable = PG_IDENT(105);
        unreadable.exe_valid = false;
        unreadable.exe_error = EACCES;
        const ProcRecord recs[] = {
                REC(1, 0, 'S', "systemd", "/sbin/init"),
                IREC(100, 1, "postgres", "/usr/lib/postgresql/15/bin/postgres -D /srv/a", pg),
                IREC(101, 100, "postgres", "postgres: checkpointer ", pg),
                IREC(102, 100, "postgres", "postgres: alice shop [local] idle", pg),
                IREC(103, 100, "sh", "sh -c cp x y", sh),
                IREC(104, 100, "postgres", "postgres: alice shop [local] idle", sudo),
                IREC(105, 100, "postgres", "postgres: alice shop [local] idle", other),
                IREC(106, 100, "postgres", "postgres: alice shop [local] idle", self_built),
                IREC(107, 100, "postgres", "postgres: alice shop [local] idle", unreadable),
                /* root's "postmaster": PostgreSQL refuses to run as root */
                IREC(200, 1, "postgres", "/usr/lib/postgresql/15/bin/postgres -D /srv/b", root),
                IREC(201, 200, "postgres", "postgres: bob shop [local] idle", root),
        };
        PgTree t;
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &t), 0);
        assert_int_equal(t.n_clusters, 1);
        assert_int_equal(t.procs[t.clusters[0].postmaster].rec.pid, 100);
        assert_int_equal(t.procs[t.clusters[0].postmaster].identity, PG_IDENTITY_VERIFIED);
        assert_int_equal(t.procs[tree_find(&t, 101)].identity, PG_IDENTITY_VERIFIED);
        assert_int_equal(t.procs[tree_find(&t, 102)].identity, PG_IDENTITY_VERIFIED);
        assert_int_equal(t.procs[tree_find(&t, 102)].title.backend_type, BACKEND_CLIENT);
        assert_int_equal(t.procs[tree_find(&t, 106)].identity, PG_IDENTITY_VERIFIED); /* a server binary too */
        int k = tree_find(&t, 103);
        assert_int_equal(t.procs[k].identity, PG_IDENTITY_FOREIGN);
        assert_non_null(strstr(t.procs[k].identity_why, "another program than its postmaster"));
        k = tree_find(&t, 104);
        assert_int_equal(t.procs[k].identity, PG_IDENTITY_FOREIGN);
        assert_int_equal(t.procs[k].title.backend_type, BACKEND_UNKNOWN); /* whatever its title says */
        k = tree_find(&t, 105);
        assert_int_equal(t.procs[k].identity, PG_IDENTITY_FOREIGN);
        assert_non_null(strstr(t.procs[k].identity_why, "uid 106, not as its postmaster's uid 105"));
        k = tree_find(&t, 107);
        assert_int_equal(t.procs[k].identity, PG_IDENTITY_UNVERIFIED);
        /* root's process is no postmaster, and its "backend" no orphan */
        assert_int_equal(tree_find(&t, 200), -1);
        assert_int_equal(tree_find(&t, 201), -1);
        assert_non_null(strstr(lookalike(&t, 200)->why, "runs as root"));
        assert_non_null(strstr(lookalike(&t, 201)->why, "runs as root"));
        tree_free(&t);

        /* a tree from records without facts (no /proc): the same shape, nothing verified */
        assert_int_equal(tree_build(host, sizeof host / sizeof host[0], &t), 0);
        for (size_t i = 0; i < t.n_procs; i++)
                assert_int_equal(t.procs[i].identity, PG_IDENTITY_UNVERIFIED);
        assert_int_equal(t.n_lookalikes, 0);
        tree_free(&t);
}

static void test_pmfile_matches(void **state) {
        PmFile f = { .pid = 1234, .start_time = 1700000000 };
        char why[256] = "";
        assert_true(pmfile_matches(&f, 1234, 1699999999.6, why, sizeof why));
        assert_true(pmfile_matches(&f, 1234, 0, why, sizeof why)); /* no clock: the pid decides */
        assert_false(pmfile_matches(&f, 4321, 1699999999.6, why, sizeof why));
        assert_string_equal(why, "postmaster.pid belongs to pid 1234");
        /* the same pid, but the file of an earlier postmaster (pid reused after a crash) */
        assert_false(pmfile_matches(&f, 1234, 1700000100.0, why, sizeof why));
        assert_non_null(strstr(why, "earlier pid 1234"));
        f.start_time = 0; /* still being written */
        assert_false(pmfile_matches(&f, 1234, 1700000000.0, why, sizeof why));
        assert_string_equal(why, "postmaster.pid has no start time yet");
        f.pid = -1234;
        assert_false(pmfile_matches(&f, 1234, 0, why, sizeof why));
        assert_non_null(strstr(why, "single-user"));
}

static void test_unique_names(void **state) {
        PgProcess procs[4] = {};
        for (int i = 0; i < 4; i++)
                procs[i].rec.pid = 100 + i;
        PgCluster c[4] = {};
        for (int i = 0; i < 4; i++) {
                c[i].postmaster = (size_t) i;
                c[i].cluster_name_known = i < 3;
                strcpy(c[i].cluster_name, i < 3 ? "main" : "");
                snprintf(c[i].data_directory, sizeof c[i].data_directory, "/var/lib/postgresql/1%d/main", i);
                c[i].pmfile_valid = i != 1;
                c[i].pmfile.port = 5432 + i;
                cluster_derive_name(&c[i], 100 + i);
        }
        strcpy(c[3].cluster_name, "");
        c[3].cluster_name_known = false;
        strcpy(c[3].data_directory, "/srv/other");
        cluster_derive_name(&c[3], 103);
        PgTree t = { .procs = procs, .n_procs = 4, .clusters = c, .n_clusters = 4 };
        tree_unique_names(&t);
        assert_string_equal(c[0].name, "main:5432");
        assert_string_equal(c[1].name, "main:/var/lib/postgresql/11/main"); /* no valid postmaster.pid */
        assert_string_equal(c[2].name, "main:5434");
        assert_string_equal(c[3].name, "/srv/other"); /* unique: unchanged */
        assert_false(c[3].name_shared);
        /* the same port twice (containers): the data directory decides */
        c[0].pmfile.port = c[2].pmfile.port = 5432;
        for (int i = 0; i < 3; i++)
                cluster_derive_name(&c[i], 100 + i);
        tree_unique_names(&t);
        assert_string_equal(c[0].name, "main:/var/lib/postgresql/10/main");
        assert_string_equal(c[2].name, "main:/var/lib/postgresql/12/main");
        /* one "main" alone stays "main" */
        t.n_clusters = 1;
        cluster_derive_name(&c[0], 100);
        tree_unique_names(&t);
        assert_string_equal(c[0].name, "main");
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
                cmocka_unit_test(test_identity_orphans),
                cmocka_unit_test(test_identity_postmaster_and_children),
                cmocka_unit_test(test_pmfile_matches),
                cmocka_unit_test(test_unique_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
