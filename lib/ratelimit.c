/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "ratelimit.h"

static void expire(RateWindow *w, uint64_t now) {
        while (w->n > 0) {
                uint64_t t = w->at[w->head];
                if (t > now || now - t < w->window_usec)
                        break;
                w->head = (w->head + 1) % w->max;
                w->n--;
        }
}

int rate_window_configure(RateWindow *w, unsigned max, uint64_t window_usec) {
        if (max == w->max) {
                w->window_usec = window_usec;
                return 0;
        }
        uint64_t *at = NULL;
        if (max > 0 && !(at = calloc(max, sizeof *at)))
                return -ENOMEM;
        /* keep the newest events that fit */
        size_t keep = w->n < max ? w->n : max;
        for (size_t i = 0; i < keep; i++)
                at[i] = w->at[(w->head + w->n - keep + i) % w->max];
        free(w->at);
        *w = (RateWindow){ .window_usec = window_usec, .max = max, .at = at, .head = 0, .n = keep };
        return 0;
}

bool rate_window_allows(RateWindow *w, uint64_t now) {
        if (w->max == 0)
                return true;
        expire(w, now);
        return w->n < w->max;
}

bool rate_window_record(RateWindow *w, uint64_t now) {
        if (w->max == 0)
                return true;
        if (!rate_window_allows(w, now))
                return false;
        w->at[(w->head + w->n) % w->max] = now;
        w->n++;
        return true;
}

size_t rate_window_count(RateWindow *w, uint64_t now) {
        if (w->max == 0)
                return 0;
        expire(w, now);
        return w->n;
}

void rate_window_done(RateWindow *w) {
        free(w->at);
        *w = (RateWindow){};
}
