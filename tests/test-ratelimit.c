/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "ratelimit.h"

#define SEC 1000000ULL

/* Fills the window with n events 1 ms apart from t0; returns how many were allowed. */
static unsigned burst(RateWindow *w, uint64_t t0, unsigned n) {
        unsigned allowed = 0;
        for (unsigned i = 0; i < n; i++)
                if (rate_window_allows(w, t0 + i * 1000) && rate_window_record(w, t0 + i * 1000))
                        allowed++;
        return allowed;
}

/* The limit holds above 256 (the old fixed array): 260 allowed, the 261st held, and 10,000. */
static void test_limit_above_256(void **state) {
        static const unsigned limits[] = { 1, 255, 256, 257, 260, 1000, 10000 };
        for (size_t k = 0; k < sizeof limits / sizeof limits[0]; k++) {
                RateWindow w = {};
                assert_int_equal(rate_window_configure(&w, limits[k], 60 * SEC), 0);
                assert_int_equal(burst(&w, 1000 * SEC, limits[k] + 40), limits[k]);
                assert_int_equal(rate_window_count(&w, 1000 * SEC + 50 * SEC), limits[k]);
                assert_false(rate_window_allows(&w, 1000 * SEC + 59 * SEC));
                /* a minute after the first one, slots free up one by one */
                assert_true(rate_window_allows(&w, 1060 * SEC));
                assert_true(rate_window_record(&w, 1060 * SEC));
                assert_false(rate_window_allows(&w, 1060 * SEC));
                rate_window_done(&w);
        }
}

static void test_sliding(void **state) {
        RateWindow w = {};
        assert_int_equal(rate_window_configure(&w, 3, 60 * SEC), 0);
        assert_true(rate_window_record(&w, 100 * SEC));
        assert_true(rate_window_record(&w, 130 * SEC));
        assert_true(rate_window_record(&w, 150 * SEC));
        assert_false(rate_window_record(&w, 159 * SEC));
        assert_int_equal(rate_window_count(&w, 159 * SEC), 3);
        assert_true(rate_window_allows(&w, 160 * SEC)); /* the one at 100 s left the window */
        assert_true(rate_window_record(&w, 160 * SEC));
        assert_false(rate_window_allows(&w, 189 * SEC));
        assert_int_equal(rate_window_count(&w, 190 * SEC), 2);
        assert_int_equal(rate_window_count(&w, 1000 * SEC), 0);
        rate_window_done(&w);
}

static void test_unlimited_and_reconfigure(void **state) {
        RateWindow w = {};
        assert_int_equal(rate_window_configure(&w, 0, 60 * SEC), 0);
        assert_int_equal(burst(&w, SEC, 20000), 20000);
        assert_null(w.at);
        /* from no limit to 300: counting starts now */
        assert_int_equal(rate_window_configure(&w, 300, 60 * SEC), 0);
        assert_int_equal(burst(&w, 100 * SEC, 400), 300);
        /* shrink to 10: the newest 10 are kept, so nothing more is allowed */
        assert_int_equal(rate_window_configure(&w, 10, 60 * SEC), 0);
        assert_int_equal(rate_window_count(&w, 101 * SEC), 10);
        assert_false(rate_window_allows(&w, 101 * SEC));
        /* grow to 500: the 10 kept still count */
        assert_int_equal(rate_window_configure(&w, 500, 60 * SEC), 0);
        assert_int_equal(burst(&w, 102 * SEC, 600), 490);
        rate_window_done(&w);
}

/* Keys that come and go (clusters started and stopped by anyone) do not grow the table: an
 * entry whose window is empty is dropped when a new key comes. */
static void test_table_bounded(void **state) {
        RateTable t = {};
        const uint64_t minute = 60 * 1000000ULL;
        uint64_t now = 1000;
        for (int i = 0; i < 10000; i++) {
                char key[32];
                snprintf(key, sizeof key, "main:%d", 10000 + i);
                RateWindow *w = rate_table_get(&t, key, 2, minute, now);
                assert_non_null(w);
                assert_true(rate_window_record(w, now));
                now += minute / 100; /* a new cluster every 0.6 s: at most ~100 inside a minute */
        }
        assert_true(t.n <= 101);
        /* a key with events keeps its count, and its limit */
        RateWindow *w = rate_table_get(&t, "main:19999", 2, minute, now);
        assert_int_equal(rate_window_count(w, now), 1);
        assert_true(rate_window_record(w, now));
        assert_false(rate_window_record(rate_table_get(&t, "main:19999", 2, minute, now), now));
        /* reconfigured on the way: a reload's new limit holds for an existing key */
        assert_true(rate_window_record(rate_table_get(&t, "main:19999", 3, minute, now), now));
        /* a minute of quiet and a new key: everything old goes */
        now += 2 * minute;
        assert_non_null(rate_table_get(&t, "other", 2, minute, now));
        assert_int_equal(t.n, 1);
        rate_table_done(&t);
        assert_int_equal(t.n, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_limit_above_256),
                cmocka_unit_test(test_sliding),
                cmocka_unit_test(test_unlimited_and_reconfigure),
                cmocka_unit_test(test_table_bounded),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
