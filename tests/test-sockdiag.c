/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>
#include <cmocka.h>

#include "sockdiag.h"

#define REC(p, pp, ti) { .pid = (p), .ppid = (pp), .state = 'S', .comm = "postgres", .title = (char *) (ti), .start_ticks = (p) }

static const ProcRecord recs[] = {
        REC(100, 1, "/usr/bin/postgres -D /srv/a"),
        REC(110, 100, "postgres: alice shop 10.0.0.5(50156) SELECT"),
        REC(111, 100, "postgres: bob shop 10.0.0.5(50157) SELECT"),
        REC(112, 100, "postgres: carol shop 10.0.0.6(50156) SELECT"),
        REC(113, 100, "postgres: dan shop 2001:db8::1(6000) SELECT"),
        REC(114, 100, "postgres: eve shop [local] SELECT"),
};

static TcpSock v4(uint8_t state, uint16_t sport, const char *dst, uint16_t dport) {
        TcpSock s = { .family = AF_INET, .state = state, .sport = sport, .dport = dport };
        inet_pton(AF_INET, dst, s.dst);
        return s;
}

static void test_match_tcp(void **state) {
        PgTree t;
        assert_int_equal(tree_build(recs, sizeof recs / sizeof recs[0], &t), 0);
        t.clusters[0].pmfile_valid = true;
        t.clusters[0].pmfile.port = 5432;
        TcpSock socks[] = {
                v4(8, 5432, "10.0.0.5", 50156),  /* alice: CLOSE_WAIT → gone */
                v4(1, 5432, "10.0.0.5", 50157),  /* bob: established → there */
                v4(8, 5433, "10.0.0.6", 50156),  /* carol's address, but another server's port */
                { .family = AF_INET6, .state = 8, .sport = 5432, .dport = 6000 },
        };
        inet_pton(AF_INET6, "2001:db8::1", socks[3].dst);
        pid_t *pids = NULL;
        size_t n = 0, allocated = 0;
        assert_int_equal(client_gone_match_tcp(&t, socks, 4, &pids, &n, &allocated), 0);
        assert_int_equal(n, 2);
        assert_int_equal(pids[0], 110);
        assert_int_equal(pids[1], 113);
        free(pids);

        /* a v4 client on a dual-stack listener shows as ::ffff:a.b.c.d */
        TcpSock mapped = { .family = AF_INET6, .state = 8, .sport = 5432, .dport = 50157 };
        inet_pton(AF_INET6, "::ffff:10.0.0.5", mapped.dst);
        pids = NULL;
        n = allocated = 0;
        assert_int_equal(client_gone_match_tcp(&t, &mapped, 1, &pids, &n, &allocated), 0);
        assert_int_equal(n, 1);
        assert_int_equal(pids[0], 111);
        free(pids);

        /* without the cluster's port nothing can be matched */
        t.clusters[0].pmfile_valid = false;
        pids = NULL;
        n = allocated = 0;
        assert_int_equal(client_gone_match_tcp(&t, socks, 4, &pids, &n, &allocated), 0);
        assert_int_equal(n, 0);
        tree_free(&t);
}

static void test_dead_unix(void **state) {
        PgCluster c = { .pmfile_valid = true, .pmfile = { .port = 5432 } };
        strcpy(c.pmfile.socket_dir, "/run/postgresql");
        UnixSock socks[] = {
                { .inode = 1, .peer = 0, .state = 1, .path = "/run/postgresql/.s.PGSQL.5432" },
                { .inode = 2, .peer = 77, .state = 1, .path = "/run/postgresql/.s.PGSQL.5432" },
                { .inode = 3, .peer = 78, .state = 1, .shutdown = 3, .path = "/run/postgresql/.s.PGSQL.5432" },
                { .inode = 4, .peer = 0, .state = 1, .path = "/run/postgresql/.s.PGSQL.5433" },
                { .inode = 5, .peer = 0, .state = 10, .path = "/run/postgresql/.s.PGSQL.5432" }, /* listener */
        };
        uint32_t *inodes;
        size_t n;
        assert_int_equal(client_gone_dead_unix(&c, socks, 5, &inodes, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(inodes[0], 1);
        assert_int_equal(inodes[1], 3);
        free(inodes);
}

static void sleep_ms(int ms) {
        struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
}

/* The number of dead-peer sockets of the cluster once it is want (polled, at most 10 s), or the
 * last count seen: no test relies on how fast the kernel drops a peer. */
static size_t wait_dead_unix(const PgCluster *cl, size_t want) {
        size_t ni = 0;
        for (int tries = 0; tries < 1000; tries++) {
                if (tries > 0)
                        sleep_ms(10);
                UnixSock *socks;
                size_t n;
                uint32_t *inodes;
                assert_int_equal(sockdiag_unix(true, &socks, &n), 0);
                assert_int_equal(client_gone_dead_unix(cl, socks, n, &inodes, &ni), 0);
                free(socks);
                free(inodes);
                if (ni == want)
                        break;
        }
        return ni;
}

/* The real kernel: a TCP connection whose client closed is in CLOSE_WAIT on the server side. */
static void test_real_tcp_close_wait(void **state) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        assert_int_equal(bind(l, (struct sockaddr *) &a, sizeof a), 0);
        assert_int_equal(listen(l, 1), 0);
        socklen_t al = sizeof a;
        getsockname(l, (struct sockaddr *) &a, &al);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(connect(c, (struct sockaddr *) &a, sizeof a), 0);
        struct sockaddr_in ca;
        socklen_t cal = sizeof ca;
        getsockname(c, (struct sockaddr *) &ca, &cal);
        int s = accept(l, NULL, NULL);
        assert_true(s >= 0);
        close(c);

        /* the FIN is processed by the kernel, not by us: wait for CLOSE_WAIT (at most 10 s) */
        TcpSock *socks = NULL;
        size_t n;
        bool found = false;
        for (int tries = 0; tries < 1000 && !found; tries++) {
                if (tries > 0)
                        sleep_ms(10);
                free(socks);
                assert_int_equal(sockdiag_tcp(1u << 8, &socks, &n), 0);
                for (size_t i = 0; i < n; i++)
                        if (socks[i].sport == ntohs(a.sin_port) && socks[i].dport == ntohs(ca.sin_port)) {
                                found = true;
                                assert_int_equal(socks[i].state, 8);
                                assert_int_equal(socks[i].family, AF_INET);
                                assert_memory_equal(socks[i].dst, &ca.sin_addr, 4);
                        }
        }
        assert_true(found);
        free(socks);
        close(s);
        close(l);
}

/* The real kernel: an accepted Unix socket carries its listener's path; when the client goes,
 * its peer is gone. */
static void test_real_unix_dead_peer(void **state) {
        char dir[] = "/tmp/pgtree-sockdiag-XXXXXX";
        assert_non_null(mkdtemp(dir));
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof a.sun_path, "%s/.s.PGSQL.5999", dir);
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(bind(l, (struct sockaddr *) &a, sizeof a), 0);
        assert_int_equal(listen(l, 1), 0);
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(connect(c, (struct sockaddr *) &a, sizeof a), 0);
        int s = accept(l, NULL, NULL);
        assert_true(s >= 0);

        PgCluster cl = { .pmfile_valid = true, .pmfile = { .port = 5999 } };
        snprintf(cl.pmfile.socket_dir, sizeof cl.pmfile.socket_dir, "%s", dir);
        UnixSock *socks;
        size_t n;
        uint32_t *inodes;
        size_t ni;
        assert_int_equal(sockdiag_unix(true, &socks, &n), 0);
        assert_int_equal(client_gone_dead_unix(&cl, socks, n, &inodes, &ni), 0);
        assert_int_equal(ni, 0); /* the client is there */
        free(socks);
        free(inodes);

        close(c);
        assert_int_equal(wait_dead_unix(&cl, 1), 1);
        close(s);
        close(l);
        unlink(a.sun_path);
        rmdir(dir);
}

/* A dump larger than one netlink read (hundreds of sockets) is read to its end. */
static void test_real_large_dump(void **state) {
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < 2000 && rl.rlim_max >= 2000) {
                rl.rlim_cur = 2000;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        getrlimit(RLIMIT_NOFILE, &rl);
        enum { N = 800 };
        assert_true(rl.rlim_cur >= 2 * N + 50);
        char dir[] = "/tmp/pgtree-sockdiag-XXXXXX";
        assert_non_null(mkdtemp(dir));
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof a.sun_path, "%s/.s.PGSQL.5998", dir);
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(bind(l, (struct sockaddr *) &a, sizeof a), 0);
        assert_int_equal(listen(l, N), 0);
        static int cl[N], sv[N];
        for (int i = 0; i < N; i++) {
                cl[i] = socket(AF_UNIX, SOCK_STREAM, 0);
                assert_int_equal(connect(cl[i], (struct sockaddr *) &a, sizeof a), 0);
                sv[i] = accept(l, NULL, NULL);
                assert_true(sv[i] >= 0);
        }
        close(cl[N - 1]);
        UnixSock *socks;
        size_t n;
        assert_int_equal(sockdiag_unix(true, &socks, &n), 0);
        assert_true(n >= N);
        free(socks);
        PgCluster c = { .pmfile_valid = true, .pmfile = { .port = 5998 } };
        snprintf(c.pmfile.socket_dir, sizeof c.pmfile.socket_dir, "%s", dir);
        assert_int_equal(wait_dead_unix(&c, 1), 1);
        for (int i = 0; i < N; i++) {
                if (i < N - 1)
                        close(cl[i]);
                close(sv[i]);
        }
        close(l);
        unlink(a.sun_path);
        rmdir(dir);
}

static uint32_t inode_of(int fd) {
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        return (uint32_t) st.st_ino;
}

static int listen_unix(char *dir, int port, struct sockaddr_un *a) {
        assert_non_null(mkdtemp(dir));
        *a = (struct sockaddr_un){ .sun_family = AF_UNIX };
        snprintf(a->sun_path, sizeof a->sun_path, "%s/.s.PGSQL.%d", dir, port);
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(bind(l, (struct sockaddr *) a, sizeof *a), 0);
        assert_int_equal(listen(l, 256), 0);
        return l;
}

/* Exact lookups by inode, more than one batch: live sockets with their listener's path and a
 * peer; a socket whose client closed has none; a closed socket is not found. */
static void test_real_unix_lookup(void **state) {
        enum { N = 150 };
        char dir[] = "/tmp/pgtree-sockdiag-XXXXXX";
        struct sockaddr_un a;
        int l = listen_unix(dir, 5997, &a);
        static int cl[N], sv[N];
        static uint32_t inodes[N + 1];
        for (int i = 0; i < N; i++) {
                cl[i] = socket(AF_UNIX, SOCK_STREAM, 0);
                assert_int_equal(connect(cl[i], (struct sockaddr *) &a, sizeof a), 0);
                sv[i] = accept(l, NULL, NULL);
                assert_true(sv[i] >= 0);
                inodes[i] = inode_of(sv[i]);
        }
        close(cl[7]);
        close(cl[N - 1]);
        int gone = sv[100];
        inodes[N] = inode_of(cl[0]); /* a client socket: found, no listener path */
        close(gone);
        usleep(20000);
        static UnixSock socks[N + 1];
        static bool found[N + 1];
        assert_int_equal(sockdiag_unix_lookup(inodes, N + 1, socks, found), 0);
        for (int i = 0; i < N; i++) {
                if (i == 100) {
                        assert_false(found[i]);
                        continue;
                }
                assert_true(found[i]);
                assert_int_equal(socks[i].inode, inodes[i]);
                assert_string_equal(socks[i].path, a.sun_path);
                bool dead = socks[i].peer == 0 || socks[i].shutdown == 3;
                assert_int_equal(dead, i == 7 || i == N - 1);
        }
        assert_true(found[N]);
        assert_string_equal(socks[N].path, "");
        assert_true(socks[N].peer != 0);

        /* our own descriptors name them */
        uint32_t mine[4 * N];
        size_t n;
        assert_int_equal(proc_socket_inodes(getpid(), mine, 4 * N, &n), 0);
        bool have = false;
        for (size_t i = 0; i < n; i++)
                have |= mine[i] == inodes[3];
        assert_true(have);

        for (int i = 0; i < N; i++) {
                if (i != 7 && i != N - 1)
                        close(cl[i]);
                if (i != 100)
                        close(sv[i]);
        }
        close(l);
        unlink(a.sun_path);
        rmdir(dir);
}

static bool not_idle(const PgProcess *p, void *userdata) {
        int *calls = userdata;
        (*calls)++;
        return strcmp(p->title.state, "idle") != 0;
}

/* n "backends": each a child holding the server side of one connection to the listener l,
 * whose client ends are cl[i] (ours); returns once every child has closed what is not its own. */
static void spawn_backends(int l, const struct sockaddr_un *a, int n, int *cl, pid_t *kid) {
        int ready[2];
        assert_int_equal(pipe(ready), 0);
        for (int i = 0; i < n; i++) {
                cl[i] = socket(AF_UNIX, SOCK_STREAM, 0);
                assert_int_equal(connect(cl[i], (const struct sockaddr *) a, sizeof *a), 0);
                int sv = accept(l, NULL, NULL);
                assert_true(sv >= 0);
                kid[i] = fork();
                assert_true(kid[i] >= 0);
                if (kid[i] == 0) { /* the "backend": holds its server socket only */
                        prctl(PR_SET_PDEATHSIG, SIGTERM);
                        close(l);
                        for (int j = 0; j <= i; j++)
                                close(cl[j]);
                        close(ready[0]);
                        (void) !write(ready[1], "x", 1);
                        close(ready[1]);
                        pause();
                        _exit(0);
                }
                close(sv);
        }
        close(ready[1]);
        char buf[64];
        for (int got = 0; got < n;) {
                ssize_t k = read(ready[0], buf, sizeof buf);
                assert_true(k > 0);
                got += (int) k;
        }
        close(ready[0]);
}

/* The probe: backends (real processes holding the server side of a Unix connection) are found
 * by their socket, once; only the wanted ones are looked at; a dead client is reported. */
static void test_probe_unix(void **state) {
        enum { N = 3 };
        char dir[] = "/tmp/pgtree-sockdiag-XXXXXX";
        struct sockaddr_un a;
        int l = listen_unix(dir, 5996, &a);
        int cl[N];
        pid_t kid[N];
        spawn_backends(l, &a, N, cl, kid);
        char t0[64], t1[64], t2[64];
        snprintf(t0, sizeof t0, "postgres: eve shop [local] SELECT");
        snprintf(t1, sizeof t1, "postgres: eve shop [local] idle in transaction");
        snprintf(t2, sizeof t2, "postgres: eve shop [local] idle");
        ProcRecord r[] = { REC(100, 1, "/usr/bin/postgres -D /srv/a"), REC(kid[0], 100, t0), REC(kid[1], 100, t1),
                           REC(kid[2], 100, t2) };
        PgTree t;
        assert_int_equal(tree_build(r, sizeof r / sizeof r[0], &t), 0);
        t.clusters[0].pmfile_valid = true;
        t.clusters[0].pmfile.port = 5996;
        snprintf(t.clusters[0].pmfile.socket_dir, sizeof t.clusters[0].pmfile.socket_dir, "%s", dir);

        ClientGoneProbe *p;
        assert_int_equal(client_gone_probe_new(&p), 0);
        GoneBackend *gone;
        size_t n;
        int calls = 0;
        assert_int_equal(client_gone_probe_run(p, &t, not_idle, &calls, &gone, &n), 0);
        assert_int_equal(n, 0);
        free(gone);
        assert_int_equal(calls, 3);
        ClientGoneStats st = client_gone_probe_stats(p);
        assert_int_equal(st.unix_wanted, 2);
        assert_int_equal(st.fd_reads, 2);
        assert_int_equal(st.unix_lookups, 2);
        assert_int_equal(st.unix_dumps, 0);

        close(cl[0]); /* the working backend's client goes */
        close(cl[2]); /* and the idle one's: not looked at */
        usleep(20000);
        assert_int_equal(client_gone_probe_run(p, &t, not_idle, &calls, &gone, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(gone[0].pid, kid[0]);
        assert_true(gone[0].start_ticks == (uint64_t) kid[0]);
        free(gone);
        st = client_gone_probe_stats(p);
        assert_int_equal(st.fd_reads, 0); /* known from the first time */
        assert_int_equal(st.unix_lookups, 2);

        /* a pid now another process (other start): its descriptors are read again */
        for (size_t i = 0; i < t.n_procs; i++)
                if (t.procs[i].rec.pid == kid[1])
                        t.procs[i].rec.start_ticks++;
        assert_int_equal(client_gone_probe_run(p, &t, not_idle, &calls, &gone, &n), 0);
        free(gone);
        assert_int_equal(client_gone_probe_stats(p).fd_reads, 1);

        client_gone_probe_free(p);
        tree_free(&t);
        for (int i = 0; i < N; i++) {
                kill(kid[i], SIGTERM);
                waitpid(kid[i], NULL, 0);
        }
        close(cl[1]);
        close(l);
        unlink(a.sun_path);
        rmdir(dir);
}

/* More working backends than the probe looks up one by one: one dump of the host's Unix
 * sockets, each matched by inode as it comes; exactly the backends whose client went are
 * reported. */
static void test_probe_unix_dump(void **state) {
        enum { N = CLIENT_GONE_LOOKUP_MAX + 12 };
        char dir[] = "/tmp/pgtree-sockdiag-XXXXXX";
        struct sockaddr_un a;
        int l = listen_unix(dir, 5997, &a);
        static int cl[N];
        static pid_t kid[N];
        spawn_backends(l, &a, N, cl, kid);
        static ProcRecord r[N + 1];
        r[0] = (ProcRecord) REC(100, 1, "/usr/bin/postgres -D /srv/a");
        for (int i = 0; i < N; i++)
                r[i + 1] = (ProcRecord) REC(kid[i], 100, "postgres: eve shop [local] SELECT");
        PgTree t;
        assert_int_equal(tree_build(r, N + 1, &t), 0);
        t.clusters[0].pmfile_valid = true;
        t.clusters[0].pmfile.port = 5997;
        snprintf(t.clusters[0].pmfile.socket_dir, sizeof t.clusters[0].pmfile.socket_dir, "%s", dir);

        ClientGoneProbe *p;
        assert_int_equal(client_gone_probe_new(&p), 0);
        GoneBackend *gone;
        size_t n;
        int calls = 0;
        assert_int_equal(client_gone_probe_run(p, &t, not_idle, &calls, &gone, &n), 0);
        assert_int_equal(n, 0);
        free(gone);
        ClientGoneStats st = client_gone_probe_stats(p);
        assert_int_equal(st.unix_wanted, N);
        assert_int_equal(st.unix_dumps, 1);

        int went[] = { 0, N / 2, N - 1 };
        for (size_t k = 0; k < sizeof went / sizeof went[0]; k++)
                close(cl[went[k]]);
        usleep(20000);
        /* a look limited to a few Unix clients (between cycles) leaves these many to the cycle */
        client_gone_probe_limit_unix(p, 8);
        assert_int_equal(client_gone_probe_run(p, &t, not_idle, &calls, &gone, &n), 0);
        assert_int_equal(n, 0);
        free(gone);
        assert_int_equal(client_gone_probe_stats(p).unix_skipped, N);
        assert_int_equal(client_gone_probe_stats(p).unix_dumps, 0);
        client_gone_probe_limit_unix(p, 0);
        assert_int_equal(client_gone_probe_run(p, &t, not_idle, &calls, &gone, &n), 0);
        assert_int_equal(n, 3);
        pid_t want[3] = { kid[went[0]], kid[went[1]], kid[went[2]] };
        for (size_t k = 0; k < 3; k++) {
                bool found = false;
                for (size_t g = 0; g < n; g++)
                        found |= gone[g].pid == want[k];
                assert_true(found);
        }
        free(gone);
        assert_int_equal(client_gone_probe_stats(p).unix_dumps, 1);

        client_gone_probe_free(p);
        tree_free(&t);
        for (int i = 0; i < N; i++) {
                kill(kid[i], SIGTERM);
                waitpid(kid[i], NULL, 0);
                if (i != 0 && i != N / 2 && i != N - 1)
                        close(cl[i]);
        }
        close(l);
        unlink(a.sun_path);
        rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_match_tcp),
                cmocka_unit_test(test_dead_unix),
                cmocka_unit_test(test_real_tcp_close_wait),
                cmocka_unit_test(test_real_unix_dead_peer),
                cmocka_unit_test(test_real_large_dump),
                cmocka_unit_test(test_real_unix_lookup),
                cmocka_unit_test(test_probe_unix),
                cmocka_unit_test(test_probe_unix_dump),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
