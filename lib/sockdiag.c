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

static void parse_unix(const struct nlmsghdr *h, UnixSock *s) {
        const struct unix_diag_msg *m = NLMSG_DATA(h);
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
}

#define LOOKUP_BATCH 64

int sockdiag_unix_lookup(const uint32_t *inodes, size_t n, UnixSock *ret, bool *found) {
        for (size_t i = 0; i < n; i++)
                found[i] = false;
        if (n == 0)
                return 0;
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0)
                return negative_errno();
        typedef struct {
                struct nlmsghdr h;
                struct unix_diag_req r;
        } Req;
        Req req[LOOKUP_BATCH];
        _cleanup_free_ char *buf = malloc(65536);
        if (!buf)
                return -ENOMEM;
        struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
        for (size_t base = 0; base < n; base += LOOKUP_BATCH) {
                size_t k = n - base < LOOKUP_BATCH ? n - base : LOOKUP_BATCH;
                for (size_t i = 0; i < k; i++)
                        req[i] = (Req){
                                .h = { .nlmsg_len = sizeof(Req), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                                       .nlmsg_flags = NLM_F_REQUEST, .nlmsg_seq = (uint32_t) (base + i + 1) },
                                .r = { .sdiag_family = AF_UNIX, .udiag_ino = inodes[base + i],
                                       .udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER,
                                       .udiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE } },
                        };
                /* the kernel answers each request of the batch in turn: a socket, or an error */
                if (sendto(fd, req, k * sizeof(Req), 0, (struct sockaddr *) &nl, sizeof nl) < 0)
                        return negative_errno();
                size_t answered = 0;
                while (answered < k) {
                        ssize_t got = recv(fd, buf, 65536, 0);
                        if (got < 0) {
                                if (errno == EINTR)
                                        continue;
                                return negative_errno();
                        }
                        if (got == 0)
                                return -EIO;
                        ssize_t left = got;
                        for (struct nlmsghdr *h = (struct nlmsghdr *) buf; NLMSG_OK(h, (size_t) left); h = NLMSG_NEXT(h, left)) {
                                if (h->nlmsg_seq < base + 1 || h->nlmsg_seq > base + k)
                                        continue; /* not ours */
                                size_t i = h->nlmsg_seq - 1;
                                answered++;
                                if (h->nlmsg_type == NLMSG_ERROR) {
                                        const struct nlmsgerr *e = NLMSG_DATA(h);
                                        if (e->error != 0 && e->error != -ENOENT)
                                                return e->error; /* EPERM, EINVAL: no answer at all */
                                        continue;        /* gone */
                                }
                                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
                                        continue;
                                parse_unix(h, &ret[i]);
                                found[i] = ret[i].inode == inodes[i];
                        }
                }
        }
        return 0;
}

int proc_socket_inodes(pid_t pid, uint32_t *inodes, size_t max, size_t *n_ret) {
        *n_ret = 0;
        char dir[64];
        snprintf(dir, sizeof dir, "/proc/%d/fd", (int) pid);
        DIR *d = opendir(dir);
        if (!d)
                return negative_errno();
        struct dirent *e;
        while ((e = readdir(d)) && *n_ret < max) {
                if (e->d_name[0] == '.')
                        continue;
                char link[64];
                ssize_t k = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
                if (k <= 8)
                        continue;
                link[k] = 0;
                unsigned long ino;
                if (sscanf(link, "socket:[%lu]", &ino) == 1 && ino <= UINT32_MAX)
                        inodes[(*n_ret)++] = (uint32_t) ino;
        }
        closedir(d);
        return 0;
}

typedef struct UnixEach {
        int (*each)(const UnixSock *s, void *ud);
        void *ud;
} UnixEach;

static int each_unix(const struct nlmsghdr *h, void *ud) {
        UnixEach *e = ud;
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
                return 0;
        UnixSock s;
        parse_unix(h, &s);
        return e->each(&s, e->ud);
}

int sockdiag_unix_foreach(bool names, int (*each)(const UnixSock *s, void *ud), void *ud) {
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0)
                return negative_errno();
        struct {
                struct nlmsghdr h;
                struct unix_diag_req r;
        } req = {
                .h = { .nlmsg_len = sizeof req, .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
                .r = { .sdiag_family = AF_UNIX, .udiag_states = 1u << TCP_STATE_ESTABLISHED,
                       .udiag_show = (names ? UDIAG_SHOW_NAME : 0) | UDIAG_SHOW_PEER },
        };
        UnixEach e = { each, ud };
        return dump(fd, &req, sizeof req, each_unix, &e);
}

static int collect_unix(const UnixSock *s, void *ud) {
        UnixCollect *c = ud;
        if (GROW(c->items, c->allocated, c->n + 1) < 0)
                return -ENOMEM;
        c->items[c->n++] = *s;
        return 0;
}

int sockdiag_unix(bool names, UnixSock **ret, size_t *n_ret) {
        UnixCollect c = {};
        int r = sockdiag_unix_foreach(names, collect_unix, &c);
        if (r < 0) {
                free(c.items);
                return r;
        }
        *ret = c.items;
        *n_ret = c.n;
        return 0;
}

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
                r = sockdiag_unix(true, &socks, &ns);
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

/* ---- the probe: each backend's client socket, looked up by inode ---- */

typedef struct ClientSock {
        pid_t pid;
        uint64_t start_ticks;
        uint32_t inode;         /* 0: none found (not a Unix client, or /proc/PID/fd unreadable) */
        uint64_t used;
} ClientSock;

struct ClientGoneProbe {
        ClientSock *socks;      /* sorted by pid */
        size_t n, allocated;
        uint64_t generation;
        ClientGoneStats stats;
        size_t unix_limit;      /* 0: none */
};

void client_gone_probe_limit_unix(ClientGoneProbe *p, size_t max) {
        p->unix_limit = max;
}

int client_gone_probe_new(ClientGoneProbe **ret) {
        ClientGoneProbe *p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

ClientGoneProbe *client_gone_probe_free(ClientGoneProbe *p) {
        if (p) {
                free(p->socks);
                free(p);
        }
        return NULL;
}

ClientGoneStats client_gone_probe_stats(const ClientGoneProbe *p) {
        return p->stats;
}

static int cmp_client_sock(const void *a, const void *b) {
        pid_t x = ((const ClientSock *) a)->pid, y = ((const ClientSock *) b)->pid;
        return (x > y) - (x < y);
}

static void cluster_socket_path(const PgCluster *c, char *buf, size_t size) {
        buf[0] = 0;
        if (c->pmfile_valid && c->pmfile.port > 0 && c->pmfile.socket_dir[0])
                snprintf(buf, size, "%s/.s.PGSQL.%d", c->pmfile.socket_dir, c->pmfile.port);
}

/* The client socket of a backend: among its socket descriptors, the one bound to its cluster's
 * socket path (an accepted socket carries its listener's name). 0 if none. */
static uint32_t find_client_socket(ClientGoneProbe *p, const PgProcess *proc, const char *path) {
        uint32_t inodes[32];
        size_t n;
        p->stats.fd_reads++;
        if (!path[0] || proc_socket_inodes(proc->rec.pid, inodes, ELEMENTSOF(inodes), &n) < 0 || n == 0)
                return 0;
        UnixSock socks[ELEMENTSOF(inodes)];
        bool found[ELEMENTSOF(inodes)];
        if (sockdiag_unix_lookup(inodes, n, socks, found) < 0)
                return 0;
        for (size_t i = 0; i < n; i++) /* not a listening socket of the same name, still open in a new child */
                if (found[i] && socks[i].state == TCP_STATE_ESTABLISHED && !strcmp(socks[i].path, path))
                        return inodes[i];
        return 0;
}

static ClientSock *client_sock(ClientGoneProbe *p, const PgProcess *proc, const char *path) {
        ClientSock key = { .pid = proc->rec.pid };
        ClientSock *c = p->n ? bsearch(&key, p->socks, p->n, sizeof key, cmp_client_sock) : NULL;
        if (c && c->start_ticks != proc->rec.start_ticks) {
                *c = (ClientSock){ .pid = proc->rec.pid, .start_ticks = proc->rec.start_ticks,
                                   .inode = find_client_socket(p, proc, path) };
        }
        if (!c) {
                if (GROW(p->socks, p->allocated, p->n + 1) < 0)
                        return NULL;
                size_t at = 0;
                while (at < p->n && p->socks[at].pid < proc->rec.pid) /* keep sorted: n is small per cycle */
                        at++;
                memmove(&p->socks[at + 1], &p->socks[at], (p->n - at) * sizeof *p->socks);
                p->socks[at] = (ClientSock){ .pid = proc->rec.pid, .start_ticks = proc->rec.start_ticks,
                                             .inode = find_client_socket(p, proc, path) };
                p->n++;
                c = &p->socks[at];
        }
        c->used = p->generation;
        return c;
}

static int add_gone(GoneBackend **v, size_t *n, size_t *allocated, const PgProcess *proc) {
        for (size_t i = 0; i < *n; i++)
                if ((*v)[i].pid == proc->rec.pid)
                        return 0;
        if (grow_array((void **) v, allocated, *n + 1, sizeof(GoneBackend)) < 0)
                return -ENOMEM;
        (*v)[(*n)++] = (GoneBackend){ proc->rec.pid, proc->rec.start_ticks };
        return 0;
}

static bool unix_dead(const UnixSock *s) {
        return s->state == TCP_STATE_ESTABLISHED && (s->peer == 0 || s->shutdown == 3);
}

static int cmp_gone(const void *a, const void *b) {
        pid_t x = ((const GoneBackend *) a)->pid, y = ((const GoneBackend *) b)->pid;
        return (x > y) - (x < y);
}

typedef struct WantedSock {
        uint32_t inode;
        bool dead;
        size_t at;              /* its backend in the tree */
} WantedSock;

typedef struct WantedSet {
        WantedSock *items;
        size_t n;
} WantedSet;

static int cmp_wanted(const void *a, const void *b) {
        uint32_t x = ((const WantedSock *) a)->inode, y = ((const WantedSock *) b)->inode;
        return (x > y) - (x < y);
}

static int mark_dead(const UnixSock *s, void *ud) {
        WantedSet *set = ud;
        WantedSock key = { .inode = s->inode };
        WantedSock *w = bsearch(&key, set->items, set->n, sizeof key, cmp_wanted);
        if (w && unix_dead(s))
                w->dead = true;
        return 0;
}

int client_gone_probe_run(ClientGoneProbe *p, const PgTree *t, bool (*wanted)(const PgProcess *p, void *userdata),
                          void *userdata, GoneBackend **ret, size_t *n_ret) {
        *ret = NULL;
        *n_ret = 0;
        p->generation++;
        p->stats = (ClientGoneStats){};
        GoneBackend *gone = NULL;
        size_t n = 0, allocated = 0;
        int r = 0;

        /* TCP: one dump of the host's CLOSE_WAIT sockets, matched against every TCP client */
        bool any_tcp = false;
        for (size_t i = 0; i < t->n_procs && !any_tcp; i++) {
                const PgProcess *proc = &t->procs[i];
                if (proc->cluster < 0 || t->clusters[proc->cluster].remote || !proc_is_client_backend(proc))
                        continue;
                char client[128];
                proc_client(proc, client, sizeof client);
                any_tcp = client[0] && strcmp(client, "local") != 0;
        }
        if (any_tcp) {
                TcpSock *socks = NULL;
                size_t ns = 0;
                pid_t *pids = NULL;
                size_t np = 0, pa = 0;
                r = sockdiag_tcp(1u << TCP_STATE_CLOSE_WAIT, &socks, &ns);
                if (r >= 0)
                        r = client_gone_match_tcp(t, socks, ns, &pids, &np, &pa);
                for (size_t k = 0; r >= 0 && k < np; k++) {
                        int idx = tree_find(t, pids[k]);
                        if (idx >= 0)
                                r = add_gone(&gone, &n, &allocated, &t->procs[idx]);
                }
                free(pids);
                free(socks);
        }

        /* Unix: the client sockets of the backends that matter */
        _cleanup_free_ size_t *which = NULL;
        _cleanup_free_ uint32_t *inodes = NULL;
        size_t nw = 0;
        if (r >= 0) {
                which = malloc((t->n_procs ? t->n_procs : 1) * sizeof *which);
                inodes = malloc((t->n_procs ? t->n_procs : 1) * sizeof *inodes);
                if (!which || !inodes)
                        r = -ENOMEM;
        }
        for (size_t i = 0; r >= 0 && i < t->n_procs; i++) {
                const PgProcess *proc = &t->procs[i];
                if (proc->cluster < 0 || t->clusters[proc->cluster].remote || !proc_is_client_backend(proc))
                        continue;
                char client[16];
                proc_client(proc, client, sizeof client);
                if (strcmp(client, "local") != 0)
                        continue;
                if (wanted && !wanted(proc, userdata)) {
                        /* not looked at now; what is known of its socket stays known */
                        ClientSock key = { .pid = proc->rec.pid };
                        ClientSock *c = p->n ? bsearch(&key, p->socks, p->n, sizeof key, cmp_client_sock) : NULL;
                        if (c && c->start_ticks == proc->rec.start_ticks)
                                c->used = p->generation;
                        continue;
                }
                char path[PATH_MAX + 32];
                cluster_socket_path(&t->clusters[proc->cluster], path, sizeof path);
                const ClientSock *c = client_sock(p, proc, path);
                if (!c) {
                        r = -ENOMEM;
                        break;
                }
                p->stats.unix_wanted++;
                if (c->inode == 0)
                        continue;
                which[nw] = i;
                inodes[nw++] = c->inode;
        }
        if (r >= 0 && p->unix_limit > 0 && nw > p->unix_limit) {
                p->stats.unix_skipped = nw; /* a cheap look only: these wait for the cycle's */
        } else if (r >= 0 && nw > 0 && nw <= CLIENT_GONE_LOOKUP_MAX) {
                _cleanup_free_ UnixSock *socks = malloc(nw * sizeof *socks);
                _cleanup_free_ bool *found = malloc(nw * sizeof *found);
                if (!socks || !found)
                        r = -ENOMEM;
                else
                        r = sockdiag_unix_lookup(inodes, nw, socks, found);
                p->stats.unix_lookups = nw;
                for (size_t k = 0; r >= 0 && k < nw; k++)
                        if (found[k] && unix_dead(&socks[k])) /* not found: closed, the backend is leaving */
                                r = add_gone(&gone, &n, &allocated, &t->procs[which[k]]);
        } else if (r >= 0 && nw > 0) {
                /* many at once: one dump costs less than that many lookups; each socket of the
                 * host is looked up among the wanted ones as it comes (nothing kept, nothing sorted
                 * but those) */
                _cleanup_free_ WantedSock *w = malloc(nw * sizeof *w);
                if (!w)
                        r = -ENOMEM;
                for (size_t k = 0; r >= 0 && k < nw; k++)
                        w[k] = (WantedSock){ .inode = inodes[k], .at = which[k] };
                WantedSet set = { w, nw };
                if (r >= 0) {
                        qsort(w, nw, sizeof *w, cmp_wanted);
                        /* by inode: names would cost the kernel a copy per socket of the host */
                        r = sockdiag_unix_foreach(false, mark_dead, &set);
                        p->stats.unix_dumps++;
                }
                for (size_t k = 0; r >= 0 && k < nw; k++)
                        if (w[k].dead)
                                r = add_gone(&gone, &n, &allocated, &t->procs[w[k].at]);
        }
        /* forget the backends that are gone */
        size_t kept = 0;
        for (size_t i = 0; i < p->n; i++)
                if (p->socks[i].used == p->generation)
                        p->socks[kept++] = p->socks[i];
        p->n = kept;
        if (r < 0) {
                free(gone);
                return r;
        }
        if (n > 1)
                qsort(gone, n, sizeof *gone, cmp_gone);
        *ret = gone;
        *n_ret = n;
        return 0;
}
