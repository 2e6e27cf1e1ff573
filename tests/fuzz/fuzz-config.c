/* SPDX-License-Identifier: MIT */
/* libFuzzer target: pgtree.ini. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FILE *f = fmemopen((void *) data, size, "r");
        if (!f)
                return 0;
        Config *c = NULL;
        ConfigErrors errs = {};
        config_parse_stream(f, "fuzz.ini", &c, &errs);
        fclose(f);
        config_free(c);
        config_errors_clear(&errs);
        return 0;
}
