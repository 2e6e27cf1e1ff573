/* SPDX-License-Identifier: MIT */
#pragma once

/* Managed servers (Azure Flexible Server, RDS, Cloud SQL …): clusters pgtreed cannot see in /proc,
 * watched through pg_stat_activity alone and acted on through pg_cancel_backend /
 * pg_terminate_backend in one statement that re-checks the session's identity. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "activity.h"
#include "config.h"
#include "findings.h"
#include "tree.h"

#define REMOTE_ACTION_TIMEOUT_DEFAULT_USEC (2 * USEC_PER_SEC)
/* Of the cycle's interval, how long it waits for remote servers before it goes on without them
 * (they keep connecting or querying; their answer is used by a later cycle). */
#define REMOTE_CYCLE_BUDGET_PERCENT 75

/* What findings and columns a view from pg_stat_activity alone cannot have, and why. */
typedef struct RemoteUnavailable {
        const char *what;
        const char *why;
} RemoteUnavailable;
extern const RemoteUnavailable remote_unavailable[];
extern const size_t remote_n_unavailable;
#define REMOTE_VIEW_LABEL "remote: from pg_stat_activity only"

/* ---- conninfo ---- */

/* Is this host (a conninfo host= item) this machine? A Unix socket directory ("/…" or "@…"),
 * "localhost", a loopback address, an address of one of this machine's interfaces or its host
 * name are local. Names are not resolved (no DNS on the config path). */
bool remote_host_is_local(const char *host);
/* Does the conninfo name only hosts that are not this machine? (no host at all: the default
 * Unix socket, local) */
bool remote_conninfo_is_remote(const char *conninfo);
bool remote_conninfo_names_host(const char *conninfo);
bool remote_conninfo_has_password(const char *conninfo);
/* The conninfo a remote section connects with: its conninfo, plus passfile and sslrootcert
 * (credential:NAME resolved in $CREDENTIALS_DIRECTORY). Returns 0, or -ENOENT with why set when a
 * credential is asked for and systemd gave none. */
int remote_effective_conninfo(const ClusterConf *cc, char **ret, char *why, size_t why_size);
/* "host:port" for display (no secret), from the conninfo. */
void remote_conninfo_server(const char *conninfo, char *buf, size_t size);

/* ---- the cluster view ---- */

typedef struct RemoteClusterInfo {
        const char *name;
        const char *server;             /* "host:port" */
        const char *parent_tag;         /* NULL: no grouping */
        const char *activity;           /* "ok" or "unavailable: <why>" */
        bool enforce;
        pid_t own_pid2;                 /* pgtreed's action connection, 0 none: never acted on */
} RemoteClusterInfo;

/* Appends a managed server to the tree: a stand-in for its postmaster (pid 0, never acted on),
 * then one process per pg_stat_activity row (snap may be NULL: the server is unavailable);
 * parallel workers linked to their leader through leader_pid. Pure. snap must outlive t. */
int remote_tree_add(PgTree *t, const RemoteClusterInfo *info, const ActivitySnapshot *snap);

bool pg_process_is_remote(const PgTree *t, const PgProcess *p);
/* The process with this pid and start (pids of different servers may be equal), or −1. */
int tree_find_identity(const PgTree *t, pid_t pid, uint64_t start_ticks);
/* The process a finding (or a request by hand) is about: its index f->proc if that still is the
 * same pid, start and cluster, else the process with that pid and start in the finding's cluster,
 * else −1. Two managed servers can have sessions with equal pids (and, in theory, starts). */
int tree_find_finding(const PgTree *t, const Finding *f);
/* backend_start (epoch seconds) as a remote process's start_ticks (µs), and back. */
uint64_t remote_start_ticks(double backend_start);

/* ---- acting through SQL ---- */

/* What the one statement found and did. */
typedef enum RemoteOutcome {
        REMOTE_SENT,            /* pg_cancel_backend / pg_terminate_backend returned true */
        REMOTE_GONE,            /* no session with that pid any more */
        REMOTE_REUSED,          /* that pid is another session now (backend_start differs) */
        REMOTE_NOT_CLIENT,      /* not a client backend */
        REMOTE_OWN,             /* pgtreed's own session */
        REMOTE_CHANGED,         /* user, database or application_name differ from what was decided on */
        REMOTE_MOVED_ON,        /* the query/transaction/idle spell found is over */
        REMOTE_SUPERUSER,       /* a superuser's session and pgtreed's role is not superuser */
        REMOTE_NO_PRIVILEGE,    /* pgtreed's role has neither pg_signal_backend nor that role */
        REMOTE_HIDDEN,          /* backend_start hidden: pgtreed's role lacks pg_read_all_stats */
        REMOTE_SERVER_CHANGED,  /* another server answers at that address (failover, restart) */
        _REMOTE_OUTCOME_MAX,
} RemoteOutcome;

const char *remote_outcome_to_string(RemoteOutcome o);
int remote_outcome_from_string(const char *s);
/* A sentence for logs and the client. */
const char *remote_outcome_explain(RemoteOutcome o);

typedef struct RemoteTarget {
        pid_t pid;
        double backend_start;           /* epoch seconds, as pg_stat_activity gave it */
        const char *usename, *datname, *application_name; /* as decided on (NULL: SQL NULL) */
        const char *check_column;       /* "query_start", "state_change", "xact_start" or NULL */
        double check_value;             /* that column's value as seen */
        bool require_active;            /* long_query: the session must still be active */
        double server_started;          /* pg_postmaster_start_time() of the server the session was
                                         * seen on (epoch seconds), 0 unknown */
} RemoteTarget;

/* The one statement: $1 pid, $2 backend_start, $3 'cancel'|'terminate', $4 user, $5 database,
 * $6 application_name, $7 column to re-check or NULL, $8 its value, $9 'active' or NULL, $10 the
 * server's pg_postmaster_start_time() as seen or NULL. It returns one row with one text column:
 * an outcome word. */
extern const char remote_action_sql[];
#define REMOTE_ACTION_NPARAMS 10
/* Fills the parameters (bufs: storage for the numbers, 4 × 32 bytes). */
void remote_action_params(const RemoteTarget *t, Action a, char bufs[4][32], const char *values[REMOTE_ACTION_NPARAMS]);
/* The target of an action on a remote process (kind: the finding's, or _FINDING_KIND_MAX for a
 * request by hand, which re-checks identity but not what was found). */
void remote_target_from_process(const PgProcess *p, FindingKind kind, RemoteTarget *ret);

/* ---- the daemon's remote servers ---- */

typedef struct RemoteSet RemoteSet;

RemoteSet *remote_set_free(RemoteSet *s);
/* Follows the config (new, changed, removed sections) and starts every server's refresh. */
int remote_set_begin(RemoteSet **s, const Config *c, uint64_t now_usec);
size_t remote_set_connections(RemoteSet *s, ActivityConn **conns, size_t max);
/* Does the cycle still wait for a remote server? Until its budget ends. */
bool remote_set_waiting(const RemoteSet *s, uint64_t now_usec);
/* When the cycle stops waiting for remote servers (UINT64_MAX if it does not wait). */
uint64_t remote_set_deadline(const RemoteSet *s);
/* Adds every remote server to the tree (after the local join and client_gone scan): fresh, what
 * this cycle's queries brought (at the cycle's end); else what the last cycle had (at its start,
 * so that the tree shows them while the cycle runs). Remote clusters added before to the same
 * tree are replaced. */
int remote_set_add_to_tree(RemoteSet *s, const Config *c, PgTree *t, bool fresh);
/* The engine freed the tree the remote clusters were in. */
void remote_set_tree_gone(RemoteSet *s);
typedef void (*RemoteReachability)(const PgCluster *c, bool reachable, void *userdata);
void remote_set_report_reachability(RemoteSet *s, const PgTree *t, RemoteReachability cb, void *userdata);
/* Server details for JSON: taken_at of the last snapshot (server clock, 0 none), connects. */
bool remote_set_info(const RemoteSet *s, const char *name, double *taken_at, unsigned *connects);

/* At most this many actions per remote server are pending (one in flight, the others queued
 * behind it); more are refused with a message that names the limit. */
#define REMOTE_ACTIONS_PENDING_MAX 8

/* The outcome of an action: r = 0 with o set, or a negative errno with msg saying why nothing is
 * known (-ETIMEDOUT: no answer within action_timeout; the statement was cancelled, but the server
 * may have carried it out) or why it was not sent (-ESTALE: the server changed; -ECANCELED: the
 * server left the configuration or pgtreed stops). */
typedef void (*RemoteActDone)(int r, RemoteOutcome o, const char *msg, void *userdata);

/* Queues the one statement for the server of cluster `name`, sent over its action connection
 * (libpq's asynchronous API, driven by remote_set_actions_process()) and bounded by timeout_usec
 * from now, waiting in the queue and connecting included. The server's identity as last seen is
 * added to the target (a statement that reaches another server does nothing). done is called
 * exactly once, never from within this call. Returns 0, -ENOENT (no such server), -EBUSY
 * (REMOTE_ACTIONS_PENDING_MAX pending already) with msg set. */
int remote_set_act_start(RemoteSet *s, const char *name, const RemoteTarget *t, Action a, uint64_t timeout_usec,
                         uint64_t now_usec, RemoteActDone done, void *userdata, char *msg, size_t msg_size);
/* Actions pending on the server of cluster `name` (in flight and queued). */
size_t remote_set_actions_pending(const RemoteSet *s, const char *name);
/* The sockets the action connections wait on (at most max): fd and poll events each. */
typedef struct RemoteActWait {
        int fd;
        short events;
} RemoteActWait;
size_t remote_set_actions_wants(const RemoteSet *s, RemoteActWait *w, size_t max);
/* When remote_set_actions_process() must run next (0: at once, UINT64_MAX: nothing pending). */
uint64_t remote_set_actions_deadline(const RemoteSet *s);
/* Moves every action connection on: ready_fd is the socket that became ready (−1: a deadline or a
 * new request). Calls done for every action whose outcome is known now. */
void remote_set_actions_process(RemoteSet *s, int ready_fd, uint64_t now_usec);

/* The last time the server behind a remote cluster changed (failover behind one name, or a
 * restart): false if it never did since pgtreed started. */
typedef struct RemoteServerChange {
        ServerIdentity old_identity, new_identity;
        double at;                      /* epoch seconds, when pgtreed saw it */
        unsigned count;                 /* changes seen so far */
        size_t dropped;                 /* pending actions dropped then */
} RemoteServerChange;
bool remote_set_server_change(const RemoteSet *s, const char *name, RemoteServerChange *ret);

/* The same on a connection given by conninfo (tests). */
int remote_act_conninfo(const char *conninfo, const RemoteTarget *t, Action a, uint64_t timeout_usec,
                        RemoteOutcome *outcome, char *msg, size_t msg_size);
