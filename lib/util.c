/* SPDX-License-Identifier: MIT */
#include <stdint.h>

#include "macro.h"

int grow_array(void **array, size_t *allocated, size_t need, size_t elsize) {
        if (need <= *allocated)
                return 0;
        size_t n = *allocated ? *allocated : 16;
        while (n < need) {
                if (n > SIZE_MAX / 2)
                        return -ENOMEM;
                n *= 2;
        }
        if (n > SIZE_MAX / elsize)
                return -ENOMEM;
        void *p = realloc(*array, n * elsize);
        if (!p)
                return -ENOMEM;
        *array = p;
        *allocated = n;
        return 0;
}
