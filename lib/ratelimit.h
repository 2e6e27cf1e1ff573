/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A sliding-window rate limit: at most max events in any window of window_usec. The times of
 * the events still inside the window are kept in a ring sized to max (so any configured maximum
 * holds, not only up to a fixed array size). max 0: no limit, nothing is kept. */
typedef struct RateWindow {
        uint64_t window_usec;
        unsigned max;
        uint64_t *at;           /* ring of max slots */
        size_t head;            /* oldest event */
        size_t n;               /* events inside the window */
} RateWindow;

/* Sets (or changes, on reload) the limit. Shrinking keeps the newest events. Returns 0 or
 * -ENOMEM (then the window is unchanged). */
int rate_window_configure(RateWindow *w, unsigned max, uint64_t window_usec);

/* Would one more event at now be within the limit? Forgets events older than the window. */
bool rate_window_allows(RateWindow *w, uint64_t now);

/* Records an event at now (after rate_window_allows said yes). Returns false if the limit was
 * reached already (nothing recorded). */
bool rate_window_record(RateWindow *w, uint64_t now);

/* Events inside the window at now. */
size_t rate_window_count(RateWindow *w, uint64_t now);

void rate_window_done(RateWindow *w);

/* Rate windows by key (a cluster's name, an owner's uid), all with the same limit. An entry
 * lives while its window holds events: keys that come and go (clusters started and stopped by
 * anyone on the host) cannot grow the table beyond those with events in the last window. */
typedef struct RateTable {
        struct RateTableEntry {
                char *key;
                RateWindow window;
        } *items;
        size_t n, allocated;
} RateTable;

/* The window of key, configured to max per window_usec (made when missing, after dropping the
 * entries with no event left inside their window at now). NULL when out of memory. */
RateWindow *rate_table_get(RateTable *t, const char *key, unsigned max, uint64_t window_usec, uint64_t now);

void rate_table_done(RateTable *t);
