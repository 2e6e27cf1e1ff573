/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "container.h"
#include "proc-scan.h"

static void expect_name(const char *cgroup, const char *want) {
        char buf[256];
        bool ok = container_name_from_cgroup(cgroup, buf, sizeof buf);
        if (!want) {
                assert_false(ok);
                assert_string_equal(buf, "");
        } else {
                assert_true(ok);
                assert_string_equal(buf, want);
        }
}

#define ID "4f1e3c0a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"

static void test_cgroup_names(void **state) {
        expect_name("0::/system.slice/docker-" ID ".scope\n", "docker:4f1e3c0a9b8d");
        expect_name("12:pids:/docker/" ID "\n0::/docker/" ID "\n", "docker:4f1e3c0a9b8d");
        expect_name("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" ID ".scope/container\n",
                    "podman:4f1e3c0a9b8d");
        expect_name("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0c3b8a3e_1f2d_4c5b_9a8e_7d6c5b4a3f2e.slice/"
                    "cri-containerd-" ID ".scope\n",
                    "pod:0c3b8a3e_1f2d_4c5b_9a8e_7d6c5b4a3f2e");
        expect_name("4:pids:/kubepods/besteffort/pod0c3b8a3e-1f2d-4c5b-9a8e-7d6c5b4a3f2e/" ID "\n",
                    "pod:0c3b8a3e-1f2d-4c5b-9a8e-7d6c5b4a3f2e");
        expect_name("0::/system.slice/crio-" ID ".scope\n", "cri-o:4f1e3c0a9b8d");
        expect_name("0::/lxc.payload.db1/system.slice\n", "lxc:db1");
        expect_name("4:memory:/lxc/db2\n", "lxc:db2");
        expect_name("0::/machine.slice/machine-pg15.scope/payload\n", "machine:pg15");
        /* the host, and things that only look like ids */
        expect_name("0::/init.scope\n", NULL);
        expect_name("0::/system.slice/postgresql@15-main.service\n", NULL);
        expect_name("0::/system.slice/docker-abc.scope\n", NULL);
        expect_name("0::/system.slice/docker-" ID "x.scope\n", NULL);
        expect_name("0::/docker/" "4F1E3C0A9B8D7E6F5A4B3C2D1E0F9A8B7C6D5E4F3A2B1C0D9E8F7A6B5C4D3E2F" "\n", NULL);
        expect_name("garbage without colons\n", NULL);
        expect_name("", NULL);
        expect_name(NULL, NULL);
}

static void test_hostname(void **state) {
        char buf[65];
        assert_true(container_hostname_parse("db-1.example\n", 13, buf, sizeof buf));
        assert_string_equal(buf, "db-1.example");
        assert_false(container_hostname_parse("\n", 1, buf, sizeof buf));
        assert_false(container_hostname_parse("bad name\n", 9, buf, sizeof buf));
        assert_false(container_hostname_parse("a\033[2Jb\n", 7, buf, sizeof buf));
        char longname[80];
        memset(longname, 'a', 65);
        longname[65] = 0;
        assert_false(container_hostname_parse(longname, 65, buf, sizeof buf));
}

static void test_ns_pid(void **state) {
        assert_int_equal(proc_status_ns_pid("Name:\tpostgres\nPid:\t4242\nNSpid:\t4242\t1\nNSpgid:\t1\n", 4242), 1);
        assert_int_equal(proc_status_ns_pid("Pid:\t4242\nNSpid:\t4242\t77\t9\n", 4242), 9); /* nested: innermost */
        assert_int_equal(proc_status_ns_pid("Pid:\t4242\nNSpid:\t4242\n", 4242), 0);     /* ours */
        assert_int_equal(proc_status_ns_pid("Pid:\t4242\nNSpid:\t4243\t1\n", 4242), 0);  /* not this process */
        assert_int_equal(proc_status_ns_pid("Pid:\t4242\nNSpid:\t4242\tx\n", 4242), 0);  /* malformed */
        assert_int_equal(proc_status_ns_pid("Pid:\t4242\nNSpid:\t4242\t-1\n", 4242), 0);
        assert_int_equal(proc_status_ns_pid("Pid:\t4242\n", 4242), 0);
        assert_int_equal(proc_status_ns_pid(NULL, 4242), 0);
}

static void test_path(void **state) {
        char buf[64];
        assert_int_equal(container_path("/proc/12/root", "/var/run/postgresql", buf, sizeof buf), 0);
        assert_string_equal(buf, "/proc/12/root/var/run/postgresql");
        assert_int_equal(container_path("", "/tmp", buf, sizeof buf), 0);
        assert_string_equal(buf, "/tmp");
        char longp[200];
        memset(longp, 'x', sizeof longp - 1);
        longp[0] = '/';
        longp[sizeof longp - 1] = 0;
        assert_int_equal(container_path("/proc/1/root", longp, buf, sizeof buf), -ENAMETOOLONG);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cgroup_names),
                cmocka_unit_test(test_hostname),
                cmocka_unit_test(test_ns_pid),
                cmocka_unit_test(test_path),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
