/* SPDX-License-Identifier: MIT */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "alert.h"
#include "config.h"
#include "engine.h"
#include "metrics.h"
#include "pidref.h"
#include "ratelimit.h"

typedef struct ControlServer ControlServer;

/* What has been done about one finding. */
typedef struct ActionState {
        FindingKind kind;
        pid_t pid;
        uint64_t start_ticks;
        Action done;            /* strongest action carried out (or dry-run/refused) so far */
        bool held_logged;       /* "held back by the rate limit" was said */
        bool seen;              /* still open in this cycle */
} ActionState;

/* A backend sent SIGTERM: watched until it exits or its grace period ends. */
typedef struct TermWatch {
        struct Manager *manager;
        PidRef ref;
        Finding finding;
        char requested_by[128];
        uint64_t sent_at;
        sd_event_source *exit_source;
        sd_event_source *grace_source;
} TermWatch;

typedef struct PmWatch {
        struct Manager *manager;
        pid_t pid;
        uint64_t start_ticks;
        char cluster[PATH_MAX];         /* its cluster's name and data directory, for the log */
        char data_directory[PATH_MAX];
        int fd;
        sd_event_source *source;
        bool seen;
} PmWatch;

/* A data directory without a running postmaster (one exited, or a configured cluster that is
 * not running) or whose server is not connected to yet: its postmaster.pid appearing or being
 * rewritten (the server ready) starts a discovery scan at once. Or a socket directory (of the
 * clusters that run, and PostgreSQL's usual ones): a server that starts creates its
 * .s.PGSQL.PORT.lock there, which starts a discovery scan (at most one per interval). */
typedef struct DirWatch {
        struct Manager *manager;
        char *directory;
        sd_event_source *source;
        bool wanted;
} DirWatch;
#define SOCKET_DIRECTORIES_DEFAULT "/run/postgresql", "/var/run/postgresql", "/tmp"
#define DIR_WATCHES_MAX 64

typedef struct Manager {
        sd_event *event;
        char *config_path;      /* NULL: built-in defaults */
        Config *config;
        Engine *engine;
        AlertRunner alerts;
        sd_event_source *cycle_timer;
        sd_event_source *socket_source; /* PostgreSQL sockets appearing (the scanner's inotify) */
        sd_event_source *conn_sources[64];
        int conn_fds[64];               /* what each source watches, to keep it while unchanged */
        uint32_t conn_events[64];
        ActivityConn *conn_owners[64];
        unsigned conn_gen[64];          /* its connection's connects when added, ~0u if it was connecting */
        size_t n_conn_sources;
        sd_event_source *conn_timer;
        uint64_t conn_deadline;
        sd_event_source *alert_timer;
        sd_event_source **alert_sources;
        size_t n_alert_sources;
        bool cycle_running;
        bool force_full;
        bool ready;
        uint64_t cycle_started;
        /* The cadence: regular cycles begin an interval apart, from regular_started. Between them
         * extra cycles run when long runners reach a rule's threshold (engine->next_crossing), so
         * that their findings do not wait for the next regular cycle: one per interval on average
         * (a bucket of two, refilled by one each interval), a quarter of an interval apart at
         * least, whatever the sessions do. */
        uint64_t regular_started;
        double extra_tokens;
        uint64_t extra_refilled;
        bool extra_next;        /* the cycle the timer is set for is an extra one */
        uint64_t extra_cycles;  /* how many ran */
        /* once between two regular cycles, half way: the clients of the last tree's busy
         * backends; one dead since the last cycle began starts an extra cycle. Once, not more
         * often: at 2,000 sessions the look is a dump of the host's Unix sockets, and three per
         * interval cost more than half a cycle again */
        sd_event_source *probe_timer;
        uint64_t probed_after;  /* regular_started of the interval the look was made in */
        uint64_t client_probes; /* how many ran */
        PmWatch *pm;
        size_t n_pm, pm_allocated;
        DirWatch *dir_watches[DIR_WATCHES_MAX];
        size_t n_dir_watches;
        ActionState *actions;
        size_t n_actions, actions_allocated;
        TermWatch **terms;
        size_t n_terms, terms_allocated;
        /* per-cluster rate limit: times (µs) of the actions of the last minute, a window sized
         * to max_actions_per_minute */
        RateTable rates;        /* per cluster: max_actions_per_minute */
        RateTable alert_rates;  /* per cluster: max_alerts_per_minute */
        RateTable owner_alert_rates; /* per OS user owning clusters: max_alerts_per_minute_per_owner */
        ControlServer *control;
        ActionCounters counters;
        struct RemoteActLoop *remote_acts;      /* actions on managed servers (daemon/remote-act.c) */
        bool metrics_failed;    /* the metrics file could not be written (said once) */
        double start_time;      /* epoch seconds */
} Manager;

int manager_new(const char *config_path, Config *config, Manager **ret);
Manager *manager_free(Manager *m);
int manager_run(Manager *m);

/* Carries out a cancel or terminate on one process of the current tree, with every check (client
 * backend only, parallel workers through their leader, protection, enforcement, rate limit,
 * identity through a pidfd). requested_by: "rule NAME" or "uid 1000 pid 42 (pgtree)". Logs the
 * outcome; returns a short result word ("sent", "dry-run", "refused", "failed", "held", "gone")
 * and fills why. */
const char *manager_act(Manager *m, const Finding *f, Action action, const char *requested_by, bool manual,
                        char *why, size_t why_size);
/* The same, for a caller that wants the outcome of an action on a managed server, which is known
 * only later: the result is then "pending", and done is called (from the event loop) with the
 * final word and why once the server answered, the action_timeout passed or it was dropped.
 * Everything else returns the final word at once and never calls done. */
typedef void (*ManagerActDone)(const char *word, const char *why, void *userdata);
const char *manager_act_async(Manager *m, const Finding *f, Action action, const char *requested_by, bool manual,
                              char *why, size_t why_size, ManagerActDone done, void *userdata);
/* An action was carried out on this rate-limit key (a cluster): counted against
 * max_actions_per_minute. */
void manager_rate_record(Manager *m, const char *key);

/* Reload the configuration (SIGHUP, or a client). Returns 0, or -EINVAL with the errors logged
 * (and, if errors is not NULL, returned as "FILE:LINE: message" strings, NULL-terminated). */
int manager_reload(Manager *m, char ***errors);
