/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <stdio.h>

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

typedef struct ActionCounters {
        uint64_t n[_ACTION_MAX][_RESULT_MAX];
        uint64_t alerts_ok, alerts_failed;
        uint64_t alerts_stuck;                  /* given up on after SIGTERM and another timeout */
        uint64_t alerts_dropped_busy;           /* not run: max_concurrent_alerts were running */
        uint64_t alerts_dropped_rate;           /* not run: max_alerts_per_minute of the cluster */
        uint64_t alert_output_discarded;        /* bytes of alert output past what is kept */
} ActionCounters;

/* Prometheus text exposition format: HELP/TYPE lines, base units, bounded labels (cluster,
 * backend_type, state, kind, action, result; never pids or query text). */
int metrics_write(FILE *out, const Engine *e, const ActionCounters *ac, double start_time);
/* Writes the metrics to path atomically (a temporary file renamed over it), for node_exporter's
 * textfile collector. */
int metrics_write_file(const char *path, const Engine *e, const ActionCounters *ac, double start_time);
