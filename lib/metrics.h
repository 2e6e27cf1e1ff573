/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "engine.h"

typedef enum ActionResult {
        RESULT_SENT,
        RESULT_DRY_RUN,
        RESULT_REFUSED,
        RESULT_FAILED,
        RESULT_HELD,
        _RESULT_MAX,
} ActionResult;

const char *action_result_to_string(ActionResult r);

/* Buckets of pgtree_cycle_duration_seconds (seconds; +Inf is implied). */
#define METRICS_CYCLE_BUCKETS 12
extern const double metrics_cycle_buckets[METRICS_CYCLE_BUCKETS];

/* CPU time of one process when last seen, to count only what it used since. */
typedef struct CpuSeen {
        pid_t pid;
        uint64_t start_ticks, cpu_ticks;
} CpuSeen;

/* CPU seconds of one cluster's processes, counted since pgtreed started. */
typedef struct CpuTotal {
        char *cluster;
        double seconds;
} CpuTotal;

/* The daemon's counters, kept across cycles (metrics_observe_cycle), written by metrics_write. */
typedef struct ActionCounters {
        uint64_t n[_ACTION_MAX][_RESULT_MAX];
        uint64_t alerts_ok, alerts_failed;
        uint64_t not_exited;            /* backends still there terminate_grace after SIGTERM */
        /* cycle duration histogram */
        uint64_t cycle_buckets[METRICS_CYCLE_BUCKETS], cycle_count;
        double cycle_sum;
        double last_cycle_time;         /* epoch seconds of the last completed cycle, 0 none */
        /* cluster CPU: what each process used between two cycles in which it was seen (the first
         * sighting counts its whole CPU time: it belongs to the cluster since it started) */
        CpuSeen *cpu_seen;
        size_t n_cpu_seen;
        CpuTotal *cpu_totals;
        size_t n_cpu_totals;
        uint64_t alerts_stuck;                  /* given up on after SIGTERM and another timeout */
        uint64_t alerts_dropped_busy;           /* not run: max_concurrent_alerts were running */
        uint64_t alerts_dropped_rate;           /* not run: max_alerts_per_minute of the cluster */
        uint64_t alerts_dropped_owner;          /* not run: max_alerts_per_minute_per_owner of its OS user */
        uint64_t alert_output_discarded;        /* bytes of alert output past what is kept */
} ActionCounters;

/* After each completed cycle: the histogram, the last cycle's time, the cluster CPU counters. */
int metrics_observe_cycle(ActionCounters *ac, const Engine *e, double now);
void metrics_counters_done(ActionCounters *ac);

/* Prometheus text exposition format: HELP/TYPE lines, base units, bounded labels (cluster,
 * backend_type, state, kind, action, result; never pids or query text). */
int metrics_write(FILE *out, const Engine *e, const ActionCounters *ac, double start_time);
/* Writes the metrics to path atomically (a temporary file renamed over it), for node_exporter's
 * textfile collector. */
int metrics_write_file(const char *path, const Engine *e, const ActionCounters *ac, double start_time);
