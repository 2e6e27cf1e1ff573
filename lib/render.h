/* SPDX-License-Identifier: MIT */
#pragma once

#include <json-c/json.h>
#include <stdio.h>

#include "findings.h"
#include "tree.h"

/* The JSON contract of DESIGN.md: { "clusters": [...], "orphans": [...], "findings": [...] }. */
json_object *render_json(const PgTree *t, const Findings *f);
/* The same, for the clusters that want names (NULL: all; see render_cluster_matches), their
 * orphans (by data directory) and their findings. */
json_object *render_json_for(const PgTree *t, const Findings *f, const char *want);
/* Is the cluster the one asked for: its name, its [cluster] section or its data directory? */
bool render_cluster_matches(const PgCluster *c, const char *want);
/* Does the finding belong to the cluster asked for? */
bool render_finding_matches(const PgTree *t, const Finding *x, const char *want);
json_object *render_process_json(const PgTree *t, const PgProcess *p);
json_object *render_finding_json(const Finding *x);
/* A lock_wait finding's root blocker gets its query text from the tree (when it is still that
 * process); callers apply the query-text policy afterwards (the key is "query" in "blocker"). */
void render_finding_blocker_query(json_object *finding, const PgTree *t, const Finding *x);
/* The blocking forest of one cluster as nested objects: {pid, user, …, query, "blocks": [...]} */
json_object *render_lock_chains_json(const PgTree *t, size_t cluster);
/* A number as JSON in its shortest exact form: 0.000634, not 0.00063400000000000001. */
json_object *json_number(double v);

typedef struct RenderOptions {
        bool group_by_application;      /* client backends under their application_name tag */
        bool query_text;                /* client backends' query text at the end of their line */
        size_t width;                   /* cut lines with query text to this many columns; 0: do not */
        const char *cluster;            /* only this cluster (render_cluster_matches), NULL: all */
} RenderOptions;

/* The human forest, like `ps --forest`: one line per process with its age, CPU %, private memory,
 * backend type, user@database, client, application, state and how long it has been in it, wait
 * event and xmin age; parallel workers under their leader; orphans apart and marked; findings
 * last. */
void render_text(FILE *out, const PgTree *t, const Findings *f, const RenderOptions *o);

/* The blocking forest of one cluster as text (nothing when no session is blocked): root blockers,
 * and under each the sessions it blocks; indent is put before every line. */
void render_lock_chains_text(FILE *out, const PgTree *t, size_t cluster, const char *indent, const RenderOptions *o);

/* "3s", "4m12s", "2h05m", "3d04h". */
void format_duration(double seconds, char *buf, size_t size);
