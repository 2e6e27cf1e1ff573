/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

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

RateWindow *rate_table_get(RateTable *t, const char *key, unsigned max, uint64_t window_usec, uint64_t now) {
        for (size_t i = 0; i < t->n; i++)
                if (!strcmp(t->items[i].key, key)) {
                        if (rate_window_configure(&t->items[i].window, max, window_usec) < 0)
                                return NULL;
                        return &t->items[i].window;
                }
        for (size_t i = 0; i < t->n;)
                if (rate_window_count(&t->items[i].window, now) == 0) {
                        free(t->items[i].key);
                        rate_window_done(&t->items[i].window);
                        t->items[i] = t->items[--t->n];
                } else
                        i++;
        if (GROW(t->items, t->allocated, t->n + 1) < 0)
                return NULL;
        struct RateTableEntry *e = &t->items[t->n];
        *e = (struct RateTableEntry){ .key = strdup(key) };
        if (!e->key || rate_window_configure(&e->window, max, window_usec) < 0) {
                free(e->key);
                return NULL;
        }
        t->n++;
        return &e->window;
}

void rate_table_done(RateTable *t) {
        for (size_t i = 0; i < t->n; i++) {
                free(t->items[i].key);
                rate_window_done(&t->items[i].window);
        }
        free(t->items);
        *t = (RateTable){};
}
