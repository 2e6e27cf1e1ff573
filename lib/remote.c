/* SPDX-License-Identifier: MIT */
/* Managed servers: the cluster view from pg_stat_activity alone, and actions through SQL. */
#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <ifaddrs.h>
#include <libpq-fe.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "join.h"
#include "journal.h"
#include "macro.h"
#include "remote.h"
#include "title.h"

const RemoteUnavailable remote_unavailable[] = {
        { "orphan_backend", "no /proc on a managed server: a backend outliving its postmaster cannot be seen" },
        { "unlisted_process", "no /proc: processes that pg_stat_activity does not list cannot be seen" },
        { "client_gone", "no socket table of the server's host: dead client connections cannot be seen" },
        { "foreign_process", "no /proc: processes below the server's cannot be seen" },
        { "cpu_percent", "no /proc: CPU use per process is unknown" },
        { "rss_anon_kb", "no /proc: private memory per process is unknown" },
};
const size_t remote_n_unavailable = ELEMENTSOF(remote_unavailable);

/* ---- conninfo ---- */

static bool addr_is_local(int family, const void *addr) {
        if (family == AF_INET) {
                const unsigned char *a = addr;
                if (a[0] == 127)
                        return true;
        } else if (family == AF_INET6) {
                static const unsigned char loop[16] = { [15] = 1 };
                if (!memcmp(addr, loop, 16))
                        return true;
        }
        struct ifaddrs *ifa = NULL;
        if (getifaddrs(&ifa) < 0)
                return false;
        bool found = false;
        for (struct ifaddrs *i = ifa; i && !found; i = i->ifa_next) {
                if (!i->ifa_addr || i->ifa_addr->sa_family != family)
                        continue;
                if (family == AF_INET)
                        found = !memcmp(&((struct sockaddr_in *) i->ifa_addr)->sin_addr, addr, 4);
                else
                        found = !memcmp(&((struct sockaddr_in6 *) i->ifa_addr)->sin6_addr, addr, 16);
        }
        freeifaddrs(ifa);
        return found;
}

bool remote_host_is_local(const char *host) {
        if (!host || !*host || host[0] == '/' || host[0] == '@')
                return true;
        if (!strcasecmp(host, "localhost") || !strcasecmp(host, "localhost.localdomain"))
                return true;
        unsigned char a[16];
        if (inet_pton(AF_INET, host, a) == 1)
                return addr_is_local(AF_INET, a);
        if (inet_pton(AF_INET6, host, a) == 1)
                return addr_is_local(AF_INET6, a);
        char me[256] = "";
        if (gethostname(me, sizeof me - 1) == 0 && *me) {
                if (!strcasecmp(host, me))
                        return true;
                size_t l = strcspn(me, ".");
                if (strlen(host) > l && !strncasecmp(host, me, l) && host[l] == '.' && !me[l])
                        return true; /* the FQDN of a machine whose hostname is short */
        }
        return false;
}

static const char *conninfo_get(PQconninfoOption *o, const char *key) {
        for (; o && o->keyword; o++)
                if (!strcmp(o->keyword, key))
                        return o->val && *o->val ? o->val : NULL;
        return NULL;
}

/* Every host of a comma-separated list is not this machine (and there is at least one). */
static bool list_all_remote(const char *list) {
        if (!list || !*list)
                return false;
        bool any = false;
        const char *p = list;
        while (*p) {
                size_t l = strcspn(p, ",");
                char h[256];
                if (l == 0 || l >= sizeof h)
                        return false;
                memcpy(h, p, l);
                h[l] = 0;
                if (remote_host_is_local(h))
                        return false;
                any = true;
                p += l;
                if (*p == ',')
                        p++;
        }
        return any;
}

bool remote_conninfo_is_remote(const char *conninfo) {
        PQconninfoOption *o = PQconninfoParse(conninfo ? conninfo : "", NULL);
        if (!o)
                return false;
        const char *host = conninfo_get(o, "host"), *hostaddr = conninfo_get(o, "hostaddr");
        /* libpq connects to hostaddr when given (host is then only for TLS and passfile lookup) */
        bool remote = hostaddr ? list_all_remote(hostaddr) : list_all_remote(host);
        PQconninfoFree(o);
        return remote;
}

bool remote_conninfo_names_host(const char *conninfo) {
        PQconninfoOption *o = PQconninfoParse(conninfo ? conninfo : "", NULL);
        if (!o)
                return false;
        bool yes = conninfo_get(o, "host") || conninfo_get(o, "hostaddr");
        PQconninfoFree(o);
        return yes;
}

bool remote_conninfo_has_password(const char *conninfo) {
        PQconninfoOption *o = PQconninfoParse(conninfo ? conninfo : "", NULL);
        if (!o)
                return false;
        bool yes = conninfo_get(o, "password") != NULL;
        PQconninfoFree(o);
        return yes;
}

/* A conninfo value in single quotes. */
static int append_kv(char **s, const char *key, const char *value) {
        size_t l = strlen(*s), vl = strlen(value);
        char *n = realloc(*s, l + strlen(key) + 2 * vl + 8);
        if (!n)
                return -ENOMEM;
        char *p = n + l;
        p += sprintf(p, " %s='", key);
        for (const char *v = value; *v; v++) {
                if (*v == '\\' || *v == '\'')
                        *p++ = '\\';
                *p++ = *v;
        }
        *p++ = '\'';
        *p = 0;
        *s = n;
        return 0;
}

int remote_effective_conninfo(const ClusterConf *cc, char **ret, char *why, size_t why_size) {
        char *s = strdup(cc->conninfo ? cc->conninfo : "");
        if (!s)
                return -ENOMEM;
        int r = 0;
        if (cc->passfile && !strncmp(cc->passfile, "credential:", 11)) {
                const char *dir = getenv("CREDENTIALS_DIRECTORY");
                if (!dir || dir[0] != '/') {
                        snprintf(why, why_size, "passfile = %s but $CREDENTIALS_DIRECTORY is not set "
                                 "(LoadCredential= in the unit)", cc->passfile);
                        free(s);
                        return -ENOENT;
                }
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "%s/%s", dir, cc->passfile + 11) < 0) {
                        free(s);
                        return -ENOMEM;
                }
                r = append_kv(&s, "passfile", path);
        } else if (cc->passfile)
                r = append_kv(&s, "passfile", cc->passfile);
        if (r >= 0 && cc->sslrootcert)
                r = append_kv(&s, "sslrootcert", cc->sslrootcert);
        if (r < 0) {
                free(s);
                return r;
        }
        *ret = s;
        return 0;
}

void remote_conninfo_server(const char *conninfo, char *buf, size_t size) {
        PQconninfoOption *o = PQconninfoParse(conninfo ? conninfo : "", NULL);
        const char *host = o ? conninfo_get(o, "host") : NULL, *addr = o ? conninfo_get(o, "hostaddr") : NULL;
        const char *port = o ? conninfo_get(o, "port") : NULL;
        snprintf(buf, size, "%s:%s", host ? host : addr ? addr : "?", port ? port : "5432");
        if (o)
                PQconninfoFree(o);
}

/* ---- the cluster view ---- */

uint64_t remote_start_ticks(double backend_start) {
        return backend_start > 0 ? (uint64_t) llround(backend_start * 1e6) : 0;
}

bool pg_process_is_remote(const PgTree *t, const PgProcess *p) {
        return p->cluster >= 0 && (size_t) p->cluster < t->n_clusters && t->clusters[p->cluster].remote;
}

int tree_find_identity(const PgTree *t, pid_t pid, uint64_t start_ticks) {
        for (size_t i = 0; i < t->n_procs; i++)
                if (t->procs[i].rec.pid == pid && t->procs[i].rec.start_ticks == start_ticks)
                        return (int) i;
        return -1;
}

static bool finding_is(const PgTree *t, size_t i, const Finding *f) {
        const PgProcess *p = &t->procs[i];
        if (p->rec.pid != f->pid || p->rec.start_ticks != f->start_ticks)
                return false;
        const char *cluster = p->cluster >= 0 ? t->clusters[p->cluster].name : p->cwd ? p->cwd : "";
        return !f->cluster[0] || !strcmp(cluster, f->cluster);
}

int tree_find_finding(const PgTree *t, const Finding *f) {
        if (f->proc >= 0 && (size_t) f->proc < t->n_procs && finding_is(t, (size_t) f->proc, f))
                return f->proc;
        for (size_t i = 0; i < t->n_procs; i++)
                if (finding_is(t, i, f))
                        return (int) i;
        return -1;
}

static void copy_name(char *dst, size_t size, const char *s) {
        snprintf(dst, size, "%s", s ? s : "");
}

static int append_proc(PgTree *t, const PgProcess *p) {
        PgProcess *v = realloc(t->procs, (t->n_procs + 1) * sizeof *v);
        if (!v)
                return -ENOMEM;
        t->procs = v;
        t->procs[t->n_procs++] = *p;
        return 0;
}

int remote_tree_add(PgTree *t, const RemoteClusterInfo *info, const ActivitySnapshot *snap) {
        PgCluster *cv = realloc(t->clusters, (t->n_clusters + 1) * sizeof *cv);
        if (!cv)
                return -ENOMEM;
        t->clusters = cv;
        size_t ci = t->n_clusters;
        PgCluster *c = &t->clusters[ci];
        *c = (PgCluster){ .postmaster = t->n_procs, .snapshot = snap, .enforce = info->enforce, .remote = true };
        copy_name(c->name, sizeof c->name, info->name);
        copy_name(c->config_name, sizeof c->config_name, info->name);
        copy_name(c->remote_server, sizeof c->remote_server, info->server);
        copy_name(c->parent_tag, sizeof c->parent_tag, info->parent_tag);
        copy_name(c->activity, sizeof c->activity, info->activity);
        t->n_clusters++;

        /* the server itself: nothing is known of its postmaster but that it answers */
        PgProcess pm = { .cluster = (int) ci, .leader = -1, .depth = 0 };
        pm.rec.state = 'S';
        pm.rec.cpu_percent = -1;
        snprintf(pm.rec.comm, sizeof pm.rec.comm, "postgres");
        pm.title.backend_type = BACKEND_POSTMASTER;
        if (asprintf(&pm.rec.title, "%s (%s)", info->server ? info->server : "?", REMOTE_VIEW_LABEL) < 0)
                return -ENOMEM;
        int r = append_proc(t, &pm);
        if (r < 0) {
                free(pm.rec.title);
                return r;
        }
        size_t first = t->n_procs;
        for (size_t k = 0; snap && k < snap->n; k++) {
                const ActivityRow *a = &snap->rows[k];
                if (a->pid <= 0)
                        continue;
                PgProcess p = { .cluster = (int) ci, .leader = -1, .depth = 1, .act = a };
                p.rec.pid = a->pid;
                p.rec.start_ticks = remote_start_ticks(a->backend_start);
                p.rec.state = 'S';
                p.rec.cpu_percent = -1;
                snprintf(p.rec.comm, sizeof p.rec.comm, "postgres");
                p.own = a->pid == snap->own_pid || (info->own_pid2 > 0 && a->pid == info->own_pid2);
                TitleInfo *ti = &p.title;
                ti->backend_type = a->backend_type ? backend_type_from_string(a->backend_type) : BACKEND_UNKNOWN;
                copy_name(ti->user, sizeof ti->user, a->usename);
                copy_name(ti->database, sizeof ti->database, a->datname);
                copy_name(ti->state, sizeof ti->state, a->state);
                if (a->leader_pid > 0 && a->leader_pid != a->pid)
                        ti->leader_pid = a->leader_pid;
                if ((r = append_proc(t, &p)) < 0)
                        return r;
        }
        /* parallel workers under their leader (leader_pid, PG 13+) */
        for (size_t i = first; i < t->n_procs; i++) {
                PgProcess *w = &t->procs[i];
                if (w->title.backend_type != BACKEND_PARALLEL_WORKER)
                        continue;
                w->leader_missing = true;
                for (size_t j = first; j < t->n_procs && w->title.leader_pid > 0; j++)
                        if (t->procs[j].rec.pid == w->title.leader_pid &&
                            t->procs[j].title.backend_type != BACKEND_PARALLEL_WORKER) {
                                w->leader = (int) j;
                                w->leader_missing = false;
                                break;
                        }
                if (w->title.leader_pid <= 0)
                        w->leader_missing = false; /* PG 12 and before do not say: not "gone" */
        }
        return 0;
}

/* ---- the one statement ---- */

static const char *const outcome_names[_REMOTE_OUTCOME_MAX] = {
        [REMOTE_SENT] = "sent",
        [REMOTE_GONE] = "gone",
        [REMOTE_REUSED] = "reused",
        [REMOTE_NOT_CLIENT] = "not-client",
        [REMOTE_OWN] = "own",
        [REMOTE_CHANGED] = "changed",
        [REMOTE_MOVED_ON] = "moved-on",
        [REMOTE_SUPERUSER] = "superuser",
        [REMOTE_NO_PRIVILEGE] = "no-privilege",
        [REMOTE_HIDDEN] = "hidden",
        [REMOTE_SERVER_CHANGED] = "server-changed",
};

const char *remote_outcome_to_string(RemoteOutcome o) {
        return (unsigned) o < _REMOTE_OUTCOME_MAX ? outcome_names[o] : "unknown";
}

int remote_outcome_from_string(const char *s) {
        for (unsigned i = 0; s && i < _REMOTE_OUTCOME_MAX; i++)
                if (!strcmp(s, outcome_names[i]))
                        return (int) i;
        return -EINVAL;
}

const char *remote_outcome_explain(RemoteOutcome o) {
        switch (o) {
        case REMOTE_SENT:
                return "the server accepted it";
        case REMOTE_GONE:
                return "the session is gone already";
        case REMOTE_REUSED:
                return "that pid belongs to another session now (backend_start differs): pid reused, nothing done";
        case REMOTE_NOT_CLIENT:
                return "it is not a client backend: pgtree acts only on client sessions, never on the server's own processes";
        case REMOTE_OWN:
                return "it is pgtree's own session";
        case REMOTE_CHANGED:
                return "its user, database or application_name changed since it was seen: nothing done";
        case REMOTE_MOVED_ON:
                return "what was found is over (a new query, state or transaction since it was seen): nothing done";
        case REMOTE_SUPERUSER:
                return "it is a superuser's session: pg_signal_backend cannot signal superuser sessions, and pgtree's "
                       "role is not superuser (end it by hand, as a superuser or the managed service's admin role)";
        case REMOTE_NO_PRIVILEGE:
                return "pgtree's role may not signal it: grant pg_signal_backend to pgtree's role";
        case REMOTE_HIDDEN:
                return "its backend_start is hidden from pgtree's role, so its identity cannot be checked: grant "
                       "pg_monitor (pg_read_all_stats) to pgtree's role";
        case REMOTE_SERVER_CHANGED:
                return "the server at that address changed since the session was seen (failover or restart: its "
                       "pg_postmaster_start_time() is not the one of the server the session is on): nothing done";
        case _REMOTE_OUTCOME_MAX:
                break;
        }
        return "unknown";
}

/* Identity first (pid and backend_start in the same row), then what pgtree may touch, then the
 * signal — all in one statement, so nothing can change between the check and the act. A
 * backend_start within 100 µs is the same session (float8 through text both ways); a session
 * that reuses the pid starts after the earlier one ended, long after it was seen. */
const char remote_action_sql[] =
        "SELECT CASE"
        " WHEN $10::float8 IS NOT NULL AND"
        "  abs(extract(epoch FROM pg_catalog.pg_postmaster_start_time())::float8 - $10::float8) > 0.0001"
        "  THEN 'server-changed'"
        " WHEN s.pid IS NULL THEN 'gone'"
        " WHEN s.backend_start IS NULL THEN 'hidden'"
        " WHEN abs(extract(epoch FROM s.backend_start)::float8 - $2::float8) > 0.0001 THEN 'reused'"
        " WHEN s.backend_type IS DISTINCT FROM 'client backend' THEN 'not-client'"
        " WHEN s.pid = pg_catalog.pg_backend_pid() THEN 'own'"
        " WHEN s.usename::text IS DISTINCT FROM $4::text OR s.datname::text IS DISTINCT FROM $5::text"
        "  OR s.application_name IS DISTINCT FROM $6::text THEN 'changed'"
        " WHEN $9::text = 'active' AND s.state IS DISTINCT FROM 'active' THEN 'moved-on'"
        " WHEN $7::text = 'query_start' AND (s.query_start IS NULL OR"
        "  abs(extract(epoch FROM s.query_start)::float8 - $8::float8) > 0.0001) THEN 'moved-on'"
        " WHEN $7::text = 'state_change' AND (s.state_change IS NULL OR"
        "  abs(extract(epoch FROM s.state_change)::float8 - $8::float8) > 0.0001) THEN 'moved-on'"
        " WHEN $7::text = 'xact_start' AND (s.xact_start IS NULL OR"
        "  abs(extract(epoch FROM s.xact_start)::float8 - $8::float8) > 0.0001) THEN 'moved-on'"
        " WHEN coalesce(r.rolsuper, false) AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)"
        "  THEN 'superuser'"
        " WHEN NOT (pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE')"
        "  OR (r.oid IS NOT NULL AND pg_catalog.pg_has_role(current_user, r.oid, 'USAGE'))) THEN 'no-privilege'"
        " WHEN $3::text = 'terminate' THEN CASE WHEN pg_catalog.pg_terminate_backend(s.pid) THEN 'sent' ELSE 'gone' END"
        " WHEN $3::text = 'cancel' THEN CASE WHEN pg_catalog.pg_cancel_backend(s.pid) THEN 'sent' ELSE 'gone' END"
        " END"
        " FROM (SELECT $1::int AS pid) AS want"
        " LEFT JOIN pg_catalog.pg_stat_activity s ON s.pid = want.pid"
        " LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.usesysid";

void remote_action_params(const RemoteTarget *t, Action a, char bufs[4][32], const char *v[REMOTE_ACTION_NPARAMS]) {
        snprintf(bufs[0], 32, "%d", (int) t->pid);
        snprintf(bufs[1], 32, "%.17g", t->backend_start);
        snprintf(bufs[2], 32, "%.17g", t->check_value);
        snprintf(bufs[3], 32, "%.17g", t->server_started);
        v[0] = bufs[0];
        v[1] = bufs[1];
        v[2] = a == ACTION_TERMINATE ? "terminate" : a == ACTION_CANCEL ? "cancel" : "none";
        v[3] = t->usename;
        v[4] = t->datname;
        v[5] = t->application_name;
        v[6] = t->check_column;
        v[7] = t->check_column ? bufs[2] : NULL;
        v[8] = t->require_active ? "active" : NULL;
        v[9] = t->server_started > 0 ? bufs[3] : NULL;
}

void remote_target_from_process(const PgProcess *p, FindingKind kind, RemoteTarget *ret) {
        const ActivityRow *a = p->act;
        *ret = (RemoteTarget){ .pid = p->rec.pid };
        if (!a)
                return;
        ret->backend_start = a->backend_start;
        ret->usename = a->usename;
        ret->datname = a->datname;
        ret->application_name = a->application_name;
        switch (kind) {
        case FINDING_LONG_QUERY:
        case FINDING_LOCK_WAIT:
                ret->check_column = "query_start";
                ret->check_value = a->query_start;
                ret->require_active = kind == FINDING_LONG_QUERY;
                break;
        case FINDING_IDLE_IN_TRANSACTION:
                ret->check_column = "state_change";
                ret->check_value = a->state_change;
                break;
        case FINDING_LONG_TRANSACTION:
                ret->check_column = "xact_start";
                ret->check_value = a->xact_start;
                break;
        default:
                break;
        }
        if (ret->check_column && ret->check_value <= 0)
                ret->check_column = NULL;
}

/* ---- a bounded round trip on a libpq connection ---- */

/* No statement of ours copies: a COPY answer is a hostile or broken server (or proxy). libpq
 * returns such a result from every PQgetResult() while PQisBusy() is false, so a loop reading
 * results until NULL would never end. */
static bool result_is_copy(const PGresult *res) {
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_EMPTY_QUERY;
        return st == PGRES_COPY_OUT || st == PGRES_COPY_IN || st == PGRES_COPY_BOTH;
}

static int wait_socket(PGconn *c, bool write, uint64_t deadline) {
        uint64_t now = now_monotonic_usec();
        if (now >= deadline)
                return -ETIMEDOUT;
        struct pollfd pfd = { .fd = PQsocket(c), .events = write ? POLLOUT : POLLIN };
        if (pfd.fd < 0)
                return -EBADF;
        int r = poll(&pfd, 1, (int) ((deadline - now + 999) / 1000));
        if (r < 0)
                return errno == EINTR ? 0 : -errno;
        return r == 0 ? -ETIMEDOUT : 0;
}

static void first_line(char *buf, size_t size, const char *what, const char *msg) {
        while (msg && (*msg == ' ' || *msg == '\n'))
                msg++;
        size_t l = msg ? strcspn(msg, "\n") : 0;
        snprintf(buf, size, "%s%s%.*s", what, l ? ": " : "", (int) l, msg ? msg : "");
}

static int connect_bounded(const char *const *kw, const char *const *val, uint64_t deadline, PGconn **ret, char *msg,
                           size_t msg_size) {
        PGconn *c = PQconnectStartParams(kw, val, 0);
        if (!c || PQstatus(c) == CONNECTION_BAD) {
                first_line(msg, msg_size, "cannot connect", c ? PQerrorMessage(c) : "out of memory");
                PQfinish(c);
                return -ECONNREFUSED;
        }
        PostgresPollingStatusType st = PGRES_POLLING_WRITING;
        for (;;) {
                if (st == PGRES_POLLING_OK)
                        break;
                if (st == PGRES_POLLING_FAILED) {
                        first_line(msg, msg_size, "cannot connect", PQerrorMessage(c));
                        PQfinish(c);
                        return -ECONNREFUSED;
                }
                int r = wait_socket(c, st == PGRES_POLLING_WRITING, deadline);
                if (r < 0) {
                        snprintf(msg, msg_size, "%s", r == -ETIMEDOUT ? "connection timed out" : "cannot connect");
                        PQfinish(c);
                        return r;
                }
                st = PQconnectPoll(c);
        }
        if (PQsetnonblocking(c, 1) != 0) {
                first_line(msg, msg_size, "cannot connect", PQerrorMessage(c));
                PQfinish(c);
                return -EIO;
        }
        *ret = c;
        return 0;
}

/* Sends the statement and reads its one row. -ETIMEDOUT: unknown whether the server did it. */
static int run_statement(PGconn *c, const RemoteTarget *t, Action a, uint64_t deadline, RemoteOutcome *outcome, char *msg,
                         size_t msg_size) {
        char bufs[4][32];
        const char *values[REMOTE_ACTION_NPARAMS];
        remote_action_params(t, a, bufs, values);
        if (!PQsendQueryParams(c, remote_action_sql, REMOTE_ACTION_NPARAMS, NULL, values, NULL, NULL, 0)) {
                first_line(msg, msg_size, "cannot send the statement", PQerrorMessage(c));
                return -EIO;
        }
        int f;
        while ((f = PQflush(c)) == 1) {
                int r = wait_socket(c, true, deadline);
                if (r < 0) {
                        snprintf(msg, msg_size, "no answer in time (the server may still carry it out)");
                        return -ETIMEDOUT;
                }
        }
        if (f < 0) {
                first_line(msg, msg_size, "connection lost", PQerrorMessage(c));
                return -EIO;
        }
        int result = -EBADMSG;
        snprintf(msg, msg_size, "unexpected answer");
        for (;;) {
                while (PQisBusy(c)) {
                        int r = wait_socket(c, false, deadline);
                        if (r < 0) {
                                snprintf(msg, msg_size, "no answer in time (the server may still carry it out)");
                                return -ETIMEDOUT;
                        }
                        if (!PQconsumeInput(c)) {
                                first_line(msg, msg_size, "connection lost", PQerrorMessage(c));
                                return -EIO;
                        }
                }
                PGresult *res = PQgetResult(c);
                if (!res)
                        break;
                if (result_is_copy(res)) {
                        PQclear(res);
                        snprintf(msg, msg_size, "unexpected answer (the server started a COPY)");
                        return -EBADMSG;
                }
                if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 1 &&
                    !PQgetisnull(res, 0, 0)) {
                        int o = remote_outcome_from_string(PQgetvalue(res, 0, 0));
                        if (o >= 0) {
                                *outcome = (RemoteOutcome) o;
                                result = 0;
                                snprintf(msg, msg_size, "%s", remote_outcome_explain(*outcome));
                        }
                } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                        first_line(msg, msg_size, "the server refused", PQresultErrorMessage(res));
                        result = -EPERM;
                }
                PQclear(res);
        }
        return result;
}

/* conninfo → keywords/values with application_name defaulted. */
typedef struct Params {
        char **kw, **val;
} Params;

static void params_free(Params *p) {
        for (size_t i = 0; p->kw && p->kw[i]; i++) {
                free(p->kw[i]);
                free(p->val[i]);
        }
        free(p->kw);
        free(p->val);
        *p = (Params){};
}

static int params_from_conninfo(const char *conninfo, const char *app, Params *ret) {
        PQconninfoOption *o = PQconninfoParse(conninfo ? conninfo : "", NULL);
        if (!o)
                return -EINVAL;
        size_t n = 0;
        for (PQconninfoOption *i = o; i->keyword; i++)
                n++;
        Params p = { calloc(n + 2, sizeof(char *)), calloc(n + 2, sizeof(char *)) };
        bool ok = p.kw && p.val, have_app = false;
        size_t k = 0;
        for (PQconninfoOption *i = o; ok && i->keyword; i++) {
                if (!i->val)
                        continue;
                have_app |= !strcmp(i->keyword, "application_name");
                ok = (p.kw[k] = strdup(i->keyword)) && (p.val[k] = strdup(i->val));
                k++;
        }
        if (ok && !have_app)
                ok = (p.kw[k] = strdup("application_name")) && (p.val[k] = strdup(app));
        PQconninfoFree(o);
        if (!ok) {
                params_free(&p);
                return -ENOMEM;
        }
        *ret = p;
        return 0;
}

int remote_act_conninfo(const char *conninfo, const RemoteTarget *t, Action a, uint64_t timeout_usec,
                        RemoteOutcome *outcome, char *msg, size_t msg_size) {
        Params p;
        int r = params_from_conninfo(conninfo, "pgtreed action", &p);
        if (r < 0) {
                snprintf(msg, msg_size, "invalid conninfo");
                return r;
        }
        uint64_t deadline = now_monotonic_usec() + timeout_usec;
        PGconn *c = NULL;
        r = connect_bounded((const char *const *) p.kw, (const char *const *) p.val, deadline, &c, msg, msg_size);
        params_free(&p);
        if (r < 0)
                return r;
        r = run_statement(c, t, a, deadline, outcome, msg, msg_size);
        PQfinish(c);
        return r;
}

/* ---- the daemon's remote servers ---- */

/* An action waiting for its outcome: [0] of its server's queue is the one in flight. */
typedef struct PendingAction {
        RemoteTarget target;            /* its strings are the copies below */
        char *usename, *datname, *application_name;
        Action action;
        uint64_t deadline;
        RemoteActDone done;
        void *userdata;
} PendingAction;

typedef enum ActState {
        ACT_IDLE,               /* nothing in flight */
        ACT_CONNECTING,         /* the action connection is being made for queue[0] */
        ACT_RUNNING,            /* queue[0]'s statement is sent; its answer is awaited */
} ActState;

typedef struct RemoteServer {
        char *name;
        char *key;              /* what conn was made from: a reload that changes it reconnects */
        char server[256];
        ActivityConn *conn;
        Params action_params;
        PGconn *action;         /* kept open between actions; its pid is never acted on */
        pid_t action_pid;
        ActState act_state;
        PostgresPollingStatusType act_poll;
        bool act_want_write;
        PendingAction *queue;
        size_t n_queue, queue_allocated;
        /* the server the snapshots come from; a different one answering is a change */
        ServerIdentity identity;
        bool have_identity;
        RemoteServerChange change;
        bool seen;
        bool reported, reachable;
        double taken_at;
        /* what the tree shows: the last cycle's snapshot (a copy: the connection replaces its own
         * while the next cycle runs) and status */
        ActivitySnapshot last;
        bool have_last;
        char activity[512];
        char why[256];          /* why there is no connection (a credential missing), or "" */
} RemoteServer;

struct RemoteSet {
        RemoteServer *items;
        size_t n, allocated;
        uint64_t deadline;      /* the cycle waits for remote servers until then */
        /* where the remote clusters start in the engine's tree, if they are in it */
        bool in_tree;
        size_t tree_first_cluster, tree_first_proc;
};

static char *dup_or_null(const char *s, bool *ok) {
        if (!s)
                return NULL;
        char *d = strdup(s);
        if (!d)
                *ok = false;
        return d;
}

static int snapshot_copy(const ActivitySnapshot *from, ActivitySnapshot *to) {
        ActivitySnapshot s = *from;
        s.rows = calloc(from->n ? from->n : 1, sizeof *s.rows);
        if (!s.rows)
                return -ENOMEM;
        bool ok = true;
        for (size_t i = 0; i < from->n; i++) {
                const ActivityRow *a = &from->rows[i];
                ActivityRow *b = &s.rows[i];
                *b = *a;
                b->usename = dup_or_null(a->usename, &ok);
                b->datname = dup_or_null(a->datname, &ok);
                b->application_name = dup_or_null(a->application_name, &ok);
                b->client_addr = dup_or_null(a->client_addr, &ok);
                b->client_hostname = dup_or_null(a->client_hostname, &ok);
                b->backend_type = dup_or_null(a->backend_type, &ok);
                b->state = dup_or_null(a->state, &ok);
                b->wait_event_type = dup_or_null(a->wait_event_type, &ok);
                b->wait_event = dup_or_null(a->wait_event, &ok);
                b->query = dup_or_null(a->query, &ok);
        }
        if (!ok) {
                activity_snapshot_clear(&s);
                return -ENOMEM;
        }
        *to = s;
        return 0;
}

static void pending_free(PendingAction *p) {
        free(p->usename);
        free(p->datname);
        free(p->application_name);
        *p = (PendingAction){};
}

/* Reports the outcome of queue[i] and removes it (keeping the order of the rest). */
static void complete(RemoteServer *rs, size_t i, int r, RemoteOutcome o, const char *msg) {
        PendingAction p = rs->queue[i];
        memmove(&rs->queue[i], &rs->queue[i + 1], (rs->n_queue - i - 1) * sizeof *rs->queue);
        rs->n_queue--;
        if (i == 0)
                rs->act_state = ACT_IDLE;
        if (p.done)
                p.done(r, o, msg, p.userdata);
        pending_free(&p);
}

static void drop_action_conn(RemoteServer *rs) {
        if (rs->action)
                PQfinish(rs->action);
        rs->action = NULL;
        rs->action_pid = 0;
        rs->act_state = ACT_IDLE;
        rs->act_want_write = false;
}

/* Every pending action fails with r and msg (none is sent from now on). */
static void fail_all(RemoteServer *rs, int r, const char *msg) {
        if (rs->act_state != ACT_IDLE)
                drop_action_conn(rs); /* what is in flight: its answer is not awaited any more */
        while (rs->n_queue > 0)
                complete(rs, 0, r, REMOTE_GONE, msg);
}

static void server_free(RemoteServer *s) {
        fail_all(s, -ECANCELED, "not sent: the server left the configuration, or its configuration changed, or pgtreed stops");
        free(s->queue);
        activity_snapshot_clear(&s->last);
        activity_conn_free(s->conn);
        if (s->action)
                PQfinish(s->action);
        params_free(&s->action_params);
        free(s->name);
        free(s->key);
        *s = (RemoteServer){};
}

RemoteSet *remote_set_free(RemoteSet *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n; i++)
                server_free(&s->items[i]);
        free(s->items);
        free(s);
        return NULL;
}

static RemoteServer *server_find(RemoteSet *s, const char *name) {
        for (size_t i = 0; s && i < s->n; i++)
                if (!strcmp(s->items[i].name, name))
                        return &s->items[i];
        return NULL;
}

int remote_set_begin(RemoteSet **sp, const Config *c, uint64_t now) {
        RemoteSet *s = *sp;
        if (!s) {
                if (config_n_remote(c) == 0)
                        return 0;
                if (!(s = *sp = calloc(1, sizeof *s)))
                        return -ENOMEM;
        }
        for (size_t i = 0; i < s->n; i++)
                s->items[i].seen = false;
        uint64_t budget = c->interval_usec * REMOTE_CYCLE_BUDGET_PERCENT / 100;
        s->deadline = now + budget;
        for (size_t i = 0; i < c->n_clusters; i++) {
                const ClusterConf *cc = &c->clusters[i];
                if (cc->host != CLUSTER_HOST_REMOTE || !cc->conninfo)
                        continue;
                _cleanup_free_ char *key = NULL, *conninfo = NULL;
                char why[256] = "";
                int er = remote_effective_conninfo(cc, &conninfo, why, sizeof why);
                if (er == -ENOMEM)
                        return er;
                if (asprintf(&key, "%s|%s|%u|%llu|%llu", conninfo ? conninfo : "", why, c->query_max_length,
                             (unsigned long long) c->connect_timeout_usec, (unsigned long long) c->query_timeout_usec) < 0)
                        return -ENOMEM;
                RemoteServer *rs = server_find(s, cc->name);
                if (rs && strcmp(rs->key, key) != 0) {
                        /* changed by a reload: start over (the tree does not use it now) */
                        char *name = TAKE_PTR(rs->name);
                        server_free(rs);
                        rs->name = name;
                        snprintf(rs->activity, sizeof rs->activity, "unavailable: not connected yet");
                }
                if (!rs) {
                        if (GROW(s->items, s->allocated, s->n + 1) < 0)
                                return -ENOMEM;
                        rs = &s->items[s->n++];
                        *rs = (RemoteServer){};
                        snprintf(rs->activity, sizeof rs->activity, "unavailable: not connected yet");
                        if (!(rs->name = strdup(cc->name)))
                                return -ENOMEM;
                }
                rs->seen = true;
                if (!rs->key) {
                        rs->key = TAKE_PTR(key);
                        remote_conninfo_server(cc->conninfo, rs->server, sizeof rs->server);
                        snprintf(rs->why, sizeof rs->why, "%s", why);
                        ActivityOptions o = { .connect_timeout_usec = c->connect_timeout_usec,
                                              .query_timeout_usec = c->query_timeout_usec,
                                              .query_max_length = c->query_max_length,
                                              .identify = true,
                                              .no_commands = true /* no processes to compare them with */ };
                        if (conninfo) {
                                (void) activity_conn_new(conninfo, NULL, 0, &o, &rs->conn);
                                (void) params_from_conninfo(conninfo, "pgtreed action", &rs->action_params);
                        }
                }
                if (rs->conn)
                        activity_conn_start(rs->conn, now);
        }
        for (size_t i = 0; i < s->n;) {
                if (!s->items[i].seen) {
                        server_free(&s->items[i]);
                        s->items[i] = s->items[--s->n];
                } else
                        i++;
        }
        return 0;
}

size_t remote_set_connections(RemoteSet *s, ActivityConn **conns, size_t max) {
        size_t n = 0;
        for (size_t i = 0; s && i < s->n && n < max; i++)
                if (s->items[i].conn)
                        conns[n++] = s->items[i].conn;
        return n;
}

bool remote_set_waiting(const RemoteSet *s, uint64_t now) {
        if (!s || now >= s->deadline)
                return false;
        for (size_t i = 0; i < s->n; i++)
                if (s->items[i].conn && activity_conn_busy(s->items[i].conn))
                        return true;
        return false;
}

uint64_t remote_set_deadline(const RemoteSet *s) {
        if (!s)
                return UINT64_MAX;
        for (size_t i = 0; i < s->n; i++)
                if (s->items[i].conn && activity_conn_busy(s->items[i].conn))
                        return s->deadline;
        return UINT64_MAX;
}

static bool identity_equal(const ServerIdentity *a, const ServerIdentity *b) {
        if (fabs(a->started - b->started) > 0.0001)
                return false;
        /* a system_identifier the role could not read then or now (pg_control_system() granted or
         * revoked meanwhile): the start time decides */
        return !a->system_identifier[0] || !b->system_identifier[0] || !strcmp(a->system_identifier, b->system_identifier);
}

static void format_identity(const ServerIdentity *id, char *buf, size_t size) {
        time_t t = (time_t) id->started;
        struct tm tm;
        char when[40] = "?";
        if (gmtime_r(&t, &tm))
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(buf, size, "system_identifier %s, started %s (%.6f)",
                 id->system_identifier[0] ? id->system_identifier : "unknown", when, id->started);
}

/* A snapshot came from the server with this identity: if another server answered before, the
 * sessions, findings and actions of that one mean nothing here any more (pids are reused across
 * servers): pending actions are dropped, the action connection is made anew, and it is logged. */
static void note_identity(RemoteServer *rs, const ServerIdentity *id) {
        if (!rs->have_identity) {
                rs->identity = *id;
                rs->have_identity = true;
                return;
        }
        if (identity_equal(&rs->identity, id)) {
                rs->identity = *id;
                return;
        }
        ServerIdentity old = rs->identity;
        rs->identity = *id;
        size_t dropped = rs->n_queue;
        char o[160], n[160], msg[512];
        format_identity(&old, o, sizeof o);
        format_identity(id, n, sizeof n);
        snprintf(msg, sizeof msg, "not sent: the server behind %s changed (was %s, now %s)", rs->name, o, n);
        fail_all(rs, -ESTALE, msg);
        drop_action_conn(rs);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rs->change = (RemoteServerChange){ .old_identity = old, .new_identity = *id,
                                           .at = (double) ts.tv_sec + (double) ts.tv_nsec / 1e9,
                                           .count = rs->change.count + 1, .dropped = dropped };
        LogEntry e = {};
        log_add(&e, "PGTREE_CLUSTER", "%s", rs->name);
        log_add(&e, "PGTREE_VIEW", "remote");
        log_add(&e, "PGTREE_REMOTE_SERVER", "%s", rs->server);
        log_add(&e, "PGTREE_OLD_SYSTEM_IDENTIFIER", "%s", old.system_identifier[0] ? old.system_identifier : "unknown");
        log_add(&e, "PGTREE_NEW_SYSTEM_IDENTIFIER", "%s", id->system_identifier[0] ? id->system_identifier : "unknown");
        log_add(&e, "PGTREE_OLD_SERVER_START", "%.6f", old.started);
        log_add(&e, "PGTREE_NEW_SERVER_START", "%.6f", id->started);
        log_add(&e, "PGTREE_ACTIONS_DROPPED", "%zu", dropped);
        log_send(&e, LOG_WARNING, MSGID_REMOTE_SERVER_CHANGED,
                 "the server behind %s (%s) changed: was %s, now %s; %s; %zu pending action%s dropped, its sessions, "
                 "findings and actions are those of the new server from now on",
                 rs->name, rs->server, o, n,
                 strcmp(old.system_identifier, id->system_identifier) != 0 ? "another cluster (failover or replacement)"
                                                                            : "the same cluster restarted (or a standby of it promoted)",
                 dropped, dropped == 1 ? "" : "s");
}

/* Takes what each server's connection has now as what the tree shows. */
static int take_results(RemoteSet *s) {
        for (size_t i = 0; i < s->n; i++) {
                RemoteServer *rs = &s->items[i];
                const ActivitySnapshot *snap = rs->conn ? activity_conn_snapshot(rs->conn) : NULL;
                if (!rs->conn)
                        snprintf(rs->activity, sizeof rs->activity, "unavailable: %s", rs->why[0] ? rs->why : "invalid conninfo");
                else if (snap)
                        snprintf(rs->activity, sizeof rs->activity, "ok");
                else if (activity_conn_busy(rs->conn))
                        snprintf(rs->activity, sizeof rs->activity,
                                 "unavailable: no answer within this cycle (still connecting or querying)");
                else
                        snprintf(rs->activity, sizeof rs->activity, "%s", activity_conn_status(rs->conn));
                ServerIdentity id;
                if (snap && activity_conn_identity(rs->conn, &id))
                        note_identity(rs, &id);
                activity_snapshot_clear(&rs->last);
                rs->have_last = false;
                if (snap) {
                        int r = snapshot_copy(snap, &rs->last);
                        if (r < 0)
                                return r;
                        rs->have_last = true;
                        rs->taken_at = snap->taken_at;
                }
        }
        return 0;
}

static void tree_truncate(PgTree *t, size_t n_clusters, size_t n_procs) {
        for (size_t i = n_procs; i < t->n_procs; i++) {
                free(t->procs[i].rec.title);
                free(t->procs[i].cwd);
                free(t->procs[i].container);
        }
        if (n_procs < t->n_procs)
                t->n_procs = n_procs;
        if (n_clusters < t->n_clusters)
                t->n_clusters = n_clusters;
}

int remote_set_add_to_tree(RemoteSet *s, const Config *c, PgTree *t, bool fresh) {
        if (!s)
                return 0;
        if (fresh) {
                int r = take_results(s);
                if (r < 0)
                        return r;
        }
        if (s->in_tree && s->tree_first_cluster <= t->n_clusters && s->tree_first_proc <= t->n_procs)
                tree_truncate(t, s->tree_first_cluster, s->tree_first_proc);
        s->in_tree = true;
        s->tree_first_cluster = t->n_clusters;
        s->tree_first_proc = t->n_procs;
        for (size_t i = 0; i < s->n; i++) {
                RemoteServer *rs = &s->items[i];
                const ClusterConf *cc = NULL;
                for (size_t k = 0; k < c->n_clusters && !cc; k++)
                        if (!strcmp(c->clusters[k].name, rs->name))
                                cc = &c->clusters[k];
                if (!cc)
                        continue;
                RemoteClusterInfo info = { .name = rs->name, .server = rs->server, .parent_tag = cc->parent_tag,
                                           .activity = rs->activity, .enforce = config_cluster_enforce(c, cc),
                                           .own_pid2 = rs->action ? rs->action_pid : 0 };
                int r = remote_tree_add(t, &info, rs->have_last ? &rs->last : NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

void remote_set_tree_gone(RemoteSet *s) {
        if (s)
                s->in_tree = false;
}

void remote_set_report_reachability(RemoteSet *s, const PgTree *t, RemoteReachability cb, void *userdata) {
        for (size_t i = 0; s && i < s->n; i++) {
                RemoteServer *rs = &s->items[i];
                for (size_t k = 0; k < t->n_clusters; k++) {
                        const PgCluster *c = &t->clusters[k];
                        if (!c->remote || strcmp(c->name, rs->name) != 0)
                                continue;
                        bool reachable = c->snapshot != NULL;
                        if (!rs->reported || reachable != rs->reachable) {
                                rs->reported = true;
                                rs->reachable = reachable;
                                if (cb)
                                        cb(c, reachable, userdata);
                        }
                        break;
                }
        }
}

bool remote_set_info(const RemoteSet *s, const char *name, double *taken_at, unsigned *connects) {
        for (size_t i = 0; s && i < s->n; i++)
                if (!strcmp(s->items[i].name, name)) {
                        *taken_at = s->items[i].taken_at;
                        *connects = s->items[i].conn ? activity_conn_connects(s->items[i].conn) : 0;
                        return true;
                }
        return false;
}

bool remote_set_server_change(const RemoteSet *s, const char *name, RemoteServerChange *ret) {
        for (size_t i = 0; s && i < s->n; i++)
                if (!strcmp(s->items[i].name, name)) {
                        if (s->items[i].change.count == 0)
                                return false;
                        *ret = s->items[i].change;
                        return true;
                }
        return false;
}

/* ---- actions, asynchronously ---- */

/* A cancel request (PQcancel, the only one libpq 15 has) blocks until the server closes its
 * connection: it runs in a thread of its own, detached, at most CANCELS_MAX at once (a server
 * that never answers keeps its thread; the loop never waits for one). */
#define CANCELS_MAX 8
static atomic_uint cancels_running;

static void *cancel_thread(void *p) {
        char err[256];
        (void) PQcancel(p, err, sizeof err);
        PQfreeCancel(p);
        atomic_fetch_sub(&cancels_running, 1);
        return NULL;
}

static bool cancel_in_background(PGconn *c) {
        if (atomic_fetch_add(&cancels_running, 1) >= CANCELS_MAX) {
                atomic_fetch_sub(&cancels_running, 1);
                return false;
        }
        PGcancel *k = PQgetCancel(c);
        pthread_attr_t attr;
        pthread_t t;
        bool ok = k && pthread_attr_init(&attr) == 0;
        if (ok) {
                ok = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                     pthread_create(&t, &attr, cancel_thread, k) == 0;
                pthread_attr_destroy(&attr);
        }
        if (!ok) {
                if (k)
                        PQfreeCancel(k);
                atomic_fetch_sub(&cancels_running, 1);
        }
        return ok;
}

static char *strdup_or_null(const char *s, bool *ok) {
        return dup_or_null(s, ok);
}

int remote_set_act_start(RemoteSet *s, const char *name, const RemoteTarget *t, Action a, uint64_t timeout_usec,
                         uint64_t now, RemoteActDone done, void *userdata, char *msg, size_t msg_size) {
        RemoteServer *rs = server_find(s, name);
        if (!rs || !rs->action_params.kw) {
                snprintf(msg, msg_size, "no such remote server");
                return -ENOENT;
        }
        if (rs->n_queue >= REMOTE_ACTIONS_PENDING_MAX) {
                snprintf(msg, msg_size,
                         "not sent: %zu actions are pending on %s already (at most %d per remote server, one in flight "
                         "and the rest queued behind it); try again when they are done",
                         rs->n_queue, name, REMOTE_ACTIONS_PENDING_MAX);
                return -EBUSY;
        }
        if (GROW(rs->queue, rs->queue_allocated, rs->n_queue + 1) < 0) {
                snprintf(msg, msg_size, "out of memory");
                return -ENOMEM;
        }
        bool ok = true;
        PendingAction p = { .target = *t, .action = a, .deadline = now + timeout_usec, .done = done, .userdata = userdata };
        p.usename = strdup_or_null(t->usename, &ok);
        p.datname = strdup_or_null(t->datname, &ok);
        p.application_name = strdup_or_null(t->application_name, &ok);
        if (!ok) {
                pending_free(&p);
                snprintf(msg, msg_size, "out of memory");
                return -ENOMEM;
        }
        p.target.usename = p.usename;
        p.target.datname = p.datname;
        p.target.application_name = p.application_name;
        /* the server the tree's sessions were seen on: the statement does nothing on another */
        p.target.server_started = rs->have_identity ? rs->identity.started : 0;
        rs->queue[rs->n_queue++] = p;
        return 0;
}

size_t remote_set_actions_pending(const RemoteSet *s, const char *name) {
        for (size_t i = 0; s && i < s->n; i++)
                if (!strcmp(s->items[i].name, name))
                        return s->items[i].n_queue;
        return 0;
}

size_t remote_set_actions_wants(const RemoteSet *s, RemoteActWait *w, size_t max) {
        size_t n = 0;
        for (size_t i = 0; s && i < s->n && n < max; i++) {
                const RemoteServer *rs = &s->items[i];
                if (rs->act_state == ACT_IDLE || !rs->action || PQsocket(rs->action) < 0)
                        continue;
                w[n].fd = PQsocket(rs->action);
                if (rs->act_state == ACT_CONNECTING)
                        w[n].events = rs->act_poll == PGRES_POLLING_WRITING ? POLLOUT : POLLIN;
                else
                        w[n].events = POLLIN | (rs->act_want_write ? POLLOUT : 0);
                n++;
        }
        return n;
}

uint64_t remote_set_actions_deadline(const RemoteSet *s) {
        uint64_t d = UINT64_MAX;
        for (size_t i = 0; s && i < s->n; i++) {
                const RemoteServer *rs = &s->items[i];
                if (rs->n_queue > 0 && rs->act_state == ACT_IDLE)
                        return 0; /* the next one goes out now */
                for (size_t k = 0; k < rs->n_queue; k++)
                        if (rs->queue[k].deadline < d)
                                d = rs->queue[k].deadline;
        }
        return d;
}

/* The action connection broke (why: what was being done): the head action fails with it. */
static void action_conn_lost(RemoteServer *rs, const char *why) {
        char msg[400];
        first_line(msg, sizeof msg, why, PQerrorMessage(rs->action));
        drop_action_conn(rs);
        complete(rs, 0, -EIO, REMOTE_GONE, msg);
}

static void send_head(RemoteServer *rs, uint64_t now) {
        PendingAction *p = &rs->queue[0];
        char bufs[4][32];
        const char *values[REMOTE_ACTION_NPARAMS];
        remote_action_params(&p->target, p->action, bufs, values);
        if (!PQsendQueryParams(rs->action, remote_action_sql, REMOTE_ACTION_NPARAMS, NULL, values, NULL, NULL, 0)) {
                action_conn_lost(rs, "cannot send the statement");
                return;
        }
        int f = PQflush(rs->action);
        if (f < 0) {
                action_conn_lost(rs, "connection lost");
                return;
        }
        rs->act_want_write = f == 1;
        rs->act_state = ACT_RUNNING;
}

/* The answer to queue[0]'s statement, if it is complete. */
static void read_answer(RemoteServer *rs) {
        char msg[400];
        if (rs->act_want_write) {
                int f = PQflush(rs->action);
                if (f < 0) {
                        action_conn_lost(rs, "connection lost");
                        return;
                }
                rs->act_want_write = f == 1;
        }
        if (!PQconsumeInput(rs->action)) {
                action_conn_lost(rs, "connection lost");
                return;
        }
        int result = -EBADMSG;
        RemoteOutcome outcome = REMOTE_GONE;
        snprintf(msg, sizeof msg, "unexpected answer");
        while (!PQisBusy(rs->action)) {
                PGresult *res = PQgetResult(rs->action);
                if (result_is_copy(res)) {
                        /* libpq would return it for ever (PQisBusy() stays false) */
                        PQclear(res);
                        snprintf(msg, sizeof msg, "unexpected answer (the server started a COPY)");
                        drop_action_conn(rs);
                        complete(rs, 0, -EBADMSG, REMOTE_GONE, msg);
                        return;
                }
                if (!res) {
                        /* done: the connection is ready for the next one, unless it failed */
                        if (result < 0 && result != -EPERM)
                                drop_action_conn(rs);
                        complete(rs, 0, result, outcome, msg);
                        return;
                }
                if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 1 &&
                    !PQgetisnull(res, 0, 0)) {
                        int o = remote_outcome_from_string(PQgetvalue(res, 0, 0));
                        if (o >= 0) {
                                outcome = (RemoteOutcome) o;
                                result = 0;
                                snprintf(msg, sizeof msg, "%s", remote_outcome_explain(outcome));
                        }
                } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                        first_line(msg, sizeof msg, "the server refused", PQresultErrorMessage(res));
                        result = -EPERM;
                }
                PQclear(res);
        }
}

/* An action with less time than this left is not started any more: it would only time out. */
#define ACT_MIN_LEFT_USEC (50 * USEC_PER_MSEC)

static void server_actions_step(RemoteServer *rs, int ready_fd, uint64_t now) {
        bool ready = rs->action && ready_fd >= 0 && PQsocket(rs->action) == ready_fd;
        char msg[400];
        /* queued behind the first beyond their deadline: never sent */
        for (size_t i = 1; i < rs->n_queue;) {
                if (now >= rs->queue[i].deadline) {
                        snprintf(msg, sizeof msg,
                                 "timed out: not sent within action_timeout (it waited behind another action on %s)",
                                 rs->server);
                        complete(rs, i, -ETIMEDOUT, REMOTE_GONE, msg);
                } else
                        i++;
        }
        for (unsigned guard = 0; rs->n_queue > 0 && guard < 2 * REMOTE_ACTIONS_PENDING_MAX + 4; guard++) {
                PendingAction *p = &rs->queue[0];
                if (rs->act_state == ACT_RUNNING) {
                        if (ready)
                                read_answer(rs);
                        if (rs->act_state == ACT_RUNNING && now >= p->deadline) {
                                bool cancelled = cancel_in_background(rs->action);
                                snprintf(msg, sizeof msg,
                                         "timed out: no answer from %s within action_timeout (%s; the server may still "
                                         "carry it out)",
                                         rs->server, cancelled ? "the statement was cancelled" : "the connection was dropped");
                                drop_action_conn(rs);
                                complete(rs, 0, -ETIMEDOUT, REMOTE_GONE, msg);
                        }
                        if (rs->act_state == ACT_RUNNING)
                                return;
                        ready = false;
                        continue;
                }
                if (rs->act_state == ACT_CONNECTING) {
                        if (ready) {
                                rs->act_poll = PQconnectPoll(rs->action);
                                ready = false;
                        }
                        if (rs->act_poll == PGRES_POLLING_FAILED) {
                                first_line(msg, sizeof msg, "cannot connect", PQerrorMessage(rs->action));
                                drop_action_conn(rs);
                                complete(rs, 0, -ECONNREFUSED, REMOTE_GONE, msg);
                                continue;
                        }
                        if (rs->act_poll == PGRES_POLLING_OK) {
                                if (PQsetnonblocking(rs->action, 1) != 0) {
                                        first_line(msg, sizeof msg, "cannot connect", PQerrorMessage(rs->action));
                                        drop_action_conn(rs);
                                        complete(rs, 0, -EIO, REMOTE_GONE, msg);
                                        continue;
                                }
                                rs->action_pid = PQbackendPID(rs->action);
                                send_head(rs, now);
                                continue;
                        }
                        if (now >= p->deadline) {
                                snprintf(msg, sizeof msg, "timed out: connection to %s not made within action_timeout",
                                         rs->server);
                                drop_action_conn(rs);
                                complete(rs, 0, -ETIMEDOUT, REMOTE_GONE, msg);
                                continue;
                        }
                        return;
                }
                /* idle: the next one goes out, unless (nearly) all of its time went waiting */
                if (now + ACT_MIN_LEFT_USEC >= p->deadline) {
                        snprintf(msg, sizeof msg, "timed out: not sent within action_timeout (it waited behind another "
                                 "action on %s, or for the event loop)", rs->server);
                        complete(rs, 0, -ETIMEDOUT, REMOTE_GONE, msg);
                        continue;
                }
                if (rs->action && PQstatus(rs->action) != CONNECTION_OK)
                        drop_action_conn(rs);
                if (rs->action) {
                        send_head(rs, now);
                        continue;
                }
                rs->action = PQconnectStartParams((const char *const *) rs->action_params.kw,
                                                  (const char *const *) rs->action_params.val, 0);
                if (!rs->action || PQstatus(rs->action) == CONNECTION_BAD) {
                        first_line(msg, sizeof msg, "cannot connect", rs->action ? PQerrorMessage(rs->action) : "out of memory");
                        drop_action_conn(rs);
                        complete(rs, 0, -ECONNREFUSED, REMOTE_GONE, msg);
                        continue;
                }
                rs->act_state = ACT_CONNECTING;
                rs->act_poll = PGRES_POLLING_WRITING;
                return;
        }
}

void remote_set_actions_process(RemoteSet *s, int ready_fd, uint64_t now) {
        for (size_t i = 0; s && i < s->n; i++)
                server_actions_step(&s->items[i], ready_fd, now);
}
