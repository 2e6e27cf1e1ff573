/* SPDX-License-Identifier: MIT */
/* Clusters in containers: which one a process runs in, and its files through /proc/PID/root. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "container.h"
#include "macro.h"

static bool is_hex(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return n > 0;
}

/* A 64-hex container id right after prefix in this path component: the short id (12). */
static bool id_after(const char *comp, size_t len, const char *prefix, const char *label, char *buf, size_t size) {
        size_t pl = strlen(prefix);
        if (len < pl + 64 || strncmp(comp, prefix, pl) != 0 || !is_hex(comp + pl, 64))
                return false;
        const char *rest = comp + pl + 64;
        size_t rl = len - pl - 64;
        if (rl != 0 && !(rl == 6 && strncmp(rest, ".scope", 6) == 0))
                return false;
        snprintf(buf, size, "%s:%.12s", label, comp + pl);
        return true;
}

static bool name_chars(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                      c == '.' || c == '\\'))
                        return false;
        }
        return n > 0;
}

static bool component_name(const char *c, size_t l, const char *prev, size_t prev_l, bool in_kubepods, char *buf,
                           size_t size) {
        if (id_after(c, l, "docker-", "docker", buf, size) || id_after(c, l, "libpod-", "podman", buf, size) ||
            id_after(c, l, "crio-", "cri-o", buf, size) || id_after(c, l, "cri-containerd-", "containerd", buf, size))
                return true;
        /* cgroup v1 and cgroupfs drivers: /docker/ID, /libpod_parent/libpod-ID */
        if (prev && prev_l == 6 && strncmp(prev, "docker", 6) == 0 && id_after(c, l, "", "docker", buf, size))
                return true;
        /* Kubernetes: kubepods-besteffort-pod<UID>.slice (systemd driver) or /kubepods/…/pod<UID> */
        const char *u = NULL;
        if (l > 8 && strncmp(c, "kubepods", 8) == 0)
                for (const char *q = c; q + 4 <= c + l; q++)
                        if (strncmp(q, "-pod", 4) == 0)
                                u = q + 4;
        if (!u && l > 3 && strncmp(c, "pod", 3) == 0 && in_kubepods)
                u = c + 3;
        if (u) {
                size_t ul = (size_t) (c + l - u);
                if (ul > 6 && strncmp(u + ul - 6, ".slice", 6) == 0)
                        ul -= 6;
                if (ul >= 32 && ul <= 36 && name_chars(u, ul)) {
                        snprintf(buf, size, "pod:%.*s", (int) ul, u);
                        return true;
                }
        }
        /* LXC: /lxc/NAME, /lxc.payload.NAME; systemd-nspawn: machine-NAME.scope */
        if (prev && prev_l == 3 && strncmp(prev, "lxc", 3) == 0 && name_chars(c, l) && l < 128) {
                snprintf(buf, size, "lxc:%.*s", (int) l, c);
                return true;
        }
        if (l > 12 && strncmp(c, "lxc.payload.", 12) == 0 && name_chars(c + 12, l - 12) && l < 140) {
                snprintf(buf, size, "lxc:%.*s", (int) (l - 12), c + 12);
                return true;
        }
        if (l > 14 && strncmp(c, "machine-", 8) == 0 && strncmp(c + l - 6, ".scope", 6) == 0 &&
            name_chars(c + 8, l - 14) && l < 140) {
                snprintf(buf, size, "machine:%.*s", (int) (l - 14), c + 8);
                return true;
        }
        return false;
}

bool container_name_from_cgroup(const char *text, char *buf, size_t size) {
        if (size)
                buf[0] = 0;
        if (!text || size == 0)
                return false;
        for (const char *line = text; *line;) {
                size_t ll = strcspn(line, "\n");
                /* ID:CONTROLLERS:PATH */
                const char *c1 = memchr(line, ':', ll);
                const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t) (line + ll - c1 - 1)) : NULL;
                if (c2) {
                        const char *p = c2 + 1, *end = line + ll, *prev = NULL;
                        bool in_kubepods = false;
                        size_t prev_l = 0;
                        while (p < end) {
                                while (p < end && *p == '/')
                                        p++;
                                const char *e = p;
                                while (e < end && *e != '/')
                                        e++;
                                                if (e - p >= 8 && strncmp(p, "kubepods", 8) == 0)
                                        in_kubepods = true;
                                if (e > p && component_name(p, (size_t) (e - p), prev, prev_l, in_kubepods, buf, size))
                                        return true;
                                prev = p;
                                prev_l = (size_t) (e - p);
                                p = e;
                        }
                }
                line += ll;
                if (*line)
                        line++;
        }
        return false;
}

bool container_hostname_parse(const char *text, size_t len, char *buf, size_t size) {
        if (size)
                buf[0] = 0;
        if (!text || size == 0)
                return false;
        size_t l = 0;
        while (l < len && text[l] != '\n' && text[l] != '\r')
                l++;
        if (l == 0 || l > 64 || l >= size)
                return false;
        for (size_t i = 0; i < l; i++) {
                char c = text[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                      c == '_'))
                        return false;
        }
        memcpy(buf, text, l);
        buf[l] = 0;
        return true;
}

static uint64_t ns_inode(const char *path) {
        struct stat st;
        return stat(path, &st) == 0 ? (uint64_t) st.st_ino : 0;
}

static ssize_t read_file(const char *path, char *buf, size_t size) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -1;
        ssize_t k = read(fd, buf, size - 1);
        if (k < 0)
                return -1;
        buf[k] = 0;
        return k;
}

void container_probe(const char *proc_root, pid_t pid, pid_t ns_pid, ContainerInfo *ret) {
        const char *proc = proc_root ? proc_root : "/proc";
        char path[PATH_MAX];
        *ret = (ContainerInfo){ .probed = true };

        snprintf(path, sizeof path, "%s/%d/ns/pid", proc, (int) pid);
        uint64_t pid_ns = ns_inode(path);
        snprintf(path, sizeof path, "%s/self/ns/pid", proc);
        uint64_t own_pid_ns = ns_inode(path);
        ret->pid_ns = pid_ns;
        /* the ns links need root or the owner; NSpid is readable by anyone */
        ret->own_pid_ns = ns_pid > 0 || (pid_ns && own_pid_ns && pid_ns != own_pid_ns);

        snprintf(path, sizeof path, "%s/%d/ns/mnt", proc, (int) pid);
        uint64_t mnt_ns = ns_inode(path);
        snprintf(path, sizeof path, "%s/self/ns/mnt", proc);
        uint64_t own_mnt_ns = ns_inode(path);
        ret->own_mnt_ns = mnt_ns && own_mnt_ns && mnt_ns != own_mnt_ns;
        if (ret->own_mnt_ns)
                snprintf(ret->root, sizeof ret->root, "%s/%d/root", proc, (int) pid);

        char buf[8192];
        snprintf(path, sizeof path, "%s/%d/cgroup", proc, (int) pid);
        bool named = read_file(path, buf, sizeof buf) > 0 && container_name_from_cgroup(buf, ret->name, sizeof ret->name);

        if (ret->own_mnt_ns) {
                /* the UTS hostname needs setns; the container's /etc/hostname says it (Docker,
                 * Podman and systemd-nspawn write it) */
                snprintf(path, sizeof path, "%s/etc/hostname", ret->root);
                ssize_t k = read_file(path, buf, 256);
                char own[65];
                if (k > 0 && container_hostname_parse(buf, (size_t) k, ret->hostname, sizeof ret->hostname)) {
                        /* a private mount namespace that kept the host's file says nothing */
                        ssize_t o = read_file("/etc/hostname", buf, 256);
                        if (o > 0 && container_hostname_parse(buf, (size_t) o, own, sizeof own) && !strcmp(own, ret->hostname))
                                ret->hostname[0] = 0;
                }
        }
        if (named || !(ret->own_pid_ns || ret->own_mnt_ns))
                return;
        if (ret->hostname[0])
                snprintf(ret->name, sizeof ret->name, "%s", ret->hostname);
        else if (pid_ns)
                snprintf(ret->name, sizeof ret->name, "pidns:%llu", (unsigned long long) pid_ns);
        else
                snprintf(ret->name, sizeof ret->name, "pid %d", (int) pid);
}

int container_path(const char *root, const char *path, char *buf, size_t size) {
        int k = snprintf(buf, size, "%s%s", root ? root : "", path);
        return k < 0 || (size_t) k >= size ? -ENAMETOOLONG : 0;
}
