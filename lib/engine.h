/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "activity.h"
#include "config.h"
#include "findings.h"
#include "lifecycle.h"
#include "remote.h"
#include "scanner.h"
#include "sockdiag.h"
#include "tree.h"

/* One pgtree cycle, shared by `pgtreed --once` and the daemon: refresh the process tree, query
 * every cluster's pg_stat_activity (asynchronously), join, look for dead client connections,
 * detect, and move the findings' lifecycle on. */
typedef struct ClusterSlot {
        pid_t pm_pid;
        uint64_t pm_start_ticks;
        ActivityConn *conn;
        char *conninfo;         /* what conn was made from: a reload that changes it reconnects */
        bool seen;
        bool reachable;         /* the last cycle had a snapshot */
        bool reported;          /* reachability was reported at least once */
        int server_major;       /* the version the server told, for when PG_VERSION is unreadable */
        unsigned verified_connects;     /* the connection (by count) whose backend was checked */
        char wrong_server[256]; /* why its server is not this cluster's, "" if it is */
        bool have_sockdir;      /* sockdir_fd is open */
        int sockdir_fd;         /* a container's socket directory (O_PATH, through its root):
                                 * libpq reaches it as /proc/self/fd/N, short of sun_path's limit */
} ClusterSlot;


typedef struct Engine {
        const Config *config;   /* not owned: replaced by engine_set_config on reload */
        Scanner *scanner;
        ClusterSlot *slots;
        size_t n_slots, slots_allocated;
        FindingStore store;
        /* What readers see: the last finished cycle's tree, joined. A cycle builds `next` and
         * publishes it when it is done, so a control call answered while a cycle waits for
         * PostgreSQL never sees a rescanned but unjoined tree. */
        PgTree tree;
        bool have_tree;
        PgTree next;
        bool have_next;
        /* Connections dropped during a cycle: the published tree may point into their
         * snapshots, so they are freed when the next tree is published. */
        ActivityConn **dropped;
        size_t n_dropped, dropped_allocated;
        ScanStats scan;
        Findings open;          /* the open findings after the last cycle */
        uint64_t cycles;
        uint64_t full_scans;    /* cycles that began with a discovery scan */
        uint64_t complete_scans; /* of those, discoveries that read every process of the host */
        uint64_t processes_read; /* processes of the host whose data the discoveries read */
        double cycle_seconds;   /* wall time of the last whole cycle */
        uint64_t cycle_started;
        /* The moment (epoch seconds, the clock of tree.now) a long runner of the last tree reaches
         * a rule's threshold, the earliest (or the last within a tenth of an interval of it), or
         * 0: a cycle then opens (or escalates) its finding without waiting for the next interval. */
        double next_crossing;
        /* client_gone: the client connections are looked at when a cycle begins, before the
         * server is asked; a backend whose client was dead then and that the answer shows still
         * working is the finding (one that is idle, or gone, had disconnected cleanly) */
        ClientGoneProbe *probe;
        GoneBackend *gone;      /* dead clients seen when this cycle began */
        size_t n_gone;
        GoneBackend *idle;      /* local backends idle at the end of the last cycle, by pid */
        size_t n_idle;
        RemoteSet *remote;      /* managed servers ([cluster] host = remote), NULL if none */
} Engine;

int engine_new(const Config *c, Engine **ret);

/* Between cycles: is a client of a backend of the last tree dead now that was not when the last
 * cycle began? (A cycle then says whether it is a finding: the backend still working.) Cheap: the
 * host's CLOSE_WAIT sockets, and the Unix sockets of the backends that are not idle. */
bool engine_clients_died(Engine *e);
Engine *engine_free(Engine *e);
void engine_set_config(Engine *e, const Config *c);

/* Refreshes the tree and starts every cluster's activity query. */
int engine_begin_cycle(Engine *e, bool force_full);
/* The activity connections of the current tree (for an event loop to wait on). */
size_t engine_connections(Engine *e, ActivityConn **conns, size_t max);
/* Does the cycle still wait for an answer? Local servers: until their timeouts; remote servers:
 * until REMOTE_CYCLE_BUDGET_PERCENT of the interval (then the cycle goes on without them). */
bool engine_waiting(Engine *e, uint64_t now_usec);
/* The soonest time the cycle stops waiting for remote servers (UINT64_MAX: none). */
uint64_t engine_remote_deadline(Engine *e);
/* Joins, detects and updates the findings; events gets what opened, escalated or resolved. */
int engine_finish_cycle(Engine *e, FindingEvents *events);
/* Is p one of pgtreed's own backends (marked so, or serving one of its connections now or
 * just before)? */
bool engine_is_own_backend(const Engine *e, const PgTree *t, const PgProcess *p);
/* begin + wait for every query (up to the timeouts) + finish: for --once. */
int engine_run_cycle_blocking(Engine *e, bool force_full, FindingEvents *events);

/* Clusters whose reachability changed in the last cycle: index into tree.clusters. */
typedef void (*ReachabilityChanged)(const PgCluster *c, bool reachable, void *userdata);
void engine_report_reachability(Engine *e, ReachabilityChanged cb, void *userdata);
