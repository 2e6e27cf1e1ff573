/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Where a process lives, seen from pgtreed's namespaces (a container's postmaster). */
typedef struct ContainerInfo {
        bool probed;            /* filled by container_probe (a postmaster's stays: probe it once) */
        bool own_pid_ns;        /* in another PID namespace than pgtreed's */
        bool own_mnt_ns;        /* in another mount namespace: its paths are read through root */
        uint64_t pid_ns;        /* inode of its PID namespace, 0 unknown */
        char root[64];          /* "/proc/PID/root" if own_mnt_ns, else "" */
        char name[256];         /* "docker:0123456789ab", "podman:…", "pod:UID", a systemd scope, the
                                 * hostname, else "pidns:INODE"; "" if not in a container */
        char hostname[65];      /* /etc/hostname inside its root, "" unknown */
} ContainerInfo;

/* The container named by a /proc/PID/cgroup text (every line, cgroup v1 or v2): Docker, Podman,
 * CRI-O, containerd (short ids), a Kubernetes pod (its UID), LXC, systemd-nspawn machines.
 * Returns false and leaves buf empty if the cgroups name none. Pure. */
bool container_name_from_cgroup(const char *text, char *buf, size_t size);

/* A hostname as found in a file: its first line, if it is a valid host name (letters, digits,
 * '-', '.', '_', at most 64 characters). Pure. */
bool container_hostname_parse(const char *text, size_t len, char *buf, size_t size);

/* Probes the namespaces, cgroups and hostname of pid under proc_root (NULL: /proc). ns_pid is
 * what NSpid told of it (0: same PID namespace as ours, as far as is known). */
void container_probe(const char *proc_root, pid_t pid, pid_t ns_pid, ContainerInfo *ret);

/* root + path (an absolute path as the process sees it) into buf; −ENAMETOOLONG if it does not
 * fit. */
int container_path(const char *root, const char *path, char *buf, size_t size);
