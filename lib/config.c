/* SPDX-License-Identifier: MIT */
/* pgtree.ini, parsed with inih. Every problem is reported as FILE:LINE: message; line numbers are
 * counted here (Debian's libinih is built without INI_HANDLER_LINENO), and each line is checked
 * before inih sees it, so that one bad line does not hide the next. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <ini.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "macro.h"
#include "pidref.h"
#include "remote.h"
#include "rules.h"
#include "title.h"


typedef enum SectionType {
        SECTION_NONE,
        SECTION_DAEMON,
        SECTION_PROTECTED,
        SECTION_CLUSTER,
        SECTION_RULE,
        SECTION_INVALID,        /* reported already: its keys are skipped */
} SectionType;

typedef struct SeenKey {
        char *key;
        unsigned line;
} SeenKey;

typedef struct Parser {
        FILE *f;
        const char *name;
        unsigned line;
        Config *config;
        ConfigErrors *errs;
        SectionType section;
        void *current;          /* Rule* or ClusterConf* (index stored, arrays move) */
        size_t current_index;
        unsigned section_line;
        SeenKey *seen;          /* keys of the current section */
        size_t n_seen, seen_allocated;
        unsigned daemon_line, protected_line;
        size_t rules_allocated, clusters_allocated;
        bool oom;
} Parser;

_printf_(3, 4) static void error_at(Parser *p, unsigned line, const char *fmt, ...) {
        ConfigErrors *e = p->errs;
        if (GROW(e->items, e->allocated, e->n + 1) < 0) {
                p->oom = true;
                return;
        }
        va_list ap;
        va_start(ap, fmt);
        char *msg = NULL;
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        char *file = strdup(p->name);
        if (!msg || !file) {
                free(msg);
                free(file);
                p->oom = true;
                return;
        }
        e->items[e->n++] = (ConfigError){ .file = file, .line = line, .message = msg };
}

#define error(p, ...) error_at((p), (p)->line, __VA_ARGS__)

void config_errors_print(const ConfigErrors *errs, FILE *out) {
        for (size_t i = 0; i < errs->n; i++) {
                if (errs->items[i].line)
                        fprintf(out, "%s:%u: %s\n", errs->items[i].file, errs->items[i].line, errs->items[i].message);
                else
                        fprintf(out, "%s: %s\n", errs->items[i].file, errs->items[i].message);
        }
}

void config_errors_clear(ConfigErrors *errs) {
        for (size_t i = 0; errs && i < errs->n; i++) {
                free(errs->items[i].file);
                free(errs->items[i].message);
        }
        if (errs) {
                free(errs->items);
                *errs = (ConfigErrors){};
        }
}

/* ---- values ---- */

int parse_duration(const char *s, uint64_t *ret_usec) {
        if (!s || !*s)
                return -EINVAL;
        static const struct {
                const char *unit;
                uint64_t usec;
        } units[] = {
                { "ms", USEC_PER_MSEC }, { "s", USEC_PER_SEC }, { "m", 60 * USEC_PER_SEC },
                { "h", 3600 * USEC_PER_SEC }, { "d", 86400 * USEC_PER_SEC },
        };
        uint64_t total = 0;
        const char *p = s;
        while (*p) {
                if (!isdigit((unsigned char) *p))
                        return -EINVAL;
                uint64_t v = 0;
                while (isdigit((unsigned char) *p)) {
                        if (v > UINT32_MAX)
                                return -EINVAL;
                        v = v * 10 + (uint64_t) (*p++ - '0');
                }
                size_t k;
                for (k = 0; k < ELEMENTSOF(units); k++) {
                        size_t l = strlen(units[k].unit);
                        if (strncmp(p, units[k].unit, l) == 0 && !isalpha((unsigned char) p[l]))
                                break;
                }
                if (k == ELEMENTSOF(units))
                        return -EINVAL;
                if (v > (UINT64_MAX - total) / units[k].usec)
                        return -EINVAL;
                total += v * units[k].usec;
                p += strlen(units[k].unit);
        }
        *ret_usec = total;
        return 0;
}

int client_match_parse(const char *s, ClientMatch *ret) {
        ClientMatch m = {};
        if (strcmp(s, "local") == 0) {
                m.local = true;
                *ret = m;
                return 0;
        }
        char buf[64];
        if (strlen(s) >= sizeof buf)
                return -EINVAL;
        strcpy(buf, s);
        char *slash = strchr(buf, '/');
        long prefix = -1;
        if (slash) {
                *slash = 0;
                char *e;
                errno = 0;
                prefix = strtol(slash + 1, &e, 10);
                if (errno || *e || e == slash + 1 || prefix < 0)
                        return -EINVAL;
        }
        if (inet_pton(AF_INET, buf, m.addr) == 1) {
                m.family = AF_INET;
                if (prefix > 32)
                        return -EINVAL;
                m.prefix = prefix < 0 ? 32 : (unsigned) prefix;
        } else if (inet_pton(AF_INET6, buf, m.addr) == 1) {
                m.family = AF_INET6;
                if (prefix > 128)
                        return -EINVAL;
                m.prefix = prefix < 0 ? 128 : (unsigned) prefix;
        } else
                return -EINVAL;
        *ret = m;
        return 0;
}

bool client_match(const ClientMatch *m, const char *client) {
        if (!client || !*client)
                return false;
        if (m->local)
                return strcmp(client, "local") == 0;
        /* "10.0.0.5:50156" or "[2001:db8::1]:5432": strip the port */
        char host[64];
        const char *end;
        if (client[0] == '[') {
                end = strchr(client, ']');
                if (!end || (size_t) (end - client - 1) >= sizeof host)
                        return false;
                memcpy(host, client + 1, (size_t) (end - client - 1));
                host[end - client - 1] = 0;
        } else {
                end = strrchr(client, ':');
                size_t l = end ? (size_t) (end - client) : strlen(client);
                if (l >= sizeof host)
                        return false;
                memcpy(host, client, l);
                host[l] = 0;
        }
        unsigned char a[16];
        if (inet_pton(m->family, host, a) != 1)
                return false;
        unsigned bits = m->prefix;
        for (unsigned i = 0; bits > 0; i++, bits = bits >= 8 ? bits - 8 : 0) {
                unsigned char mask = bits >= 8 ? 0xff : (unsigned char) (0xff << (8 - bits));
                if ((a[i] & mask) != (m->addr[i] & mask))
                        return false;
        }
        return true;
}

static bool parse_bool(const char *v, bool *ret) {
        if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcmp(v, "1"))
                *ret = true;
        else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcasecmp(v, "off") || !strcmp(v, "0"))
                *ret = false;
        else
                return false;
        return true;
}

static bool parse_uint(const char *v, unsigned long min, unsigned long max, unsigned long *ret) {
        if (!isdigit((unsigned char) *v))
                return false;
        char *e;
        errno = 0;
        unsigned long x = strtoul(v, &e, 10);
        if (errno || *e || x < min || x > max)
                return false;
        *ret = x;
        return true;
}

static bool glob_valid(const char *pat, const char **why) {
        for (const char *p = pat; *p; p++) {
                if (*p == '\\') {
                        if (!p[1]) {
                                *why = "ends in a lone '\\'";
                                return false;
                        }
                        p++;
                } else if (*p == '[') {
                        const char *q = p + 1;
                        if (*q == '!' || *q == '^')
                                q++;
                        if (*q == ']')
                                q++;
                        while (*q && *q != ']')
                                q++;
                        if (!*q) {
                                *why = "has an unterminated '['";
                                return false;
                        }
                        p = q;
                }
        }
        return true;
}

static bool has_glob_chars(const char *s) {
        return strpbrk(s, "*?[\\") != NULL;
}

static void set_string(Parser *p, char **dst, const char *v) {
        char *s = strdup(v);
        if (!s) {
                p->oom = true;
                return;
        }
        free(*dst);
        *dst = s;
}

/* Splits a comma-separated list; each element trimmed; empty elements are an error. */
static int split_list(Parser *p, const char *key, const char *v, char ***ret, size_t *n_ret) {
        char **items = NULL;
        size_t n = 0, allocated = 0;
        const char *s = v;
        for (;;) {
                const char *comma = strchr(s, ',');
                size_t l = comma ? (size_t) (comma - s) : strlen(s);
                while (l > 0 && isspace((unsigned char) *s))
                        s++, l--;
                while (l > 0 && isspace((unsigned char) s[l - 1]))
                        l--;
                if (l == 0) {
                        error(p, "%s: empty element in list '%s'", key, v);
                        goto fail;
                }
                if (n >= CONFIG_MAX_PATTERNS) {
                        error(p, "%s: more than %d elements", key, CONFIG_MAX_PATTERNS);
                        goto fail;
                }
                if (GROW(items, allocated, n + 1) < 0 || !(items[n] = strndup(s, l))) {
                        p->oom = true;
                        goto fail;
                }
                n++;
                if (!comma)
                        break;
                s = comma + 1;
        }
        *ret = items;
        *n_ret = n;
        return 0;
fail:
        for (size_t i = 0; i < n; i++)
                free(items[i]);
        free(items);
        return -EINVAL;
}

static void pattern_list_free(PatternList *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->items[i]);
        free(l->items);
        *l = (PatternList){};
}

/* vocabulary: NULL = any glob; else each non-glob element must be one of these */
static void set_patterns(Parser *p, const char *key, const char *v, PatternList *dst,
                         const char *const *vocabulary, const char *what) {
        char **items;
        size_t n;
        if (split_list(p, key, v, &items, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                const char *why;
                if (!glob_valid(items[i], &why)) {
                        error(p, "%s: pattern '%s' %s", key, items[i], why);
                        goto fail;
                }
                if (vocabulary && !has_glob_chars(items[i])) {
                        bool known = false;
                        for (const char *const *w = vocabulary; *w && !known; w++)
                                known = strcmp(*w, items[i]) == 0;
                        if (!known) {
                                error(p, "%s: unknown %s '%s'", key, what, items[i]);
                                goto fail;
                        }
                }
        }
        pattern_list_free(dst);
        dst->items = items;
        dst->n = n;
        return;
fail:
        for (size_t i = 0; i < n; i++)
                free(items[i]);
        free(items);
}

static void set_clients(Parser *p, const char *key, const char *v, ClientList *dst) {
        char **items;
        size_t n;
        if (split_list(p, key, v, &items, &n) < 0)
                return;
        ClientMatch *m = calloc(n, sizeof *m);
        bool ok = m != NULL;
        for (size_t i = 0; ok && i < n; i++)
                if (client_match_parse(items[i], &m[i]) < 0) {
                        error(p, "%s: invalid address or CIDR '%s' (expected e.g. 10.0.0.0/8, ::1 or local)", key, items[i]);
                        ok = false;
                }
        for (size_t i = 0; i < n; i++)
                free(items[i]);
        free(items);
        if (!ok) {
                free(m);
                return;
        }
        free(dst->items);
        dst->items = m;
        dst->n = n;
}

/* ---- sections ---- */

static void seen_reset(Parser *p) {
        for (size_t i = 0; i < p->n_seen; i++)
                free(p->seen[i].key);
        p->n_seen = 0;
}

static bool seen_once(Parser *p, const char *key) {
        for (size_t i = 0; i < p->n_seen; i++)
                if (strcmp(p->seen[i].key, key) == 0) {
                        error(p, "duplicate key '%s' (first set at line %u)", key, p->seen[i].line);
                        return false;
                }
        if (GROW(p->seen, p->seen_allocated, p->n_seen + 1) < 0 || !(p->seen[p->n_seen].key = strdup(key))) {
                p->oom = true;
                return false;
        }
        p->seen[p->n_seen++].line = p->line;
        return true;
}

static bool value_duration(Parser *p, const char *key, const char *v, uint64_t *dst, bool zero_ok);
static void value_absolute_path(Parser *p, const char *key, const char *v, char **dst, bool empty_ok);

/* ---- managed servers: [cluster] keys host, parent_tag, action_timeout (lib/remote.c) ---- */

static bool remote_cluster_key(Parser *p, ClusterConf *cc, const char *key, const char *v) {
        if (!strcmp(key, "host")) {
                if (!strcmp(v, "auto"))
                        cc->host = CLUSTER_HOST_AUTO;
                else if (!strcmp(v, "local"))
                        cc->host = CLUSTER_HOST_LOCAL;
                else if (!strcmp(v, "remote"))
                        cc->host = CLUSTER_HOST_REMOTE;
                else
                        error(p, "host: expected auto, local or remote, got '%s'", v);
                return true;
        }
        if (!strcmp(key, "parent_tag")) {
                const char *why;
                if (strlen(v) > 100 || !glob_valid(v, &why))
                        error(p, "parent_tag: '%s' is not a valid pattern (a shell glob of at most 100 characters, "
                              "e.g. FakeParent:*)", v);
                else
                        set_string(p, &cc->parent_tag, v);
                return true;
        }
        if (!strcmp(key, "passfile")) {
                if (!strncmp(v, "credential:", 11)) {
                        const char *n = v + 11;
                        bool ok = *n && strlen(n) <= 100 && strcmp(n, ".") && strcmp(n, "..");
                        for (const char *q = n; ok && *q; q++)
                                ok = isalnum((unsigned char) *q) || strchr("_.-@", *q);
                        if (!ok)
                                error(p, "passfile: 'credential:NAME' needs the name of a systemd credential "
                                      "(letters, digits, _ . - @), got '%s'", v);
                        else
                                set_string(p, &cc->passfile, v);
                } else
                        value_absolute_path(p, key, v, &cc->passfile, false);
                return true;
        }
        if (!strcmp(key, "sslrootcert")) {
                if (!strcmp(v, "system"))
                        set_string(p, &cc->sslrootcert, v);
                else
                        value_absolute_path(p, key, v, &cc->sslrootcert, false);
                return true;
        }
        if (!strcmp(key, "action_timeout")) {
                uint64_t d;
                if (value_duration(p, key, v, &d, false)) {
                        if (d < 100 * USEC_PER_MSEC || d > 30 * USEC_PER_SEC)
                                error(p, "action_timeout: must be between 100ms and 30s, got '%s'", v);
                        else
                                cc->action_timeout_usec = d;
                }
                return true;
        }
        return false;
}

/* host = auto becomes local or remote from the conninfo; a remote section is checked whole. */
static void end_cluster_section(Parser *p) {
        ClusterConf *cc = &p->config->clusters[p->current_index];
        if (cc->host == CLUSTER_HOST_AUTO) {
                cc->host_auto = true;
                cc->host = !cc->data_directory && cc->conninfo && remote_conninfo_is_remote(cc->conninfo)
                                   ? CLUSTER_HOST_REMOTE
                                   : CLUSTER_HOST_LOCAL;
        }
        if (cc->host != CLUSTER_HOST_REMOTE)
                return; /* parent_tag groups a local cluster's sessions too */
        if (!cc->conninfo)
                error_at(p, cc->line, "cluster '%s' has host = remote but no conninfo (host=… dbname=… user=… "
                         "sslmode=verify-full; the password in a passfile)", cc->name);
        else if (!remote_conninfo_names_host(cc->conninfo))
                error_at(p, cc->line, "cluster '%s' has host = remote but its conninfo names no host (host= or hostaddr=)",
                         cc->name);
        if (cc->data_directory)
                error_at(p, cc->line, "cluster '%s' has host = remote and a data_directory: a remote server's files "
                         "cannot be seen from here", cc->name);
        if (cc->port)
                error_at(p, cc->line, "cluster '%s' has host = remote and port: put the port in its conninfo (port=)",
                         cc->name);
        if (cc->conninfo && remote_conninfo_has_password(cc->conninfo))
                error_at(p, cc->line, "cluster '%s': a password in the conninfo would sit in the ini file; use a passfile "
                         "(passfile=/path, mode 0600) or systemd credentials ($CREDENTIALS_DIRECTORY)", cc->name);
}

size_t config_n_remote(const Config *c) {
        size_t n = 0;
        for (size_t i = 0; i < c->n_clusters; i++)
                n += c->clusters[i].host == CLUSTER_HOST_REMOTE;
        return n;
}

/* pgtree cancels and terminates client backends only (a parallel worker through its leader):
 * a cancel/terminate rule whose backend_type names anything else (the postmaster, the
 * checkpointer, a walsender…) would never act as written. Refused here, at its line, rather
 * than found out from refusals in the journal. */
static void check_signalled_backend_types(Parser *p, const Rule *r) {
        unsigned line = r->line;
        for (size_t i = 0; i < p->n_seen; i++)
                if (!strcmp(p->seen[i].key, "backend_type"))
                        line = p->seen[i].line;
        const char *client = backend_type_to_string(BACKEND_CLIENT);
        const char *worker = backend_type_to_string(BACKEND_PARALLEL_WORKER);
        for (size_t i = 0; i < r->backend_type.include.n; i++) {
                const char *pat = r->backend_type.include.items[i];
                if (fnmatch(pat, client, 0) == 0 || fnmatch(pat, worker, 0) == 0)
                        continue;
                error_at(p, line,
                         "backend_type: '%s' with action = %s: pgtree signals only client backends (parallel workers "
                         "through their leader), never the postmaster or auxiliary processes; use action = log or alert",
                         pat, action_to_string(r->action));
        }
}

static void end_section(Parser *p) {
        if (p->section == SECTION_RULE) {
                Rule *r = &p->config->rules[p->current_index];
                if (r->kinds == 0)
                        error_at(p, r->line, "rule '%s' has no kind (one or more finding kinds)", r->name);
                const unsigned long_runners = 1u << FINDING_LONG_QUERY | 1u << FINDING_IDLE_IN_TRANSACTION |
                                              1u << FINDING_LONG_TRANSACTION | 1u << FINDING_LOCK_WAIT;
                if ((r->kinds & long_runners) && r->after_usec == 0)
                        error_at(p, r->line, "rule '%s' covers long runners and needs 'after' (a threshold such as 5m)", r->name);
                if (r->action == ACTION_ALERT && !r->alert_command)
                        error_at(p, r->line, "rule '%s' has action = alert but no alert_command", r->name);
                if (r->target == RULE_TARGET_BLOCKER && r->kinds != 0 && r->kinds != 1u << FINDING_LOCK_WAIT)
                        error_at(p, r->target_line,
                                 "target = blocker: rule '%s' must cover kind = lock_wait only (only a lock wait has a blocker)",
                                 r->name);
                if (r->action == ACTION_CANCEL || r->action == ACTION_TERMINATE)
                        check_signalled_backend_types(p, r);
        }
        if (p->section == SECTION_CLUSTER)
                end_cluster_section(p);
        seen_reset(p);
        p->section = SECTION_NONE;
}

static void begin_section(Parser *p, const char *header) {
        end_section(p);
        p->section_line = p->line;
        char kind[32] = "", unquoted[256];
        const char *name = NULL;
        size_t kl = strcspn(header, " \t");
        if (kl < sizeof kind) {
                memcpy(kind, header, kl);
                kind[kl] = 0;
        }
        name = header + kl;
        while (isspace((unsigned char) *name))
                name++;
        if (*name == '"') {
                size_t l = strlen(name);
                if (l >= 2 && name[l - 1] == '"') {
                        snprintf(unquoted, sizeof unquoted, "%.*s", (int) (l - 2), name + 1);
                        name = unquoted;
                }
        }

        if (!strcmp(kind, "daemon") || !strcmp(kind, "protected")) {
                bool daemon = kind[0] == 'd';
                unsigned *first = daemon ? &p->daemon_line : &p->protected_line;
                if (*name) {
                        error(p, "section [%s] takes no name", kind);
                        p->section = SECTION_INVALID;
                } else if (*first) {
                        error(p, "duplicate section [%s] (first at line %u)", kind, *first);
                        p->section = SECTION_INVALID;
                } else {
                        *first = p->line;
                        p->section = daemon ? SECTION_DAEMON : SECTION_PROTECTED;
                }
                return;
        }
        if (!strcmp(kind, "rule") || !strcmp(kind, "cluster")) {
                bool rule = kind[0] == 'r';
                if (!*name) {
                        error(p, "section [%s] needs a name: [%s NAME]", kind, kind);
                        p->section = SECTION_INVALID;
                        return;
                }
                const char *why;
                if (strlen(name) > 100 || !glob_valid(name, &why) || has_glob_chars(name)) {
                        error(p, "%s name '%s' must be at most 100 characters, without glob characters", kind, name);
                        p->section = SECTION_INVALID;
                        return;
                }
                Config *c = p->config;
                size_t n = rule ? c->n_rules : c->n_clusters;
                for (size_t i = 0; i < n; i++) {
                        const char *other = rule ? c->rules[i].name : c->clusters[i].name;
                        unsigned line = rule ? c->rules[i].line : c->clusters[i].line;
                        if (strcmp(other, name) == 0) {
                                error(p, "duplicate %s '%s' (first defined at line %u)", kind, name, line);
                                p->section = SECTION_INVALID;
                                return;
                        }
                }
                if (n >= (rule ? CONFIG_MAX_RULES : CONFIG_MAX_CLUSTERS)) {
                        error(p, "too many [%s] sections (at most %d)", kind, rule ? CONFIG_MAX_RULES : CONFIG_MAX_CLUSTERS);
                        p->section = SECTION_INVALID;
                        return;
                }
                char *dup = strdup(name);
                if (!dup) {
                        p->oom = true;
                        p->section = SECTION_INVALID;
                        return;
                }
                if (rule) {
                        if (GROW(c->rules, p->rules_allocated, c->n_rules + 1) < 0) {
                                free(dup);
                                p->oom = true;
                                return;
                        }
                        c->rules[c->n_rules] = (Rule){ .name = dup, .line = p->line, .action = ACTION_LOG };
                        p->current_index = c->n_rules++;
                        p->section = SECTION_RULE;
                } else {
                        if (GROW(c->clusters, p->clusters_allocated, c->n_clusters + 1) < 0) {
                                free(dup);
                                p->oom = true;
                                return;
                        }
                        c->clusters[c->n_clusters] = (ClusterConf){ .name = dup, .line = p->line, .enforce = -1,
                                                                    .host = CLUSTER_HOST_AUTO,
                                                                    .action_timeout_usec = REMOTE_ACTION_TIMEOUT_DEFAULT_USEC };
                        p->current_index = c->n_clusters++;
                        p->section = SECTION_CLUSTER;
                }
                return;
        }
        error(p, "unknown section [%s] (expected [daemon], [protected], [cluster NAME] or [rule NAME])", header);
        p->section = SECTION_INVALID;
}

/* ---- keys ---- */

static bool value_duration(Parser *p, const char *key, const char *v, uint64_t *dst, bool zero_ok) {
        uint64_t d;
        if (parse_duration(v, &d) < 0) {
                error(p, "%s: invalid duration '%s' (a number with a unit: ms, s, m, h or d, e.g. 90s or 1h30m)", key, v);
                return false;
        }
        if (d == 0 && !zero_ok) {
                error(p, "%s: a duration of zero is not allowed", key);
                return false;
        }
        *dst = d;
        return true;
}

static void value_absolute_path(Parser *p, const char *key, const char *v, char **dst, bool empty_ok) {
        if (!*v && empty_ok) {
                free(*dst);
                *dst = NULL;
                return;
        }
        if (v[0] != '/') {
                error(p, "%s: must be an absolute path, got '%s'", key, v);
                return;
        }
        if (strlen(v) >= PATH_MAX) {
                error(p, "%s: path too long", key);
                return;
        }
        set_string(p, dst, v);
}

static void value_conninfo(Parser *p, const char *key, const char *v, char **dst) {
        char *err = NULL;
        PQconninfoOption *o = PQconninfoParse(v, &err);
        if (!o) {
                char *nl = err ? strchr(err, '\n') : NULL;
                if (nl)
                        *nl = 0;
                error(p, "%s: invalid connection string: %s", key, err ? err : "out of memory");
                PQfreemem(err);
                return;
        }
        PQconninfoFree(o);
        set_string(p, dst, v);
}

static void value_uint(Parser *p, const char *key, const char *v, unsigned long min, unsigned long max, unsigned *dst) {
        unsigned long x;
        if (!parse_uint(v, min, max, &x)) {
                error(p, "%s: expected a whole number from %lu to %lu, got '%s'", key, min, max, v);
                return;
        }
        *dst = (unsigned) x;
}

static void daemon_key(Parser *p, const char *key, const char *v) {
        Config *c = p->config;
        if (!strcmp(key, "interval")) {
                uint64_t d;
                if (value_duration(p, key, v, &d, false)) {
                        if (d < 100 * USEC_PER_MSEC || d > 3600 * USEC_PER_SEC)
                                error(p, "interval: must be between 100ms and 1h, got '%s'", v);
                        else
                                c->interval_usec = d;
                }
        } else if (!strcmp(key, "discovery_interval"))
                value_duration(p, key, v, &c->discovery_interval_usec, false);
        else if (!strcmp(key, "connect_timeout"))
                value_duration(p, key, v, &c->connect_timeout_usec, false);
        else if (!strcmp(key, "query_timeout"))
                value_duration(p, key, v, &c->query_timeout_usec, false);
        else if (!strcmp(key, "alert_timeout"))
                value_duration(p, key, v, &c->alert_timeout_usec, false);
        else if (!strcmp(key, "terminate_grace"))
                value_duration(p, key, v, &c->terminate_grace_usec, false);
        else if (!strcmp(key, "unlisted_grace"))
                value_duration(p, key, v, &c->unlisted_grace_usec, false);
        else if (!strcmp(key, "enforce")) {
                if (!parse_bool(v, &c->enforce))
                        error(p, "enforce: expected yes or no, got '%s'", v);
        } else if (!strcmp(key, "socket"))
                value_absolute_path(p, key, v, &c->socket_path, false);
        else if (!strcmp(key, "socket_group"))
                set_string(p, &c->socket_group, v);
        else if (!strcmp(key, "admin_group"))
                set_string(p, &c->admin_group, v);
        else if (!strcmp(key, "query_text_for_readers")) {
                if (!parse_bool(v, &c->query_text_for_readers))
                        error(p, "query_text_for_readers: expected yes or no, got '%s'", v);
        }
        else if (!strcmp(key, "max_actions_per_minute"))
                value_uint(p, key, v, 0, 10000, &c->max_actions_per_minute);
        else if (!strcmp(key, "allow_foreign"))
                set_patterns(p, key, v, &c->allow_foreign, NULL, NULL);
        else if (!strcmp(key, "max_concurrent_alerts"))
                value_uint(p, key, v, 1, 1000, &c->max_concurrent_alerts);
        else if (!strcmp(key, "max_alerts_per_minute"))
                value_uint(p, key, v, 0, 10000, &c->max_alerts_per_minute);
        else if (!strcmp(key, "max_alerts_per_minute_per_owner"))
                value_uint(p, key, v, 0, 10000, &c->max_alerts_per_minute_per_owner);
        else if (!strcmp(key, "metrics_file"))
                value_absolute_path(p, key, v, &c->metrics_file, true);
        else if (!strcmp(key, "conninfo"))
                value_conninfo(p, key, v, &c->conninfo);
        else if (!strcmp(key, "query_max_length"))
                value_uint(p, key, v, 0, 100000, &c->query_max_length);
        else
                error(p, "unknown key '%s' in [daemon]", key);
}

static void protected_key(Parser *p, const char *key, const char *v) {
        Config *c = p->config;
        if (!strcmp(key, "users"))
                set_patterns(p, key, v, &c->protected_users, NULL, NULL);
        else if (!strcmp(key, "databases"))
                set_patterns(p, key, v, &c->protected_databases, NULL, NULL);
        else if (!strcmp(key, "applications"))
                set_patterns(p, key, v, &c->protected_applications, NULL, NULL);
        else
                error(p, "unknown key '%s' in [protected] (expected users, databases or applications)", key);
}

static void cluster_key(Parser *p, const char *key, const char *v) {
        ClusterConf *cc = &p->config->clusters[p->current_index];
        if (!strcmp(key, "data_directory"))
                value_absolute_path(p, key, v, &cc->data_directory, false);
        else if (!strcmp(key, "port")) {
                unsigned port = 0;
                value_uint(p, key, v, 1, 65535, &port);
                if (port)
                        cc->port = (int) port;
        } else if (!strcmp(key, "conninfo"))
                value_conninfo(p, key, v, &cc->conninfo);
        else if (!strcmp(key, "enforce")) {
                bool b;
                if (!parse_bool(v, &b))
                        error(p, "enforce: expected yes or no, got '%s'", v);
                else
                        cc->enforce = b;
        } else if (remote_cluster_key(p, cc, key, v))
                ;
        else
                error(p, "unknown key '%s' in [cluster %s]", key, cc->name);
}

static const char *const *backend_type_vocabulary(void) {
        static const char *names[_BACKEND_TYPE_MAX + 1];
        if (!names[0])
                for (int i = 0; i < _BACKEND_TYPE_MAX; i++)
                        names[i] = backend_type_to_string((BackendType) i);
        return names;
}

static const char *const state_vocabulary[] = {
        "active", "idle", "idle in transaction", "idle in transaction (aborted)", "fastpath function call",
        "disabled", NULL,
};

static void rule_key(Parser *p, const char *key, const char *v) {
        Rule *r = &p->config->rules[p->current_index];
        bool exclude = strncmp(key, "exclude_", 8) == 0;
        const char *base = exclude ? key + 8 : key;
        Filter *filter = NULL;
        const char *const *vocab = NULL;
        const char *what = NULL;

        if (!strcmp(key, "kind")) {
                char **items;
                size_t n;
                if (split_list(p, key, v, &items, &n) < 0)
                        return;
                unsigned kinds = 0;
                for (size_t i = 0; i < n; i++) {
                        int k = finding_kind_from_string(items[i]);
                        if (k < 0 && !strcmp(items[i], "orphans"))
                                kinds |= 1u << FINDING_ORPHAN_BACKEND | 1u << FINDING_STALE_ACTIVITY |
                                         1u << FINDING_UNLISTED_PROCESS | 1u << FINDING_ORPHAN_PARALLEL_WORKER |
                                         1u << FINDING_CLIENT_GONE;
                        else if (k < 0 && !strcmp(items[i], "long_runners"))
                                kinds |= 1u << FINDING_LONG_QUERY | 1u << FINDING_IDLE_IN_TRANSACTION |
                                         1u << FINDING_LONG_TRANSACTION | 1u << FINDING_LOCK_WAIT;
                        else if (k < 0) {
                                error(p, "kind: unknown finding kind '%s' (expected orphan_backend, stale_activity, "
                                         "unlisted_process, orphan_parallel_worker, client_gone, long_query, "
                                         "idle_in_transaction, long_transaction, lock_wait, foreign_process, orphans or long_runners)",
                                      items[i]);
                                kinds = 0;
                                break;
                        } else
                                kinds |= 1u << k;
                }
                for (size_t i = 0; i < n; i++)
                        free(items[i]);
                free(items);
                if (kinds)
                        r->kinds = kinds;
                return;
        }
        if (!strcmp(key, "after")) {
                uint64_t d;
                if (parse_duration(v, &d) < 0)
                        error(p, "after: invalid duration '%s' (a number with a unit: ms, s, m, h or d, e.g. 90s or 1h30m)", v);
                else if (d == 0)
                        error(p, "after: a threshold of zero would act on every session at once; give a duration such as 30s");
                else
                        r->after_usec = d;
                return;
        }
        if (!strcmp(key, "action")) {
                int a = action_from_string(v);
                if (a >= 0)
                        r->action = (Action) a;
                else if (signal_spelling_is_sigkill(v))
                        error(p, "action: '%s': " SIGKILL_REFUSAL, v);
                else
                        error(p, "action: unknown action '%s' (expected log, alert, cancel or terminate)", v);
                return;
        }
        if (!strcmp(key, "signal")) {
                if (signal_spelling_is_sigkill(v))
                        error(p, "signal: '%s': " SIGKILL_REFUSAL, v);
                else
                        error(p, "unknown key 'signal' in [rule %s]: say action = cancel (SIGINT) or action = terminate (SIGTERM)", r->name);
                return;
        }
        if (!strcmp(key, "alert_command")) {
                value_absolute_path(p, key, v, &r->alert_command, false);
                return;
        }
        if (!strcmp(key, "target")) {
                r->target_line = p->line;
                if (!strcmp(v, "session"))
                        r->target = RULE_TARGET_SESSION;
                else if (!strcmp(v, "blocker"))
                        r->target = RULE_TARGET_BLOCKER;
                else
                        error(p, "target: unknown target '%s' (expected session, or blocker: the root of the lock chain "
                                 "that blocks a lock_wait session)", v);
                return;
        }
        if (!strcmp(base, "client")) {
                set_clients(p, key, v, exclude ? &r->exclude_client : &r->client);
                return;
        }
        if (!strcmp(base, "user"))
                filter = &r->user;
        else if (!strcmp(base, "database"))
                filter = &r->database;
        else if (!strcmp(base, "application_name"))
                filter = &r->application_name;
        else if (!strcmp(base, "cluster"))
                filter = &r->cluster;
        else if (!strcmp(base, "container"))
                filter = &r->container;
        else if (!strcmp(base, "command"))
                filter = &r->command;
        else if (!strcmp(base, "backend_type")) {
                filter = &r->backend_type;
                vocab = backend_type_vocabulary();
                what = "backend type";
        } else if (!strcmp(base, "state")) {
                filter = &r->state;
                vocab = state_vocabulary;
                what = "state";
        }
        if (!filter) {
                error(p, "unknown key '%s' in [rule %s]", key, r->name);
                return;
        }
        set_patterns(p, key, v, exclude ? &filter->exclude : &filter->include, vocab, what);
}

static int handler(void *user, const char *section, const char *key, const char *value) {
        Parser *p = user;
        if (p->section == SECTION_INVALID)
                return 1;
        if (p->section == SECTION_NONE) {
                error(p, "key '%s' outside any section (put it under [daemon], [protected], [cluster NAME] or [rule NAME])", key);
                return 1;
        }
        if (!*key) {
                error(p, "missing key before '='");
                return 1;
        }
        if (!seen_once(p, key))
                return 1;
        if (!*value) {
                /* empty is meaningful only for a few paths */
                if (!(p->section == SECTION_DAEMON && !strcmp(key, "metrics_file"))) {
                        error(p, "%s: empty value", key);
                        return 1;
                }
        }
        switch (p->section) {
        case SECTION_DAEMON:
                daemon_key(p, key, value);
                break;
        case SECTION_PROTECTED:
                protected_key(p, key, value);
                break;
        case SECTION_CLUSTER:
                cluster_key(p, key, value);
                break;
        case SECTION_RULE:
                rule_key(p, key, value);
                break;
        default:
                break;
        }
        return 1;
}

/* inih's line reader: counts lines, checks each one, and hands inih only lines it can take. */
static char *reader(char *buf, int size, void *stream) {
        Parser *p = stream;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n = getline(&line, &cap, p->f);
        if (n < 0) {
                free(line);
                return NULL;
        }
        p->line++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = 0;
        const char *s = line;
        while (isspace((unsigned char) *s))
                s++; /* inih would take an indented line as a continuation of the previous value */
        const char *out = s;
        if (memchr(line, 0, (size_t) n)) {
                error(p, "line contains a NUL byte");
                out = "";
        } else if (strlen(s) >= (size_t) size - 1) {
                error(p, "line too long (at most %d characters)", size - 2);
                out = "";
        } else if (*s == ';' || *s == '#' || !*s) {
                out = s;
        } else if (*s == '[') {
                const char *close = strchr(s, ']');
                const char *after = close ? close + 1 : NULL;
                while (after && isspace((unsigned char) *after))
                        after++;
                if (!close) {
                        error(p, "section header lacks ']'");
                        p->section = SECTION_INVALID;
                        out = "";
                } else if (*after && *after != ';' && *after != '#') {
                        error(p, "unexpected text after section header");
                        p->section = SECTION_INVALID;
                        out = "";
                } else {
                        char header[256];
                        size_t hl = (size_t) (close - s - 1);
                        const char *h = s + 1;
                        while (hl > 0 && isspace((unsigned char) *h))
                                h++, hl--;
                        while (hl > 0 && isspace((unsigned char) h[hl - 1]))
                                hl--;
                        snprintf(header, sizeof header, "%.*s", (int) hl, h);
                        begin_section(p, header);
                }
        } else if (!strchr(s, '=')) {
                error(p, "expected 'key = value' or '[section]', got '%s'", s);
                out = "";
        }
        snprintf(buf, (size_t) size, "%s\n", out);
        free(line);
        return buf;
}

/* ---- defaults, lifecycle ---- */

static int config_init_defaults(Config *c) {
        *c = (Config){
                .interval_usec = 2 * USEC_PER_SEC,
                .discovery_interval_usec = 30 * USEC_PER_SEC,
                .connect_timeout_usec = 5 * USEC_PER_SEC,
                .query_timeout_usec = 5 * USEC_PER_SEC,
                .alert_timeout_usec = 30 * USEC_PER_SEC,
                .terminate_grace_usec = 10 * USEC_PER_SEC,
                .unlisted_grace_usec = 60 * USEC_PER_SEC,
                .max_actions_per_minute = 10,
                .max_concurrent_alerts = 8,
                .max_alerts_per_minute = 30,
                .max_alerts_per_minute_per_owner = 60,
                .query_max_length = 256,
        };
        if (!(c->socket_path = strdup("/run/pgtree/pgtree.sock")) || !(c->socket_group = strdup("pgtree")) ||
            !(c->admin_group = strdup("pgtree-admin")) ||
            !(c->conninfo = strdup("dbname=postgres user=pgtree application_name=pgtreed")))
                return -ENOMEM;
        return 0;
}

int config_new_default(Config **ret) {
        Config *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        if (config_init_defaults(c) < 0) {
                config_free(c);
                return -ENOMEM;
        }
        if (config_add_builtin_rules(c) < 0) {
                config_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static void filter_free(Filter *f) {
        pattern_list_free(&f->include);
        pattern_list_free(&f->exclude);
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        free(c->path);
        free(c->socket_path);
        free(c->socket_group);
        free(c->admin_group);
        free(c->metrics_file);
        free(c->conninfo);
        pattern_list_free(&c->protected_users);
        pattern_list_free(&c->protected_databases);
        pattern_list_free(&c->protected_applications);
        pattern_list_free(&c->allow_foreign);
        for (size_t i = 0; i < c->n_rules; i++) {
                Rule *r = &c->rules[i];
                free(r->name);
                free(r->alert_command);
                filter_free(&r->user);
                filter_free(&r->database);
                filter_free(&r->application_name);
                filter_free(&r->backend_type);
                filter_free(&r->state);
                filter_free(&r->cluster);
                filter_free(&r->container);
                filter_free(&r->command);
                free(r->client.items);
                free(r->exclude_client.items);
        }
        free(c->rules);
        for (size_t i = 0; i < c->n_clusters; i++) {
                free(c->clusters[i].name);
                free(c->clusters[i].data_directory);
                free(c->clusters[i].conninfo);
                free(c->clusters[i].parent_tag);
                free(c->clusters[i].passfile);
                free(c->clusters[i].sslrootcert);
        }
        free(c->clusters);
        free(c);
        return NULL;
}

int config_parse_stream(FILE *f, const char *name, Config **ret, ConfigErrors *errs) {
        *ret = NULL;
        Config *c = calloc(1, sizeof *c);
        if (!c || config_init_defaults(c) < 0) {
                config_free(c);
                return -ENOMEM;
        }
        size_t errors_before = errs->n;
        Parser p = { .f = f, .name = name, .config = c, .errs = errs };
        int r = ini_parse_stream(reader, &p, handler, &p);
        end_section(&p);
        seen_reset(&p);
        free(p.seen);
        if (r < 0)
                error_at(&p, 0, "cannot read: %s", strerror(ferror(f) ? errno : EIO));
        else if (r > 0 && errs->n == errors_before)
                error_at(&p, (unsigned) r, "syntax error");
        if (p.oom) {
                config_free(c);
                return -ENOMEM;
        }
        if (errs->n > errors_before) {
                config_free(c);
                return -EINVAL;
        }
        if ((c->n_rules == 0 && config_add_builtin_rules(c) < 0) || !(c->path = strdup(name))) {
                config_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

int config_parse_file(const char *path, Config **ret, ConfigErrors *errs) {
        *ret = NULL;
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f) {
                int r = -errno;
                ConfigErrors *e = errs;
                if (GROW(e->items, e->allocated, e->n + 1) < 0)
                        return -ENOMEM;
                char *msg = NULL;
                if (asprintf(&msg, "cannot open: %s", strerror(-r)) < 0)
                        return -ENOMEM;
                e->items[e->n++] = (ConfigError){ .file = strdup(path), .line = 0, .message = msg };
                return r;
        }
        return config_parse_stream(f, path, ret, errs);
}

int config_parse_string(const char *text, const char *name, Config **ret, ConfigErrors *errs) {
        _cleanup_fclose_ FILE *f = fmemopen((void *) text, strlen(text), "r");
        if (!f)
                return -errno;
        return config_parse_stream(f, name, ret, errs);
}

const ClusterConf *config_find_cluster(const Config *c, const char *name, const char *data_directory, int port) {
        for (size_t i = 0; i < c->n_clusters; i++) {
                const ClusterConf *cc = &c->clusters[i];
                if (cc->host == CLUSTER_HOST_REMOTE)
                        continue; /* a managed server never selects a cluster found in /proc */
                bool any = cc->data_directory || cc->port;
                if (cc->data_directory && (!data_directory || strcmp(cc->data_directory, data_directory) != 0))
                        continue;
                if (cc->port && cc->port != port)
                        continue;
                if (!any && (!name || strcmp(cc->name, name) != 0))
                        continue; /* no selector: the section's name is the cluster's name */
                return cc;
        }
        return NULL;
}

bool config_cluster_enforce(const Config *c, const ClusterConf *cc) {
        if (cc && cc->enforce >= 0)
                return cc->enforce;
        return c->enforce;
}
