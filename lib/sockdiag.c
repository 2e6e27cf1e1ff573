/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "join.h"
#include "macro.h"
#include "sockdiag.h"

#ifndef SOCK_DIAG_BY_FAMILY
#define SOCK_DIAG_BY_FAMILY 20
#endif
#define TCP_STATE_ESTABLISHED 1
#define TCP_STATE_CLOSE_WAIT 8

static int dump(int fd, const void *req, size_t len, int (*each)(const struct nlmsghdr *h, void *ud), void *ud) {
        struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
        if (sendto(fd, req, len, 0, (struct sockaddr *) &nl, sizeof nl) < 0)
                return negative_errno();
        _cleanup_free_ char *buf = malloc(65536);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k = recv(fd, buf, 65536, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        return 0;
                ssize_t left = k; /* NLMSG_NEXT consumes it */
                for (struct nlmsghdr *h = (struct nlmsghdr *) buf; NLMSG_OK(h, (size_t) left); h = NLMSG_NEXT(h, left)) {
                        if (h->nlmsg_type == NLMSG_DONE)
                                return 0;
                        if (h->nlmsg_type == NLMSG_ERROR) {
                                const struct nlmsgerr *e = NLMSG_DATA(h);
                                return e->error ? e->error : -EIO;
                        }
                        int r = each(h, ud);
                        if (r < 0)
                                return r;
                }
        }
}

typedef struct TcpCollect {
        TcpSock *items;
        size_t n, allocated;
} TcpCollect;

static int each_tcp(const struct nlmsghdr *h, void *ud) {
        TcpCollect *c = ud;
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
                return 0;
        const struct inet_diag_msg *m = NLMSG_DATA(h);
        if (GROW(c->items, c->allocated, c->n + 1) < 0)
                return -ENOMEM;
        TcpSock *s = &c->items[c->n++];
        *s = (TcpSock){ .family = m->idiag_family, .sport = ntohs(m->id.idiag_sport), .dport = ntohs(m->id.idiag_dport),
                        .state = m->idiag_state, .inode = m->idiag_inode };
        size_t alen = m->idiag_family == AF_INET ? 4 : 16;
        memcpy(s->src, m->id.idiag_src, alen);
        memcpy(s->dst, m->id.idiag_dst, alen);
        return 0;
}

int sockdiag_tcp(uint32_t states, TcpSock **ret, size_t *n_ret) {
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0)
                return negative_errno();
        TcpCollect c = {};
        int families[] = { AF_INET, AF_INET6 };
        for (size_t i = 0; i < 2; i++) {
                struct {
                        struct nlmsghdr h;
                        struct inet_diag_req_v2 r;
                } req = {
                        .h = { .nlmsg_len = sizeof req, .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                               .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
                        .r = { .sdiag_family = (uint8_t) families[i], .sdiag_protocol = IPPROTO_TCP, .idiag_states = states },
                };
                int r = dump(fd, &req, sizeof req, each_tcp, &c);
                if (r < 0 && !(r == -ENOENT && families[i] == AF_INET6)) { /* no IPv6: fine */
                        free(c.items);
                        return r;
                }
        }
        *ret = c.items;
        *n_ret = c.n;
        return 0;
}

typedef struct UnixCollect {
        UnixSock *items;
        size_t n, allocated;
} UnixCollect;

static int each_unix(const struct nlmsghdr *h, void *ud) {
        UnixCollect *c = ud;
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
                return 0;
        const struct unix_diag_msg *m = NLMSG_DATA(h);
        if (GROW(c->items, c->allocated, c->n + 1) < 0)
                return -ENOMEM;
        UnixSock *s = &c->items[c->n++];
        *s = (UnixSock){ .inode = m->udiag_ino, .state = m->udiag_state };
        const char *p = (const char *) m + NLMSG_ALIGN(sizeof *m), *end = (const char *) h + h->nlmsg_len;
        while (p + NLA_HDRLEN <= end) {
                const struct nlattr *a = (const struct nlattr *) p;
                if (a->nla_len < NLA_HDRLEN || p + a->nla_len > end)
                        break;
                const void *data = p + NLA_HDRLEN;
                size_t dlen = a->nla_len - NLA_HDRLEN;
                switch (a->nla_type) {
                case UNIX_DIAG_NAME:
                        if (dlen > 0 && dlen < sizeof s->path) {
                                memcpy(s->path, data, dlen);
                                s->path[dlen] = 0;
                        }
                        break;
                case UNIX_DIAG_PEER:
                        if (dlen >= 4) {
                                memcpy(&s->peer, data, 4);
                                s->has_peer_attr = true;
                        }
                        break;
                case UNIX_DIAG_SHUTDOWN:
                        if (dlen >= 1)
                                s->shutdown = *(const uint8_t *) data;
                        break;
                }
                p += NLA_ALIGN(a->nla_len);
        }
        return 0;
}

int sockdiag_unix(UnixSock **ret, size_t *n_ret) {
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0)
                return negative_errno();
        struct {
                struct nlmsghdr h;
                struct unix_diag_req r;
        } req = {
                .h = { .nlmsg_len = sizeof req, .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
                .r = { .sdiag_family = AF_UNIX, .udiag_states = 1u << TCP_STATE_ESTABLISHED,
                       .udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER },
        };
        UnixCollect c = {};
        int r = dump(fd, &req, sizeof req, each_unix, &c);
        if (r < 0) {
                free(c.items);
                return r;
        }
        *ret = c.items;
        *n_ret = c.n;
        return 0;
}

/* ---- matching ---- */

static bool client_addr(const char *client, int *family, unsigned char addr[16], uint16_t *port) {
        char host[64];
        const char *colon;
        if (client[0] == '[') {
                const char *end = strchr(client, ']');
                if (!end || end[1] != ':' || (size_t) (end - client - 1) >= sizeof host)
                        return false;
                snprintf(host, sizeof host, "%.*s", (int) (end - client - 1), client + 1);
                colon = end + 1;
                *family = AF_INET6;
        } else {
                colon = strrchr(client, ':');
                if (!colon || (size_t) (colon - client) >= sizeof host)
                        return false;
                snprintf(host, sizeof host, "%.*s", (int) (colon - client), client);
                *family = AF_INET;
        }
        long p = strtol(colon + 1, NULL, 10);
        if (p <= 0 || p > 65535 || inet_pton(*family, host, addr) != 1)
                return false;
        *port = (uint16_t) p;
        return true;
}

static int add_pid(pid_t **pids, size_t *n, size_t *allocated, pid_t pid) {
        for (size_t i = 0; i < *n; i++)
                if ((*pids)[i] == pid)
                        return 0;
        if (grow_array((void **) pids, allocated, *n + 1, sizeof(pid_t)) < 0)
                return -ENOMEM;
        (*pids)[(*n)++] = pid;
        return 0;
}

/* A v4 client may show up as a v4-mapped v6 address on a dual-stack listener. */
static bool same_addr(const TcpSock *s, int family, const unsigned char *addr) {
        if (s->family == family)
                return memcmp(s->dst, addr, family == AF_INET ? 4 : 16) == 0;
        if (s->family == AF_INET6 && family == AF_INET) {
                static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
                return memcmp(s->dst, mapped, 12) == 0 && memcmp(s->dst + 12, addr, 4) == 0;
        }
        return false;
}

int client_gone_match_tcp(const PgTree *t, const TcpSock *socks, size_t n, pid_t **pids, size_t *n_pids, size_t *allocated) {
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (p->cluster < 0 || !proc_is_client_backend(p))
                        continue;
                const PgCluster *c = &t->clusters[p->cluster];
                if (!c->pmfile_valid || c->pmfile.port <= 0)
                        continue;
                char client[128];
                proc_client(p, client, sizeof client);
                int family;
                unsigned char addr[16];
                uint16_t port;
                if (!client_addr(client, &family, addr, &port))
                        continue;
                for (size_t k = 0; k < n; k++) {
                        const TcpSock *s = &socks[k];
                        if (s->state == TCP_STATE_CLOSE_WAIT && s->sport == c->pmfile.port && s->dport == port &&
                            same_addr(s, family, addr)) {
                                if (add_pid(pids, n_pids, allocated, p->rec.pid) < 0)
                                        return -ENOMEM;
                                break;
                        }
                }
        }
        return 0;
}

int client_gone_dead_unix(const PgCluster *c, const UnixSock *socks, size_t n, uint32_t **inodes, size_t *n_inodes) {
        *inodes = NULL;
        *n_inodes = 0;
        if (!c->pmfile_valid || c->pmfile.port <= 0 || !c->pmfile.socket_dir[0])
                return 0;
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/.s.PGSQL.%d", c->pmfile.socket_dir, c->pmfile.port);
        size_t allocated = 0;
        for (size_t i = 0; i < n; i++) {
                const UnixSock *s = &socks[i];
                if (s->state != TCP_STATE_ESTABLISHED || strcmp(s->path, path) != 0)
                        continue;
                if (s->peer != 0 && s->shutdown != 3)
                        continue; /* its client is there */
                if (grow_array((void **) inodes, &allocated, *n_inodes + 1, sizeof(uint32_t)) < 0)
                        return -ENOMEM;
                (*inodes)[(*n_inodes)++] = s->inode;
        }
        return 0;
}

static bool holds_socket(pid_t pid, const uint32_t *inodes, size_t n) {
        char dir[64];
        snprintf(dir, sizeof dir, "/proc/%d/fd", (int) pid);
        DIR *d = opendir(dir);
        if (!d)
                return false;
        bool found = false;
        struct dirent *e;
        while (!found && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char link[64];
                ssize_t k = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
                if (k <= 8)
                        continue;
                link[k] = 0;
                unsigned long ino;
                if (sscanf(link, "socket:[%lu]", &ino) != 1)
                        continue;
                for (size_t i = 0; i < n && !found; i++)
                        found = inodes[i] == ino;
        }
        closedir(d);
        return found;
}

static int cmp_pid(const void *a, const void *b) {
        pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;
        return (x > y) - (x < y);
}

int client_gone_scan(const PgTree *t, unsigned what, pid_t **ret, size_t *n_ret) {
        *ret = NULL;
        *n_ret = 0;
        pid_t *pids = NULL;
        size_t n = 0, allocated = 0;
        bool any_tcp = false, any_local = false;
        for (size_t i = 0; i < t->n_procs; i++) {
                const PgProcess *p = &t->procs[i];
                if (p->cluster < 0 || !proc_is_client_backend(p))
                        continue;
                char client[128];
                proc_client(p, client, sizeof client);
                if (!strcmp(client, "local"))
                        any_local = what & CLIENT_GONE_UNIX;
                else if (client[0])
                        any_tcp = what & CLIENT_GONE_TCP;
        }
        int r = 0;
        if (any_tcp) {
                TcpSock *socks = NULL;
                size_t ns = 0;
                r = sockdiag_tcp(1u << TCP_STATE_CLOSE_WAIT, &socks, &ns);
                if (r >= 0)
                        r = client_gone_match_tcp(t, socks, ns, &pids, &n, &allocated);
                free(socks);
        }
        if (r >= 0 && any_local) {
                UnixSock *socks = NULL;
                size_t ns = 0;
                r = sockdiag_unix(&socks, &ns);
                for (size_t c = 0; r >= 0 && c < t->n_clusters; c++) {
                        uint32_t *inodes;
                        size_t ni;
                        r = client_gone_dead_unix(&t->clusters[c], socks, ns, &inodes, &ni);
                        for (size_t i = 0; r >= 0 && ni > 0 && i < t->n_procs; i++) {
                                const PgProcess *p = &t->procs[i];
                                char client[16];
                                if (p->cluster != (int) c || !proc_is_client_backend(p))
                                        continue;
                                proc_client(p, client, sizeof client);
                                if (!strcmp(client, "local") && holds_socket(p->rec.pid, inodes, ni))
                                        r = add_pid(&pids, &n, &allocated, p->rec.pid);
                        }
                        free(inodes);
                }
                free(socks);
        }
        if (r < 0) {
                free(pids);
                return r;
        }
        if (n > 1) /* pids is NULL when nothing was found: qsort(NULL, 0) is undefined */
                qsort(pids, n, sizeof *pids, cmp_pid);
        *ret = pids;
        *n_ret = n;
        return 0;
}
