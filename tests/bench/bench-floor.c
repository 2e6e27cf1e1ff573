/* SPDX-License-Identifier: MIT */
/* The least possible work of one watcher cycle, as a plain libpq client: one prepared query of
 * the columns pgtree needs (binary results: the server formats nothing), every value touched,
 * then the /proc reads no watcher can skip (the postmaster's children, /proc/PID/stat of each).
 * usage: bench-floor CONNINFO PM_PID INTERVAL_MS ITERATIONS [text]
 *   text: the same columns as text (what a client gets by default), for reference.
 * Runs ITERATIONS rounds INTERVAL_MS apart and prints one JSON object: the client's own CPU
 * (CLOCK_PROCESS_CPUTIME_ID) and its backend's CPU (/proc/PID/schedstat) per round, mean over
 * the rounds, and the rows of the last round. */
#include <fcntl.h>
#include <libpq-fe.h>

#include "floor-reads.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char FLOOR_SQL[] =
        "SELECT pid, usename, datname, application_name, client_addr, client_port, client_hostname, backend_type, "
        "state, backend_start, xact_start, query_start, state_change, wait_event_type, wait_event, leader_pid, "
        "backend_xmin, query FROM pg_catalog.pg_stat_activity";

static double cpu_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double schedstat_s(int pid) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
        FILE *f = fopen(path, "re");
        unsigned long long ns = 0;
        if (f) {
                if (fscanf(f, "%llu", &ns) != 1)
                        ns = 0;
                fclose(f);
        }
        return (double) ns / 1e9;
}

static long ctxt_switches(int pid) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", pid);
        FILE *f = fopen(path, "re");
        long n = 0, v;
        while (f && fgets(line, sizeof line, f))
                if ((sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1) ||
                    (sscanf(line, "nonvoluntary_ctxt_switches: %ld", &v) == 1))
                        n += v;
        if (f)
                fclose(f);
        return n;
}

static int proc_reads(int pm) {
        return floor_proc_reads((pid_t) pm);
}

int main(int argc, char **argv) {
        if (argc != 5 && argc != 6) {
                fprintf(stderr, "usage: bench-floor CONNINFO PM_PID INTERVAL_MS ITERATIONS [text]\n");
                return 2;
        }
        int pm = atoi(argv[2]), interval_ms = atoi(argv[3]), rounds = atoi(argv[4]);
        int binary = !(argc == 6 && !strcmp(argv[5], "text"));
        if (pm <= 0 || interval_ms < 0 || rounds < 1 || rounds > 100000)
                return 2;
        PGconn *c = PQconnectdb(argv[1]);
        if (PQstatus(c) != CONNECTION_OK) {
                fprintf(stderr, "bench-floor: %s", PQerrorMessage(c));
                return 1;
        }
        PGresult *p = PQprepare(c, "floor", FLOOR_SQL, 0, NULL);
        if (PQresultStatus(p) != PGRES_COMMAND_OK) {
                fprintf(stderr, "bench-floor: %s", PQerrorMessage(c));
                return 1;
        }
        PQclear(p);
        int backend = PQbackendPID(c), rows = 0, procs = 0;
        double c0 = cpu_s(), s0 = schedstat_s(backend);
        long x0 = ctxt_switches(backend);
        unsigned long long touched = 0;
        for (int i = 0; i < rounds; i++) {
                if (i > 0 && interval_ms > 0)
                        nanosleep(&(struct timespec){ interval_ms / 1000, (long) (interval_ms % 1000) * 1000000L }, NULL);
                PGresult *r = PQexecPrepared(c, "floor", 0, NULL, NULL, NULL, binary);
                if (PQresultStatus(r) != PGRES_TUPLES_OK) {
                        fprintf(stderr, "bench-floor: %s", PQerrorMessage(c));
                        return 1;
                }
                rows = PQntuples(r);
                int nf = PQnfields(r);
                for (int row = 0; row < rows; row++)
                        for (int f = 0; f < nf; f++)
                                if (!PQgetisnull(r, row, f))
                                        touched += (unsigned char) PQgetvalue(r, row, f)[0];
                PQclear(r);
                procs = proc_reads(pm);
        }
        double client = cpu_s() - c0, server = schedstat_s(backend) - s0;
        long ctxt = ctxt_switches(backend) - x0;
        printf("{\"client_ms\": %.4f, \"server_ms\": %.4f, \"backend_ctxt\": %.2f, \"rows\": %d, \"processes\": %d, "
               "\"checksum\": %llu}\n",
               client * 1e3 / rounds, server * 1e3 / rounds, (double) ctxt / rounds, rows, procs, touched % 7);
        PQfinish(c);
        return 0;
}
