/* SPDX-License-Identifier: MIT */
/* One full pgtree cycle (refresh, query, join, findings) against the floor: one prepared
 * pg_stat_activity query plus reading /proc/PID/stat of the cluster's processes.
 * usage: bench-cycle CONNINFO PM_PID ROUNDS   (CONNINFO reaches the cluster; it is also used as
 * pgtree's conninfo). Prints JSON: median CPU and wall per round of each. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libpq-fe.h>

#include "floor-reads.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"

static double clk(clockid_t c) {
        struct timespec ts;
        clock_gettime(c, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return (x > y) - (x < y);
}

static double mean(const double *v, int n) {
        double t = 0;
        for (int i = 0; i < n; i++)
                t += v[i];
        return t / n;
}

static double median(double *v, int n) {
        qsort(v, (size_t) n, sizeof *v, cmp);
        return v[n / 2];
}

static int floor_round(PGconn *c, pid_t pm) {
        PGresult *r = PQexecPrepared(c, "floor", 0, NULL, NULL, NULL, 0);
        int rows = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : -1;
        PQclear(r);
        int n = floor_proc_reads(pm);
        if (n < 0)
                return -1;
        return rows >= 0 ? n : -1;
}

int main(int argc, char **argv) {
        if (argc != 4) {
                fprintf(stderr, "usage: bench-cycle CONNINFO PM_PID ROUNDS\n");
                return 2;
        }
        pid_t pm = (pid_t) atoi(argv[2]);
        int rounds = atoi(argv[3]);
        if (rounds < 3 || rounds > 1000)
                return 2;

        /* the floor */
        PGconn *c = PQconnectdb(argv[1]);
        if (PQstatus(c) != CONNECTION_OK) {
                fprintf(stderr, "bench-cycle: %s", PQerrorMessage(c));
                return 1;
        }
        PQclear(PQprepare(c, "floor", "SELECT * FROM pg_catalog.pg_stat_activity", 0, NULL));
        double *fc = calloc((size_t) rounds, sizeof(double)), *fw = calloc((size_t) rounds, sizeof(double));
        int procs = 0;
        for (int i = 0; i < rounds; i++) {
                double w = clk(CLOCK_MONOTONIC), u = clk(CLOCK_PROCESS_CPUTIME_ID);
                procs = floor_round(c, pm);
                fc[i] = clk(CLOCK_PROCESS_CPUTIME_ID) - u;
                fw[i] = clk(CLOCK_MONOTONIC) - w;
        }
        PQfinish(c);

        /* pgtree's cycle */
        char text[4096];
        snprintf(text, sizeof text, "[daemon]\ndiscovery_interval = 1h\nconninfo = %s\n", argv[1]);
        Config *cfg;
        ConfigErrors errs = {};
        if (config_parse_string(text, "bench.ini", &cfg, &errs) < 0) {
                config_errors_print(&errs, stderr);
                return 1;
        }
        Engine *e;
        if (engine_new(cfg, &e) < 0)
                return 1;
        double *pc = calloc((size_t) rounds, sizeof(double)), *pw = calloc((size_t) rounds, sizeof(double));
        /* the same cycles without the descendant scan (foreign processes), in turn with those */
        double *nc = calloc((size_t) rounds, sizeof(double)), *nw = calloc((size_t) rounds, sizeof(double));
        engine_run_cycle_blocking(e, true, NULL); /* discovery, connect */
        engine_run_cycle_blocking(e, false, NULL);
        size_t n_procs = 0;
        for (int i = 0; i < 2 * rounds; i++) {
                bool plain = i % 2 == 1;
                scanner_set_descendants(e->scanner, !plain);
                double w = clk(CLOCK_MONOTONIC), u = clk(CLOCK_PROCESS_CPUTIME_ID);
                FindingEvents ev = {};
                engine_run_cycle_blocking(e, false, &ev);
                finding_events_clear(&ev);
                (plain ? nc : pc)[i / 2] = clk(CLOCK_PROCESS_CPUTIME_ID) - u;
                (plain ? nw : pw)[i / 2] = clk(CLOCK_MONOTONIC) - w;
                n_procs = e->tree.n_procs;
        }
        scanner_set_descendants(e->scanner, true);
        bool joined = e->tree.n_clusters > 0 && e->tree.clusters[0].snapshot;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "floor_cpu_mean_s", json_object_new_double(mean(fc, rounds)));
        json_object_object_add(o, "cycle_cpu_mean_s", json_object_new_double(mean(pc, rounds)));
        json_object_object_add(o, "floor_cpu_s", json_object_new_double(median(fc, rounds)));
        json_object_object_add(o, "floor_wall_s", json_object_new_double(median(fw, rounds)));
        json_object_object_add(o, "floor_processes", json_object_new_int(procs));
        json_object_object_add(o, "cycle_cpu_s", json_object_new_double(median(pc, rounds)));
        json_object_object_add(o, "cycle_wall_s", json_object_new_double(median(pw, rounds)));
        json_object_object_add(o, "cycle_nodesc_cpu_s", json_object_new_double(median(nc, rounds)));
        json_object_object_add(o, "cycle_nodesc_wall_s", json_object_new_double(median(nw, rounds)));
        json_object_object_add(o, "cycle_processes", json_object_new_int64((int64_t) n_procs));
        json_object_object_add(o, "cycle_activity_joined", json_object_new_boolean(joined));
        puts(json_object_to_json_string(o));
        json_object_put(o);
        engine_free(e);
        config_free(cfg);
        return 0;
}
