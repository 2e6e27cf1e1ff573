/* SPDX-License-Identifier: MIT */
/* pg_stat_activity over libpq's asynchronous API. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "activity.h"
#include "macro.h"

#define BACKOFF_MIN_USEC (1000000ULL)
#define BACKOFF_MAX_USEC (60000000ULL)
#define STMT_NAME "pgtree_activity"

typedef enum ConnState {
        STATE_DISCONNECTED,
        STATE_CONNECTING,
        STATE_IDENTIFYING,
        STATE_PREPARING,
        STATE_IDLE,
        STATE_QUERYING,
        STATE_SETTINGS,         /* after a query: the server's commands (foreign.h), when due */
        STATE_BACKOFF,
} ConnState;

struct ActivityConn {
        char **keywords;
        char **values;
        char describe[512];
        ActivityOptions opt;
        PGconn *conn;
        ConnState state;
        PostgresPollingStatusType poll;
        bool want_write;        /* a query is not flushed yet */
        bool refresh_pending;   /* connect, then query */
        uint64_t deadline;
        uint64_t retry_at;
        uint64_t backoff;
        unsigned connects;
        char status[512];
        ActivitySnapshot snap;
        bool have_snap;         /* snap is this cycle's */
        bool have_prev;         /* snap holds the last complete answer of this connection */
        /* The snapshot before snap: a tree published from it may still point into its rows
         * until the engine publishes the next one (activity_conn_release_retired). */
        ActivitySnapshot retired;
        /* The backends that served pgtreed: the current connection's and the one before (it
         * may still be exiting). Never a target, whether or not a snapshot came this cycle. */
        pid_t backend_pids[2];
        PGresult *result;
        ServerIdentity identity;        /* of the server this connection reached */
        bool have_identity;
        ServerCommands commands;
        double conf_loaded_at;  /* pg_conf_load_time() when the commands were last due */
        bool settings_due;      /* a new connection, or the server reloaded its configuration */
};

/* Text results: one row. pg_control_system() is only asked when the role may call it. */
static const char identity_sql[] =
        "SELECT extract(epoch FROM pg_catalog.pg_postmaster_start_time())::float8,"
        " CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')"
        " THEN (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) END";

bool activity_conn_identity(const ActivityConn *a, ServerIdentity *ret) {
        if (!a || !a->have_identity)
                return false;
        *ret = a->identity;
        return true;
}

static int take_identity(ActivityConn *a, const PGresult *res) {
        if (PQntuples(res) != 1 || PQnfields(res) != 2 || PQgetisnull(res, 0, 0))
                return -EBADMSG;
        char *end = NULL;
        const char *v = PQgetvalue(res, 0, 0);
        double started = strtod(v, &end);
        if (end == v || *end || !(started > 0))
                return -EBADMSG;
        ServerIdentity id = { .started = started };
        if (!PQgetisnull(res, 0, 1)) {
                const char *s = PQgetvalue(res, 0, 1);
                if (!*s || strlen(s) >= sizeof id.system_identifier || strspn(s, "0123456789") != strlen(s))
                        return -EBADMSG;
                snprintf(id.system_identifier, sizeof id.system_identifier, "%s", s);
        }
        a->identity = id;
        a->have_identity = true;
        return 0;
}

uint64_t now_monotonic_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

static int cmp_row(const void *a, const void *b) {
        pid_t x = ((const ActivityRow *) a)->pid, y = ((const ActivityRow *) b)->pid;
        return (x > y) - (x < y);
}

void activity_snapshot_clear(ActivitySnapshot *s) {
        for (size_t i = 0; s && i < s->n; i++) {
                ActivityRow *r = &s->rows[i];
                free(r->usename);
                free(r->datname);
                free(r->application_name);
                free(r->client_addr);
                free(r->client_hostname);
                free(r->backend_type);
                free(r->state);
                free(r->wait_event_type);
                free(r->wait_event);
                free(r->query);
                free(r->blocked_by);
        }
        if (s) {
                free(s->rows);
                *s = (ActivitySnapshot){};
        }
}

const ActivityRow *activity_snapshot_find(const ActivitySnapshot *s, pid_t pid) {
        if (!s || s->n == 0)
                return NULL;
        ActivityRow key = { .pid = pid };
        return bsearch(&key, s->rows, s->n, sizeof key, cmp_row);
}

static bool str_eq(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

bool activity_row_same_statement(const ActivityRow *a, const ActivityRow *b) {
        return a && b && a->pid == b->pid && a->pid > 0 && a->backend_start == b->backend_start &&
               str_eq(a->backend_type, "client backend") && str_eq(b->backend_type, "client backend") &&
               str_eq(a->state, "active") && str_eq(b->state, "active") && a->query_start != 0 &&
               a->query_start == b->query_start && a->state_change == b->state_change &&
               a->xact_start == b->xact_start && !str_eq(a->wait_event_type, "Lock") &&
               !str_eq(b->wait_event_type, "Lock");
}

/* One round trip, binary results: the server formats nothing (timestamps are 8-byte integers,
 * inet is bytes) and runs no function per row. age(backend_xmin) is computed here from the next
 * transaction id (one InitPlan), and the query text is sent only for sessions that are not idle
 * or whose query started since $1 (the previous snapshot): an idle session keeps the text the
 * client already has. */
int activity_query_sql(int v, unsigned qmax, char **ret) {
        if (v < 90600)
                return -EPROTONOSUPPORT;
        char query[160];
        if (qmax > 0)
                snprintf(query, sizeof query,
                         "CASE WHEN state IS DISTINCT FROM 'idle' OR query_start >= $1 THEN left(query, %u) END", qmax);
        else
                snprintf(query, sizeof query, "NULL::text");
        int r = asprintf(ret,
                         "SELECT pid, usename, datname, application_name, client_addr, client_port, "
                         "client_hostname, %s, state, backend_start, xact_start, query_start, state_change, "
                         "wait_event_type, wait_event, %s, backend_xmin, %s, "
                         "(SELECT pg_catalog.clock_timestamp()), (SELECT %s), "
                         /* who blocks it: asked only of sessions waiting for a lock, so the cost
                          * follows the number of waiters, not of sessions */
                         "CASE WHEN wait_event_type = 'Lock' THEN pg_catalog.pg_blocking_pids(pid) END, "
                         /* once per query: a reload makes pgtreed read the commands again */
                         "(SELECT pg_catalog.pg_conf_load_time()) "
                         "FROM pg_catalog.pg_stat_activity",
                         v >= 100000 ? "backend_type" : "NULL::text", v >= 130000 ? "leader_pid" : "NULL::int4", query,
                         v >= 130000 ? "pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())"
                                     : "pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot())");
        return r < 0 ? -ENOMEM : 0;
}

/* ---- binary values ---- */

#define OID_NAME 19
#define OID_INT8 20
#define OID_INT4 23
#define OID_TEXT 25
#define OID_XID 28
#define OID_TIMESTAMPTZ 1184
#define OID_INET 869
#define OID_XID8 5069
#define OID_INT4ARRAY 1007
#define PG_EPOCH_UNIX 946684800LL /* 2000-01-01 in Unix time */

static uint32_t be32(const unsigned char *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | (uint32_t) p[3];
}

static uint64_t be64(const unsigned char *p) {
        return (uint64_t) be32(p) << 32 | be32(p + 4);
}

int activity_binary_int4(const void *v, size_t len, int32_t *ret) {
        if (len != 4)
                return -EBADMSG;
        *ret = (int32_t) be32(v);
        return 0;
}

int activity_binary_int8(const void *v, size_t len, int64_t *ret) {
        if (len != 8)
                return -EBADMSG;
        *ret = (int64_t) be64(v);
        return 0;
}

int activity_binary_timestamptz(const void *v, size_t len, bool integer_datetimes, double *ret) {
        if (len != 8)
                return -EBADMSG;
        uint64_t raw = be64(v);
        double secs;
        if (integer_datetimes) {
                int64_t usec = (int64_t) raw;
                if (usec == INT64_MIN || usec == INT64_MAX) { /* -infinity, infinity */
                        *ret = 0;
                        return 0;
                }
                /* whole seconds first: no rounding of the microseconds */
                int64_t s = usec / 1000000, us = usec % 1000000;
                secs = (double) (s + PG_EPOCH_UNIX) + (double) us / 1e6;
        } else {
                double d;
                memcpy(&d, &raw, sizeof d);
                if (!(d > -1e15 && d < 1e15)) { /* infinities, NaN */
                        *ret = 0;
                        return 0;
                }
                secs = d + (double) PG_EPOCH_UNIX;
        }
        *ret = secs;
        return 0;
}

int activity_binary_inet(const void *v, size_t len, char *buf, size_t size) {
        const unsigned char *p = v;
        if (len < 4)
                return -EBADMSG;
        int family = p[0] == 2 ? AF_INET : p[0] == 3 ? AF_INET6 : -1;
        size_t nb = p[3];
        if (family < 0 || nb != (family == AF_INET ? 4u : 16u) || len != 4 + nb)
                return -EBADMSG;
        if (!inet_ntop(family, p + 4, buf, (socklen_t) size))
                return -ENOSPC;
        return 0;
}

/* ---- setup ---- */

static void free_params(ActivityConn *a) {
        for (size_t i = 0; a->keywords && a->keywords[i]; i++) {
                free(a->keywords[i]);
                free(a->values[i]);
        }
        free(a->keywords);
        free(a->values);
        a->keywords = a->values = NULL;
}

int activity_conn_new(const char *conninfo, const char *host, int port, const ActivityOptions *o, ActivityConn **ret) {
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", &err);
        if (!opts) {
                PQfreemem(err);
                return -EINVAL;
        }
        _cleanup_free_ ActivityConn *a = calloc(1, sizeof *a);
        if (!a) {
                PQconninfoFree(opts);
                return -ENOMEM;
        }
        size_t n = 0;
        for (PQconninfoOption *p = opts; p->keyword; p++)
                n++;
        a->keywords = calloc(n + 4, sizeof(char *));
        a->values = calloc(n + 4, sizeof(char *));
        bool have_host = false, have_port = false, have_app = false, ok = a->keywords && a->values;
        size_t k = 0;
        for (PQconninfoOption *p = opts; ok && p->keyword; p++) {
                if (!p->val)
                        continue;
                have_host |= !strcmp(p->keyword, "host") || !strcmp(p->keyword, "hostaddr");
                have_port |= !strcmp(p->keyword, "port");
                have_app |= !strcmp(p->keyword, "application_name");
                ok = (a->keywords[k] = strdup(p->keyword)) && (a->values[k] = strdup(p->val));
                k++;
        }
        PQconninfoFree(opts);
        char portbuf[16];
        snprintf(portbuf, sizeof portbuf, "%d", port);
        if (ok && !have_host && host && *host) {
                ok = (a->keywords[k] = strdup("host")) && (a->values[k] = strdup(host));
                k++;
        }
        if (ok && !have_port && port > 0) {
                ok = (a->keywords[k] = strdup("port")) && (a->values[k] = strdup(portbuf));
                k++;
        }
        if (ok && !have_app) {
                ok = (a->keywords[k] = strdup("application_name")) && (a->values[k] = strdup("pgtreed"));
                k++;
        }
        if (!ok) {
                free_params(a);
                return -ENOMEM;
        }
        size_t used = 0;
        for (size_t i = 0; a->keywords[i]; i++) {
                bool secret = !strcmp(a->keywords[i], "password");
                int w = snprintf(a->describe + used, sizeof a->describe - used, "%s%s=%s", used ? " " : "",
                                 a->keywords[i], secret ? "***" : a->values[i]);
                if (w < 0 || (size_t) w >= sizeof a->describe - used)
                        break;
                used += (size_t) w;
        }
        a->opt = *o;
        a->backoff = BACKOFF_MIN_USEC;
        snprintf(a->status, sizeof a->status, "unavailable: not connected yet");
        *ret = TAKE_PTR(a);
        return 0;
}

ActivityConn *activity_conn_free(ActivityConn *a) {
        if (!a)
                return NULL;
        if (a->result)
                PQclear(a->result);
        if (a->conn)
                PQfinish(a->conn);
        activity_snapshot_clear(&a->snap);
        activity_snapshot_clear(&a->retired);
        server_commands_clear(&a->commands);
        free_params(a);
        free(a);
        return NULL;
}

pid_t activity_conn_backend_pid(const ActivityConn *a) {
        return a ? a->backend_pids[0] : 0;
}

bool activity_conn_is_own_backend(const ActivityConn *a, pid_t pid) {
        return a && pid > 0 && (a->backend_pids[0] == pid || a->backend_pids[1] == pid);
}

const ActivitySnapshot *activity_conn_previous_snapshot(const ActivityConn *a) {
        return a && a->have_snap && a->retired.n > 0 ? &a->retired : NULL;
}

void activity_conn_release_retired(ActivityConn *a) {
        if (a) {
                activity_snapshot_clear(&a->retired);
                a->retired = (ActivitySnapshot){};
        }
}

/* ---- state machine ---- */

/* The first line of libpq's message, without "FATAL:  " noise. */
static void set_reason(ActivityConn *a, const char *what, const char *msg) {
        char line[400] = "";
        if (msg) {
                while (*msg == ' ' || *msg == '\n')
                        msg++;
                size_t l = strcspn(msg, "\n");
                snprintf(line, sizeof line, "%.*s", (int) l, msg);
        }
        snprintf(a->status, sizeof a->status, "unavailable: %s%s%s", what, *line ? ": " : "", line);
}

/* Drops the connection and backs off. detail: what libpq said, or NULL for its last message;
 * "" for none. */
static void fail_with(ActivityConn *a, uint64_t now, const char *what, const char *detail) {
        set_reason(a, what, detail ? detail : a->conn ? PQerrorMessage(a->conn) : NULL);
        if (a->result) {
                PQclear(a->result);
                a->result = NULL;
        }
        if (a->conn) {
                PQfinish(a->conn);
                a->conn = NULL;
        }
        a->state = STATE_BACKOFF;
        a->retry_at = now + a->backoff;
        a->backoff = a->backoff * 2 > BACKOFF_MAX_USEC ? BACKOFF_MAX_USEC : a->backoff * 2;
        a->refresh_pending = false;
        a->have_snap = a->have_prev = false;
        activity_snapshot_clear(&a->snap);
}

static void fail(ActivityConn *a, uint64_t now, const char *what) {
        fail_with(a, now, what, NULL);
}

/* $1 of the query: sessions idle since before it get no query text (the client has it). */
static void text_cutoff(const ActivityConn *a, unsigned char buf[8]) {
        int64_t v = INT64_MIN; /* -infinity: everyone's text */
        if (a->have_prev && a->snap.taken_at > 0) {
                /* a second before the previous snapshot: its rows were all taken by then */
                double s = a->snap.taken_at - 1.0 - (double) PG_EPOCH_UNIX;
                v = (int64_t) (s * 1e6);
        }
        uint64_t u = (uint64_t) v;
        for (int i = 7; i >= 0; i--, u >>= 8)
                buf[i] = (unsigned char) (u & 0xff);
}

static void send_query(ActivityConn *a, uint64_t now) {
        unsigned char cutoff[8];
        text_cutoff(a, cutoff);
        const char *values[] = { (const char *) cutoff };
        const int lengths[] = { 8 }, formats[] = { 1 };
        if (!PQsendQueryPrepared(a->conn, STMT_NAME, 1, values, lengths, formats, 1)) {
                fail(a, now, "query failed");
                return;
        }
        a->state = STATE_QUERYING;
        a->deadline = now + a->opt.query_timeout_usec;
        a->want_write = PQflush(a->conn) == 1;
        a->refresh_pending = false;
}

static void prepare(ActivityConn *a, uint64_t now) {
        _cleanup_free_ char *sql = NULL;
        int v = PQserverVersion(a->conn);
        int r = activity_query_sql(v, a->opt.query_max_length, &sql);
        if (r == -EPROTONOSUPPORT) {
                char why[64];
                snprintf(why, sizeof why, "server version %d is older than 9.6", v);
                fail_with(a, now, why, "");
                return;
        }
        const Oid types[] = { OID_TIMESTAMPTZ };
        if (r < 0 || !PQsendPrepare(a->conn, STMT_NAME, sql, 1, types)) {
                fail(a, now, "cannot prepare the pg_stat_activity query");
                return;
        }
        a->state = STATE_PREPARING;
        a->deadline = now + a->opt.query_timeout_usec;
        a->want_write = PQflush(a->conn) == 1;
}

static void connected(ActivityConn *a, uint64_t now) {
        if (PQsetnonblocking(a->conn, 1) != 0) {
                fail(a, now, "cannot make the connection non-blocking");
                return;
        }
        a->connects++;
        /* another server, maybe: its commands are read after the first query */
        server_commands_clear(&a->commands);
        a->settings_due = true;
        if (!a->opt.identify) {
                prepare(a, now);
                return;
        }
        if (!PQsendQuery(a->conn, identity_sql)) {
                fail(a, now, "cannot ask which server answers");
                return;
        }
        a->state = STATE_IDENTIFYING;
        a->deadline = now + a->opt.query_timeout_usec;
        a->want_write = PQflush(a->conn) == 1;
}

void activity_conn_start(ActivityConn *a, uint64_t now) {
        a->have_snap = false;
        switch (a->state) {
        case STATE_BACKOFF:
                if (now < a->retry_at)
                        return; /* keeps its reason */
                _fallthrough_;
        case STATE_DISCONNECTED:
                a->conn = PQconnectStartParams((const char *const *) a->keywords, (const char *const *) a->values, 0);
                if (!a->conn || PQstatus(a->conn) == CONNECTION_BAD) {
                        fail(a, now, "cannot connect");
                        return;
                }
                a->state = STATE_CONNECTING;
                a->poll = PGRES_POLLING_WRITING;
                a->deadline = now + a->opt.connect_timeout_usec;
                a->refresh_pending = true;
                return;
        case STATE_IDLE:
                send_query(a, now);
                return;
        case STATE_CONNECTING:
        case STATE_IDENTIFYING:
        case STATE_PREPARING:
                a->refresh_pending = true;
                return;
        case STATE_QUERYING:
        case STATE_SETTINGS:
                return; /* the previous one is still running */
        }
}

bool activity_conn_busy(const ActivityConn *a) {
        return a->state == STATE_CONNECTING || a->state == STATE_IDENTIFYING || a->state == STATE_PREPARING ||
               a->state == STATE_QUERYING || a->state == STATE_SETTINGS;
}

bool activity_conn_connecting(const ActivityConn *a) {
        return a->state == STATE_CONNECTING;
}

bool activity_conn_wants(const ActivityConn *a, int *fd, short *events, uint64_t *deadline) {
        if (!activity_conn_busy(a))
                return false;
        *fd = PQsocket(a->conn);
        if (a->state == STATE_CONNECTING)
                *events = a->poll == PGRES_POLLING_WRITING ? POLLOUT : POLLIN;
        else
                *events = POLLIN | (a->want_write ? POLLOUT : 0);
        *deadline = a->deadline;
        return true;
}

/* The types each column must have, in order (a server that answers otherwise is refused). */
static const Oid column_types[][2] = {
        { OID_INT4 }, { OID_NAME, OID_TEXT }, { OID_NAME, OID_TEXT }, { OID_TEXT }, { OID_INET }, { OID_INT4 },
        { OID_TEXT }, { OID_TEXT }, { OID_TEXT }, { OID_TIMESTAMPTZ }, { OID_TIMESTAMPTZ }, { OID_TIMESTAMPTZ },
        { OID_TIMESTAMPTZ }, { OID_TEXT }, { OID_TEXT }, { OID_INT4 }, { OID_XID }, { OID_TEXT },
        { OID_TIMESTAMPTZ }, { OID_INT8, OID_XID8 }, { OID_INT4ARRAY }, { OID_TIMESTAMPTZ },
};

static int check_columns(const PGresult *res) {
        if (PQnfields(res) != (int) ELEMENTSOF(column_types))
                return -EBADMSG;
        for (int c = 0; c < PQnfields(res); c++) {
                Oid t = PQftype(res, c);
                if (PQfformat(res, c) != 1 || (t != column_types[c][0] && (!column_types[c][1] || t != column_types[c][1])))
                        return -EBADMSG;
        }
        return 0;
}

static int dup_value(const PGresult *res, int row, int col, char **ret) {
        *ret = NULL;
        if (PQgetisnull(res, row, col))
                return 0;
        size_t len = (size_t) PQgetlength(res, row, col);
        const char *v = PQgetvalue(res, row, col);
        if (memchr(v, 0, len))
                return -EBADMSG;
        if (!(*ret = strndup(v, len)))
                return -ENOMEM;
        return 0;
}

static int int4_value(const PGresult *res, int row, int col, int32_t null_value, int32_t *ret) {
        if (PQgetisnull(res, row, col)) {
                *ret = null_value;
                return 0;
        }
        return activity_binary_int4(PQgetvalue(res, row, col), (size_t) PQgetlength(res, row, col), ret);
}

static int time_value(const PGresult *res, int row, int col, bool idt, double *ret) {
        if (PQgetisnull(res, row, col)) {
                *ret = 0;
                return 0;
        }
        return activity_binary_timestamptz(PQgetvalue(res, row, col), (size_t) PQgetlength(res, row, col), idt, ret);
}

/* The previous snapshot's query text of a session whose query has not changed since. */
static char *known_query(const ActivitySnapshot *prev, const ActivityRow *r) {
        const ActivityRow *p = activity_snapshot_find(prev, r->pid);
        if (!p || !p->query || p->backend_start != r->backend_start || p->query_start != r->query_start)
                return NULL;
        return strdup(p->query);
}

#define MAX_BLOCKERS 64

static int take_row(const PGresult *res, int i, bool idt, uint32_t next_xid, ActivityRow *r) {
        int32_t pid, port, leader;
        int k;
        if ((k = int4_value(res, i, 0, 0, &pid)) < 0 || (k = int4_value(res, i, 5, 0, &port)) < 0 ||
            (k = int4_value(res, i, 15, 0, &leader)) < 0)
                return k;
        *r = (ActivityRow){ .pid = (pid_t) pid, .client_port = port, .leader_pid = (pid_t) leader, .xmin_age = -1 };
        if ((k = dup_value(res, i, 1, &r->usename)) < 0 || (k = dup_value(res, i, 2, &r->datname)) < 0 ||
            (k = dup_value(res, i, 3, &r->application_name)) < 0 || (k = dup_value(res, i, 6, &r->client_hostname)) < 0 ||
            (k = dup_value(res, i, 7, &r->backend_type)) < 0 || (k = dup_value(res, i, 8, &r->state)) < 0 ||
            (k = dup_value(res, i, 13, &r->wait_event_type)) < 0 || (k = dup_value(res, i, 14, &r->wait_event)) < 0 ||
            (k = dup_value(res, i, 17, &r->query)) < 0)
                return k;
        if ((k = time_value(res, i, 9, idt, &r->backend_start)) < 0 || (k = time_value(res, i, 10, idt, &r->xact_start)) < 0 ||
            (k = time_value(res, i, 11, idt, &r->query_start)) < 0 || (k = time_value(res, i, 12, idt, &r->state_change)) < 0)
                return k;
        if (!PQgetisnull(res, i, 4)) {
                char addr[INET6_ADDRSTRLEN];
                if ((k = activity_binary_inet(PQgetvalue(res, i, 4), (size_t) PQgetlength(res, i, 4), addr, sizeof addr)) < 0)
                        return k;
                if (!(r->client_addr = strdup(addr)))
                        return -ENOMEM;
        }
        if (!PQgetisnull(res, i, 20)) {
                pid_t pids[MAX_BLOCKERS];
                int n = activity_binary_pid_array(PQgetvalue(res, i, 20), (size_t) PQgetlength(res, i, 20), pids,
                                                  ELEMENTSOF(pids));
                if (n < 0)
                        return n;
                if (n > 0) {
                        if (!(r->blocked_by = malloc((size_t) n * sizeof(pid_t))))
                                return -ENOMEM;
                        memcpy(r->blocked_by, pids, (size_t) n * sizeof(pid_t));
                        r->n_blocked_by = (size_t) n;
                }
        }
        if (!PQgetisnull(res, i, 16) && next_xid != 0) {
                int32_t xmin;
                if ((k = activity_binary_int4(PQgetvalue(res, i, 16), (size_t) PQgetlength(res, i, 16), &xmin)) < 0)
                        return k;
                r->xmin_age = activity_xid_age(next_xid, (uint32_t) xmin);
        }
        return 0;
}

long long activity_xid_age(uint32_t next_xid, uint32_t xid) {
        if (xid < 3) /* invalid, bootstrap, frozen: what age() says of them */
                return INT32_MAX;
        return (long long) (int32_t) (next_xid - xid);
}

/* int4[] in binary: ndim, has-nulls flag, element type, (size, lower bound) per dimension, then
 * each element as length + value, all big-endian. pids <= 0 (prepared transactions) and NULLs
 * are left out. */
int activity_binary_pid_array(const void *v, size_t len, pid_t *pids, size_t max) {
        const unsigned char *b = v;
        int32_t ndim, flags, elem;
        if (len < 12 || activity_binary_int4(b, 4, &ndim) < 0 || activity_binary_int4(b + 4, 4, &flags) < 0 ||
            activity_binary_int4(b + 8, 4, &elem) < 0)
                return -EBADMSG;
        if (ndim == 0)
                return 0;
        int32_t count, lbound;
        if (ndim != 1 || (uint32_t) elem != OID_INT4 || len < 20 || activity_binary_int4(b + 12, 4, &count) < 0 ||
            activity_binary_int4(b + 16, 4, &lbound) < 0 || count < 0)
                return -EBADMSG;
        size_t off = 20, n = 0;
        for (int32_t i = 0; i < count; i++) {
                int32_t l, pid;
                if (off + 4 > len || activity_binary_int4(b + off, 4, &l) < 0)
                        return -EBADMSG;
                off += 4;
                if (l == -1)
                        continue;
                if (l != 4 || off + 4 > len || activity_binary_int4(b + off, 4, &pid) < 0)
                        return -EBADMSG;
                off += 4;
                if (pid > 0 && n < max)
                        pids[n++] = (pid_t) pid;
        }
        return off == len ? (int) n : -EBADMSG;
}

int activity_parse_pid_array(const char *text, pid_t *pids, size_t max) {
        if (!text || *text != '{')
                return -EINVAL;
        const char *c = text + 1;
        size_t n = 0;
        if (*c == '}')
                return c[1] ? -EINVAL : 0;
        for (;;) {
                char *e;
                errno = 0;
                long long v = strtoll(c, &e, 10);
                if (e == c || errno || v < INT32_MIN || v > INT32_MAX)
                        return -EINVAL;
                if (v > 0 && n < max)
                        pids[n++] = (pid_t) v;
                if (*e == '}')
                        return e[1] ? -EINVAL : (int) n;
                if (*e != ',')
                        return -EINVAL;
                c = e + 1;
        }
}


void server_commands_clear(ServerCommands *c) {
        unsigned reads = c->reads;
        free(c->archive_command);
        free(c->archive_library);
        free(c->restore_command);
        free(c->archive_cleanup_command);
        free(c->recovery_end_command);
        free(c->ssl_passphrase_command);
        *c = (ServerCommands){ .reads = reads };
}

const char activity_settings_sql[] =
        "SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN ('archive_command', 'archive_library', "
        "'restore_command', 'archive_cleanup_command', 'recovery_end_command', 'ssl_passphrase_command')";

#define SETTING_MAX 8192

static int take_settings(ActivityConn *a, const PGresult *res) {
        server_commands_clear(&a->commands);
        ServerCommands *c = &a->commands;
        if (PQnfields(res) != 2)
                return -EBADMSG;
        for (int i = 0; i < PQntuples(res); i++) {
                if (PQgetisnull(res, i, 0) || PQgetisnull(res, i, 1) || PQgetlength(res, i, 1) > SETTING_MAX)
                        continue; /* unknown */
                const char *name = PQgetvalue(res, i, 0), *v = PQgetvalue(res, i, 1);
                char **slot = !strcmp(name, "archive_command") ? &c->archive_command
                            : !strcmp(name, "archive_library") ? &c->archive_library
                            : !strcmp(name, "restore_command") ? &c->restore_command
                            : !strcmp(name, "archive_cleanup_command") ? &c->archive_cleanup_command
                            : !strcmp(name, "recovery_end_command") ? &c->recovery_end_command
                            : !strcmp(name, "ssl_passphrase_command") ? &c->ssl_passphrase_command : NULL;
                if (!slot || *slot || strlen(v) != (size_t) PQgetlength(res, i, 1))
                        continue;
                if (!(*slot = strdup(v)))
                        return -ENOMEM;
        }
        c->known = true;
        c->reads++;
        return 0;
}

const ServerCommands *activity_conn_commands(const ActivityConn *a) {
        return a ? &a->commands : NULL;
}

static int take_rows(ActivityConn *a, const PGresult *res) {
        int n = PQntuples(res);
        if (check_columns(res) < 0)
                return -EBADMSG;
        const char *idt_s = PQparameterStatus(a->conn, "integer_datetimes");
        bool idt = !idt_s || strcmp(idt_s, "off") != 0;
        ActivitySnapshot s = { .server_version = PQserverVersion(a->conn), .own_pid = PQbackendPID(a->conn) };
        s.rows = calloc(n > 0 ? (size_t) n : 1, sizeof *s.rows);
        if (!s.rows)
                return -ENOMEM;
        uint32_t next_xid = 0;
        int r = 0;
        if (n > 0) {
                int64_t x = 0;
                if (!PQgetisnull(res, 0, 19) &&
                    (r = activity_binary_int8(PQgetvalue(res, 0, 19), (size_t) PQgetlength(res, 0, 19), &x)) >= 0)
                        next_xid = (uint32_t) x;
                if (r >= 0)
                        r = time_value(res, 0, 18, idt, &s.taken_at);
                double loaded = 0;
                if (r >= 0 && (r = time_value(res, 0, 21, idt, &loaded)) >= 0 && loaded != a->conf_loaded_at) {
                        a->conf_loaded_at = loaded;
                        a->settings_due = true;
                }
        }
        for (int i = 0; r >= 0 && i < n; i++) {
                if (PQgetisnull(res, i, 0))
                        continue;
                ActivityRow *row = &s.rows[s.n];
                r = take_row(res, i, idt, next_xid, row);
                s.n++; /* freed with the rest on error */
                if (r >= 0 && !row->query && a->opt.query_max_length > 0 && a->have_prev)
                        row->query = known_query(&a->snap, row);
        }
        if (r < 0) {
                activity_snapshot_clear(&s);
                return r;
        }
        if (s.taken_at == 0) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                s.taken_at = (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
        }
        qsort(s.rows, s.n, sizeof *s.rows, cmp_row);
        activity_snapshot_clear(&a->retired);
        a->retired = a->snap;
        a->snap = s;
        a->have_snap = a->have_prev = true;
        return 0;
}

/* Reads whatever results are complete. Returns true when the command is done. */
static bool drain(ActivityConn *a, uint64_t now, bool *ok, char *error, size_t error_size) {
        *ok = true;
        if (!PQconsumeInput(a->conn)) {
                *ok = false;
                return true;
        }
        while (!PQisBusy(a->conn)) {
                PGresult *res = PQgetResult(a->conn);
                if (!res)
                        return true;
                ExecStatusType st = PQresultStatus(res);
                if (st == PGRES_COPY_OUT || st == PGRES_COPY_IN || st == PGRES_COPY_BOTH) {
                        /* no statement of ours copies: a hostile or broken server (or proxy). libpq
                         * would return this result for ever and PQisBusy() stays false: give up
                         * the connection instead of looping */
                        PQclear(res);
                        snprintf(error, error_size, "unexpected answer (the server started a COPY)");
                        *ok = false;
                        return true;
                }
                if (st == PGRES_TUPLES_OK && a->state == STATE_QUERYING) {
                        if (take_rows(a, res) < 0)
                                *ok = false;
                } else if (st == PGRES_TUPLES_OK && a->state == STATE_IDENTIFYING) {
                        if (take_identity(a, res) < 0) {
                                snprintf(error, error_size, "unexpected answer to which server this is");
                                *ok = false;
                        }
                } else if (a->state == STATE_SETTINGS) {
                        /* not readable: the commands stay unknown, the connection serves on */
                        if (st != PGRES_TUPLES_OK || take_settings(a, res) < 0)
                                server_commands_clear(&a->commands);
                } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                        snprintf(error, error_size, "%s", PQresultErrorMessage(res));
                        *ok = false;
                }
                PQclear(res);
        }
        return false;
}

void activity_conn_process(ActivityConn *a, uint64_t now) {
        if (!activity_conn_busy(a))
                return;
        if (a->state == STATE_CONNECTING) {
                a->poll = PQconnectPoll(a->conn);
                if (a->poll == PGRES_POLLING_FAILED) {
                        fail(a, now, "cannot connect");
                        return;
                }
                if (a->poll == PGRES_POLLING_OK) {
                        pid_t own = PQbackendPID(a->conn);
                        if (own > 0 && own != a->backend_pids[0]) {
                                a->backend_pids[1] = a->backend_pids[0];
                                a->backend_pids[0] = own;
                        }
                        connected(a, now);
                        return;
                }
                if (now >= a->deadline) {
                        fail_with(a, now, "connection timed out", "");
                        return;
                }
                return;
        }
        if (a->want_write) {
                int f = PQflush(a->conn);
                if (f < 0) {
                        fail(a, now, "connection lost");
                        return;
                }
                a->want_write = f == 1;
        }
        bool ok;
        char error[400] = "";
        bool done = drain(a, now, &ok, error, sizeof error);
        if (!ok) {
                if (*error)
                        fail_with(a, now, "query failed", error);
                else
                        fail(a, now, "connection lost");
                return;
        }
        if (!done) {
                if (now >= a->deadline) {
                        char why[64];
                        snprintf(why, sizeof why, "query timed out after %.1fs",
                                 (double) a->opt.query_timeout_usec / 1e6);
                        fail_with(a, now, why, "");
                }
                return;
        }
        if (a->state == STATE_IDENTIFYING) {
                prepare(a, now);
                return;
        }
        if (a->state == STATE_PREPARING) {
                a->state = STATE_IDLE;
                if (a->refresh_pending)
                        send_query(a, now);
                return;
        }
        /* the query is done; the server's commands are read when due, on the same connection */
        if (a->state == STATE_QUERYING && a->settings_due && a->have_snap && !a->opt.no_commands) {
                a->settings_due = false;
                if (!PQsendQueryParams(a->conn, activity_settings_sql, 0, NULL, NULL, NULL, NULL, 0)) {
                        fail(a, now, "query failed");
                        return;
                }
                a->state = STATE_SETTINGS;
                a->deadline = now + a->opt.query_timeout_usec;
                a->want_write = PQflush(a->conn) == 1;
                return;
        }
        a->state = STATE_IDLE;
        a->backoff = BACKOFF_MIN_USEC;
        if (a->have_snap)
                snprintf(a->status, sizeof a->status, "ok");
}

const ActivitySnapshot *activity_conn_snapshot(const ActivityConn *a) {
        return a->have_snap ? &a->snap : NULL;
}

const char *activity_conn_status(const ActivityConn *a) {
        return a->status;
}

unsigned activity_conn_connects(const ActivityConn *a) {
        return a->connects;
}

const char *activity_conn_describe(const ActivityConn *a) {
        return a->describe;
}

void activity_conns_run(ActivityConn **conns, size_t n, uint64_t deadline) {
        for (;;) {
                struct pollfd pfd[64];
                size_t map[64], k = 0;
                uint64_t now = now_monotonic_usec(), next = deadline;
                for (size_t i = 0; i < n && k < 64; i++) {
                        int fd;
                        short ev;
                        uint64_t d;
                        if (!conns[i] || !activity_conn_wants(conns[i], &fd, &ev, &d))
                                continue;
                        if (d <= now) {
                                activity_conn_process(conns[i], now);
                                continue;
                        }
                        if (d < next)
                                next = d;
                        pfd[k] = (struct pollfd){ .fd = fd, .events = ev };
                        map[k++] = i;
                }
                if (k == 0) {
                        bool any = false;
                        for (size_t i = 0; i < n; i++)
                                any |= conns[i] && activity_conn_busy(conns[i]);
                        if (!any || now >= deadline)
                                return;
                        continue;
                }
                if (now >= deadline)
                        return;
                int timeout = (int) ((next - now + 999) / 1000);
                int r = poll(pfd, k, timeout);
                if (r < 0 && errno != EINTR)
                        return;
                now = now_monotonic_usec();
                for (size_t j = 0; j < k; j++)
                        if (pfd[j].revents)
                                activity_conn_process(conns[map[j]], now);
                for (size_t i = 0; i < n; i++) {
                        int fd;
                        short ev;
                        uint64_t d;
                        if (conns[i] && activity_conn_wants(conns[i], &fd, &ev, &d) && d <= now)
                                activity_conn_process(conns[i], now);
                }
        }
}

pid_t activity_conn_peer_pid(const ActivityConn *a) {
        if (!a || !a->conn || PQstatus(a->conn) != CONNECTION_OK)
                return 0;
        int fd = PQsocket(a->conn);
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        if (fd < 0 || getsockname(fd, (struct sockaddr *) &sa, &sl) < 0 || sa.ss_family != AF_UNIX)
                return 0;
        /* the credentials of the process that called listen(): the postmaster, its pid in ours */
        struct ucred cred;
        socklen_t cl = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.pid <= 0)
                return 0;
        return cred.pid;
}
