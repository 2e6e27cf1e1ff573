/* SPDX-License-Identifier: MIT */
/* Times pgtree's scanner: full discovery scans and refreshes of the known clusters.
 * usage: bench-scan ROUNDS
 * Prints one JSON object: median wall and CPU seconds per full scan and per refresh, the records
 * each read, and the processes in the resulting trees; refresh_nodesc_*: refreshes without the
 * descendant scan (foreign processes), run in turn with the others in the same process. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "scanner.h"

static double now(clockid_t c) {
        struct timespec ts;
        clock_gettime(c, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return (x > y) - (x < y);
}

static double median(double *v, int n) {
        qsort(v, (size_t) n, sizeof *v, cmp_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct Series {
        double wall[1000], cpu[1000];
        size_t examined, procs;
} Series;

/* other: when set, every other refresh runs without the descendant scan, into other */
static int measure(Scanner *s, bool full, int rounds, Series *out, Series *other) {
        for (int i = 0; i < rounds * (other ? 2 : 1); i++) {
                bool plain = other && i % 2 == 1;
                Series *into = plain ? other : out;
                int k = other ? i / 2 : i;
                scanner_set_descendants(s, !plain);
                PgTree t;
                ScanStats st;
                double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
                int r = scanner_refresh(s, full, &t, &st);
                double w1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
                if (r < 0)
                        return r;
                if (st.full != full) {
                        fprintf(stderr, "bench-scan: expected a %s scan, got %s (%s)\n",
                                full ? "full" : "refresh", st.full ? "full" : "refresh", st.full_reason);
                        tree_free(&t);
                        return -EAGAIN;
                }
                into->wall[k] = w1 - w0;
                into->cpu[k] = c1 - c0;
                into->examined = st.examined;
                into->procs = t.n_procs;
                tree_free(&t);
        }
        scanner_set_descendants(s, true);
        return 0;
}

int main(int argc, char **argv) {
        int rounds = argc > 1 ? atoi(argv[1]) : 20;
        if (rounds < 1 || rounds > 1000) {
                fprintf(stderr, "usage: bench-scan ROUNDS (1–1000)\n");
                return 2;
        }
        Scanner *s;
        int r = scanner_new(&s);
        if (r < 0)
                return 1;
        scanner_set_discovery_interval(s, 3600ULL * 1000000ULL);
        static Series full, refresh, plain;
        if ((r = measure(s, true, rounds, &full, NULL)) < 0 || (r = measure(s, false, rounds, &refresh, &plain)) < 0) {
                fprintf(stderr, "bench-scan: %s\n", strerror(-r));
                return 1;
        }
        json_object *o = json_object_new_object();
        json_object_object_add(o, "full_wall_s", json_object_new_double(median(full.wall, rounds)));
        json_object_object_add(o, "full_cpu_s", json_object_new_double(median(full.cpu, rounds)));
        json_object_object_add(o, "full_examined", json_object_new_int64((int64_t) full.examined));
        json_object_object_add(o, "refresh_wall_s", json_object_new_double(median(refresh.wall, rounds)));
        json_object_object_add(o, "refresh_cpu_s", json_object_new_double(median(refresh.cpu, rounds)));
        json_object_object_add(o, "refresh_examined", json_object_new_int64((int64_t) refresh.examined));
        json_object_object_add(o, "tree_processes", json_object_new_int64((int64_t) refresh.procs));
        /* the same refreshes without the descendant scan, interleaved with those above */
        json_object_object_add(o, "refresh_nodesc_wall_s", json_object_new_double(median(plain.wall, rounds)));
        json_object_object_add(o, "refresh_nodesc_cpu_s", json_object_new_double(median(plain.cpu, rounds)));
        puts(json_object_to_json_string(o));
        json_object_put(o);
        scanner_free(s);
        return 0;
}
