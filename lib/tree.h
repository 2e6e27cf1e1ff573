/* SPDX-License-Identifier: MIT */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "container.h"
#include "proc-record.h"
#include "title.h"

/* Is it PostgreSQL? Only a verified process is ever signalled. */
typedef enum PgIdentity {
        PG_IDENTITY_UNVERIFIED, /* a fact could not be read (pgtree unprivileged, or no /proc): shown */
        PG_IDENTITY_VERIFIED,   /* its uid, program and data directory agree with PostgreSQL's */
        PG_IDENTITY_FOREIGN,    /* below a postmaster, but another uid or program: not PostgreSQL's */
} PgIdentity;

typedef struct PgProcess {
        ProcRecord rec;         /* rec.title is owned by the tree */
        TitleInfo title;
        int cluster;            /* index into PgTree.clusters, −1 for an orphan */
        int leader;             /* index of a parallel worker's leader in PgTree.procs, else −1 */
        bool leader_missing;    /* parallel worker whose leader is not alive in its cluster */
        int depth;              /* 0 postmaster/orphan, 1 its children, 2 their children */
        char *cwd;              /* an orphan's working directory (its data directory), owned */
        char *container;        /* an orphan's container (ContainerInfo.name), owned; NULL if none */
        const struct ActivityRow *act;  /* its pg_stat_activity row (same pid and start), or NULL */
        bool act_mismatch;      /* a row has its pid but belongs to an earlier process (pid reused) */
        bool own;               /* pgtree's own connection */
        int server_major;       /* its server's major version (12, …), 0 unknown: names its type */
        PgIdentity identity;
        char identity_why[192]; /* why it is not verified, "" if it is */
} PgProcess;

/* A process that looks like PostgreSQL (comm postgres, a postmaster's command line or a
 * "postgres: …" title, no postmaster above it) but whose identity says otherwise: root, a setuid
 * program, another program, no data directory of its own. Shown as such; never a finding. */
typedef struct PgLookalike {
        ProcRecord rec;         /* rec.title is owned by the tree */
        char why[192];
} PgLookalike;

/* What postmaster.pid says (PostgreSQL 10+ has 8 lines, 9.6 has 7). */
typedef struct PmFile {
        pid_t pid;              /* negative for a single-user backend */
        char data_directory[PATH_MAX];
        int64_t start_time;     /* seconds since the epoch */
        int port;
        char socket_dir[PATH_MAX];
        char listen_addr[256];
        char status[32];        /* "ready", "starting", "stopping", "standby", or "" */
} PmFile;

typedef struct PgCluster {
        size_t postmaster;      /* index in PgTree.procs */
        char name[PATH_MAX];    /* cluster_name, else data directory, else "port N", else "pid N" */
        char cluster_name[TITLE_NAME_MAX];
        bool cluster_name_known;
        bool children_titled;   /* a child set its "postgres: …" title: cluster_name is decided */
        bool name_shared;       /* another cluster derived the same name: name was made unique */
        char data_directory[PATH_MAX];  /* "" if unknown */
        PmFile pmfile;
        bool pmfile_valid;      /* postmaster.pid read, and its pid and start time match */
        char pmfile_why[256];   /* why it is not valid */
        char activity[512];     /* "ok" or "unavailable: <reason>" */
        const struct ActivitySnapshot *snapshot; /* joined rows, or NULL */
        char config_name[128];  /* the [cluster NAME] that selects it, or "" */
        bool enforce;           /* cancel/terminate act (else dry run) */
        /* A managed server seen only through SQL (lib/remote.c): its "postmaster" is a stand-in
         * with pid 0, its processes are pg_stat_activity rows (pid is the server's, start_ticks
         * is backend_start in µs since the epoch), nothing of it is in /proc. */
        bool remote;
        char remote_server[256];        /* "host:port" as configured */
        char parent_tag[128];           /* glob on application_name: sessions grouped by tag */
        int server_major;       /* from PG_VERSION in the data directory (or the server), 0 unknown */
        /* A cluster in a container: its paths (data_directory, pmfile) are as its processes see
         * them, read through container.root; its processes carry their namespace pids. */
        ContainerInfo container;
        /* the commands its server runs on purpose (foreign.h): read this many times over its
         * connection (once per connect, again per configuration reload); known: read */
        unsigned server_commands_reads;
        bool server_commands_known;
} PgCluster;

/* A process below a cluster's processes that is not PostgreSQL (COPY … FROM PROGRAM, an untrusted
 * language, malware), or one that left that place (daemonized) but is known to come from it. Not
 * in PgTree.procs: never a session, never signalled as PostgreSQL. Found by the scanner. */
typedef struct PgForeign {
        ProcRecord rec;         /* rec.title: its whole command line (owned); rec.ident.euid its uid */
        int cluster;            /* index into PgTree.clusters */
        int via;                /* index in PgTree.procs of the PostgreSQL process it descends from,
                                 * −1 if that one is gone */
        pid_t via_pid;          /* that process, as last seen */
        uint64_t via_start_ticks;
        int depth;              /* generations below it (1: its child); 0 unknown (detached) */
        bool detached;          /* no longer below it: re-parented to init or a subreaper */
        bool expected;          /* PostgreSQL runs it on purpose: below the archiver, the startup
                                 * process or the checkpointer (archive/restore/cleanup commands) */
        bool allowed;           /* the operator allows it (allow_foreign) */
        char exe[256];          /* readlink /proc/PID/exe, "" unknown (pgtreed not root nor owner) */
        char why[160];          /* how it was found */
        char judged[256];       /* why it is expected or not (foreign_judge), "" if not judged */
} PgForeign;

typedef struct PgTree {
        PgProcess *procs;       /* per cluster: postmaster, then its descendants; orphans last */
        size_t n_procs;
        PgCluster *clusters;
        size_t n_clusters;
        size_t n_dead;          /* zombies that were left out */
        PgLookalike *lookalikes;
        size_t n_lookalikes;
        PgForeign *foreign;     /* below the clusters' processes, not PostgreSQL's */
        size_t n_foreign;
        /* Clock, set by whoever took the snapshot (0 in a tree built from literal records). */
        double now;             /* seconds since the epoch */
        double boot_time;       /* seconds since the epoch at boot */
        unsigned long hz;       /* clock ticks per second */
} PgTree;

/* The pid pg_stat_activity shows for it: its pid in its container's PID namespace, else its pid. */
static inline pid_t pg_process_ns_pid(const PgProcess *p) {
        return p->rec.ident.ns_pid > 0 ? p->rec.ident.ns_pid : p->rec.pid;
}

/* Seconds since the epoch when the process started, or 0 if the tree has no clock. */
double pg_process_start_time(const PgTree *t, const PgProcess *p);

/* Builds the tree from records. Pure: it reads nothing but the records. A postmaster is a live
 * PostgreSQL process (comm postgres/postmaster) whose title is its own command line and whose
 * parent is not a postmaster; its children are every live process whose parent it is (and their
 * children); an orphan is a live PostgreSQL process titled "postgres: …" with no live postmaster
 * among its ancestors, wherever it was re-parented. Zombies are dead and left out.
 * Identity (rec.ident, when known): a postmaster never runs as root or setuid, runs a PostgreSQL
 * binary, in a data directory of its own uid; a child runs as its postmaster's uid and program; an
 * orphan as the owner of the data directory it runs in, with a PostgreSQL binary (or a live
 * postmaster's). A candidate that contradicts this is a lookalike, not a postmaster or orphan. */
int tree_build(const ProcRecord *recs, size_t n, PgTree *ret);
void tree_free(PgTree *t);

/* Parses the text of postmaster.pid. Returns 0, or -EINVAL if the first lines are malformed. */
int pmfile_parse(const char *buf, size_t len, PmFile *ret);

/* Index of the process with this pid in the tree, or −1. */
int tree_find(const PgTree *t, pid_t pid);

/* Records the major version of cluster ci's server (from PG_VERSION, or the server itself) in
 * the cluster and its processes: it names their types when pg_stat_activity is unavailable. */
void tree_set_server_major(PgTree *t, size_t ci, int major);

/* Parses the text of a PG_VERSION file ("15\n", "9.6\n"): the major version (9.6 → 9), or
 * -EINVAL. */
int pg_version_parse(const char *buf, size_t len);

/* Sets the cluster's name from what is known of it (cluster_name, data directory, port, pid). */
void cluster_derive_name(PgCluster *c, pid_t pm_pid);

/* Makes the clusters' names unique: a name two clusters share (Debian names every cluster
 * "main") gets ":PORT" appended (postmaster.pid's port), else ":DATA_DIRECTORY", else ":pid N". */
void tree_unique_names(PgTree *t);

/* Does postmaster.pid belong to this process: its pid, and its start time within a few seconds
 * of the process's (proc_start: epoch seconds; 0 unknown, then the pid alone decides)? Else
 * why not, in why. */
bool pmfile_matches(const PmFile *f, pid_t pid, double proc_start, char *why, size_t why_size);

static inline bool pg_process_is_orphan(const PgProcess *p) {
        return p->cluster < 0;
}
