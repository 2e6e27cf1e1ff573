/* SPDX-License-Identifier: MIT */
/* For tests: a configuration from literal text, or the test fails with its FILE:LINE errors. */
#pragma once

#include "config.h"

static inline Config *parse_config(const char *text) {
        Config *c;
        ConfigErrors errs = {};
        if (config_parse_string(text, "t.ini", &c, &errs) < 0) {
                config_errors_print(&errs, stderr);
                fail_msg("config did not parse");
        }
        return c;
}
