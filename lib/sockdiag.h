/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tree.h"

/* A TCP socket as sock_diag reports it (ports in host order). */
typedef struct TcpSock {
        int family;                     /* AF_INET / AF_INET6 */
        unsigned char src[16], dst[16];
        uint16_t sport, dport;
        uint8_t state;                  /* TCP_ESTABLISHED, TCP_CLOSE_WAIT, … */
        uint32_t inode;
} TcpSock;

typedef struct UnixSock {
        uint32_t inode;
        uint32_t peer;                  /* 0: the peer is gone (or never was) */
        bool has_peer_attr;
        uint8_t state;
        uint8_t shutdown;               /* SHUTDOWN_MASK (3) once the peer closed */
        char path[108];
} UnixSock;

/* TCP sockets (IPv4 and IPv6) in the given states (bit per TCP state), through NETLINK_SOCK_DIAG:
 * one dump, filtered by the kernel, instead of parsing /proc/net/tcp per backend. */
int sockdiag_tcp(uint32_t states, TcpSock **ret, size_t *n_ret);
/* Unix stream sockets with their peer inode, shutdown state and (names) their bound name (an
 * accepted socket carries its listener's). */
int sockdiag_unix(bool names, UnixSock **ret, size_t *n_ret);
/* The same, one socket at a time as the kernel sends them (nothing collected). */
int sockdiag_unix_foreach(bool names, int (*each)(const UnixSock *s, void *ud), void *ud);

/* Unix sockets by inode, through exact sock_diag requests (UNIX_DIAG with udiag_ino, batched:
 * many requests per send): found[i] tells whether inodes[i] still exists, ret[i] what it is. */
int sockdiag_unix_lookup(const uint32_t *inodes, size_t n, UnixSock *ret, bool *found);

/* The socket inodes among /proc/PID/fd (root or the owner only): up to max, count in *n_ret. */
int proc_socket_inodes(pid_t pid, uint32_t *inodes, size_t max, size_t *n_ret);

/* Pure matchers. A backend's TCP client is gone when its server-side socket (local port = the
 * cluster's port, remote = the client) is in CLOSE_WAIT. Adds pids to *pids. */
int client_gone_match_tcp(const PgTree *t, const TcpSock *socks, size_t n, pid_t **pids, size_t *n_pids, size_t *allocated);
/* The inodes of server-side Unix sockets of this cluster whose peer is gone. */
int client_gone_dead_unix(const PgCluster *c, const UnixSock *socks, size_t n, uint32_t **inodes, size_t *n_inodes);

/* A backend whose client connection is dead, seen by client_gone_probe_run(). */
typedef struct GoneBackend {
        pid_t pid;
        uint64_t start_ticks;
} GoneBackend;

/* Remembers which socket is each local backend's client connection (read once from
 * /proc/PID/fd, then looked up by inode each cycle: no dump of every Unix socket of the host). */
typedef struct ClientGoneProbe ClientGoneProbe;
int client_gone_probe_new(ClientGoneProbe **ret);
ClientGoneProbe *client_gone_probe_free(ClientGoneProbe *p);
/* The client backends whose client is gone now, sorted by pid: TCP ones through one
 * kernel-filtered dump of CLOSE_WAIT sockets; Unix ones only where wanted(p) says so (the
 * backends that are not idle: an idle backend whose client closed is on its way out), by the
 * inode of their socket — up to CLIENT_GONE_LOOKUP_MAX of them, beyond that one dump. */
#define CLIENT_GONE_LOOKUP_MAX 128
/* Unix clients looked at between cycles, at most (engine_clients_died) */
#define CLIENT_GONE_BETWEEN_MAX 8
int client_gone_probe_run(ClientGoneProbe *p, const PgTree *t, bool (*wanted)(const PgProcess *p, void *userdata),
                          void *userdata, GoneBackend **ret, size_t *n_ret);
/* What the last run did (for tests and benchmarks). */
typedef struct ClientGoneStats {
        size_t unix_wanted, unix_lookups, unix_dumps, fd_reads, unix_skipped;
} ClientGoneStats;
/* Runs after this look at Unix clients only when at most max are wanted (0: always): a lookup
 * by inode walks every Unix socket of the host in the kernel, so a look between cycles keeps to
 * TCP clients (one kernel-filtered dump) and a few Unix ones. */
void client_gone_probe_limit_unix(ClientGoneProbe *p, size_t max);
ClientGoneStats client_gone_probe_stats(const ClientGoneProbe *p);

enum {
        CLIENT_GONE_TCP = 1 << 0,       /* one kernel-filtered dump of CLOSE_WAIT sockets: cheap */
        CLIENT_GONE_UNIX = 1 << 1,      /* a dump of every connected Unix socket on the host */
};

/* The pids of client backends whose client connection is dead (sorted), by TCP and/or Unix
 * sockets. Reads /proc/PID/fd of local-socket backends only when a dead Unix peer exists (root
 * or owner). */
int client_gone_scan(const PgTree *t, unsigned what, pid_t **ret, size_t *n_ret);
