/* SPDX-License-Identifier: MIT */
/* libFuzzer target: bytes from a control-socket client, as the daemon takes them. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        VarlinkBuffer b = {};
        /* in two reads, split in the middle: framing must not care */
        size_t half = size / 2;
        if (varlink_buffer_feed(&b, (const char *) data, half, VARLINK_MAX_MESSAGE) == 0 &&
            varlink_buffer_feed(&b, (const char *) data + half, size - half, VARLINK_MAX_MESSAGE) == 0) {
                char *msg;
                size_t len;
                while (varlink_buffer_next(&b, &msg, &len) == 1) {
                        VarlinkCall call;
                        char why[160];
                        if (varlink_call_parse(msg, len, &call, why, sizeof why) == 0)
                                varlink_call_clear(&call);
                        free(msg);
                }
        }
        varlink_buffer_clear(&b);
        return 0;
}
