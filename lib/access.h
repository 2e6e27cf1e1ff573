/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Who a peer of the control socket is to pgtreed. */
typedef enum AccessRole {
        ACCESS_NONE,
        ACCESS_READ,    /* socket_group: tree, sessions, findings, metrics */
        ACCESS_ADMIN,   /* admin_group, root, pgtreed's own user: also signal and reload */
} AccessRole;

/* The groups of the configuration, resolved to gids once (at start and on reload). */
typedef struct AccessPolicy {
        uid_t self_uid;         /* pgtreed's own user */
        bool have_reader, have_admin;
        gid_t reader_gid, admin_gid;
} AccessPolicy;

/* A group name to its gid with getgrnam_r (getgrnam() shares one static buffer: two lookups in
 * a row leave both results pointing at the second group). 0, -ENOENT, or -errno. */
int access_resolve_group(const char *name, gid_t *ret);

/* The role of a peer with this uid, primary gid and supplementary groups. Pure. */
AccessRole access_role(const AccessPolicy *p, uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups);

/* The supplementary groups of a connected peer (SO_PEERGROUPS), however many. */
int access_peer_groups(int fd, gid_t **ret, size_t *n);
