/* SPDX-License-Identifier: MIT */
#pragma once

#include <json-c/json.h>
#include <stdio.h>

#include "findings.h"
#include "tree.h"

/* The JSON contract of DESIGN.md: { "clusters": [...], "orphans": [...], "findings": [...] }. */
json_object *render_json(const PgTree *t, const Findings *f);

/* The human forest, like `ps --forest`: one line per process with its age, CPU %, private memory,
 * backend type, user@database, client and status; parallel workers under their leader; orphans
 * apart and marked; findings last. */
void render_text(FILE *out, const PgTree *t, const Findings *f);

/* "3s", "4m12s", "2h05m", "3d04h". */
void format_duration(double seconds, char *buf, size_t size);
