/* SPDX-License-Identifier: MIT */
/* A corpus of PostgreSQL 9.6–19 process titles (reference data: tests/data/TITLES.md; 12–18 as
 * seen on real servers in tests/integration/test_versions.py, 19 from its sources) and what they
 * must parse to. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "title.h"

#define HINT_GUESS ((const char *) 1) /* pass NULL: let the parser guess */

typedef struct Case {
        const char *title;
        const char *hint;       /* HINT_GUESS, "" (no cluster_name) or the known name */
        BackendType type;
        const char *cluster;
        const char *user;
        const char *database;
        const char *client;
        const char *status;
        const char *state;
        pid_t leader;
        unsigned flags;         /* flags that must be set */
        const char *worker;
} Case;

#define G HINT_GUESS
static const Case corpus[] = {
        /* --- client backends, 13–17, no cluster_name */
        { "postgres: alice shop 10.0.0.5(50156) SELECT", G, BACKEND_CLIENT, "", "alice", "shop", "10.0.0.5:50156", "SELECT", "active" },
        { "postgres: alice shop 10.0.0.5(50156) idle", G, BACKEND_CLIENT, "", "alice", "shop", "10.0.0.5:50156", "idle", "idle" },
        { "postgres: alice shop [local] idle", G, BACKEND_CLIENT, "", "alice", "shop", "local", "idle", "idle" },
        { "postgres: alice shop [local] idle in transaction", G, BACKEND_CLIENT, "", "alice", "shop", "local", "idle in transaction", "idle in transaction" },
        { "postgres: alice shop [local] idle in transaction (aborted)", G, BACKEND_CLIENT, "", "alice", "shop", "local", "idle in transaction (aborted)", "idle in transaction (aborted)" },
        { "postgres: alice shop [local] <FASTPATH>", G, BACKEND_CLIENT, "", "alice", "shop", "local", "<FASTPATH>", "fastpath function call" },
        { "postgres: alice shop [local] UPDATE waiting", G, BACKEND_CLIENT, "", "alice", "shop", "local", "UPDATE", "active", 0, TITLE_WAITING },
        { "postgres: alice shop [local] LOCK TABLE waiting", G, BACKEND_CLIENT, "", "alice", "shop", "local", "LOCK TABLE", "active", 0, TITLE_WAITING },
        { "postgres: alice shop [local] INSERT", G, BACKEND_CLIENT, "", "alice", "shop", "local", "INSERT", "active" },
        { "postgres: alice shop [local] DELETE", G, BACKEND_CLIENT, "", "alice", "shop", "local", "DELETE", "active" },
        { "postgres: alice shop [local] COPY", G, BACKEND_CLIENT, "", "alice", "shop", "local", "COPY", "active" },
        { "postgres: alice shop [local] VACUUM", G, BACKEND_CLIENT, "", "alice", "shop", "local", "VACUUM", "active" },
        { "postgres: alice shop [local] CREATE INDEX", G, BACKEND_CLIENT, "", "alice", "shop", "local", "CREATE INDEX", "active" },
        { "postgres: alice shop [local] CALL", G, BACKEND_CLIENT, "", "alice", "shop", "local", "CALL", "active" },
        { "postgres: alice shop 10.0.0.5(50156) initializing", G, BACKEND_CLIENT, "", "alice", "shop", "10.0.0.5:50156", "initializing", "" },
        { "postgres: alice shop 10.0.0.5(50156) authentication", G, BACKEND_CLIENT, "", "alice", "shop", "10.0.0.5:50156", "authentication", "" },
        { "postgres: alice shop 10.0.0.5(50156) startup", G, BACKEND_CLIENT, "", "alice", "shop", "10.0.0.5:50156", "startup", "" },
        { "postgres: alice shop ::1(41000) idle", G, BACKEND_CLIENT, "", "alice", "shop", "[::1]:41000", "idle", "idle" },
        { "postgres: alice shop 2001:db8::17(5433) SELECT", G, BACKEND_CLIENT, "", "alice", "shop", "[2001:db8::17]:5433", "SELECT", "active" },
        { "postgres: alice shop fe80::1%eth0(5433) idle", G, BACKEND_CLIENT, "", "alice", "shop", "[fe80::1%eth0]:5433", "idle", "idle" },
        { "postgres: alice shop client.example.com(60001) idle", G, BACKEND_CLIENT, "", "alice", "shop", "client.example.com:60001", "idle", "idle" },
        /* update_process_title=off: fixed part only */
        { "postgres: alice shop 10.0.0.5(50156)", G, BACKEND_CLIENT, "", "alice", "shop", "10.0.0.5:50156", "", "", 0, TITLE_NO_STATUS },
        { "postgres: alice shop [local]", G, BACKEND_CLIENT, "", "alice", "shop", "local", "", "", 0, TITLE_NO_STATUS },
        /* --- with cluster_name */
        { "postgres: lab15: alice shop 127.0.0.1(46900) idle", G, BACKEND_CLIENT, "lab15", "alice", "shop", "127.0.0.1:46900", "idle", "idle" },
        { "postgres: lab15: alice shop [local] SELECT", G, BACKEND_CLIENT, "lab15", "alice", "shop", "local", "SELECT", "active" },
        { "postgres: lab15: alice shop [local] UPDATE waiting", G, BACKEND_CLIENT, "lab15", "alice", "shop", "local", "UPDATE", "active", 0, TITLE_WAITING },
        { "postgres: 15/main: alice shop [local] idle", G, BACKEND_CLIENT, "15/main", "alice", "shop", "local", "idle", "idle" },
        { "postgres: 15/main: alice shop [local] idle", "15/main", BACKEND_CLIENT, "15/main", "alice", "shop", "local", "idle", "idle" },
        { "postgres: my cluster: alice shop [local] idle", "my cluster", BACKEND_CLIENT, "my cluster", "alice", "shop", "local", "idle", "idle" },
        { "postgres: a: b: alice shop [local] idle", "a: b", BACKEND_CLIENT, "a: b", "alice", "shop", "local", "idle", "idle" },
        { "postgres: lab15: alice shop [local] idle", "", BACKEND_CLIENT, "", "lab15:", "alice shop", "local", "idle", "idle", 0, TITLE_NAMES_AMBIGUOUS },
        /* names with spaces: the split is ambiguous and flagged */
        { "postgres: alice my shop [local] idle", G, BACKEND_CLIENT, "", "alice", "my shop", "local", "idle", "idle", 0, TITLE_NAMES_AMBIGUOUS },
        { "postgres: lab15: alice my shop 10.1.1.1(5000) SELECT", "lab15", BACKEND_CLIENT, "lab15", "alice", "my shop", "10.1.1.1:5000", "SELECT", "active", 0, TITLE_NAMES_AMBIGUOUS },
        /* names that look like other things */
        { "postgres: checkpointer shop [local] idle", G, BACKEND_CLIENT, "", "checkpointer", "shop", "local", "idle", "idle" },
        { "postgres: startup shop [local] idle", G, BACKEND_CLIENT, "", "startup", "shop", "local", "idle", "idle" },
        { "postgres: lab15: archiver shop [local] idle", "lab15", BACKEND_CLIENT, "lab15", "archiver", "shop", "local", "idle", "idle" },
        { "postgres: alice sh(op) [local] idle", G, BACKEND_CLIENT, "", "alice", "sh(op)", "local", "idle", "idle" },
        { "postgres: alice [local] [local] idle", G, BACKEND_CLIENT, "", "alice", "[local]", "local", "idle", "idle" },
        /* NUL padding and trailing spaces */
        { "postgres: alice shop [local] idle\0\0\0\0\0\0", G, BACKEND_CLIENT, "", "alice", "shop", "local", "idle", "idle" },
        { "postgres: alice shop [local] idle      ", G, BACKEND_CLIENT, "", "alice", "shop", "local", "idle", "idle" },
        /* truncated titles */
        { "postgres: alice shop 10.0.0.5(501", G, BACKEND_CLIENT, "", "alice", "shop", "", "", "", 0, TITLE_TRUNCATED },
        { "postgres: alice shop 10.0.0.5(", G, BACKEND_CLIENT, "", "alice", "shop", "", "", "", 0, TITLE_TRUNCATED },
        { "postgres: alice shop [loc", G, BACKEND_CLIENT, "", "alice", "shop", "", "", "", 0, TITLE_TRUNCATED },
        { "postgres: alice shop [local] idle in tra", G, BACKEND_CLIENT, "", "alice", "shop", "local", "idle in tra", "", 0, TITLE_TRUNCATED },
        { "postgres: alice shop [local] authentic", G, BACKEND_CLIENT, "", "alice", "shop", "local", "authentic", "", 0, TITLE_TRUNCATED },

        /* --- walsenders */
        { "postgres: lab15: walsender postgres 127.0.0.1(46912) streaming 0/9391C38", G, BACKEND_WALSENDER, "lab15", "postgres", "", "127.0.0.1:46912", "streaming 0/9391C38", "active" },
        { "postgres: walsender repl 10.0.0.9(40000) idle", G, BACKEND_WALSENDER, "", "repl", "", "10.0.0.9:40000", "idle", "idle" },
        { "postgres: walsender repl shop 10.0.0.9(40000) START_REPLICATION", G, BACKEND_WALSENDER, "", "repl", "shop", "10.0.0.9:40000", "START_REPLICATION", "active" },
        { "postgres: walsender repl [local] idle", G, BACKEND_WALSENDER, "", "repl", "", "local", "idle", "idle" },
        { "postgres: wal sender process repl 10.0.0.9(40000) streaming 0/3000060", G, BACKEND_WALSENDER, "", "repl", "", "10.0.0.9:40000", "streaming 0/3000060", "active" },
        { "postgres: main: wal sender process repl 10.0.0.9(40000) idle", G, BACKEND_WALSENDER, "main", "repl", "", "10.0.0.9:40000", "idle", "idle" },

        /* --- auxiliaries, 13–17 (trailing space) */
        { "postgres: checkpointer ", G, BACKEND_CHECKPOINTER, "" },
        { "postgres: lab15: checkpointer ", G, BACKEND_CHECKPOINTER, "lab15" },
        { "postgres: background writer ", G, BACKEND_BACKGROUND_WRITER, "" },
        { "postgres: lab15: background writer ", G, BACKEND_BACKGROUND_WRITER, "lab15" },
        { "postgres: walwriter ", G, BACKEND_WALWRITER, "" },
        { "postgres: 15/main: walwriter ", G, BACKEND_WALWRITER, "15/main" },
        { "postgres: autovacuum launcher ", G, BACKEND_AUTOVACUUM_LAUNCHER, "" },
        { "postgres: lab15: autovacuum worker shop", G, BACKEND_AUTOVACUUM_WORKER, "lab15", "", "shop", .worker = "shop" },
        { "postgres: autovacuum worker template1", G, BACKEND_AUTOVACUUM_WORKER, "", "", "template1", .worker = "template1" },
        { "postgres: archiver last was 000000010000000000000002", G, BACKEND_ARCHIVER, "", .worker = "last was 000000010000000000000002" },
        { "postgres: archiver archiving 000000010000000000000003", G, BACKEND_ARCHIVER, "", .worker = "archiving 000000010000000000000003" },
        { "postgres: archiver failed on 000000010000000000000003", G, BACKEND_ARCHIVER, "", .worker = "failed on 000000010000000000000003" },
        { "postgres: archiver ", G, BACKEND_ARCHIVER, "" },
        { "postgres: stats collector ", G, BACKEND_STATS_COLLECTOR, "" },
        { "postgres: logger ", G, BACKEND_LOGGER, "" },
        { "postgres: 15/main: logger ", G, BACKEND_LOGGER, "15/main" },
        { "postgres: lab15s: startup recovering 00000001000000000000000F", G, BACKEND_STARTUP, "lab15s", .worker = "recovering 00000001000000000000000F" },
        { "postgres: startup recovering 00000001000000000000000F waiting", G, BACKEND_STARTUP, "", .flags = TITLE_WAITING },
        { "postgres: startup ", G, BACKEND_STARTUP, "" },
        { "postgres: lab15s: walreceiver streaming 0/F006000", G, BACKEND_WALRECEIVER, "lab15s", .worker = "streaming 0/F006000" },
        { "postgres: walreceiver ", G, BACKEND_WALRECEIVER, "" },
        { "postgres: walsummarizer ", G, BACKEND_WALSUMMARIZER, "" },
        { "postgres: lab17: walsummarizer ", G, BACKEND_WALSUMMARIZER, "lab17" },
        { "postgres: slotsync worker ", G, BACKEND_SLOTSYNC_WORKER, "" },
        { "postgres: logical replication launcher ", G, BACKEND_LOGICAL_REPLICATION_LAUNCHER, "" },
        { "postgres: lab15: logical replication launcher ", G, BACKEND_LOGICAL_REPLICATION_LAUNCHER, "lab15" },
        { "postgres: logical replication worker for subscription 16390", G, BACKEND_LOGICAL_REPLICATION_WORKER, "" },
        { "postgres: logical replication worker for subscription 16390 sync 16385", G, BACKEND_LOGICAL_REPLICATION_WORKER, "" },
        { "postgres: logical replication apply worker for subscription 16390", G, BACKEND_LOGICAL_REPLICATION_APPLY_WORKER, "" },
        { "postgres: logical replication tablesync worker for subscription 16390 sync 16385", G, BACKEND_LOGICAL_REPLICATION_TABLESYNC_WORKER, "" },
        { "postgres: logical replication parallel apply worker for subscription 16390", G, BACKEND_LOGICAL_REPLICATION_PARALLEL_WORKER, "" },
        { "postgres: parallel worker for PID 11766 ", G, BACKEND_PARALLEL_WORKER, "", .leader = 11766 },
        { "postgres: lab15: parallel worker for PID 11766 ", G, BACKEND_PARALLEL_WORKER, "lab15", .leader = 11766 },
        { "postgres: lab15: parallel worker for PID 11766 \0\0\0\0", "lab15", BACKEND_PARALLEL_WORKER, "lab15", .leader = 11766 },
        { "postgres: pg_cron launcher ", G, BACKEND_BACKGROUND_WORKER, "", .worker = "pg_cron launcher" },
        { "postgres: TimescaleDB Background Worker Scheduler ", G, BACKEND_BACKGROUND_WORKER, "", .worker = "TimescaleDB Background Worker Scheduler" },

        /* --- 11–12: three trailing spaces, padded arguments */
        { "postgres: checkpointer   ", G, BACKEND_CHECKPOINTER, "" },
        { "postgres: background writer   ", G, BACKEND_BACKGROUND_WRITER, "" },
        { "postgres: walwriter   ", G, BACKEND_WALWRITER, "" },
        { "postgres: autovacuum launcher   ", G, BACKEND_AUTOVACUUM_LAUNCHER, "" },
        { "postgres: stats collector   ", G, BACKEND_STATS_COLLECTOR, "" },
        { "postgres: logger   ", G, BACKEND_LOGGER, "" },
        { "postgres: autovacuum worker   shop", G, BACKEND_AUTOVACUUM_WORKER, "", "", "shop" },
        { "postgres: archiver   last was 000000010000000000000002", G, BACKEND_ARCHIVER, "", .worker = "last was 000000010000000000000002" },
        { "postgres: startup   recovering 000000010000000000000004", G, BACKEND_STARTUP, "", .worker = "recovering 000000010000000000000004" },
        { "postgres: walreceiver   streaming 0/3000060", G, BACKEND_WALRECEIVER, "", .worker = "streaming 0/3000060" },
        { "postgres: 11/main: checkpointer   ", G, BACKEND_CHECKPOINTER, "11/main" },

        /* --- 9.6–10: "process" suffixes and bgworker: prefixes */
        { "postgres: checkpointer process   ", G, BACKEND_CHECKPOINTER, "" },
        { "postgres: writer process   ", G, BACKEND_BACKGROUND_WRITER, "" },
        { "postgres: wal writer process   ", G, BACKEND_WALWRITER, "" },
        { "postgres: autovacuum launcher process   ", G, BACKEND_AUTOVACUUM_LAUNCHER, "" },
        { "postgres: stats collector process   ", G, BACKEND_STATS_COLLECTOR, "" },
        { "postgres: logger process   ", G, BACKEND_LOGGER, "" },
        { "postgres: autovacuum worker process   shop", G, BACKEND_AUTOVACUUM_WORKER, "", "", "shop" },
        { "postgres: archiver process   last was 000000010000000000000002", G, BACKEND_ARCHIVER, "", .worker = "last was 000000010000000000000002" },
        { "postgres: startup process   recovering 000000010000000000000004", G, BACKEND_STARTUP, "" },
        { "postgres: wal receiver process   streaming 0/3000060", G, BACKEND_WALRECEIVER, "", .worker = "streaming 0/3000060" },
        { "postgres: bgworker: parallel worker for PID 4242", G, BACKEND_PARALLEL_WORKER, "", .leader = 4242 },
        { "postgres: bgworker: logical replication launcher", G, BACKEND_LOGICAL_REPLICATION_LAUNCHER, "" },
        { "postgres: bgworker: logical replication worker for subscription 16390 sync 16385", G, BACKEND_LOGICAL_REPLICATION_WORKER, "" },
        { "postgres: bgworker: my worker", G, BACKEND_BACKGROUND_WORKER, "", .worker = "my worker" },
        { "postgres: 9.6/main: checkpointer process   ", G, BACKEND_CHECKPOINTER, "9.6/main" },
        { "postgres: 10/main: bgworker: parallel worker for PID 77", G, BACKEND_PARALLEL_WORKER, "10/main", .leader = 77 },

        /* --- 17–18 (real npm servers), 19 (sources) */
        { "postgres: vt18p: io worker 0", G, BACKEND_IO_WORKER, "vt18p", .worker = "0" },
        { "postgres: io worker 2", G, BACKEND_IO_WORKER, "", .worker = "2" },
        { "postgres: vt17p: walsummarizer ", G, BACKEND_WALSUMMARIZER, "vt17p" },
        { "postgres: vt17s: slotsync worker ", G, BACKEND_SLOTSYNC_WORKER, "vt17s" },
        { "postgres: vt18p: autoprewarm leader ", "vt18p", BACKEND_BACKGROUND_WORKER, "vt18p", .worker = "autoprewarm leader" },
        { "postgres: vt12p: autoprewarm master   ", "vt12p", BACKEND_BACKGROUND_WORKER, "vt12p", .worker = "autoprewarm master" },
        { "postgres: vt17l: logical replication tablesync worker for subscription 16394 sync 16385 ", G, BACKEND_LOGICAL_REPLICATION_TABLESYNC_WORKER, "vt17l" },
        { "postgres: vt16l: logical replication apply worker for subscription 16394 ", G, BACKEND_LOGICAL_REPLICATION_APPLY_WORKER, "vt16l" },
        { "postgres: vt16l: logical replication worker for subscription 16394 sync 16385 ", G, BACKEND_LOGICAL_REPLICATION_WORKER, "vt16l" },
        { "postgres: logical replication sequencesync worker for subscription 16394 ", G, BACKEND_LOGICAL_REPLICATION_SEQUENCESYNC_WORKER, "" },
        { "postgres: datachecksums launcher ", G, BACKEND_DATACHECKSUMS_LAUNCHER, "" },
        { "postgres: datachecksums worker ", G, BACKEND_DATACHECKSUMS_WORKER, "" },
        { "postgres: datachecksum worker ", G, BACKEND_DATACHECKSUMS_WORKER, "" },
        { "postgres: lab19: datachecksum launcher ", G, BACKEND_DATACHECKSUMS_LAUNCHER, "lab19" },

        /* --- postmasters (untouched command lines) */
        { "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf", G, BACKEND_POSTMASTER },
        { "postgres", G, BACKEND_POSTMASTER },
        { "/usr/local/pgsql/bin/postmaster -D /data", G, BACKEND_POSTMASTER },

        /* --- garbage */
        { "", G, BACKEND_UNKNOWN },
        { "\0\0\0\0", G, BACKEND_UNKNOWN },
        { "postgres:", G, BACKEND_UNKNOWN },
        { "postgres: ", G, BACKEND_UNKNOWN },
        { "postgres: \x01\x02\x1b[31m", G, BACKEND_UNKNOWN },
        { "postgres: parallel worker for PID abc", G, BACKEND_BACKGROUND_WORKER, "", .worker = "parallel worker for PID abc" },
        { "postgres: parallel worker for PID 99999999999", G, BACKEND_BACKGROUND_WORKER, "" },
        { "postgres: alice shop 10.0.0.5(999999) idle", G, BACKEND_BACKGROUND_WORKER, "" },
};
#undef G

static void check_case(const Case *c, const char *buf, size_t len) {
        TitleInfo t;
        title_parse(buf, len, c->hint == HINT_GUESS ? NULL : c->hint, &t);
        char where[512];
        snprintf(where, sizeof where, "title «%s»", c->title);
        if (t.backend_type != c->type)
                fail_msg("%s: backend_type %s, expected %s", where, backend_type_to_string(t.backend_type),
                         backend_type_to_string(c->type));
#define CHECK_STR(field)                                                                             \
        if (c->field && strcmp(t.field, c->field) != 0)                                              \
                fail_msg("%s: " #field " «%s», expected «%s»", where, t.field, c->field);
        CHECK_STR(user);
        CHECK_STR(database);
        CHECK_STR(client);
        CHECK_STR(status);
        CHECK_STR(state);
        CHECK_STR(worker);
        if (c->cluster && strcmp(t.cluster_name, c->cluster) != 0)
                fail_msg("%s: cluster_name «%s», expected «%s»", where, t.cluster_name, c->cluster);
        if (t.leader_pid != c->leader)
                fail_msg("%s: leader %d, expected %d", where, (int) t.leader_pid, (int) c->leader);
        if ((t.flags & c->flags) != c->flags)
                fail_msg("%s: flags 0x%x lack 0x%x", where, t.flags, c->flags);
}

static void test_corpus(void **state) {
        assert_true(sizeof corpus / sizeof corpus[0] >= 80);
        for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++)
                check_case(&corpus[i], corpus[i].title, strlen(corpus[i].title));
}

/* The same titles as the kernel hands them over: NUL-padded to the size of the title area. */
static void test_corpus_nul_padded(void **state) {
        for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
                char buf[TITLE_MAX + 64];
                memset(buf, 0, sizeof buf);
                size_t n = strlen(corpus[i].title);
                memcpy(buf, corpus[i].title, n);
                check_case(&corpus[i], buf, n + 40);
        }
}

static void test_cluster_name_from_aux(void **state) {
        char name[TITLE_NAME_MAX];
        const char *t1 = "postgres: lab15: checkpointer ";
        assert_true(title_cluster_name(t1, strlen(t1), name));
        assert_string_equal(name, "lab15");
        const char *t2 = "postgres: checkpointer ";
        assert_true(title_cluster_name(t2, strlen(t2), name));
        assert_string_equal(name, "");
        const char *t3 = "postgres: a: b: parallel worker for PID 5";
        assert_true(title_cluster_name(t3, strlen(t3), name));
        assert_string_equal(name, "a: b");
        /* a client backend does not tell for sure */
        const char *t4 = "postgres: lab15: alice shop [local] idle";
        assert_false(title_cluster_name(t4, strlen(t4), name));
        const char *t5 = "/usr/lib/postgresql/15/bin/postgres -D /x";
        assert_false(title_cluster_name(t5, strlen(t5), name));
        /* anyone can title a lookalike: no control character comes out (terminals, logs) */
        const char *t6 = "postgres: \x1b]0;pwned\x07\x1b[2J\nfake: checkpointer ";
        assert_true(title_cluster_name(t6, strlen(t6), name));
        for (const char *p = name; *p; p++)
                assert_false((unsigned char) *p < 0x20 || *p == 0x7f);
        TitleInfo ti;
        const char *t7 = "postgres: al\x1bice shop [local] idle";
        title_parse(t7, strlen(t7), NULL, &ti);
        assert_string_equal(ti.user, "al?ice");
}

static void test_overlong_title(void **state) {
        static char buf[TITLE_MAX * 2];
        memset(buf, 'x', sizeof buf);
        memcpy(buf, "postgres: alice shop [local] ", 29);
        TitleInfo t;
        title_parse(buf, sizeof buf, NULL, &t);
        assert_true(t.flags & TITLE_TRUNCATED);
        title_parse(NULL, 0, NULL, &t);
        assert_int_equal(t.backend_type, BACKEND_UNKNOWN);
}

static void test_backend_type_names(void **state) {
        for (int i = 0; i < _BACKEND_TYPE_MAX; i++)
                assert_int_equal(backend_type_from_string(backend_type_to_string((BackendType) i)), i);
        assert_string_equal(backend_type_to_string(BACKEND_CLIENT), "client backend");
        assert_true(backend_type_is_auxiliary(BACKEND_CHECKPOINTER));
        assert_true(backend_type_is_auxiliary(BACKEND_POSTMASTER));
        assert_false(backend_type_is_auxiliary(BACKEND_CLIENT));
        assert_int_equal(backend_type_from_string("nonsense"), BACKEND_UNKNOWN);
        assert_string_equal(backend_type_to_string(BACKEND_IO_WORKER), "io worker");
        assert_true(backend_type_is_auxiliary(BACKEND_IO_WORKER));
        assert_false(backend_type_is_auxiliary(BACKEND_DATACHECKSUMS_WORKER));
        assert_false(backend_type_is_auxiliary(BACKEND_LOGICAL_REPLICATION_SEQUENCESYNC_WORKER));
}

/* pg_stat_activity.backend_type as each version names the processes a title tells (checked
 * against real 12–18 servers by tests/integration/test_versions.py). */
static void test_backend_type_by_version(void **state) {
        static const struct {
                BackendType t;
                int major;
                const char *name;
        } cases[] = {
                { BACKEND_PARALLEL_WORKER, 10, "background worker" },
                { BACKEND_LOGICAL_REPLICATION_LAUNCHER, 10, "background worker" },
                { BACKEND_LOGICAL_REPLICATION_WORKER, 10, "background worker" },
                { BACKEND_PARALLEL_WORKER, 11, "parallel worker" },
                { BACKEND_LOGICAL_REPLICATION_LAUNCHER, 12, "logical replication launcher" },
                { BACKEND_LOGICAL_REPLICATION_WORKER, 12, "logical replication worker" },
                { BACKEND_LOGICAL_REPLICATION_APPLY_WORKER, 16, "logical replication worker" },
                { BACKEND_LOGICAL_REPLICATION_TABLESYNC_WORKER, 16, "logical replication worker" },
                { BACKEND_LOGICAL_REPLICATION_PARALLEL_WORKER, 16, "logical replication parallel worker" },
                { BACKEND_LOGICAL_REPLICATION_APPLY_WORKER, 17, "logical replication apply worker" },
                { BACKEND_LOGICAL_REPLICATION_TABLESYNC_WORKER, 17, "logical replication tablesync worker" },
                { BACKEND_LOGICAL_REPLICATION_APPLY_WORKER, 0, "logical replication apply worker" },
                { BACKEND_IO_WORKER, 18, "io worker" },
                { BACKEND_LOGICAL_REPLICATION_SEQUENCESYNC_WORKER, 19, "logical replication sequencesync worker" },
                { BACKEND_CLIENT, 10, "client backend" },
                { BACKEND_LOGGER, 18, "logger" },
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
                if (strcmp(backend_type_name(cases[i].t, cases[i].major), cases[i].name) != 0)
                        fail_msg("%s on %d: %s, expected %s", backend_type_to_string(cases[i].t), cases[i].major,
                                 backend_type_name(cases[i].t, cases[i].major), cases[i].name);
        assert_false(backend_type_holds_shared_memory(BACKEND_LOGGER, 18));
        assert_false(backend_type_holds_shared_memory(BACKEND_STATS_COLLECTOR, 14));
        assert_false(backend_type_holds_shared_memory(BACKEND_ARCHIVER, 13));
        assert_true(backend_type_holds_shared_memory(BACKEND_ARCHIVER, 14));
        assert_true(backend_type_holds_shared_memory(BACKEND_CLIENT, 12));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_corpus),
                cmocka_unit_test(test_corpus_nul_padded),
                cmocka_unit_test(test_cluster_name_from_aux),
                cmocka_unit_test(test_overlong_title),
                cmocka_unit_test(test_backend_type_names),
                cmocka_unit_test(test_backend_type_by_version),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
