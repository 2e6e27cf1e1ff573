/* SPDX-License-Identifier: MIT */
#pragma once

#include <json-c/json.h>
#include <stdio.h>

#include "findings.h"
#include "tree.h"

/* The JSON contract of DESIGN.md: { "clusters": [...], "orphans": [...], "findings": [...] }. */
json_object *render_json(const PgTree *t, const Findings *f);
json_object *render_process_json(const PgTree *t, const PgProcess *p);
json_object *render_finding_json(const Finding *x);

typedef struct RenderOptions {
        bool group_by_application;      /* client backends under their application_name tag */
        bool query_text;                /* client backends' query text at the end of their line */
        size_t width;                   /* cut lines with query text to this many columns; 0: do not */
} RenderOptions;

/* The human forest, like `ps --forest`: one line per process with its age, CPU %, private memory,
 * backend type, user@database, client, application, state and how long it has been in it, wait
 * event and xmin age; parallel workers under their leader; orphans apart and marked; findings
 * last. */
void render_text(FILE *out, const PgTree *t, const Findings *f, const RenderOptions *o);

/* "3s", "4m12s", "2h05m", "3d04h". */
void format_duration(double seconds, char *buf, size_t size);
