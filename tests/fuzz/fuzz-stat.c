/* SPDX-License-Identifier: MIT */
/* libFuzzer target: /proc/PID/stat text (comm is chosen by whoever runs the program). */
#include <stddef.h>
#include <stdint.h>

#include "proc-stat.h"
#include "tree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        ProcStat st;
        PmFile pm;
        proc_stat_parse((const char *) data, size, &st);
        pmfile_parse((const char *) data, size, &pm);
        return 0;
}
