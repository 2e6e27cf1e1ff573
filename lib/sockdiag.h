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
/* Unix stream sockets with their bound name (an accepted socket carries its listener's), peer
 * inode and shutdown state. */
int sockdiag_unix(UnixSock **ret, size_t *n_ret);

/* Pure matchers. A backend's TCP client is gone when its server-side socket (local port = the
 * cluster's port, remote = the client) is in CLOSE_WAIT. Adds pids to *pids. */
int client_gone_match_tcp(const PgTree *t, const TcpSock *socks, size_t n, pid_t **pids, size_t *n_pids, size_t *allocated);
/* The inodes of server-side Unix sockets of this cluster whose peer is gone. */
int client_gone_dead_unix(const PgCluster *c, const UnixSock *socks, size_t n, uint32_t **inodes, size_t *n_inodes);

enum {
        CLIENT_GONE_TCP = 1 << 0,       /* one kernel-filtered dump of CLOSE_WAIT sockets: cheap */
        CLIENT_GONE_UNIX = 1 << 1,      /* a dump of every connected Unix socket on the host */
};

/* The pids of client backends whose client connection is dead (sorted), by TCP and/or Unix
 * sockets. Reads /proc/PID/fd of local-socket backends only when a dead Unix peer exists (root
 * or owner). */
int client_gone_scan(const PgTree *t, unsigned what, pid_t **ret, size_t *n_ret);
