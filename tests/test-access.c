/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <grp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "access.h"

static void test_roles(void **state) {
        AccessPolicy p = { .self_uid = 990, .have_reader = true, .have_admin = true, .reader_gid = 500, .admin_gid = 501 };
        gid_t reader[] = { 20, 500 }, admin[] = { 501 }, both[] = { 500, 501 }, other[] = { 7, 8, 9 };
        assert_int_equal(access_role(&p, 1000, 1000, NULL, 0), ACCESS_NONE);
        assert_int_equal(access_role(&p, 1000, 1000, other, 3), ACCESS_NONE);
        assert_int_equal(access_role(&p, 1000, 1000, reader, 2), ACCESS_READ);
        assert_int_equal(access_role(&p, 1000, 500, NULL, 0), ACCESS_READ);        /* primary group */
        assert_int_equal(access_role(&p, 1000, 1000, admin, 1), ACCESS_ADMIN);     /* admin only, not reader */
        assert_int_equal(access_role(&p, 1000, 501, NULL, 0), ACCESS_ADMIN);
        assert_int_equal(access_role(&p, 1000, 1000, both, 2), ACCESS_ADMIN);
        assert_int_equal(access_role(&p, 0, 0, NULL, 0), ACCESS_ADMIN);            /* root */
        assert_int_equal(access_role(&p, 990, 990, NULL, 0), ACCESS_ADMIN);        /* pgtreed's own user */
        /* a group that does not exist grants nothing, even to gid 0's neighbours */
        AccessPolicy none = { .self_uid = 990 };
        assert_int_equal(access_role(&none, 1000, 0, NULL, 0), ACCESS_NONE);
        assert_int_equal(access_role(&none, 1000, 1000, both, 2), ACCESS_NONE);
}

/* The bug of 0.1.0: two getgrnam() calls in a row share one buffer. Two real groups must keep
 * their own gids. */
static void test_resolve_two_groups(void **state) {
        gid_t root = 99, other = 99;
        assert_int_equal(access_resolve_group("root", &root), 0);
        assert_int_equal(root, 0);
        struct group *g = getgrgid(65534);
        if (!g)
                skip();
        char name[64];
        strncpy(name, g->gr_name, sizeof name - 1);
        name[sizeof name - 1] = 0;
        assert_int_equal(access_resolve_group(name, &other), 0);
        assert_int_equal(access_resolve_group("root", &root), 0);
        assert_int_equal(root, 0);
        assert_int_equal(other, 65534);
        assert_int_equal(access_resolve_group("pgtree-no-such-group-x", &other), -ENOENT);
        assert_int_equal(access_resolve_group("", &other), -ENOENT);
        assert_int_equal(access_resolve_group(NULL, &other), -ENOENT);
}

static void test_peer_groups(void **state) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        gid_t *g = NULL;
        size_t n = 0;
        assert_int_equal(access_peer_groups(sv[0], &g, &n), 0);
        gid_t mine[256];
        int k = getgroups(256, mine);
        assert_int_equal((int) n, k);
        free(g);
        close(sv[0]);
        close(sv[1]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_roles),
                cmocka_unit_test(test_resolve_two_groups),
                cmocka_unit_test(test_peer_groups),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
