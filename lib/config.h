/* SPDX-License-Identifier: MIT */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "findings.h"

#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC 1000000ULL

#define CONFIG_MAX_RULES 256
#define CONFIG_MAX_CLUSTERS 64
#define CONFIG_MAX_PATTERNS 64

/* A comma-separated list of shell globs. */
typedef struct PatternList {
        char **items;
        size_t n;
} PatternList;

/* A client address filter: "local" (Unix sockets), an address, or a CIDR. */
typedef struct ClientMatch {
        bool local;
        int family;             /* AF_INET / AF_INET6, 0 for local */
        unsigned char addr[16];
        unsigned prefix;
} ClientMatch;

typedef struct ClientList {
        ClientMatch *items;
        size_t n;
} ClientList;

typedef struct Filter {
        PatternList include, exclude;
} Filter;

/* Whom a rule's action is for: the session of the finding, or (lock_wait) the root of the
 * chain of sessions that blocks it. */
typedef enum RuleTarget {
        RULE_TARGET_SESSION,
        RULE_TARGET_BLOCKER,
} RuleTarget;

typedef struct Rule {
        char *name;
        unsigned line;
        unsigned kinds;         /* bit per FindingKind */
        uint64_t after_usec;    /* 0: not given */
        Filter user, database, application_name, backend_type, state, cluster, container;
        Filter command;         /* foreign_process: the process's command line */
        ClientList client, exclude_client;
        Action action;
        char *alert_command;
        RuleTarget target;      /* BLOCKER: filters match the root blocker, the action is for it */
        unsigned target_line;
} Rule;

typedef struct ClusterConf {
        char *name;
        unsigned line;
        char *data_directory;   /* selection: any of these that is set must match */
        int port;
        char *conninfo;         /* NULL: derived from postmaster.pid and [daemon] conninfo */
        int enforce;            /* −1 inherit [daemon] enforce */
        /* ---- managed servers (lib/remote.c) ---- */
        int host;               /* CLUSTER_HOST_*: after parsing, AUTO is resolved to LOCAL or REMOTE */
        bool host_auto;         /* REMOTE/LOCAL was chosen from the conninfo's host */
        char *parent_tag;       /* glob on application_name: matching sessions form a group */
        uint64_t action_timeout_usec;   /* bound of one pg_cancel/terminate_backend round trip */
        char *passfile;         /* added to the conninfo: a path, or "credential:NAME" ($CREDENTIALS_DIRECTORY/NAME) */
        char *sslrootcert;      /* added to the conninfo (long paths do not fit on one ini line) */
} ClusterConf;

enum {
        CLUSTER_HOST_AUTO = -1,
        CLUSTER_HOST_LOCAL = 0,
        CLUSTER_HOST_REMOTE = 1,
};

typedef struct Config {
        char *path;
        uint64_t interval_usec;
        uint64_t discovery_interval_usec;
        uint64_t connect_timeout_usec;
        uint64_t query_timeout_usec;
        uint64_t alert_timeout_usec;
        uint64_t terminate_grace_usec;
        uint64_t unlisted_grace_usec;   /* default grace for unlisted_process */
        bool enforce;
        char *socket_path;
        char *socket_group;
        char *admin_group;
        bool query_text_for_readers;    /* socket_group members see query text (else admins only) */
        unsigned max_actions_per_minute;
        unsigned max_concurrent_alerts; /* alert commands running at once (≥ 1) */
        unsigned max_alerts_per_minute; /* per cluster; 0: no limit */
        unsigned max_alerts_per_minute_per_owner; /* all clusters of one OS user together; 0: no limit */
        char *metrics_file;
        char *conninfo;                 /* defaults for every cluster's connection */
        unsigned query_max_length;      /* 0: query text not collected */
        PatternList protected_users, protected_databases, protected_applications;
        PatternList allow_foreign;      /* command lines or executables below backends that are no finding */
        Rule *rules;
        size_t n_rules;
        bool builtin_rules;             /* no [rule] in the file: the built-in observe-only rules */
        ClusterConf *clusters;
        size_t n_clusters;
} Config;

typedef struct ConfigError {
        char *file;
        unsigned line;          /* 0: about the file as a whole */
        char *message;
} ConfigError;

typedef struct ConfigErrors {
        ConfigError *items;
        size_t n;
        size_t allocated;
} ConfigErrors;

/* The configuration with every default (what runs with no file at all). */
int config_new_default(Config **ret);

/* Parses a config. Every problem is added to errs as FILE:LINE: message; on any problem the
 * result is -EINVAL and *ret is NULL. name is what messages call the file. */
int config_parse_file(const char *path, Config **ret, ConfigErrors *errs);
int config_parse_stream(FILE *f, const char *name, Config **ret, ConfigErrors *errs);
int config_parse_string(const char *text, const char *name, Config **ret, ConfigErrors *errs);

Config *config_free(Config *c);
void config_errors_print(const ConfigErrors *errs, FILE *out);
void config_errors_clear(ConfigErrors *errs);

/* "500ms", "90s", "5m", "2h", "1d", "1h30m". Returns 0 or -EINVAL (no unit, junk, overflow). */
int parse_duration(const char *s, uint64_t *ret_usec);
/* Parses "10.0.0.0/8", "::1", "local". */
int client_match_parse(const char *s, ClientMatch *ret);
/* Does the client ("10.0.0.5:50156", "[::1]:5432", "local") fall in m? */
bool client_match(const ClientMatch *m, const char *client);

/* The cluster section that selects a discovered cluster (by data directory, port or name), or
 * NULL. */
const ClusterConf *config_find_cluster(const Config *c, const char *name, const char *data_directory, int port);
/* How many [cluster] sections describe managed servers (host = remote). */
size_t config_n_remote(const Config *c);

/* Is enforcement on for this cluster? */
bool config_cluster_enforce(const Config *c, const ClusterConf *cc);
