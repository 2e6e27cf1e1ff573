/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "protocol.h"

/* Does any string in v (or a key below it) hold a NUL? JSON's \u0000 makes one, and C would
 * read only what stands before it ("terminate\u0000kill" as "terminate"). */
static bool has_nul(json_object *v, int depth) {
        if (!v || depth > 64)
                return false;
        switch (json_object_get_type(v)) {
        case json_type_string:
                return strlen(json_object_get_string(v)) != (size_t) json_object_get_string_len(v);
        case json_type_array:
                for (size_t i = 0; i < json_object_array_length(v); i++)
                        if (has_nul(json_object_array_get_idx(v, i), depth + 1))
                                return true;
                return false;
        case json_type_object: {
                json_object_object_foreach(v, key, val) {
                        (void) key;
                        if (has_nul(val, depth + 1))
                                return true;
                }
                return false;
        }
        default:
                return false;
        }
}

/* Is there a \u0000 escape anywhere in the text (keys included: json-c cuts keys at a NUL)? */
static bool text_has_nul_escape(const char *s, size_t len) {
        bool in_string = false;
        for (size_t i = 0; i < len; i++) {
                if (!in_string) {
                        in_string = s[i] == '"';
                        continue;
                }
                if (s[i] == '"')
                        in_string = false;
                else if (s[i] == '\\' && i + 1 < len) {
                        if (s[i + 1] == 'u' && i + 5 < len && !strncmp(s + i + 2, "0000", 4))
                                return true;
                        i++;
                }
        }
        return false;
}

int varlink_call_parse(const char *msg, size_t len, VarlinkCall *ret, char *why, size_t why_size) {
        *ret = (VarlinkCall){};
        if (len == 0) {
                snprintf(why, why_size, "empty message");
                return -EBADMSG;
        }
        if (memchr(msg, 0, len)) {
                snprintf(why, why_size, "NUL byte inside a message");
                return -EBADMSG;
        }
        json_tokener *tok = json_tokener_new_ex(32);
        if (!tok)
                return -ENOMEM;
        json_object *o = json_tokener_parse_ex(tok, msg, (int) len);
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        size_t used = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (!o || jerr != json_tokener_success) {
                snprintf(why, why_size, "not JSON: %s", json_tokener_error_desc(jerr == json_tokener_continue ? json_tokener_error_parse_eof : jerr));
                json_object_put(o);
                return -EBADMSG;
        }
        for (; used < len; used++)
                if (msg[used] != ' ' && msg[used] != '\n' && msg[used] != '\t' && msg[used] != '\r') {
                        snprintf(why, why_size, "text after the JSON object");
                        json_object_put(o);
                        return -EBADMSG;
                }
        if (!json_object_is_type(o, json_type_object)) {
                snprintf(why, why_size, "a message must be a JSON object");
                json_object_put(o);
                return -EBADMSG;
        }
        json_object *m, *p = NULL, *flag;
        if (!json_object_object_get_ex(o, "method", &m) || !json_object_is_type(m, json_type_string)) {
                snprintf(why, why_size, "no \"method\" string");
                json_object_put(o);
                return -EBADMSG;
        }
        const char *method = json_object_get_string(m);
        if (strlen(method) != (size_t) json_object_get_string_len(m)) {
                snprintf(why, why_size, "NUL character inside the method name");
                json_object_put(o);
                return -EBADMSG;
        }
        if (strlen(method) >= sizeof ret->method || !strchr(method, '.')) {
                snprintf(why, why_size, "invalid method name");
                json_object_put(o);
                return -EBADMSG;
        }
        snprintf(ret->method, sizeof ret->method, "%s", method);
        if (json_object_object_get_ex(o, "parameters", &p) && p && !json_object_is_type(p, json_type_object)) {
                snprintf(why, why_size, "\"parameters\" must be an object");
                json_object_put(o);
                return -EBADMSG;
        }
        ret->parameters = p ? json_object_get(p) : json_object_new_object();
        if (text_has_nul_escape(msg, len)) {
                /* name the parameter whose value holds it; else it is in a key */
                snprintf(ret->invalid_parameter, sizeof ret->invalid_parameter, "(a parameter name)");
                json_object_object_foreach(ret->parameters, key, val)
                        if (has_nul(val, 0)) {
                                snprintf(ret->invalid_parameter, sizeof ret->invalid_parameter, "%s", key);
                                break;
                        }
        }
        if (json_object_object_get_ex(o, "oneway", &flag))
                ret->oneway = json_object_get_boolean(flag);
        if (json_object_object_get_ex(o, "more", &flag))
                ret->more = json_object_get_boolean(flag);
        json_object_put(o);
        return 0;
}

void varlink_call_clear(VarlinkCall *c) {
        json_object_put(c->parameters);
        *c = (VarlinkCall){};
}

static char *finish(json_object *o, size_t *len) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        size_t l = strlen(s);
        char *out = malloc(l + 1);
        if (out) {
                memcpy(out, s, l + 1); /* with the NUL that ends a Varlink message */
                *len = l + 1;
        }
        json_object_put(o);
        return out;
}

char *varlink_reply(json_object *parameters, size_t *len) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "parameters", parameters ? parameters : json_object_new_object());
        return finish(o, len);
}

char *varlink_reply_continues(json_object *parameters, bool continues, size_t *len) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "parameters", parameters ? parameters : json_object_new_object());
        if (continues)
                json_object_object_add(o, "continues", json_object_new_boolean(true));
        return finish(o, len);
}

char *varlink_error(const char *error, json_object *parameters, size_t *len) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "error", json_object_new_string(error));
        json_object_object_add(o, "parameters", parameters ? parameters : json_object_new_object());
        return finish(o, len);
}

char *varlink_call(const char *method, json_object *parameters, size_t *len) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "method", json_object_new_string(method));
        json_object_object_add(o, "parameters", parameters ? parameters : json_object_new_object());
        return finish(o, len);
}

int varlink_reply_parse(const char *msg, size_t len, json_object **parameters, char **error) {
        *parameters = NULL;
        *error = NULL;
        json_tokener *tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        json_object *o = json_tokener_parse_ex(tok, msg, (int) len);
        bool ok = o && json_tokener_get_error(tok) == json_tokener_success && json_object_is_type(o, json_type_object);
        json_tokener_free(tok);
        if (!ok) {
                json_object_put(o);
                return -EBADMSG;
        }
        json_object *p, *e;
        if (json_object_object_get_ex(o, "error", &e) && json_object_is_type(e, json_type_string))
                *error = strdup(json_object_get_string(e));
        if (json_object_object_get_ex(o, "parameters", &p) && p)
                *parameters = json_object_get(p);
        else
                *parameters = json_object_new_object();
        json_object_put(o);
        return 0;
}

int varlink_buffer_feed(VarlinkBuffer *b, const char *data, size_t n, size_t max) {
        if (GROW(b->data, b->cap, b->len + n + 1) < 0)
                return -ENOMEM;
        memcpy(b->data + b->len, data, n);
        b->len += n;
        /* what follows the last NUL is an unfinished message: it must fit the limit */
        const char *last = memrchr(b->data, 0, b->len);
        size_t tail = last ? (size_t) (b->data + b->len - last - 1) : b->len;
        return tail > max ? -EMSGSIZE : 0;
}

int varlink_buffer_next(VarlinkBuffer *b, char **msg, size_t *len) {
        const char *nul = b->len ? memchr(b->data, 0, b->len) : NULL;
        if (!nul)
                return 0;
        size_t l = (size_t) (nul - b->data);
        char *m = malloc(l + 1);
        if (!m)
                return -ENOMEM;
        memcpy(m, b->data, l + 1);
        memmove(b->data, nul + 1, b->len - l - 1);
        b->len -= l + 1;
        *msg = m;
        *len = l;
        return 1;
}

void varlink_buffer_clear(VarlinkBuffer *b) {
        free(b->data);
        *b = (VarlinkBuffer){};
}

const char *varlink_service_description(void) {
        return "interface org.varlink.service\n"
               "method GetInfo() -> (vendor: string, product: string, version: string, url: string, interfaces: []string)\n"
               "method GetInterfaceDescription(interface: string) -> (description: string)\n"
               "error InterfaceNotFound (interface: string)\n"
               "error MethodNotFound (method: string)\n"
               "error MethodNotImplemented (method: string)\n"
               "error InvalidParameter (parameter: string)\n";
}

const char *varlink_pgtree_description(void) {
        return "# pgtree: the real PostgreSQL process tree, its orphans and long runners\n"
               "interface io.pgtree\n"
               "\n"
               "# The daemon, in one object.\n"
               "method Status() -> (version: string, pid: int, uptime_s: int, clusters: int, client_backends: int,\n"
               "                    orphans: int, open_findings: int, enforce: bool, config: ?string, cycles: int,\n"
               "                    last_cycle_s: float, interval_s: float, unreachable: []string, enforcing: []string)\n"
               "\n"
               "# The forest as in DESIGN.md (clusters, orphans, findings); text: the human rendering, with\n"
               "# each client backend's query text on its line, cut to width columns (0 or none: whole).\n"
               "# cluster: only that cluster (its name, [cluster] section or data directory), its orphans\n"
               "# and findings; every method that lists takes it.\n"
               "method Tree(group_by_application: ?bool, text: ?bool, width: ?int, cluster: ?string) ->\n"
               "                    (clusters: []object, orphans: []object, findings: []object, text: ?string)\n"
               "\n"
               "# A process waiting for a lock has blocked_by (pg_blocking_pids()), root_blocker (the session at\n"
               "# the root of its chain) or lock_cycle; a session others wait for has blocking (how many).\n"
               "# A lock_wait finding has blocker: (pid, start_ticks, depth, user, database, application_name,\n"
               "# client, backend_type, state, state_change, xact_start, state_s, xact_age_s, query), or null.\n"
               "# The blocking forest: root blockers, each with what it blocks (nested in blocks).\n"
               "method Locks(cluster: ?string, text: ?bool, width: ?int) ->\n"
               "                (clusters: [](name: string, activity: string, chains: []object), text: ?string)\n"
               "\n"
               "# Client backends, filtered (shell globs) and sorted (pid, age, duration, cpu, memory, user).\n"
               "# pgtreed's own connections (its backend pids, pgtree_connection: true) only with all.\n"
               "method Sessions(user: ?string, database: ?string, application_name: ?string, state: ?string,\n"
               "                sort: ?string, cluster: ?string, all: ?bool) -> (sessions: []object)\n"
               "\n"
               "# The Tree reply (without text) once per scan cycle, for live views. Call it with\n"
               "# \"more\": true: the first reply is the last finished cycle, then one reply follows each\n"
               "# cycle, every one with \"continues\": true, until the client hangs up. A client that has\n"
               "# not read its previous reply misses the cycles in between (replies never pile up), and\n"
               "# one that reads nothing for 10 s is disconnected. Other calls go on another connection:\n"
               "# none is read from a connection that is streaming. Without \"more\": one reply.\n"
               "# cycle: the daemon's cycle counter; time: when that cycle ended.\n"
               "method Watch() -> (cycle: int, time: string, interval_s: float, clusters: []object,\n"
               "                   orphans: []object, findings: []object)\n"
               "\n"
               "# Query text (the \"query\" of a process) goes to admins only, unless pgtree.ini's\n"
               "# query_text_for_readers = yes; a reader's copy has query null and query_hidden true.\n"
               "#\n"
               "# Everything known about one process.\n"
               "# lock_chains: the blocking trees (as in Locks) it is part of.\n"
               "method Show(pid: int) -> (process: object, cluster: ?string, findings: []object, lock_chains: []object)\n"
               "\n"
               "method Orphans(cluster: ?string) -> (orphans: []object, findings: []object)\n"
               "# A finding of LongRunners carries its session's query (subject to the policy above).\n"
               "method LongRunners(cluster: ?string) -> (findings: []object)\n"
               "\n"
               "# cancel (SIGINT) or terminate (SIGTERM) one backend by pid, or every client backend of an\n"
               "# application_name group. Nothing else: SIGKILL is refused. Needs the admin group.\n"
               "# pids of managed servers repeat across servers: cluster names the one meant (a pid found in\n"
               "# more than one cluster without it is refused with AmbiguousPid); with application_name, only\n"
               "# that cluster's sessions.\n"
               "method Signal(action: string, pid: ?int, application_name: ?string, cluster: ?string, dry_run: ?bool) ->\n"               "                (results: [](pid: int, result: string, reason: string))\n"
               "\n"
               "method Reload() -> ()\n"
               "\n"
               "# Prometheus text format.\n"
               "method Metrics() -> (text: string)\n"
               "\n"
               "error PermissionDenied (reason: string)\n"
               "error NoSuchProcess (pid: int)\n"
               "error SigkillRefused (reason: string)\n"
               "error ConfigInvalid (errors: []string)\n"
               "error InvalidRequest (reason: string)\n"
               "error RequestTooLarge (limit: int)\n"
               "error TooManyRequests (limit: int)\n"
               "# Sent before the connection is closed: a limit per user, for readers in all, or in all.\n"
               "error TooManyConnections (limit: int, reason: string)\n";
}

int varlink_connect_unix(const char *path, int timeout_ms) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        if (!path || strlen(path) >= sizeof a.sun_path)
                return -ENAMETOOLONG;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* a listener that accepts nothing (hung, stopped) with a full backlog makes connect()
         * wait for ever: Linux bounds a Unix stream connect (and later sends) by SO_SNDTIMEO */
        if (timeout_ms < 1)
                timeout_ms = 1;
        struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
        if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        memcpy(a.sun_path, path, strlen(path) + 1);
        if (connect(fd, (struct sockaddr *) &a, sizeof a) < 0) {
                int r = errno == EAGAIN ? -ETIMEDOUT : -errno;
                close(fd);
                return r;
        }
        return fd;
}

static long long monotonic_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int varlink_call_once(const char *path, const char *method, json_object *parameters, int timeout_ms, size_t max,
                      json_object **ret, char **error) {
        *ret = NULL;
        *error = NULL;
        long long end = monotonic_ms() + timeout_ms;
        int fd = varlink_connect_unix(path, timeout_ms);
        if (fd < 0) {
                json_object_put(parameters);
                return fd;
        }
        size_t len;
        char *msg = varlink_call(method, parameters, &len);
        if (!msg) {
                close(fd);
                return -ENOMEM;
        }
        (void) send(fd, msg, len, MSG_NOSIGNAL);
        free(msg);
        VarlinkBuffer b = {};
        int r = -EIO;
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                long long left = end - monotonic_ms();
                int n = left > 0 ? poll(&p, 1, (int) left) : 0;
                if (n < 0 && errno == EINTR)
                        continue; /* a signal (top's SIGWINCH) is not a timeout: the deadline stays */
                if (n <= 0) {
                        r = n < 0 ? -errno : -ETIMEDOUT;
                        break;
                }
                char buf[65536];
                ssize_t k = read(fd, buf, sizeof buf);
                if (k < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (k <= 0 || varlink_buffer_feed(&b, buf, (size_t) k, max) < 0)
                        break;
                char *m;
                size_t ml;
                if (varlink_buffer_next(&b, &m, &ml) == 1) {
                        r = varlink_reply_parse(m, ml, ret, error);
                        free(m);
                        break;
                }
        }
        varlink_buffer_clear(&b);
        close(fd);
        return r;
}
