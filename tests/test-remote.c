/* SPDX-License-Identifier: MIT */
/* Managed servers: conninfo classification, the config keys, the cluster view built from
 * pg_stat_activity rows, the one statement's parameters, findings and rendering of it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "join.h"
#include "parse-config.h"
#include "remote.h"
#include "render.h"

static void test_host_is_local(void **state) {
        assert_true(remote_host_is_local(NULL));
        assert_true(remote_host_is_local(""));
        assert_true(remote_host_is_local("/var/run/postgresql"));
        assert_true(remote_host_is_local("@abstract"));
        assert_true(remote_host_is_local("localhost"));
        assert_true(remote_host_is_local("127.0.0.1"));
        assert_true(remote_host_is_local("127.3.4.5"));
        assert_true(remote_host_is_local("::1"));
        char me[256] = "";
        assert_int_equal(gethostname(me, sizeof me - 1), 0);
        assert_true(remote_host_is_local(me));
        assert_false(remote_host_is_local("myserver.postgres.database.azure.com"));
        assert_false(remote_host_is_local("192.0.2.10")); /* TEST-NET-1: no interface has it */
        assert_false(remote_host_is_local("2001:db8::5"));
}

static void test_conninfo_is_remote(void **state) {
        assert_false(remote_conninfo_is_remote(""));
        assert_false(remote_conninfo_is_remote("dbname=postgres user=pgtree"));
        assert_false(remote_conninfo_is_remote("host=/var/run/postgresql dbname=postgres"));
        assert_false(remote_conninfo_is_remote("host=localhost port=5433"));
        assert_true(remote_conninfo_is_remote("host=db.example.com dbname=postgres"));
        assert_true(remote_conninfo_is_remote("host=a.example.com,b.example.com"));
        /* one of several hosts is this machine: not a managed server */
        assert_false(remote_conninfo_is_remote("host=a.example.com,localhost"));
        /* hostaddr is where libpq connects; host is then for TLS and the passfile */
        assert_false(remote_conninfo_is_remote("host=db.example.com hostaddr=127.0.0.1"));
        assert_true(remote_conninfo_is_remote("host=db.example.com hostaddr=192.0.2.10"));
        assert_false(remote_conninfo_is_remote("host='broken"));
        assert_true(remote_conninfo_has_password("host=x password=secret"));
        assert_false(remote_conninfo_has_password("host=x passfile=/etc/pgtree/pgpass"));
        char buf[64];
        remote_conninfo_server("host=db.example.com port=6543 password=secret", buf, sizeof buf);
        assert_string_equal(buf, "db.example.com:6543");
        remote_conninfo_server("hostaddr=192.0.2.10", buf, sizeof buf);
        assert_string_equal(buf, "192.0.2.10:5432");
}

static void expect_errors(const char *text, const char *const *want) {
        Config *c = NULL;
        ConfigErrors errs = {};
        assert_int_equal(config_parse_string(text, "t.ini", &c, &errs), -EINVAL);
        assert_null(c);
        size_t n = 0;
        for (; want[n]; n++) {
                bool found = false;
                for (size_t i = 0; i < errs.n && !found; i++) {
                        char line[600];
                        snprintf(line, sizeof line, "%s:%u: %s", errs.items[i].file, errs.items[i].line, errs.items[i].message);
                        found = strstr(line, want[n]) != NULL;
                }
                if (!found) {
                        config_errors_print(&errs, stderr);
                        fail_msg("missing error: %s", want[n]);
                }
        }
        assert_int_equal(errs.n, n);
        config_errors_clear(&errs);
}

static void test_config(void **state) {
        Config *c = parse_config("[cluster azure]\n"
                                 "conninfo = host=pg.example.com dbname=postgres user=pgtree sslmode=verify-full\n"
                                 "passfile = credential:pgpass\n"
                                 "sslrootcert = /etc/pgtree/ca.crt\n"
                                 "parent_tag = FakeParent:*\n"
                                 "action_timeout = 500ms\n"
                                 "[cluster local]\nport = 5432\nconninfo = host=/run/postgresql\n"
                                 "[cluster forced]\nhost = remote\nconninfo = hostaddr=127.0.0.1 port=6000\n");
        assert_int_equal(c->n_clusters, 3);
        const ClusterConf *a = &c->clusters[0], *l = &c->clusters[1], *f = &c->clusters[2];
        assert_int_equal(a->host, CLUSTER_HOST_REMOTE);
        assert_true(a->host_auto);
        assert_string_equal(a->parent_tag, "FakeParent:*");
        assert_int_equal(a->action_timeout_usec, 500 * USEC_PER_MSEC);
        assert_int_equal(l->host, CLUSTER_HOST_LOCAL);
        assert_int_equal(l->action_timeout_usec, REMOTE_ACTION_TIMEOUT_DEFAULT_USEC);
        assert_int_equal(f->host, CLUSTER_HOST_REMOTE);
        assert_false(f->host_auto);
        assert_int_equal(config_n_remote(c), 2);
        /* a managed server never selects a cluster found in /proc, even by name */
        assert_ptr_equal(config_find_cluster(c, "azure", NULL, 0), NULL);
        assert_ptr_equal(config_find_cluster(c, NULL, NULL, 5432), l);

        char why[256] = "", *ci = NULL;
        unsetenv("CREDENTIALS_DIRECTORY");
        assert_int_equal(remote_effective_conninfo(a, &ci, why, sizeof why), -ENOENT);
        assert_non_null(strstr(why, "CREDENTIALS_DIRECTORY is not set"));
        setenv("CREDENTIALS_DIRECTORY", "/run/credentials/pgtreed.service", 1);
        assert_int_equal(remote_effective_conninfo(a, &ci, why, sizeof why), 0);
        assert_non_null(strstr(ci, " passfile='/run/credentials/pgtreed.service/pgpass'"));
        assert_non_null(strstr(ci, " sslrootcert='/etc/pgtree/ca.crt'"));
        free(ci);
        unsetenv("CREDENTIALS_DIRECTORY");
        config_free(c);

        expect_errors("[cluster a]\nhost = remote\n",
                      (const char *const[]){ "t.ini:1: cluster 'a' has host = remote but no conninfo", NULL });
        expect_errors("[cluster a]\nhost = remote\nconninfo = dbname=postgres\n",
                      (const char *const[]){ "t.ini:1: cluster 'a' has host = remote but its conninfo names no host", NULL });
        expect_errors("[cluster a]\nhost = remote\nconninfo = host=db.example.com password=x\nport = 5432\n",
                      (const char *const[]){ "t.ini:1: cluster 'a': a password in the conninfo",
                                             "t.ini:1: cluster 'a' has host = remote and port", NULL });
        expect_errors("[cluster a]\nhost = maybe\nparent_tag = [abc\naction_timeout = 1h\npassfile = relative\n"
                      "passfile2 = x\n",
                      (const char *const[]){ "t.ini:2: host: expected auto, local or remote, got 'maybe'",
                                             "t.ini:3: parent_tag: '[abc' is not a valid pattern",
                                             "t.ini:4: action_timeout: must be between 100ms and 30s",
                                             "t.ini:5: passfile: must be an absolute path",
                                             "t.ini:6: unknown key 'passfile2' in [cluster a]", NULL });
        expect_errors("[cluster a]\nconninfo = host=db.example.com\npassfile = credential:../x\n",
                      (const char *const[]){ "t.ini:3: passfile: 'credential:NAME' needs the name", NULL });
}

/* ---- the cluster view ---- */

#define T0 1790000000.0

static ActivityRow row(pid_t pid, const char *bt, const char *app, const char *state, pid_t leader, double start) {
        return (ActivityRow){ .pid = pid, .usename = (char *) "app", .datname = (char *) "shop",
                              .application_name = (char *) app, .backend_type = (char *) bt, .state = (char *) state,
                              .client_addr = (char *) (strcmp(bt, "client backend") ? NULL : "10.1.2.3"),
                              .client_port = strcmp(bt, "client backend") ? 0 : 40000 + pid, .backend_start = start,
                              .query_start = state && !strcmp(state, "active") ? start + 1 : 0,
                              .xact_start = state && !strcmp(state, "active") ? start + 1 : 0,
                              .state_change = start + 1, .leader_pid = leader, .xmin_age = -1 };
}

static ActivitySnapshot snapshot(ActivityRow *rows, size_t n) {
        return (ActivitySnapshot){ .rows = rows, .n = n, .taken_at = T0 + 600, .server_version = 150008, .own_pid = 40 };
}

/* rows sorted by pid, as activity.c keeps them */
static ActivityRow rows_a[8];

static void build(PgTree *t, ActivitySnapshot *s) {
        rows_a[0] = row(2, "checkpointer", NULL, NULL, 0, T0);
        rows_a[1] = row(12, "client backend", "FakeParent:1001", "active", 0, T0 + 10.123456);
        rows_a[2] = row(13, "client backend", "FakeParent:1001", "idle", 0, T0 + 11);
        rows_a[3] = row(15, "client backend", "FakeParent:2002", "active", 15, T0 + 12); /* a leader says itself (PG 13) */
        rows_a[4] = row(16, "parallel worker", "FakeParent:2002", "active", 15, T0 + 13);
        rows_a[5] = row(17, "parallel worker", "FakeParent:2002", "active", 99, T0 + 13); /* its leader is gone */
        rows_a[6] = row(40, "client backend", "pgtreed", "active", 0, T0 + 5);
        rows_a[7] = row(41, "client backend", "pgtreed action", "idle", 0, T0 + 6);
        *s = snapshot(rows_a, 8);
        *t = (PgTree){ .now = T0 + 600, .boot_time = T0 - 1000, .hz = 100 };
        RemoteClusterInfo info = { .name = "azure", .server = "pg.example.com:5432", .parent_tag = "FakeParent:*",
                                   .activity = "ok", .enforce = true, .own_pid2 = 41 };
        assert_int_equal(remote_tree_add(t, &info, s), 0);
}

static void test_tree(void **state) {
        PgTree t;
        ActivitySnapshot s;
        build(&t, &s);
        assert_int_equal(t.n_clusters, 1);
        const PgCluster *c = &t.clusters[0];
        assert_true(c->remote);
        assert_true(c->enforce);
        assert_ptr_equal(c->snapshot, &s);
        assert_string_equal(c->name, "azure");
        assert_string_equal(c->remote_server, "pg.example.com:5432");
        assert_int_equal(t.n_procs, 9);
        const PgProcess *pm = &t.procs[c->postmaster];
        assert_int_equal(pm->rec.pid, 0);
        assert_int_equal(pm->depth, 0);
        assert_int_equal(pm->title.backend_type, BACKEND_POSTMASTER);

        int i12 = tree_find(&t, 12), i15 = tree_find(&t, 15), i16 = tree_find(&t, 16), i17 = tree_find(&t, 17);
        assert_true(i12 > 0 && i15 > 0 && i16 > 0 && i17 > 0);
        const PgProcess *p12 = &t.procs[i12];
        assert_int_equal(p12->rec.start_ticks, (uint64_t) 1790000010123456ULL);
        assert_true(pg_process_is_remote(&t, p12));
        /* the age comes from backend_start, not from this host's boot clock */
        assert_true(pg_process_start_time(&t, p12) == rows_a[1].backend_start);
        assert_int_equal(p12->title.backend_type, BACKEND_CLIENT);
        assert_true(proc_is_client_backend(p12));
        assert_int_equal(t.procs[i15].title.leader_pid, 0);
        assert_int_equal(t.procs[i16].leader, i15);
        assert_false(t.procs[i16].leader_missing);
        assert_int_equal(t.procs[i17].leader, -1);
        assert_true(t.procs[i17].leader_missing);
        assert_true(t.procs[tree_find(&t, 40)].own);
        assert_true(t.procs[tree_find(&t, 41)].own);   /* the action connection */
        assert_false(proc_is_client_backend(&t.procs[tree_find(&t, 41)]));

        /* a second server with the same pid: identity is pid and start */
        ActivityRow other[1] = { row(12, "client backend", "x", "active", 0, T0 + 50) };
        ActivitySnapshot s2 = snapshot(other, 1);
        RemoteClusterInfo info = { .name = "rds", .server = "rds.example.com:5432", .activity = "ok" };
        assert_int_equal(remote_tree_add(&t, &info, &s2), 0);
        int j = tree_find_identity(&t, 12, remote_start_ticks(T0 + 50));
        assert_true(j > i12);
        assert_int_equal(t.procs[j].cluster, 1);
        assert_int_equal(tree_find_identity(&t, 12, remote_start_ticks(T0 + 10.123456)), i12);
        assert_int_equal(tree_find_identity(&t, 12, 1), -1);

        /* an unavailable server: the stand-in alone, with the reason */
        RemoteClusterInfo down = { .name = "down", .server = "down.example.com:5432",
                                   .activity = "unavailable: connection timed out" };
        size_t before = t.n_procs;
        assert_int_equal(remote_tree_add(&t, &down, NULL), 0);
        assert_int_equal(t.n_procs, before + 1);
        assert_string_equal(t.clusters[2].activity, "unavailable: connection timed out");
        assert_null(t.clusters[2].snapshot);
        tree_free(&t);
}

static void test_findings(void **state) {
        PgTree t;
        ActivitySnapshot s;
        build(&t, &s);
        /* a host pid that happens to be a remote pid: its client_gone is not the remote session's */
        pid_t gone[] = { 12 };
        Findings f = {};
        assert_int_equal(findings_detect(&t, gone, 1, &f), 0);
        bool long12 = false, orphan17 = false;
        for (size_t i = 0; i < f.n; i++) {
                const Finding *x = &f.items[i];
                assert_int_not_equal(x->kind, FINDING_CLIENT_GONE);
                assert_int_not_equal(x->kind, FINDING_UNLISTED_PROCESS);
                assert_int_not_equal(x->kind, FINDING_STALE_ACTIVITY);
                assert_int_not_equal(x->pid, 40);
                assert_int_not_equal(x->pid, 41);
                if (x->pid == 12 && x->kind == FINDING_LONG_QUERY) {
                        long12 = true;
                        assert_string_equal(x->cluster, "azure");
                        assert_string_equal(x->application_name, "FakeParent:1001");
                        assert_int_equal(x->start_ticks, t.procs[tree_find(&t, 12)].rec.start_ticks);
                        assert_true(x->since == rows_a[1].query_start);
                }
                orphan17 |= x->pid == 17 && x->kind == FINDING_ORPHAN_PARALLEL_WORKER;
        }
        assert_true(long12);
        assert_true(orphan17);
        findings_free(&f);
        tree_free(&t);
}

static void test_action_params(void **state) {
        PgTree t;
        ActivitySnapshot s;
        build(&t, &s);
        const PgProcess *p = &t.procs[tree_find(&t, 12)];
        RemoteTarget tg;
        remote_target_from_process(p, FINDING_LONG_QUERY, &tg);
        char bufs[4][32];
        const char *v[REMOTE_ACTION_NPARAMS];
        remote_action_params(&tg, ACTION_TERMINATE, bufs, v);
        assert_string_equal(v[0], "12");
        assert_true(strtod(v[1], NULL) == rows_a[1].backend_start); /* exact round trip */
        assert_string_equal(v[2], "terminate");
        assert_string_equal(v[3], "app");
        assert_string_equal(v[4], "shop");
        assert_string_equal(v[5], "FakeParent:1001");
        assert_string_equal(v[6], "query_start");
        assert_true(strtod(v[7], NULL) == rows_a[1].query_start);
        assert_string_equal(v[8], "active");
        assert_null(v[9]); /* the server's start is not known: not checked */
        tg.server_started = 1764432000.123456;
        remote_action_params(&tg, ACTION_TERMINATE, bufs, v);
        assert_true(strtod(v[9], NULL) == tg.server_started);
        tg.server_started = 0;

        remote_target_from_process(&t.procs[tree_find(&t, 13)], FINDING_IDLE_IN_TRANSACTION, &tg);
        remote_action_params(&tg, ACTION_CANCEL, bufs, v);
        assert_string_equal(v[2], "cancel");
        assert_string_equal(v[6], "state_change");
        assert_null(v[8]);
        /* by hand: identity only */
        remote_target_from_process(p, _FINDING_KIND_MAX, &tg);
        remote_action_params(&tg, ACTION_TERMINATE, bufs, v);
        assert_null(v[6]);
        assert_null(v[7]);
        assert_null(v[8]);
        /* never anything but cancel and terminate */
        remote_action_params(&tg, ACTION_ALERT, bufs, v);
        assert_string_equal(v[2], "none");

        /* the statement checks identity before it signals, and says every refusal */
        const char *sql = remote_action_sql;
        const char *reused = strstr(sql, "'reused'"), *term = strstr(sql, "pg_terminate_backend");
        /* another server behind the same address is refused before anything else */
        const char *changed = strstr(sql, "'server-changed'"), *gone = strstr(sql, "'gone'");
        assert_non_null(changed);
        assert_true(changed < gone && changed < term);
        assert_int_equal(remote_outcome_from_string("server-changed"), REMOTE_SERVER_CHANGED);
        assert_non_null(reused);
        assert_non_null(term);
        assert_true(reused < term);
        assert_true(strstr(sql, "'superuser'") < term);
        assert_true(strstr(sql, "'not-client'") < term);
        for (int o = 0; o < _REMOTE_OUTCOME_MAX; o++) {
                char quoted[32];
                snprintf(quoted, sizeof quoted, "'%s'", remote_outcome_to_string((RemoteOutcome) o));
                assert_non_null(strstr(sql, quoted));
                assert_int_equal(remote_outcome_from_string(remote_outcome_to_string((RemoteOutcome) o)), o);
        }
        assert_null(strstr(sql, "pg_kill"));
        assert_int_equal(remote_outcome_from_string("kill"), -EINVAL);
        assert_non_null(strstr(remote_outcome_explain(REMOTE_SUPERUSER), "pg_signal_backend cannot signal superuser"));
        tree_free(&t);
}

static json_object *get(json_object *o, const char *key) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v))
                fail_msg("no key %s", key);
        return v;
}

/* ---- actions, asynchronously ---- */

typedef struct Outcome {
        int r;
        int seq;
        char msg[400];
} Outcome;
static int outcome_seq;

static void on_outcome(int r, RemoteOutcome o, const char *msg, void *userdata) {
        Outcome *x = userdata;
        assert_int_equal(x->seq, 0); /* exactly once */
        x->r = r;
        x->seq = ++outcome_seq;
        snprintf(x->msg, sizeof x->msg, "%s", msg);
}

/* A TCP port on 127.0.0.1 that listens (and never accepts: connections hang after the
 * handshake) or, closed, refuses. */
static int tcp_port(bool listening, int *fd) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(s >= 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof a;
        assert_int_equal(bind(s, (struct sockaddr *) &a, sizeof a), 0);
        assert_int_equal(getsockname(s, (struct sockaddr *) &a, &l), 0);
        if (listening)
                assert_int_equal(listen(s, 16), 0);
        else
                close(s);
        *fd = listening ? s : -1;
        return ntohs(a.sin_port);
}

/* The daemon's loop in small: poll what the action connections wait for, until n outcomes. */
static void drive(RemoteSet *s, const int *seq_target, uint64_t limit_usec) {
        uint64_t end = now_monotonic_usec() + limit_usec;
        while (outcome_seq < *seq_target && now_monotonic_usec() < end) {
                RemoteActWait w[8];
                struct pollfd pfd[8];
                size_t n = remote_set_actions_wants(s, w, 8);
                for (size_t i = 0; i < n; i++)
                        pfd[i] = (struct pollfd){ .fd = w[i].fd, .events = w[i].events };
                uint64_t now = now_monotonic_usec(), d = remote_set_actions_deadline(s);
                int timeout = d == UINT64_MAX ? 100 : d <= now ? 0 : (int) ((d - now) / 1000 + 1);
                if (timeout > 100)
                        timeout = 100;
                int ready = -1;
                if (poll(pfd, n, timeout) > 0)
                        for (size_t i = 0; i < n && ready < 0; i++)
                                if (pfd[i].revents)
                                        ready = pfd[i].fd;
                remote_set_actions_process(s, ready, now_monotonic_usec());
        }
}

static void test_actions_async(void **state) {
        int hung_fd, unused;
        int refused = tcp_port(false, &unused), hung = tcp_port(true, &hung_fd);
        char text[1024];
        snprintf(text, sizeof text,
                 "[cluster refusing]\nhost = remote\nconninfo = host=127.0.0.1 port=%d dbname=x user=x sslmode=disable\n"
                 "[cluster hung]\nhost = remote\nconninfo = host=127.0.0.1 port=%d dbname=x user=x sslmode=disable\n",
                 refused, hung);
        Config *c = parse_config(text);
        RemoteSet *s = NULL;
        assert_int_equal(remote_set_begin(&s, c, now_monotonic_usec()), 0);
        RemoteTarget t = { .pid = 42, .backend_start = 1764432000.5, .usename = "app" };
        Outcome o[REMOTE_ACTIONS_PENDING_MAX + 4] = {};
        char msg[400];
        outcome_seq = 0;
        assert_int_equal(remote_set_actions_deadline(s), UINT64_MAX);
        assert_int_equal(remote_set_act_start(s, "nowhere", &t, ACTION_TERMINATE, USEC_PER_SEC, now_monotonic_usec(),
                                              on_outcome, &o[0], msg, sizeof msg), -ENOENT);

        /* at most REMOTE_ACTIONS_PENDING_MAX pending per server; the next is refused, naming it */
        for (int i = 0; i < REMOTE_ACTIONS_PENDING_MAX; i++)
                assert_int_equal(remote_set_act_start(s, "refusing", &t, ACTION_TERMINATE, 5 * USEC_PER_SEC,
                                                      now_monotonic_usec(), on_outcome, &o[i], msg, sizeof msg), 0);
        assert_int_equal(remote_set_act_start(s, "refusing", &t, ACTION_TERMINATE, 5 * USEC_PER_SEC, now_monotonic_usec(),
                                              on_outcome, &o[REMOTE_ACTIONS_PENDING_MAX], msg, sizeof msg), -EBUSY);
        assert_non_null(strstr(msg, "at most 8 per remote server"));
        assert_int_equal(remote_set_actions_pending(s, "refusing"), REMOTE_ACTIONS_PENDING_MAX);
        assert_int_equal(outcome_seq, 0);                       /* never from within the call */
        assert_int_equal(remote_set_actions_deadline(s), 0);    /* the first goes out at once */
        /* a refused connection fails each of them, in order, long before its deadline */
        int want = REMOTE_ACTIONS_PENDING_MAX;
        drive(s, &want, 10 * USEC_PER_SEC);
        for (int i = 0; i < REMOTE_ACTIONS_PENDING_MAX; i++) {
                assert_int_equal(o[i].seq, i + 1);
                assert_int_equal(o[i].r, -ECONNREFUSED);
                assert_non_null(strstr(o[i].msg, "cannot connect"));
        }
        assert_int_equal(o[REMOTE_ACTIONS_PENDING_MAX].seq, 0);
        assert_int_equal(remote_set_actions_pending(s, "refusing"), 0);
        assert_int_equal(remote_set_actions_deadline(s), UINT64_MAX);

        /* a server that never answers: the first times out connecting, the one queued behind it is
         * never sent; both within their action_timeout, without blocking */
        memset(o, 0, sizeof o);
        outcome_seq = 0;
        uint64_t t0 = now_monotonic_usec();
        for (int i = 0; i < 2; i++)
                assert_int_equal(remote_set_act_start(s, "hung", &t, ACTION_CANCEL, 300 * USEC_PER_MSEC, now_monotonic_usec(),
                                                      on_outcome, &o[i], msg, sizeof msg), 0);
        want = 2;
        drive(s, &want, 10 * USEC_PER_SEC);
        uint64_t took = now_monotonic_usec() - t0;
        assert_int_equal(outcome_seq, 2);
        assert_true(took >= 300 * USEC_PER_MSEC && took < 5 * USEC_PER_SEC);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(o[i].r, -ETIMEDOUT);
                assert_non_null(strstr(o[i].msg, "timed out"));
        }
        assert_non_null(strstr(o[0].msg, "connection to 127.0.0.1"));

        /* what is pending when the server leaves (or pgtreed stops) is reported, not lost */
        memset(o, 0, sizeof o);
        outcome_seq = 0;
        assert_int_equal(remote_set_act_start(s, "hung", &t, ACTION_TERMINATE, 5 * USEC_PER_SEC, now_monotonic_usec(),
                                              on_outcome, &o[0], msg, sizeof msg), 0);
        want = 1;
        drive(s, &(int){ 99 }, 200 * USEC_PER_MSEC); /* it starts connecting */
        assert_int_equal(outcome_seq, 0);
        remote_set_free(s);
        assert_int_equal(o[0].seq, 1);
        assert_int_equal(o[0].r, -ECANCELED);
        close(hung_fd);
        config_free(c);
}

/* ---- a server that answers every statement with COPY ---- */

/* A PostgreSQL server in small, hostile: it lets any client in (trust) and answers whatever it is
 * asked with CopyOutResponse, then says nothing more. libpq then returns a COPY result from
 * PQgetResult() for ever and PQisBusy() is false: a loop "while (!PQisBusy) PQgetResult" never
 * ends (the daemon's loop hung there, 100% CPU, no cycle, no client answered). */
typedef struct CopyServer {
        int listen_fd;
        int port;
        pthread_t thread;
} CopyServer;

static bool read_full(int fd, void *buf, size_t n) {
        for (size_t got = 0; got < n;) {
                ssize_t k = read(fd, (char *) buf + got, n - got);
                if (k <= 0)
                        return false;
                got += (size_t) k;
        }
        return true;
}

static void *copy_server_conn(void *p) {
        int fd = (int) (intptr_t) p;
        unsigned char len[4], buf[4096];
        /* the startup packet: length, then the rest */
        if (read_full(fd, len, 4)) {
                uint32_t l = (uint32_t) len[0] << 24 | (uint32_t) len[1] << 16 | (uint32_t) len[2] << 8 | len[3];
                if (l >= 8 && l - 4 <= sizeof buf && read_full(fd, buf, l - 4)) {
                        static const unsigned char hello[] = {
                                'R', 0, 0, 0, 8, 0, 0, 0, 0,                            /* AuthenticationOk */
                                'S', 0, 0, 0, 24, 's', 'e', 'r', 'v', 'e', 'r', '_', 'v', 'e', 'r', 's', 'i', 'o', 'n',
                                0, '1', '5', '.', '0', 0,                               /* ParameterStatus */
                                'K', 0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 9,               /* BackendKeyData */
                                'Z', 0, 0, 0, 5, 'I',                                   /* ReadyForQuery */
                        };
                        static const unsigned char copy[] = { 'H', 0, 0, 0, 7, 0, 0, 0 }; /* CopyOutResponse, 0 columns */
                        if (write(fd, hello, sizeof hello) == (ssize_t) sizeof hello)
                                /* whatever comes (a query, its parts, Sync): COPY, once per read */
                                while (read(fd, buf, sizeof buf) > 0)
                                        if (write(fd, copy, sizeof copy) != (ssize_t) sizeof copy)
                                                break;
                }
        }
        close(fd);
        return NULL;
}

static void *copy_server_main(void *p) {
        CopyServer *cs = p;
        for (;;) {
                int fd = accept4(cs->listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                        return NULL; /* closed: the test is over */
                pthread_t t;
                pthread_attr_t attr;
                pthread_attr_init(&attr);
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                if (pthread_create(&t, &attr, copy_server_conn, (void *) (intptr_t) fd) != 0)
                        close(fd);
                pthread_attr_destroy(&attr);
        }
}

static void copy_server_start(CopyServer *cs) {
        cs->port = tcp_port(true, &cs->listen_fd);
        assert_int_equal(pthread_create(&cs->thread, NULL, copy_server_main, cs), 0);
}

static void copy_server_stop(CopyServer *cs) {
        shutdown(cs->listen_fd, SHUT_RDWR);
        close(cs->listen_fd);
        pthread_join(cs->thread, NULL);
}

static void on_hung(int sig) {
        static const char m[] = "a server answering with COPY hung the caller (endless PQgetResult loop)\n";
        (void) !write(STDERR_FILENO, m, sizeof m - 1);
        _exit(1);
}

static void test_server_answers_copy(void **state) {
        CopyServer cs;
        copy_server_start(&cs);
        signal(SIGALRM, on_hung);
        alarm(60);
        char conninfo[256], text[512];
        snprintf(conninfo, sizeof conninfo,
                 "host=127.0.0.1 port=%d dbname=x user=x sslmode=disable gssencmode=disable", cs.port);

        /* the action connection: the outcome is an error, known before action_timeout ends */
        snprintf(text, sizeof text, "[cluster copying]\nhost = remote\nconninfo = %s\n", conninfo);
        Config *c = parse_config(text);
        RemoteSet *s = NULL;
        assert_int_equal(remote_set_begin(&s, c, now_monotonic_usec()), 0);
        RemoteTarget t = { .pid = 42, .backend_start = 1764432000.5, .usename = "app" };
        Outcome o = {};
        char msg[400];
        outcome_seq = 0;
        uint64_t t0 = now_monotonic_usec();
        assert_int_equal(remote_set_act_start(s, "copying", &t, ACTION_TERMINATE, 20 * USEC_PER_SEC, now_monotonic_usec(),
                                              on_outcome, &o, msg, sizeof msg), 0);
        int want = 1;
        drive(s, &want, 30 * USEC_PER_SEC);
        assert_int_equal(o.seq, 1);
        assert_int_equal(o.r, -EBADMSG);
        assert_non_null(strstr(o.msg, "unexpected answer"));
        assert_true(now_monotonic_usec() - t0 < 15 * USEC_PER_SEC);
        remote_set_free(s);
        config_free(c);

        /* the activity connection (what every cycle runs): unavailable, naming why */
        ActivityOptions ao = { .connect_timeout_usec = 10 * USEC_PER_SEC, .query_timeout_usec = 10 * USEC_PER_SEC,
                               .query_max_length = 1024, .identify = true };
        ActivityConn *a = NULL;
        assert_int_equal(activity_conn_new(conninfo, NULL, 0, &ao, &a), 0);
        activity_conn_start(a, now_monotonic_usec());
        activity_conns_run(&a, 1, now_monotonic_usec() + 30 * USEC_PER_SEC);
        assert_false(activity_conn_busy(a));
        assert_null(activity_conn_snapshot(a));
        assert_non_null(strstr(activity_conn_status(a), "unexpected answer"));
        activity_conn_free(a);

        /* the synchronous one (remote_act_conninfo) */
        RemoteOutcome ro;
        assert_int_equal(remote_act_conninfo(conninfo, &t, ACTION_CANCEL, 10 * USEC_PER_SEC, &ro, msg, sizeof msg), -EBADMSG);
        assert_non_null(strstr(msg, "unexpected answer"));

        alarm(0);
        signal(SIGALRM, SIG_DFL);
        copy_server_stop(&cs);
}

static void test_render(void **state) {
        PgTree t;
        ActivitySnapshot s;
        build(&t, &s);
        json_object *root = render_json(&t, NULL);
        json_object *c = json_object_array_get_idx(get(root, "clusters"), 0);
        assert_string_equal(json_object_get_string(get(c, "view")), "remote");
        assert_string_equal(json_object_get_string(get(c, "server")), "pg.example.com:5432");
        assert_null(get(get(c, "postmaster"), "pid"));
        json_object *u = get(c, "unavailable");
        assert_non_null(get(u, "orphan_backend"));
        assert_non_null(get(u, "client_gone"));
        assert_non_null(get(u, "cpu_percent"));
        json_object *procs = get(c, "processes");
        assert_int_equal(json_object_array_length(procs), 8); /* the stand-in is not a process */
        json_object *p = json_object_array_get_idx(procs, 1);
        assert_int_equal(json_object_get_int(get(p, "pid")), 12);
        assert_null(get(p, "cpu_percent"));
        assert_null(get(p, "rss_anon_kb"));
        assert_null(get(p, "ppid"));
        assert_int_equal(json_object_get_int64(get(p, "age_s")), 589); /* 600 − 10.123456 */
        json_object_put(root);

        char *buf = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&buf, &len);
        render_text(out, &t, NULL, &(RenderOptions){});
        fclose(out);
        assert_non_null(strstr(buf, "cluster azure  remote: from pg_stat_activity only  server pg.example.com:5432  [enforcing]"));
        assert_non_null(strstr(buf, "PostgreSQL 15.8"));
        assert_non_null(strstr(buf, "◆ application FakeParent:1001 (2 sessions)"));
        assert_non_null(strstr(buf, "◆ application FakeParent:2002 (1 session)")); /* 15; worker 16 under it */
        /* the worker under its leader, in the group */
        const char *lead = strstr(buf, "      15 ");
        assert_non_null(lead);
        const char *w = strstr(lead, "\n      16 ");
        assert_non_null(w);
        assert_true(strstr(w, "parallel worker") < strstr(w + 1, "\n"));
        /* no CPU or memory figures for remote sessions */
        if (!strstr(buf, "      12   9m49s     -       -  "))
                fail_msg("%s", buf);
        free(buf);
        tree_free(&t);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_host_is_local),
                cmocka_unit_test(test_conninfo_is_remote),
                cmocka_unit_test(test_config),
                cmocka_unit_test(test_tree),
                cmocka_unit_test(test_findings),
                cmocka_unit_test(test_action_params),
                cmocka_unit_test(test_actions_async),
                cmocka_unit_test(test_server_answers_copy),
                cmocka_unit_test(test_render),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
