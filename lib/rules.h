/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* What a rule is matched against: one finding on one process. NULL fields are unknown. */
typedef struct Subject Subject;
struct Subject {
        FindingKind kind;
        uint64_t duration_usec;
        const char *user;
        const char *database;
        const char *application_name;
        const char *client;             /* "10.0.0.5:50156", "[::1]:5432", "local" */
        const char *backend_type;
        const char *state;
        const char *cluster;
        const char *cluster_name;       /* its cluster_name if the cluster's name was made unique, or NULL */
        const char *container;          /* NULL: not in a container */
        const char *command;            /* foreign_process: its command line */
        const struct Subject *blocker;  /* lock_wait: the root of the chain that blocks it, or NULL */
};

/* The subject of a finding that has lasted duration_usec (blocker: storage for its root blocker's,
 * linked from s when the finding has one). */
void subject_of_finding(const Finding *f, uint64_t duration_usec, Subject *s, Subject *blocker);

/* The rule that decides for this subject, or NULL: among the rules that cover its kind, match
 * every filter and whose threshold ('after') is reached, the one with the strongest action
 * (terminate > cancel > alert > log), the first in the file on a tie. Long-runner kinds match
 * only client backends unless the rule names backend_type. */
const Rule *rules_decide(const Config *c, const Subject *s);

/* Is the subject protected ([protected] users, databases, applications)? Protected sessions are
 * never cancelled or terminated, whatever a rule says. why names the list that matched. */
bool rules_protected(const Config *c, const Subject *s, const char **why);

/* The lowest threshold ('after') of the rules that cover a kind: below it no rule can match
 * (0: some rule has none; UINT64_MAX: no rule covers the kind). */
uint64_t rules_min_after(const Config *c, FindingKind kind);

/* Does one rule match (filters and threshold)? A rule with target = blocker matches a lock_wait
 * subject whose root blocker is known: kind and threshold are the waiter's (how long it has been
 * blocked), every filter is the blocker's (the session it acts on). */
bool rule_matches(const Rule *r, const Subject *s);

/* The earliest moment after t->now (epoch seconds, the clock t->now is read from) at which a
 * long runner of t reaches the threshold ('after') of a rule that then matches it: a finding that
 * opens, or one that escalates. 0 if none. Sessions whose start is unknown (tracked from first
 * sight) have no such moment. With a window, the last such moment within window seconds of the
 * earliest: one cycle then catches the thresholds reached close together. */
double findings_next_crossing(const PgTree *t, const Config *c, double window);

/* Does [daemon] allow_foreign allow this process below a backend (a glob on its command line or
 * its executable)? An allowed process is no foreign_process finding. */
bool config_foreign_allowed(const Config *c, const char *command, const char *exe);

/* The rules used when the file has no [rule] at all: log every orphan kind, and long runners
 * at 5 min (query, idle in transaction), 30 min (transaction) and 1 min (lock wait). */
int config_add_builtin_rules(Config *c);
