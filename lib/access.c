/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "access.h"
#include "macro.h"

int access_resolve_group(const char *name, gid_t *ret) {
        if (!name || !*name)
                return -ENOENT;
        for (size_t size = 1024;; size *= 4) {
                _cleanup_free_ char *buf = malloc(size);
                if (!buf)
                        return -ENOMEM;
                struct group g, *res = NULL;
                int r = getgrnam_r(name, &g, buf, size, &res);
                if (r == ERANGE && size < 4 * 1024 * 1024)
                        continue;
                if (r != 0)
                        return -r;
                if (!res)
                        return -ENOENT;
                *ret = g.gr_gid;
                return 0;
        }
}

AccessRole access_role(const AccessPolicy *p, uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups) {
        if (uid == 0 || uid == p->self_uid)
                return ACCESS_ADMIN;
        AccessRole r = ACCESS_NONE;
        for (size_t i = 0; i <= n_groups; i++) {
                gid_t g = i == 0 ? gid : groups[i - 1];
                if (p->have_admin && g == p->admin_gid)
                        return ACCESS_ADMIN;
                if (p->have_reader && g == p->reader_gid)
                        r = ACCESS_READ;
        }
        return r;
}

int access_peer_groups(int fd, gid_t **ret, size_t *n) {
        socklen_t len = 64 * sizeof(gid_t);
        for (int tries = 0; tries < 4; tries++) {
                gid_t *g = malloc(len ? len : sizeof(gid_t));
                if (!g)
                        return -ENOMEM;
                socklen_t l = len;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &l) == 0) {
                        *ret = g;
                        *n = l / sizeof(gid_t);
                        return 0;
                }
                int r = -errno;
                free(g);
                if (r != -ERANGE || l <= len)
                        return r;
                len = l;
        }
        return -ERANGE;
}
