/* SPDX-License-Identifier: MIT */
/* libFuzzer target: process titles (anyone can name a process or a database). */
#include <stddef.h>
#include <stdint.h>

#include "title.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        TitleInfo t;
        char name[TITLE_NAME_MAX];
        title_parse((const char *) data, size, NULL, &t);
        title_parse((const char *) data, size, "lab15", &t);
        title_cluster_name((const char *) data, size, name);
        return 0;
}
