/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "macro.h"

static void test_grow(void **state) {
        int *v = NULL;
        size_t allocated = 0;
        assert_int_equal(GROW(v, allocated, 1), 0);
        assert_true(allocated >= 1);
        for (int i = 0; i < 1000; i++) {
                assert_int_equal(GROW(v, allocated, (size_t) i + 1), 0);
                v[i] = i;
        }
        assert_true(allocated >= 1000);
        for (int i = 0; i < 1000; i++)
                assert_int_equal(v[i], i);
        size_t before = allocated;
        assert_int_equal(GROW(v, allocated, 10), 0); /* never shrinks */
        assert_int_equal(allocated, before);
        assert_int_equal(grow_array((void **) &v, &allocated, SIZE_MAX / 2, 16), -ENOMEM);
        assert_int_equal(allocated, before); /* untouched on failure */
        free(v);
}

static void test_take(void **state) {
        char *p = malloc(4);
        char *q = TAKE_PTR(p);
        assert_null(p);
        assert_non_null(q);
        free(q);
        int fd = 42;
        assert_int_equal(TAKE_FD(fd), 42);
        assert_int_equal(fd, -1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_grow),
                cmocka_unit_test(test_take),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
