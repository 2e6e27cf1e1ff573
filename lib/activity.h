/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What a server is configured to run through a shell (see foreign.h). NULL: not a setting of
 * that version, or not readable by pgtreed's role; "": set to nothing. Read once per connection
 * and again when the server reloads its configuration (pg_conf_load_time() changes). */
typedef struct ServerCommands {
        bool known;             /* read since the server last loaded its configuration */
        char *archive_command;
        char *archive_library;
        char *restore_command;
        char *archive_cleanup_command;
        char *recovery_end_command;
        char *ssl_passphrase_command;
        unsigned reads;         /* how many times they were read (tests, status) */
} ServerCommands;

void server_commands_clear(ServerCommands *c);

/* One row of pg_stat_activity. Strings may be NULL (SQL NULL, or hidden from a role without
 * pg_read_all_stats); times are seconds since the epoch, 0 for NULL. */
typedef struct ActivityRow {
        pid_t pid;
        char *usename;
        char *datname;
        char *application_name;
        char *client_addr;
        char *client_hostname;
        int client_port;        /* −1: Unix socket; 0: none/hidden */
        char *backend_type;
        char *state;
        double backend_start;
        double xact_start;
        double query_start;
        double state_change;
        char *wait_event_type;
        char *wait_event;
        pid_t leader_pid;       /* 0 if none */
        long long xmin_age;     /* age(backend_xmin) in transactions, −1 if none */
        char *query;            /* cut to query_max_length, NULL if not collected */
        pid_t *blocked_by;      /* pg_blocking_pids(), asked only while it waits for a Lock; owned */
        size_t n_blocked_by;
} ActivityRow;

typedef struct ActivitySnapshot {
        ActivityRow *rows;      /* sorted by pid */
        size_t n;
        double taken_at;        /* the server's clock when it answered */
        int server_version;     /* PQserverVersion: 150018 */
        pid_t own_pid;          /* pgtree's own backend: never acted on */
} ActivitySnapshot;

void activity_snapshot_clear(ActivitySnapshot *s);
const ActivityRow *activity_snapshot_find(const ActivitySnapshot *s, pid_t pid);

/* Do two rows of one client backend, from two answers, show it running one and the same
 * statement all along: active in both, the same query_start, state_change and xact_start, and
 * waiting for a lock in neither (a lock wait adds " waiting" to the title)? Then its title read
 * between the two answers is still its title. Parallel workers, walsenders and auxiliary
 * processes change their titles on their own (LSNs, WAL segments): never. */
bool activity_row_same_statement(const ActivityRow *before, const ActivityRow *now);

/* Parses pg_blocking_pids()'s text form ("{123,456}") into at most max pids; pids ≤ 0 (a
 * prepared transaction) are left out. Returns how many, or -EINVAL on anything else. */
int activity_parse_pid_array(const char *text, pid_t *pids, size_t max);

/* The pg_stat_activity query for a server version (≥ 9.6), with the columns it has. Its results
 * are binary; $1 (timestamptz) is the cut-off of query text for idle sessions. */
int activity_query_sql(int server_version, unsigned query_max_length, char **ret);

/* Binary values of the query (network byte order), for the parser and its tests: -EBADMSG when
 * the length is not the type's. Timestamps become seconds since the Unix epoch (0 for ±infinity);
 * inet becomes the address alone (what host() prints). */
int activity_binary_int4(const void *v, size_t len, int32_t *ret);
int activity_binary_int8(const void *v, size_t len, int64_t *ret);
int activity_binary_timestamptz(const void *v, size_t len, bool integer_datetimes, double *ret);
int activity_binary_inet(const void *v, size_t len, char *buf, size_t size);
/* A binary int4[] (pg_blocking_pids) into at most max pids > 0; the count, or -EBADMSG. */
int activity_binary_pid_array(const void *v, size_t len, pid_t *pids, size_t max);
/* age(xid) as the server computes it, from the next transaction id. */
long long activity_xid_age(uint32_t next_xid, uint32_t xid);

/* A non-blocking connection to one cluster (libpq's asynchronous API): it never blocks the
 * caller, has connect and query deadlines, reconnects with backoff, and reports why it is
 * unavailable. The caller drives it: activity_conn_start() once per cycle, then waits on
 * activity_conn_wants()'s fd/deadline and calls activity_conn_process() until it is idle. */
typedef struct ActivityConn ActivityConn;

typedef struct ActivityOptions {
        uint64_t connect_timeout_usec;
        uint64_t query_timeout_usec;
        unsigned query_max_length;
        /* On each connect, before anything else, ask which server answers (system_identifier,
         * pg_postmaster_start_time()): managed servers behind one name can change (failover). */
        bool identify;
        bool no_commands;       /* never read the server's commands (a remote server: no processes) */
} ActivityOptions;

/* Which server a connection reached: pg_control_system()'s system_identifier ("" when the role
 * may not read it) and pg_postmaster_start_time() in epoch seconds. */
typedef struct ServerIdentity {
        char system_identifier[24];
        double started;
} ServerIdentity;

/* conninfo: libpq keywords; host/port are added when it has none (from postmaster.pid). */
int activity_conn_new(const char *conninfo, const char *host, int port, const ActivityOptions *o, ActivityConn **ret);
ActivityConn *activity_conn_free(ActivityConn *a);

/* Starts a refresh: connects if needed, then queries. During backoff it does nothing. */
void activity_conn_start(ActivityConn *a, uint64_t now_usec);
/* What the connection waits for now; false when it waits for nothing (idle). */
bool activity_conn_wants(const ActivityConn *a, int *fd, short *events, uint64_t *deadline_usec);
/* Moves on after the fd became ready or the deadline passed. */
void activity_conn_process(ActivityConn *a, uint64_t now_usec);
bool activity_conn_busy(const ActivityConn *a);
/* Still connecting: libpq may change sockets (another address) at each step. */
bool activity_conn_connecting(const ActivityConn *a);

/* The snapshot of the last refresh that succeeded in the current cycle, or NULL. */
const ActivitySnapshot *activity_conn_snapshot(const ActivityConn *a);
/* A new result retires the snapshot before it instead of freeing it (a published tree may point
 * into it); the owner of that tree frees it with this once the tree is replaced. */
/* The answer before this cycle's (NULL if this cycle has none, or there was none before):
 * valid until activity_conn_release_retired. */
const ActivitySnapshot *activity_conn_previous_snapshot(const ActivityConn *a);
void activity_conn_release_retired(ActivityConn *a);
/* The backend serving this connection (the last one that did), 0 if none yet. */
pid_t activity_conn_backend_pid(const ActivityConn *a);
/* Is pid a backend that served this connection (now or the connection before)? */
bool activity_conn_is_own_backend(const ActivityConn *a, pid_t pid);
/* "ok", or why there is no snapshot: "unavailable: <reason>". */
const char *activity_conn_status(const ActivityConn *a);
/* The identity of the server of the current (or last) connection (ActivityOptions.identify);
 * false while none is known. */
bool activity_conn_identity(const ActivityConn *a, ServerIdentity *ret);
/* How many times it connected (1 on the first success; more after reconnects). */
unsigned activity_conn_connects(const ActivityConn *a);
/* The conninfo it uses (for messages; no password is ever in it). */
const char *activity_conn_describe(const ActivityConn *a);
/* Over a Unix socket: the pid (in pgtreed's PID namespace) of the process that listens on it,
 * the postmaster itself (SO_PEERCRED). 0 over TCP, or when not connected. */
pid_t activity_conn_peer_pid(const ActivityConn *a);

/* The server's commands as last read (known false if not read yet, or the read failed). */
const ServerCommands *activity_conn_commands(const ActivityConn *a);
/* The query that reads them (text results: name, setting). */
extern const char activity_settings_sql[];

/* Drives every connection until all are idle or the deadline passes (for --once). */
void activity_conns_run(ActivityConn **conns, size_t n, uint64_t deadline_usec);

uint64_t now_monotonic_usec(void);
