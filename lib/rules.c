/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "rules.h"

static bool any_pattern(const PatternList *l, const char *v) {
        for (size_t i = 0; i < l->n; i++)
                if (fnmatch(l->items[i], v, 0) == 0)
                        return true;
        return false;
}

static bool filter_matches(const Filter *f, const char *v) {
        if (f->include.n > 0 && (!v || !any_pattern(&f->include, v)))
                return false;
        if (f->exclude.n > 0 && v && any_pattern(&f->exclude, v))
                return false;
        return true;
}

static bool any_client(const ClientList *l, const char *client) {
        for (size_t i = 0; i < l->n; i++)
                if (client_match(&l->items[i], client))
                        return true;
        return false;
}

static bool is_long_runner(FindingKind k) {
        return k == FINDING_LONG_QUERY || k == FINDING_IDLE_IN_TRANSACTION || k == FINDING_LONG_TRANSACTION ||
               k == FINDING_LOCK_WAIT;
}

static bool filters_match(const Rule *r, const Subject *s);

bool rule_matches(const Rule *r, const Subject *s) {
        if (!(r->kinds & (1u << s->kind)))
                return false;
        if (r->after_usec > 0 && s->duration_usec < r->after_usec)
                return false;
        if (r->target == RULE_TARGET_BLOCKER) {
                if (s->kind != FINDING_LOCK_WAIT || !s->blocker)
                        return false;
                /* a blocker is acted on only if it is a client backend: never an auxiliary process,
                 * whatever backend_type the rule names */
                if (!s->blocker->backend_type || strcmp(s->blocker->backend_type, "client backend") != 0)
                        return false;
                return filters_match(r, s->blocker);
        }
        /* walsenders are always "active": long-runner rules mean client backends unless told */
        if (is_long_runner(s->kind) && r->backend_type.include.n == 0 &&
            (!s->backend_type || strcmp(s->backend_type, "client backend") != 0))
                return false;
        return filters_match(r, s);
}

/* A cluster whose name was made unique (main:5432, because a second "main" runs, perhaps a
 * lookalike started by any user) still answers to its cluster_name: included if either name is
 * included, excluded if either is excluded. */
static bool cluster_matches(const Filter *f, const char *name, const char *cluster_name) {
        if (!cluster_name || !*cluster_name || (name && !strcmp(name, cluster_name)))
                return filter_matches(f, name);
        if (f->include.n > 0 && !(name && any_pattern(&f->include, name)) && !any_pattern(&f->include, cluster_name))
                return false;
        if (f->exclude.n > 0 && ((name && any_pattern(&f->exclude, name)) || any_pattern(&f->exclude, cluster_name)))
                return false;
        return true;
}

static bool filters_match(const Rule *r, const Subject *s) {
        if (!filter_matches(&r->user, s->user) || !filter_matches(&r->database, s->database) ||
            !filter_matches(&r->application_name, s->application_name) ||
            !filter_matches(&r->backend_type, s->backend_type) || !filter_matches(&r->state, s->state) ||
            !cluster_matches(&r->cluster, s->cluster, s->cluster_name) || !filter_matches(&r->container, s->container) ||
            !filter_matches(&r->command, s->command))
                return false;
        if (r->client.n > 0 && !any_client(&r->client, s->client))
                return false;
        if (r->exclude_client.n > 0 && any_client(&r->exclude_client, s->client))
                return false;
        return true;
}

void subject_of_finding(const Finding *f, uint64_t duration_usec, Subject *s, Subject *blocker) {
        *s = (Subject){
                .kind = f->kind,
                .duration_usec = duration_usec,
                .user = f->user[0] ? f->user : NULL,
                .database = f->database[0] ? f->database : NULL,
                .application_name = f->application_name[0] ? f->application_name : NULL,
                .client = f->client[0] ? f->client : NULL,
                .backend_type = f->backend_type[0] ? f->backend_type : NULL,
                .state = f->state[0] ? f->state : NULL,
                .cluster = f->cluster[0] ? f->cluster : NULL,
                .cluster_name = f->cluster_name[0] ? f->cluster_name : NULL,
                .container = f->container[0] ? f->container : NULL,
                .command = f->command[0] ? f->command : NULL,
        };
        *blocker = (Subject){
                .kind = f->kind,
                .duration_usec = duration_usec,
                .user = f->blocker_user[0] ? f->blocker_user : NULL,
                .database = f->blocker_database[0] ? f->blocker_database : NULL,
                .application_name = f->blocker_application_name[0] ? f->blocker_application_name : NULL,
                .client = f->blocker_client[0] ? f->blocker_client : NULL,
                .backend_type = f->blocker_backend_type[0] ? f->blocker_backend_type : NULL,
                .state = f->blocker_state[0] ? f->blocker_state : NULL,
                .cluster = s->cluster,
                .cluster_name = s->cluster_name,
        };
        if (f->blocker_pid > 0)
                s->blocker = blocker;
}

const Rule *rules_decide(const Config *c, const Subject *s) {
        const Rule *best = NULL;
        for (size_t i = 0; i < c->n_rules; i++) {
                const Rule *r = &c->rules[i];
                if (rule_matches(r, s) && (!best || r->action > best->action))
                        best = r;
        }
        return best;
}

uint64_t rules_min_after(const Config *c, FindingKind kind) {
        uint64_t min = UINT64_MAX;
        for (size_t i = 0; i < c->n_rules; i++)
                if ((c->rules[i].kinds & (1u << kind)) && c->rules[i].after_usec < min)
                        min = c->rules[i].after_usec;
        return min;
}

bool rules_protected(const Config *c, const Subject *s, const char **why) {
        if (s->user && any_pattern(&c->protected_users, s->user)) {
                *why = "protected user";
                return true;
        }
        if (s->database && any_pattern(&c->protected_databases, s->database)) {
                *why = "protected database";
                return true;
        }
        if (s->application_name && any_pattern(&c->protected_applications, s->application_name)) {
                *why = "protected application";
                return true;
        }
        return false;
}

bool config_foreign_allowed(const Config *c, const char *command, const char *exe) {
        return (command && command[0] && any_pattern(&c->allow_foreign, command)) ||
               (exe && exe[0] && any_pattern(&c->allow_foreign, exe));
}

int config_add_builtin_rules(Config *c) {
        static const struct {
                const char *name;
                unsigned kinds;
                uint64_t after;
        } builtin[] = {
                { "builtin-orphans",
                  1u << FINDING_ORPHAN_BACKEND | 1u << FINDING_STALE_ACTIVITY | 1u << FINDING_UNLISTED_PROCESS |
                          1u << FINDING_ORPHAN_PARALLEL_WORKER | 1u << FINDING_CLIENT_GONE,
                  0 },
                { "builtin-long-query", 1u << FINDING_LONG_QUERY, 300 * USEC_PER_SEC },
                { "builtin-idle-in-transaction", 1u << FINDING_IDLE_IN_TRANSACTION, 300 * USEC_PER_SEC },
                { "builtin-long-transaction", 1u << FINDING_LONG_TRANSACTION, 1800 * USEC_PER_SEC },
                { "builtin-lock-wait", 1u << FINDING_LOCK_WAIT, 60 * USEC_PER_SEC },
        };
        Rule *rules = calloc(ELEMENTSOF(builtin), sizeof *rules);
        if (!rules)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(builtin); i++) {
                rules[i] = (Rule){ .kinds = builtin[i].kinds, .after_usec = builtin[i].after, .action = ACTION_LOG };
                if (!(rules[i].name = strdup(builtin[i].name))) {
                        for (size_t k = 0; k < i; k++)
                                free(rules[k].name);
                        free(rules);
                        return -ENOMEM;
                }
        }
        c->rules = rules;
        c->n_rules = ELEMENTSOF(builtin);
        c->builtin_rules = true;
        return 0;
}
