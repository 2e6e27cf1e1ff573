/* SPDX-License-Identifier: MIT */
/* Parser for PostgreSQL process titles, 9.6 to 19 (tests/data/TITLES.md; tested against real
 * servers of 12–18 in tests/integration/test_versions.py, the rest from the corpus and the
 * sources). Pure: bytes in, TitleInfo out. */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "title.h"

static const char *const backend_type_names[_BACKEND_TYPE_MAX] = {
        [BACKEND_UNKNOWN] = "unknown",
        [BACKEND_POSTMASTER] = "postmaster",
        [BACKEND_CLIENT] = "client backend",
        [BACKEND_AUTOVACUUM_LAUNCHER] = "autovacuum launcher",
        [BACKEND_AUTOVACUUM_WORKER] = "autovacuum worker",
        [BACKEND_BACKGROUND_WRITER] = "background writer",
        [BACKEND_CHECKPOINTER] = "checkpointer",
        [BACKEND_WALWRITER] = "walwriter",
        [BACKEND_WALSENDER] = "walsender",
        [BACKEND_WALRECEIVER] = "walreceiver",
        [BACKEND_WALSUMMARIZER] = "walsummarizer",
        [BACKEND_STARTUP] = "startup",
        [BACKEND_ARCHIVER] = "archiver",
        [BACKEND_LOGGER] = "logger",
        [BACKEND_STATS_COLLECTOR] = "stats collector",
        [BACKEND_PARALLEL_WORKER] = "parallel worker",
        [BACKEND_LOGICAL_REPLICATION_LAUNCHER] = "logical replication launcher",
        [BACKEND_LOGICAL_REPLICATION_WORKER] = "logical replication worker",
        [BACKEND_LOGICAL_REPLICATION_APPLY_WORKER] = "logical replication apply worker",
        [BACKEND_LOGICAL_REPLICATION_TABLESYNC_WORKER] = "logical replication tablesync worker",
        [BACKEND_LOGICAL_REPLICATION_PARALLEL_WORKER] = "logical replication parallel worker",
        [BACKEND_SLOTSYNC_WORKER] = "slotsync worker",
        [BACKEND_IO_WORKER] = "io worker",
        [BACKEND_LOGICAL_REPLICATION_SEQUENCESYNC_WORKER] = "logical replication sequencesync worker",
        [BACKEND_DATACHECKSUMS_LAUNCHER] = "datachecksums launcher",
        [BACKEND_DATACHECKSUMS_WORKER] = "datachecksums worker",
        [BACKEND_BACKGROUND_WORKER] = "background worker",
};

const char *backend_type_to_string(BackendType t) {
        if ((unsigned) t >= _BACKEND_TYPE_MAX)
                return "unknown";
        return backend_type_names[t];
}

BackendType backend_type_from_string(const char *s) {
        if (!s)
                return BACKEND_UNKNOWN;
        for (unsigned i = 0; i < _BACKEND_TYPE_MAX; i++)
                if (strcmp(backend_type_names[i], s) == 0)
                        return (BackendType) i;
        return BACKEND_UNKNOWN;
}

const char *backend_type_name(BackendType t, int major) {
        if (major <= 0)
                return backend_type_to_string(t);
        switch (t) {
        case BACKEND_PARALLEL_WORKER:
        case BACKEND_LOGICAL_REPLICATION_LAUNCHER:
        case BACKEND_LOGICAL_REPLICATION_WORKER:
        case BACKEND_LOGICAL_REPLICATION_APPLY_WORKER:
        case BACKEND_LOGICAL_REPLICATION_TABLESYNC_WORKER:
        case BACKEND_LOGICAL_REPLICATION_PARALLEL_WORKER:
                if (major < 11) /* bgw_type came with 11 */
                        return backend_type_to_string(BACKEND_BACKGROUND_WORKER);
                if (major < 17 && t != BACKEND_PARALLEL_WORKER && t != BACKEND_LOGICAL_REPLICATION_LAUNCHER &&
                    !(major == 16 && t == BACKEND_LOGICAL_REPLICATION_PARALLEL_WORKER))
                        return backend_type_to_string(BACKEND_LOGICAL_REPLICATION_WORKER);
                return backend_type_to_string(t);
        default:
                return backend_type_to_string(t);
        }
}

bool backend_type_listed(BackendType t, int major) {
        switch (t) {
        case BACKEND_UNKNOWN:
        case BACKEND_POSTMASTER:
        case BACKEND_LOGGER:
        case BACKEND_STATS_COLLECTOR:
        case BACKEND_BACKGROUND_WORKER:
                return false;
        case BACKEND_ARCHIVER:
                return major >= 14;
        default:
                return true;
        }
}

bool backend_type_holds_shared_memory(BackendType t, int major) {
        switch (t) {
        case BACKEND_LOGGER:
        case BACKEND_STATS_COLLECTOR:
                return false;
        case BACKEND_ARCHIVER:
                return major <= 0 || major >= 14; /* unknown version: assume it does */
        default:
                return true;
        }
}

bool backend_type_is_auxiliary(BackendType t) {
        switch (t) {
        case BACKEND_CLIENT:
        case BACKEND_PARALLEL_WORKER:
        case BACKEND_WALSENDER:
        case BACKEND_AUTOVACUUM_WORKER:
        case BACKEND_BACKGROUND_WORKER:
        case BACKEND_LOGICAL_REPLICATION_WORKER:
        case BACKEND_LOGICAL_REPLICATION_APPLY_WORKER:
        case BACKEND_LOGICAL_REPLICATION_TABLESYNC_WORKER:
        case BACKEND_LOGICAL_REPLICATION_PARALLEL_WORKER:
        case BACKEND_LOGICAL_REPLICATION_SEQUENCESYNC_WORKER:
        case BACKEND_DATACHECKSUMS_LAUNCHER:
        case BACKEND_DATACHECKSUMS_WORKER:
                return false;
        default:
                return true;
        }
}

/* A bounded view of the title text. */
typedef struct Span {
        const char *p;
        size_t n;
} Span;

static bool span_starts(Span s, const char *prefix) {
        size_t k = strlen(prefix);
        return s.n >= k && memcmp(s.p, prefix, k) == 0;
}

static Span span_skip(Span s, size_t k) {
        if (k > s.n)
                k = s.n;
        return (Span){ s.p + k, s.n - k };
}

static Span span_trim(Span s) {
        while (s.n > 0 && s.p[0] == ' ')
                s = span_skip(s, 1);
        while (s.n > 0 && s.p[s.n - 1] == ' ')
                s.n--;
        return s;
}

/* Copies a piece of a title. Control characters become '?': a title is anyone's text (a user
 * may name a lookalike cluster "\e]0;…\a"), and what is copied here reaches terminals, logs
 * and journal fields. */
static void span_copy(Span s, char *dst, size_t size) {
        size_t k = s.n < size - 1 ? s.n : size - 1;
        for (size_t i = 0; i < k; i++)
                dst[i] = (unsigned char) s.p[i] < 0x20 || s.p[i] == 0x7f ? '?' : s.p[i];
        dst[k] = 0;
}

static bool span_eq(Span s, const char *str) {
        return s.n == strlen(str) && memcmp(s.p, str, s.n) == 0;
}

static bool span_printable(Span s) {
        for (size_t i = 0; i < s.n; i++)
                if ((unsigned char) s.p[i] < 0x20 || s.p[i] == 0x7f)
                        return false;
        return true;
}

/* ---- client backends and walsenders: "user db host(port) STATUS" ---- */

static bool is_digits(const char *p, size_t n) {
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isdigit((unsigned char) p[i]))
                        return false;
        return true;
}

/* Is [p, p+n) a "host(port)" or "[local]" token? Writes the client form to client. */
static bool anchor_token(const char *p, size_t n, char *client, size_t size) {
        if (n == 7 && memcmp(p, "[local]", 7) == 0) {
                snprintf(client, size, "local");
                return true;
        }
        if (n < 4 || p[n - 1] != ')')
                return false;
        const char *open = memrchr(p, '(', n);
        if (!open || open == p)
                return false;
        size_t hlen = (size_t) (open - p), plen = n - hlen - 2;
        if (!is_digits(open + 1, plen) || plen > 5)
                return false;
        for (size_t i = 0; i < hlen; i++)
                if (p[i] == '(' || p[i] == ')' || (unsigned char) p[i] <= 0x20)
                        return false;
        bool v6 = memchr(p, ':', hlen) != NULL;
        snprintf(client, size, v6 ? "[%.*s]:%.*s" : "%.*s:%.*s", (int) hlen, p, (int) plen, open + 1);
        return true;
}

/* Is the token a prefix of an anchor cut short by a too small title area? */
static bool partial_anchor_token(const char *p, size_t n) {
        if (n > 0 && n < 7 && memcmp(p, "[local]", n) == 0)
                return true;
        const char *open = memrchr(p, '(', n);
        if (!open || open == p || memchr(open, ')', (size_t) (p + n - open)))
                return false;
        size_t plen = (size_t) (p + n - open - 1);
        return plen == 0 || is_digits(open + 1, plen);
}

static const char *const idle_words[] = {
        "idle", "idle in transaction", "idle in transaction (aborted)",
};
static const char *const startup_words[] = { "initializing", "authentication", "startup" };

static void set_status(Span status, BackendType type, TitleInfo *ret) {
        status = span_trim(status);
        if (status.n >= 8 && memcmp(status.p + status.n - 8, " waiting", 8) == 0) {
                ret->flags |= TITLE_WAITING;
                status = span_trim((Span){ status.p, status.n - 8 });
        } else if (span_eq(status, "waiting")) {
                ret->flags |= TITLE_WAITING;
                status.n = 0;
        }
        if (status.n == 0) {
                ret->flags |= TITLE_NO_STATUS;
                return;
        }
        span_copy(status, ret->status, sizeof ret->status);

        for (size_t i = 0; i < ELEMENTSOF(idle_words); i++)
                if (span_eq(status, idle_words[i])) {
                        snprintf(ret->state, sizeof ret->state, "%s", idle_words[i]);
                        return;
                }
        for (size_t i = 0; i < ELEMENTSOF(startup_words); i++)
                if (span_eq(status, startup_words[i]))
                        return; /* pg_stat_activity shows no state before the session starts */
        if (span_eq(status, "<FASTPATH>")) {
                snprintf(ret->state, sizeof ret->state, "fastpath function call");
                return;
        }
        /* A lower-case word that is the beginning of a known one was cut short. */
        if (islower((unsigned char) status.p[0]) && type == BACKEND_CLIENT) {
                const char *const *lists[] = { idle_words, startup_words };
                size_t lens[] = { ELEMENTSOF(idle_words), ELEMENTSOF(startup_words) };
                for (size_t l = 0; l < 2; l++)
                        for (size_t i = 0; i < lens[l]; i++)
                                if (status.n < strlen(lists[l][i]) &&
                                    memcmp(lists[l][i], status.p, status.n) == 0) {
                                        ret->flags |= TITLE_TRUNCATED;
                                        return;
                                }
        }
        snprintf(ret->state, sizeof ret->state, "active");
}

/* Finds the rightmost anchor token in s. Status words never look like one. */
static bool find_anchor(Span s, Span *left, Span *right, char *client, size_t size) {
        size_t end = s.n;
        while (end > 0) {
                size_t start = end;
                while (start > 0 && s.p[start - 1] != ' ')
                        start--;
                if (end > start && anchor_token(s.p + start, end - start, client, size)) {
                        *left = span_trim((Span){ s.p, start });
                        *right = span_trim(span_skip(s, end));
                        return true;
                }
                if (start == 0)
                        break;
                end = start - 1;
        }
        return false;
}

static void split_names(Span left, bool db_optional, TitleInfo *ret) {
        const char *sp = memchr(left.p, ' ', left.n);
        if (!sp) {
                span_copy(left, ret->user, sizeof ret->user);
                return;
        }
        span_copy((Span){ left.p, (size_t) (sp - left.p) }, ret->user, sizeof ret->user);
        Span db = span_trim(span_skip(left, (size_t) (sp - left.p) + 1));
        span_copy(db, ret->database, sizeof ret->database);
        if (memchr(db.p, ' ', db.n))
                ret->flags |= TITLE_NAMES_AMBIGUOUS;
}

static bool parse_session(Span s, BackendType type, TitleInfo *ret) {
        Span left, right;
        char client[TITLE_NAME_MAX];
        if (!find_anchor(s, &left, &right, client, sizeof client))
                return false;
        if (left.n == 0)
                return false;
        if (type == BACKEND_CLIENT && !memchr(left.p, ' ', left.n))
                return false; /* a client backend always has "user db" */
        ret->backend_type = type;
        snprintf(ret->client, sizeof ret->client, "%s", client);
        split_names(left, type == BACKEND_WALSENDER, ret);
        set_status(right, type, ret);
        return true;
}

/* "alice shop 10.0.0.5(501" — a client backend whose title area ran out. */
static bool parse_truncated_session(Span s, TitleInfo *ret) {
        size_t start = s.n;
        while (start > 0 && s.p[start - 1] != ' ')
                start--;
        if (start == 0 || !partial_anchor_token(s.p + start, s.n - start))
                return false;
        Span left = span_trim((Span){ s.p, start });
        if (!memchr(left.p, ' ', left.n))
                return false;
        ret->backend_type = BACKEND_CLIENT;
        ret->flags |= TITLE_TRUNCATED | TITLE_NO_STATUS;
        split_names(left, false, ret);
        return true;
}

/* ---- auxiliary processes and background workers ---- */

typedef struct AuxName {
        const char *name;
        BackendType type;
        bool args;      /* may be followed by arguments (database, segment, LSN, …) */
} AuxName;

static const AuxName aux_names[] = {
        /* longer names first where one is a prefix of another */
        { "autovacuum launcher", BACKEND_AUTOVACUUM_LAUNCHER, false },
        { "autovacuum worker", BACKEND_AUTOVACUUM_WORKER, true },
        { "background writer", BACKEND_BACKGROUND_WRITER, false },
        { "checkpointer", BACKEND_CHECKPOINTER, false },
        { "writer", BACKEND_BACKGROUND_WRITER, false },          /* 9.6–10 */
        { "wal writer", BACKEND_WALWRITER, false },              /* 9.6–10 */
        { "walwriter", BACKEND_WALWRITER, false },
        { "wal receiver", BACKEND_WALRECEIVER, true },           /* 9.6–10 */
        { "walreceiver", BACKEND_WALRECEIVER, true },
        { "walsummarizer", BACKEND_WALSUMMARIZER, true },
        { "stats collector", BACKEND_STATS_COLLECTOR, false },
        { "logger", BACKEND_LOGGER, false },
        { "archiver", BACKEND_ARCHIVER, true },
        { "startup", BACKEND_STARTUP, true },
        { "slotsync worker", BACKEND_SLOTSYNC_WORKER, true },
        { "io worker", BACKEND_IO_WORKER, true },                /* 18: "io worker N" */
        { "datachecksums launcher", BACKEND_DATACHECKSUMS_LAUNCHER, false },    /* 19 */
        { "datachecksum launcher", BACKEND_DATACHECKSUMS_LAUNCHER, false },     /* 19 before beta1 */
        { "datachecksums worker", BACKEND_DATACHECKSUMS_WORKER, true },
        { "datachecksum worker", BACKEND_DATACHECKSUMS_WORKER, true },
        { "logical replication launcher", BACKEND_LOGICAL_REPLICATION_LAUNCHER, false },
        { "logical replication worker for subscription", BACKEND_LOGICAL_REPLICATION_WORKER, true },
        { "logical replication apply worker for subscription", BACKEND_LOGICAL_REPLICATION_APPLY_WORKER, true },
        { "logical replication tablesync worker for subscription", BACKEND_LOGICAL_REPLICATION_TABLESYNC_WORKER, true },
        { "logical replication parallel apply worker for subscription", BACKEND_LOGICAL_REPLICATION_PARALLEL_WORKER, true },
        { "logical replication sequencesync worker for subscription", BACKEND_LOGICAL_REPLICATION_SEQUENCESYNC_WORKER, true },
};

static bool parse_aux(Span s, TitleInfo *ret) {
        for (size_t i = 0; i < ELEMENTSOF(aux_names); i++) {
                const AuxName *a = &aux_names[i];
                if (!span_starts(s, a->name))
                        continue;
                Span rest = span_skip(s, strlen(a->name));
                if (rest.n > 0 && rest.p[0] != ' ')
                        continue; /* "loggers", not "logger" */
                rest = span_trim(rest);
                if (span_starts(rest, "process") && (rest.n == 7 || rest.p[7] == ' '))
                        rest = span_trim(span_skip(rest, 7)); /* 9.6–10 suffix */
                if (rest.n > 0 && !a->args)
                        continue;
                ret->backend_type = a->type;
                if (rest.n > 0) {
                        /* 9.6–12 pad the argument with spaces: fold them. */
                        size_t o = 0;
                        for (size_t k = 0; k < rest.n && o + 1 < sizeof ret->worker; k++) {
                                if (rest.p[k] == ' ' && o > 0 && ret->worker[o - 1] == ' ')
                                        continue;
                                ret->worker[o++] = rest.p[k];
                        }
                        ret->worker[o] = 0;
                        if (a->type == BACKEND_AUTOVACUUM_WORKER)
                                span_copy(rest, ret->database, sizeof ret->database);
                        if (a->type == BACKEND_STARTUP || a->type == BACKEND_WALRECEIVER) {
                                Span st = rest;
                                if (st.n >= 8 && memcmp(st.p + st.n - 8, " waiting", 8) == 0)
                                        ret->flags |= TITLE_WAITING;
                        }
                }
                return true;
        }
        return false;
}

static bool parse_parallel_worker(Span s, TitleInfo *ret) {
        static const char prefix[] = "parallel worker for PID ";
        if (!span_starts(s, prefix))
                return false;
        Span num = span_trim(span_skip(s, sizeof prefix - 1));
        if (!is_digits(num.p, num.n) || num.n > 10)
                return false;
        long long v = 0;
        for (size_t i = 0; i < num.n; i++)
                v = v * 10 + (num.p[i] - '0');
        if (v <= 0 || v > INT32_MAX)
                return false;
        ret->backend_type = BACKEND_PARALLEL_WORKER;
        ret->leader_pid = (pid_t) v;
        return true;
}

typedef enum Match {
        MATCH_NONE,
        MATCH_WEAK,     /* could be something else: client backend, unknown bgworker name */
        MATCH_STRONG,   /* a title no other process uses */
} Match;

/* Classifies the text after "postgres: [cluster: ]". */
static Match classify(Span s, TitleInfo *ret) {
        TitleInfo saved = *ret;

        if (span_starts(s, "walsender ") || span_starts(s, "wal sender process ")) {
                Span rest = span_skip(s, span_starts(s, "walsender ") ? 10 : 19);
                if (parse_session(span_trim(rest), BACKEND_WALSENDER, ret))
                        return MATCH_STRONG;
                *ret = saved;
        }
        if (parse_session(s, BACKEND_CLIENT, ret))
                return MATCH_WEAK;
        *ret = saved;

        bool bgw = false;
        if (span_starts(s, "bgworker: ")) { /* 9.6–10 */
                s = span_trim(span_skip(s, 10));
                bgw = true;
        }
        if (parse_parallel_worker(s, ret) || parse_aux(s, ret))
                return MATCH_STRONG;
        *ret = saved;

        if (!bgw && parse_truncated_session(s, ret))
                return MATCH_WEAK;
        *ret = saved;

        if (s.n > 0 && span_printable(s)) {
                ret->backend_type = BACKEND_BACKGROUND_WORKER;
                span_copy(s, ret->worker, sizeof ret->worker);
                return bgw ? MATCH_STRONG : MATCH_WEAK;
        }
        ret->backend_type = BACKEND_UNKNOWN;
        return MATCH_NONE;
}

/* Takes the title up to the first NUL, without trailing spaces. Returns false if it is not a
 * child's title ("postgres: …"), with *body the whole text; else *body is what follows. */
static bool title_body(const char *buf, size_t len, Span *whole, Span *body, bool *cut) {
        const char *nul = buf ? memchr(buf, 0, len) : NULL;
        size_t n = buf ? (nul ? (size_t) (nul - buf) : len) : 0;
        *cut = false;
        if (n > TITLE_MAX - 1) {
                n = TITLE_MAX - 1;
                *cut = true;
        }
        Span s = { buf ? buf : "", n };
        while (s.n > 0 && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\n'))
                s.n--;
        *whole = s;
        if (!span_starts(s, "postgres:"))
                return false;
        *body = span_trim(span_skip(s, 9));
        return true;
}

/* Finds the cluster_name prefix by the titles that only PostgreSQL uses. Returns MATCH_STRONG
 * with *prefix_len set (0 = none) if sure. */
static Match guess_prefix(Span body, size_t *prefix_len) {
        TitleInfo t = {};
        *prefix_len = 0;
        if (classify(body, &t) == MATCH_STRONG)
                return MATCH_STRONG;
        for (size_t i = 0; i + 1 < body.n; i++) {
                if (body.p[i] != ':' || body.p[i + 1] != ' ')
                        continue;
                TitleInfo u = {};
                if (classify(span_trim(span_skip(body, i + 2)), &u) == MATCH_STRONG) {
                        *prefix_len = i;
                        return MATCH_STRONG;
                }
        }
        return MATCH_WEAK;
}

void title_parse(const char *buf, size_t len, const char *cluster_hint, TitleInfo *ret) {
        *ret = (TitleInfo){};
        Span whole, body;
        bool cut;
        if (!title_body(buf, len, &whole, &body, &cut)) {
                ret->backend_type = whole.n > 0 ? BACKEND_POSTMASTER : BACKEND_UNKNOWN;
                return;
        }
        if (cut)
                ret->flags |= TITLE_TRUNCATED;

        size_t plen = 0;
        bool have_prefix = false;
        if (cluster_hint) {
                size_t h = strlen(cluster_hint);
                if (h > 0 && body.n > h && memcmp(body.p, cluster_hint, h) == 0 && body.p[h] == ':' &&
                    (body.n == h + 1 || body.p[h + 1] == ' ')) {
                        plen = h;
                        have_prefix = true;
                }
        } else if (guess_prefix(body, &plen) == MATCH_STRONG) {
                have_prefix = plen > 0;
        } else {
                /* Only weak evidence: a client backend. A ": " before "user db" is the cluster name
                 * (Debian sets cluster_name = '15/main'); names with ": " are rarer than that. */
                TitleInfo t = {};
                if (classify(body, &t) == MATCH_WEAK && t.backend_type == BACKEND_CLIENT) {
                        for (size_t i = 0; i + 1 < body.n; i++) {
                                if (body.p[i] != ':' || body.p[i + 1] != ' ')
                                        continue;
                                TitleInfo u = {};
                                if (classify(span_trim(span_skip(body, i + 2)), &u) == MATCH_WEAK &&
                                    u.backend_type == BACKEND_CLIENT && u.database[0]) {
                                        plen = i;
                                        have_prefix = true;
                                }
                                break;
                        }
                }
        }

        Span rest = body;
        if (have_prefix) {
                span_copy((Span){ body.p, plen }, ret->cluster_name, sizeof ret->cluster_name);
                rest = span_trim(span_skip(body, plen + 1));
        }
        unsigned keep = ret->flags;
        char cluster[TITLE_NAME_MAX];
        memcpy(cluster, ret->cluster_name, sizeof cluster);
        classify(rest, ret);
        ret->flags |= keep;
        memcpy(ret->cluster_name, cluster, sizeof cluster);
}

bool title_cluster_name(const char *buf, size_t len, char ret[TITLE_NAME_MAX]) {
        Span whole, body;
        bool cut;
        if (!title_body(buf, len, &whole, &body, &cut))
                return false;
        size_t plen;
        if (guess_prefix(body, &plen) != MATCH_STRONG)
                return false;
        span_copy((Span){ body.p, plen }, ret, TITLE_NAME_MAX);
        return true;
}
