/* SPDX-License-Identifier: MIT */
/* pgtree: the client of pgtreed's control socket (Varlink, io.pgtree). */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "config.h"
#include "journal.h"
#include "macro.h"
#include "pidref.h"
#include "protocol.h"
#include "render.h"
#include "top.h"

/* Exit codes (documented in pgtree(1)). */
enum {
        EXIT_OK = 0,
        EXIT_FAILED = 1,        /* the daemon said no, or an action did not happen */
        EXIT_USAGE = 2,
        EXIT_SIGKILL = 3,       /* SIGKILL was asked for: refused */
        EXIT_DENIED = 4,
        EXIT_NO_DAEMON = 5,
        EXIT_NO_PROCESS = 6,
};

static const char *socket_path = "/run/pgtree/pgtree.sock";
static bool json_out = false;
static bool color = false;

static const char sigkill_refusal[] =
        "pgtree: SIGKILL is refused. On a PostgreSQL backend it makes the postmaster end every\n"
        "session, lose their open transactions and run crash recovery. Use 'pgtree terminate PID'\n"
        "(SIGTERM, like pg_terminate_backend) or 'pgtree cancel PID' (SIGINT) instead.\n";

/* Options that every command takes, wherever they are on the line. */
static const char *cluster_opt = NULL;  /* --cluster NAME */
static const char *columns_opt = NULL;  /* -o/--output COLUMNS */
static bool no_headings = false, raw_out = false;

typedef struct Command {
        const char *name;
        const char *args;       /* after the name, for the usage line */
        const char *summary;
        const char *options;    /* the command's own options, one per line, or NULL */
} Command;

static const Command commands[] = {
        { "status", "", "the daemon, in short (--cluster: that cluster's line)", NULL },
        { "tree", "[--group]", "the process forest of every cluster, lock chains under each",
          "  --group                      client backends under their application_name\n" },
        { "sessions", "[--user U] [--database D] [--app A] [--state S] [--sort KEY] [--all]",
          "client backends as a table (filters are shell globs)",
          "  --user, --database, --app, --state GLOB   only the sessions that match\n"
          "  --sort pid|age|duration|cpu|memory|user   the order (largest first, names A-Z)\n"
          "  --all                        also pgtreed's own connections (known by backend pid, not application_name)\n"
          "  -o, --output COLUMNS         columns (comma-separated; +COL adds to the default):\n"
          "                               pid cluster user database application client state for xact wait\n"
          "                               blocked_by blocking cpu priv type query\n"
          "  --no-headings                no heading line\n"
          "  --raw                        one space between columns, blanks in values as \\x20\n" },
        { "clusters", "", "the clusters pgtreed watches, as a table",
          "  -o, --output COLUMNS         name pid port data_directory status activity enforce sessions\n"
          "  --no-headings, --raw         as for sessions\n" },
        { "locks", "", "lock chains: each root blocker and the sessions waiting behind it", NULL },
        { "top", "[--flat] [--sort cpu|duration|memory|pid] [--filter EXPR] [--no-idle]",
          "the live view, one refresh per scan cycle (keys: ? inside)",
          "  --flat                       the sessions table instead of the tree\n"
          "  --sort KEY                   cpu, duration, memory or pid\n"
          "  --filter EXPR                user=GLOB db=GLOB app=GLOB state=GLOB cluster=GLOB, or a word\n"
          "  --no-idle                    hide idle sessions\n" },
        { "show", "PID", "everything known about one process, and the lock chains it is in", NULL },
        { "orphans", "", "PostgreSQL processes with no live postmaster, and orphan findings", NULL },
        { "long", "", "long runners (queries, idle in transaction, transactions, lock waits with their root blocker)", NULL },
        { "events", "[--since WHEN] [--follow] [-n N] [--directory DIR | --file FILE...] [--host NAME]",
          "pgtreed's journal entries",
          "  --since WHEN                 '2026-11-21 10:00:00', or a duration ago such as 1h\n"
          "  --follow, -f                 keep printing new entries\n"
          "  -n N                         the last N entries (default 50)\n"
          "  --directory DIR, --file FILE a central journal (systemd-journal-remote)\n"
          "  --host NAME                  only entries of that host\n"
          "  with --json: a JSON array ([] when empty); with --follow one object per line\n" },
        { "cancel", "PID | --app NAME [--yes] [--dry-run]", "SIGINT to a client backend (like pg_cancel_backend)",
          "  --app NAME                   every session of an application_name group (asks first)\n"
          "  --yes, -y                    do not ask\n"
          "  --dry-run                    say what would be done\n" },
        { "terminate", "PID | --app NAME [--yes] [--dry-run]", "SIGTERM to a client backend (like pg_terminate_backend)",
          "  --app NAME                   every session of an application_name group (asks first)\n"
          "  --yes, -y                    do not ask\n"
          "  --dry-run                    say what would be done\n" },
        { "reload", "", "make pgtreed re-read its configuration", NULL },
        { "metrics", "", "Prometheus metrics (--cluster: that cluster's series)", NULL },
        { "help", "[COMMAND]", "this text, or one command's", NULL },
};

static const Command *find_command(const char *name) {
        for (size_t i = 0; name && i < ELEMENTSOF(commands); i++)
                if (!strcmp(commands[i].name, name))
                        return &commands[i];
        return NULL;
}

static const char global_options[] =
        "  --socket PATH                pgtreed's control socket (default /run/pgtree/pgtree.sock, or $PGTREE_SOCKET)\n"
        "  --cluster NAME               only that cluster (its name, [cluster] section or data directory)\n"
        "  --json                       the daemon's reply as JSON\n"
        "  -h --help                    this text (pgtree COMMAND --help: that command's)\n"
        "  --version                    the version\n";

static void help(void) {
        printf("Usage: pgtree [OPTIONS] COMMAND [ARGS]   (options go before or after the command)\n\nCommands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                char head[160];
                snprintf(head, sizeof head, "%s%s%s", commands[i].name, commands[i].args[0] ? " " : "", commands[i].args);
                if (strlen(head) <= 28)
                        printf("  %-28s %s\n", head, commands[i].summary);
                else
                        printf("  %s\n  %-28s %s\n", head, "", commands[i].summary);
                if (commands[i].options)
                        fputs(commands[i].options, stdout);
        }
        printf("\nOptions:\n%s", global_options);
        printf("\n"
               "pgtree never sends SIGKILL; asking for it (kill -9, --signal 9, ...) is refused.\n"
               "Exit codes: 0 ok, 1 failed/refused, 2 usage, 3 SIGKILL refused, 4 permission denied,\n"
               "5 daemon not running, 6 no such process.\n");
}

static void help_command(const Command *c) {
        printf("Usage: pgtree [OPTIONS] %s%s%s\n\n%s\n", c->name, c->args[0] ? " " : "", c->args, c->summary);
        if (c->options)
                printf("\nOptions:\n%s", c->options);
        printf("\nOptions of every command:\n%s", global_options);
        printf("\nSee pgtree(1).\n");
}

/* ---- talking to the daemon ---- */

static int call_wait_ms = 30000;

static int call(const char *method, json_object *params, json_object **ret, char **error) {
        /* a Signal reply waits for managed servers' answers (action_timeout, at most 30s) */
        call_wait_ms = strstr(method, ".Signal") ? 60000 : 30000;
        return varlink_call_once(socket_path, method, params, call_wait_ms, 64 * 1024 * 1024, ret, error);
}

static int report_call_error(int r) {
        if (r == -ENOENT || r == -ECONNREFUSED) {
                fprintf(stderr, "pgtree: pgtreed is not running (no daemon on %s)\n", socket_path);
                return EXIT_NO_DAEMON;
        }
        if (r == -EACCES || r == -EPERM) {
                fprintf(stderr, "pgtree: access to %s denied: you need to be root or in the pgtree group (to read) or the "
                        "pgtree-admin group (to act)\n", socket_path);
                return EXIT_DENIED;
        }
        if (r == -EIO) {
                fprintf(stderr, "pgtree: pgtreed on %s closed the connection without a reply (see its journal: "
                        "journalctl -u pgtreed)\n", socket_path);
                return EXIT_FAILED;
        }
        if (r == -ETIMEDOUT) {
                fprintf(stderr, "pgtree: pgtreed on %s did not answer within %ds\n", socket_path, call_wait_ms / 1000);
                return EXIT_FAILED;
        }
        fprintf(stderr, "pgtree: talking to pgtreed on %s failed: %s\n", socket_path, strerror(-r));
        return EXIT_FAILED;
}

static const char *get_str(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && v ? json_object_get_string(v) : NULL;
}

static int report_error(const char *error, json_object *params) {
        if (!strcmp(error, "io.pgtree.SigkillRefused")) {
                fputs(sigkill_refusal, stderr);
                return EXIT_SIGKILL;
        }
        if (!strcmp(error, "io.pgtree.PermissionDenied")) {
                fprintf(stderr, "pgtree: permission denied: %s\n", get_str(params, "reason") ?: "");
                return EXIT_DENIED;
        }
        if (!strcmp(error, "io.pgtree.TooManyConnections") || !strcmp(error, "io.pgtree.TooManyRequests")) {
                fprintf(stderr, "pgtree: pgtreed refused this connection: %s (limit %s); try again later\n",
                        get_str(params, "reason") ?: "too many requests", get_str(params, "limit") ?: "?");
                return EXIT_FAILED;
        }
        if (!strcmp(error, "org.varlink.service.InvalidParameter")) {
                fprintf(stderr, "pgtree: pgtreed refused the request: invalid parameter %s\n", get_str(params, "parameter") ?: "?");
                return EXIT_FAILED;
        }
        if (!strcmp(error, "io.pgtree.AmbiguousPid")) {
                json_object *cl;
                fprintf(stderr, "pgtree: pid %s is a session of more than one cluster (", get_str(params, "pid") ?: "?");
                if (json_object_object_get_ex(params, "clusters", &cl) && json_object_is_type(cl, json_type_array))
                        for (size_t i = 0; i < json_object_array_length(cl); i++)
                                fprintf(stderr, "%s%s", i ? ", " : "", json_object_get_string(json_object_array_get_idx(cl, i)));
                fputs("): say which with --cluster NAME\n", stderr);
                return EXIT_USAGE;
        }
        if (!strcmp(error, "io.pgtree.NoSuchProcess")) {
                fprintf(stderr, "pgtree: no PostgreSQL process with pid %s on this host\n", get_str(params, "pid") ?: "?");
                return EXIT_NO_PROCESS;
        }
        if (!strcmp(error, "io.pgtree.ConfigInvalid")) {
                fprintf(stderr, "pgtree: the configuration has errors; pgtreed keeps the running one:\n");
                json_object *errs;
                if (json_object_object_get_ex(params, "errors", &errs))
                        for (size_t i = 0; i < json_object_array_length(errs); i++)
                                fprintf(stderr, "  %s\n", json_object_get_string(json_object_array_get_idx(errs, i)));
                return EXIT_FAILED;
        }
        fprintf(stderr, "pgtree: %s %s\n", error, json_object_to_json_string_ext(params, JSON_C_TO_STRING_PLAIN));
        return EXIT_FAILED;
}

/* Calls method; on success hands the reply to show (or prints it as JSON with --json). */
static int run(const char *method, json_object *params, int (*show)(json_object *)) {
        json_object *reply;
        char *error;
        int r = call(method, params, &reply, &error);
        if (r < 0)
                return report_call_error(r);
        if (error) {
                int ex = report_error(error, reply);
                free(error);
                json_object_put(reply);
                return ex;
        }
        if (json_out || !show) {
                puts(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                r = EXIT_OK;
        } else
                r = show(reply);
        json_object_put(reply);
        return r;
}

/* ---- printing ---- */

static void safe(FILE *out, const char *s) {
        for (; s && *s; s++)
                fputc((unsigned char) *s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static int show_status(json_object *o) {
        printf("pgtreed %s, pid %s, up %ss\n", get_str(o, "version"), get_str(o, "pid"), get_str(o, "uptime_s"));
        printf("clusters: %s   client backends: %s   orphans: %s   open findings: %s\n", get_str(o, "clusters"),
               get_str(o, "client_backends"), get_str(o, "orphans"), get_str(o, "open_findings"));
        printf("default enforcement: %s   config: %s   interval: %ss   cycles: %s (last %.3fs)\n",
               !strcmp(get_str(o, "enforce") ?: "false", "true") ? "on" : "off (dry run)", get_str(o, "config") ?: "(defaults)",
               get_str(o, "interval_s"), get_str(o, "cycles"), atof(get_str(o, "last_cycle_s") ?: "0"));
        json_object *un, *en;
        if (json_object_object_get_ex(o, "enforcing", &en) && json_object_array_length(en) > 0) {
                printf("enforcing on:");
                for (size_t i = 0; i < json_object_array_length(en); i++)
                        fputc(' ', stdout), safe(stdout, json_object_get_string(json_object_array_get_idx(en, i)));
                printf("\n");
        }
        if (json_object_object_get_ex(o, "unreachable", &un) && json_object_array_length(un) > 0) {
                printf("pg_stat_activity unavailable on:");
                for (size_t i = 0; i < json_object_array_length(un); i++)
                        fputc(' ', stdout), safe(stdout, json_object_get_string(json_object_array_get_idx(un, i)));
                printf("\n");
        }
        json_object *ch;
        for (size_t i = 0; json_object_object_get_ex(o, "server_changes", &ch) && json_object_is_type(ch, json_type_array) &&
                           i < json_object_array_length(ch);
             i++) {
                json_object *x = json_object_array_get_idx(ch, i), *old = NULL, *new = NULL;
                json_object_object_get_ex(x, "old", &old);
                json_object_object_get_ex(x, "new", &new);
                time_t at = (time_t) atof(get_str(x, "at") ?: "0");
                struct tm tm;
                char when[40] = "?";
                if (localtime_r(&at, &tm))
                        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
                printf("server changed behind ");
                safe(stdout, get_str(x, "cluster") ?: "?");
                printf(" (");
                safe(stdout, get_str(x, "server") ?: "?");
                printf(") at %s: system_identifier ", when);
                safe(stdout, (old ? get_str(old, "system_identifier") : NULL) ?: "unknown");
                printf(" started %s → system_identifier ", (old ? get_str(old, "started") : NULL) ?: "?");
                safe(stdout, (new ? get_str(new, "system_identifier") : NULL) ?: "unknown");
                printf(" started %s; %s pending action(s) dropped; %s change(s) so far\n",
                       (new ? get_str(new, "started") : NULL) ?: "?", get_str(x, "actions_dropped") ?: "0",
                       get_str(x, "changes") ?: "1");
        }
        return EXIT_OK;
}

static int show_text(json_object *o) {
        const char *text = get_str(o, "text");
        if (!text)
                return EXIT_FAILED;
        if (!color) {
                fputs(text, stdout);
                return EXIT_OK;
        }
        /* on a terminal: headings bold, orphans and findings red */
        const char *line = text;
        while (*line) {
                const char *nl = strchr(line, '\n');
                size_t l = nl ? (size_t) (nl - line) + 1 : strlen(line);
                const char *on = !strncmp(line, "cluster ", 8) ? "\033[1m"
                               : !strncmp(line, "ORPHANS", 7) || !strncmp(line, "FINDINGS", 8) || strstr(line, "!! [") ? "\033[1;31m"
                                                                                                                      : NULL;
                if (on)
                        fputs(on, stdout);
                fwrite(line, 1, on && nl ? l - 1 : l, stdout);
                if (on)
                        fputs(nl ? "\033[0m\n" : "\033[0m", stdout);
                line += l;
        }
        return EXIT_OK;
}

static void duration(double s, char *buf, size_t size) {
        format_duration(s, buf, size);
}

/* The terminal's width when stdout is one (else COLUMNS, else 0: do not cut). */
static size_t term_width(void) {
        struct winsize ws;
        if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
                return ws.ws_col;
        const char *c = getenv("COLUMNS");
        return c && atoi(c) > 0 && isatty(STDOUT_FILENO) ? (size_t) atoi(c) : 0;
}

/* Query text on one line: line breaks and runs of blanks become one space, control characters
 * '?'; cut to max characters (0: whole) with "…" (UTF-8) or "..." marking the cut. */
static char *one_line(const char *q, size_t max) {
        size_t n = strlen(q ?: "");
        char *out = malloc(n + 4);
        if (!out)
                return NULL;
        size_t len = 0, chars = 0;
        bool blank = true, cut = false;
        for (const unsigned char *c = (const unsigned char *) (q ?: ""); *c; c++) {
                bool sp = *c == ' ' || *c == '\n' || *c == '\t' || *c == '\r';
                if (sp && blank)
                        continue;
                blank = sp;
                if ((*c & 0xc0) != 0x80 && max && ++chars > max) {
                        cut = true;
                        break;
                }
                out[len++] = sp ? ' ' : *c < 0x20 || *c == 0x7f ? '?' : (char) *c;
        }
        while (len > 0 && out[len - 1] == ' ')
                len--;
        if (cut && len >= 1) {
                /* room for the mark: drop the last character */
                while (len > 0 && ((unsigned char) out[len - 1] & 0xc0) == 0x80)
                        len--;
                if (len > 0)
                        len--;
                out[len++] = '>';
        }
        out[len] = 0;
        return out;
}

static double parse_iso(const char *s) {
        if (!s)
                return 0;
        struct tm tm = {};
        if (!strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm))
                return 0;
        return (double) timegm(&tm);
}

/* ---- tables (sessions, clusters): chosen columns, headings or not, aligned, tab or raw ---- */

typedef struct TableColumn {
        const char *name;       /* for -o, lower case */
        const char *heading;
        bool in_default;
} TableColumn;

/* Parses -o against the columns: "a,b,c" (those), "+a,b" (the default ones and these). Fills
 * chosen with indexes; returns how many, or -1 after saying what is wrong. */
static int choose_columns(const TableColumn *cols, size_t n, const char *spec, size_t *chosen, size_t max) {
        size_t k = 0;
        if (!spec || *spec == '+') {
                for (size_t i = 0; i < n && k < max; i++)
                        if (cols[i].in_default)
                                chosen[k++] = i;
                if (!spec)
                        return (int) k;
                spec++;
        }
        _cleanup_free_ char *copy = strdup(spec);
        if (!copy)
                return -1;
        char *save = NULL;
        for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
                size_t i;
                for (i = 0; i < n; i++)
                        if (!strcasecmp(w, cols[i].name) || !strcasecmp(w, cols[i].heading))
                                break;
                if (i == n) {
                        fprintf(stderr, "pgtree: unknown column '%s'; the columns are:", w);
                        for (size_t j = 0; j < n; j++)
                                fprintf(stderr, " %s", cols[j].name);
                        fprintf(stderr, "\n");
                        return -1;
                }
                if (k >= max) {
                        fprintf(stderr, "pgtree: too many columns in -o\n");
                        return -1;
                }
                chosen[k++] = i;
        }
        if (k == 0) {
                fprintf(stderr, "pgtree: -o names no column\n");
                return -1;
        }
        return (int) k;
}

/* Prints cells[row][chosen column]: aligned on a terminal (a last QUERY column fills what is left
 * of the line, cut), tab-separated otherwise, or with --raw one space apart with blanks, '\\' and
 * control characters escaped as \\xNN (like lsblk --raw). Frees the cells. */
static void print_table(const TableColumn *cols, const size_t *chosen, size_t ncol, char ***cells, size_t nrows,
                        const char *fill_column) {
        size_t *width = calloc(ncol ? ncol : 1, sizeof(size_t));
        if (!width)
                return;
        for (size_t c = 0; c < ncol; c++) {
                width[c] = strlen(cols[chosen[c]].heading);
                for (size_t i = 0; i < nrows; i++)
                        if (cells[i] && cells[i][c] && strlen(cells[i][c]) > width[c])
                                width[c] = strlen(cells[i][c]);
        }
        bool tty = isatty(STDOUT_FILENO) && !raw_out;
        for (size_t i = 0; i <= nrows; i++) {
                bool head = i == 0;
                if (head && no_headings)
                        continue;
                char **row = head ? NULL : cells[i - 1];
                if (!head && !row)
                        continue;
                for (size_t c = 0; c < ncol; c++) {
                        const char *v = head ? cols[chosen[c]].heading : row[c] ? row[c] : "-";
                        bool last = c + 1 == ncol;
                        if (raw_out) {
                                if (c)
                                        putchar(' ');
                                for (const unsigned char *x = (const unsigned char *) v; *x; x++)
                                        if (*x <= ' ' || *x == '\\' || *x == 0x7f)
                                                printf("\\x%02x", *x);
                                        else
                                                putchar(*x);
                        } else if (!tty) {
                                printf("%s", c ? "\t" : "");
                                safe(stdout, v);
                        } else if (last && fill_column && !strcmp(cols[chosen[c]].name, fill_column)) {
                                size_t used = 0, tw = term_width();
                                for (size_t k = 0; k < c; k++)
                                        used += width[k] + 2;
                                _cleanup_free_ char *cut = one_line(v, tw > used + 1 ? tw - used : tw ? 1 : 0);
                                printf("%s", c ? "  " : "");
                                safe(stdout, cut ?: "");
                        } else {
                                printf("%s", c ? "  " : "");
                                safe(stdout, v);
                                if (!last)
                                        for (size_t k = strlen(v); k < width[c]; k++)
                                                putchar(' ');
                        }
                }
                printf("\n");
        }
        for (size_t i = 0; i < nrows; i++) {
                for (size_t c = 0; cells[i] && c < ncol; c++)
                        free(cells[i][c]);
                free(cells[i]);
        }
        free(cells);
        free(width);
}

static const TableColumn session_columns[] = {
        { "pid", "PID", true },         { "cluster", "CLUSTER", true },     { "user", "USER", true },
        { "database", "DATABASE", true }, { "application", "APPLICATION", true }, { "client", "CLIENT", true },
        { "state", "STATE", true },     { "for", "FOR", true },             { "xact", "XACT", true },
        { "wait", "WAIT", true },       { "cpu", "CPU%", true },            { "priv", "PRIV", true },
        { "blocked_by", "BLOCKED_BY", false }, { "blocking", "BLOCKING", false }, { "type", "TYPE", false },
        { "query", "QUERY", true },
};

static char *join_pids(json_object *arr) {
        char buf[256] = "";
        for (size_t i = 0; arr && json_object_is_type(arr, json_type_array) && i < json_object_array_length(arr); i++) {
                size_t l = strlen(buf);
                snprintf(buf + l, sizeof buf - l, "%s%d", i ? "," : "", json_object_get_int(json_object_array_get_idx(arr, i)));
        }
        return strdup(buf);
}

static char *session_cell(json_object *s, const char *col, time_t now) {
        char buf[128] = "";
        const char *state = get_str(s, "state");
        if (!strcmp(col, "for")) {
                double since = parse_iso(get_str(s, state && !strcmp(state, "active") ? "query_start" : "state_change"));
                if (since > 0)
                        duration((double) now - since, buf, sizeof buf);
        } else if (!strcmp(col, "xact")) {
                double xact = parse_iso(get_str(s, "xact_start"));
                if (xact > 0)
                        duration((double) now - xact, buf, sizeof buf);
        } else if (!strcmp(col, "wait")) {
                if (get_str(s, "wait_event_type"))
                        snprintf(buf, sizeof buf, "%s:%s", get_str(s, "wait_event_type"), get_str(s, "wait_event") ?: "");
        } else if (!strcmp(col, "cpu"))
                snprintf(buf, sizeof buf, "%.1f", atof(get_str(s, "cpu_percent") ?: "0"));
        else if (!strcmp(col, "priv"))
                snprintf(buf, sizeof buf, "%.1fM", atof(get_str(s, "rss_anon_kb") ?: "0") / 1024);
        else if (!strcmp(col, "blocked_by")) {
                json_object *v;
                return json_object_object_get_ex(s, "blocked_by", &v) && v ? join_pids(v) : strdup("");
        } else if (!strcmp(col, "query"))
                return one_line(get_str(s, "query"), 0);
        else {
                const char *key = !strcmp(col, "application") ? "application_name" : !strcmp(col, "type") ? "backend_type" : col;
                return strdup(get_str(s, key) ?: "");
        }
        return strdup(buf);
}

static int show_sessions(json_object *o) {
        json_object *arr;
        if (!json_object_object_get_ex(o, "sessions", &arr))
                return EXIT_FAILED;
        size_t chosen[64];
        int ncol = choose_columns(session_columns, ELEMENTSOF(session_columns), columns_opt, chosen, ELEMENTSOF(chosen));
        if (ncol < 0)
                return EXIT_USAGE;
        time_t now = time(NULL);
        size_t n = json_object_array_length(arr);
        char ***cells = calloc(n + 1, sizeof(char **));
        for (size_t i = 0; cells && i < n; i++) {
                json_object *s = json_object_array_get_idx(arr, i);
                if (!(cells[i] = calloc((size_t) ncol, sizeof(char *))))
                        continue;
                for (int c = 0; c < ncol; c++) {
                        char *v = session_cell(s, session_columns[chosen[c]].name, now);
                        if (v && !*v && !raw_out) {
                                free(v);
                                v = strdup("-");
                        }
                        cells[i][c] = v;
                }
        }
        if (cells)
                print_table(session_columns, chosen, (size_t) ncol, cells, n, "query");
        return EXIT_OK;
}

static const TableColumn cluster_columns[] = {
        { "name", "NAME", true },       { "pid", "PID", true },         { "port", "PORT", true },
        { "data_directory", "DATA_DIRECTORY", true }, { "status", "STATUS", true }, { "sessions", "SESSIONS", true },
        { "enforce", "ENFORCE", true }, { "activity", "ACTIVITY", true },
};

static int show_clusters(json_object *o) {
        json_object *arr;
        if (!json_object_object_get_ex(o, "clusters", &arr))
                return EXIT_FAILED;
        size_t chosen[16];
        int ncol = choose_columns(cluster_columns, ELEMENTSOF(cluster_columns), columns_opt, chosen, ELEMENTSOF(chosen));
        if (ncol < 0)
                return EXIT_USAGE;
        size_t n = json_object_array_length(arr);
        char ***cells = calloc(n + 1, sizeof(char **));
        for (size_t i = 0; cells && i < n; i++) {
                json_object *c = json_object_array_get_idx(arr, i), *pm = NULL, *procs = NULL;
                json_object_object_get_ex(c, "postmaster", &pm);
                json_object_object_get_ex(c, "processes", &procs);
                size_t sessions = 0;
                for (size_t k = 0; procs && k < json_object_array_length(procs); k++) {
                        json_object *p = json_object_array_get_idx(procs, k), *own;
                        const char *bt = get_str(p, "backend_type");
                        if (bt && !strcmp(bt, "client backend") &&
                            !(json_object_object_get_ex(p, "pgtree_connection", &own) && json_object_get_boolean(own)))
                                sessions++;
                }
                if (!(cells[i] = calloc((size_t) ncol, sizeof(char *))))
                        continue;
                for (int k = 0; k < ncol; k++) {
                        const char *col = cluster_columns[chosen[k]].name;
                        char buf[32];
                        const char *v = !strcmp(col, "name") ? get_str(c, "name")
                                      : !strcmp(col, "pid") ? get_str(pm, "pid")
                                      : !strcmp(col, "port") ? get_str(pm, "port")
                                      : !strcmp(col, "data_directory") ? get_str(pm, "data_directory")
                                      : !strcmp(col, "status") ? get_str(pm, "status")
                                      : !strcmp(col, "enforce") ? (!strcmp(get_str(c, "enforce") ?: "", "true") ? "yes" : "no")
                                      : !strcmp(col, "activity") ? get_str(c, "activity")
                                      : (snprintf(buf, sizeof buf, "%zu", sessions), buf);
                        cells[i][k] = strdup(v && *v ? v : raw_out ? "" : "-");
                }
        }
        if (cells)
                print_table(cluster_columns, chosen, (size_t) ncol, cells, n, NULL);
        return EXIT_OK;
}

static int show_locks(json_object *o) {
        const char *text = get_str(o, "text");
        if (!text)
                return EXIT_FAILED;
        fputs(text, stdout);
        return EXIT_OK;
}

static void print_object(json_object *o, const char *indent) {
        json_object_object_foreach(o, key, val) {
                if (!val)
                        continue;
                printf("%s%-18s ", indent, key);
                safe(stdout, json_object_get_string(val));
                printf("\n");
        }
}

static void print_findings(json_object *fa) {
        size_t n = fa ? json_object_array_length(fa) : 0;
        if (n == 0) {
                printf("no open findings\n");
                return;
        }
        for (size_t i = 0; i < n; i++) {
                json_object *f = json_object_array_get_idx(fa, i);
                char d[32];
                duration(atof(get_str(f, "duration_s") ?: "0"), d, sizeof d);
                printf("%-22s pid %-7s %8s  ", get_str(f, "kind"), get_str(f, "pid"), d);
                safe(stdout, get_str(f, "cluster") ?: "-");
                if (get_str(f, "container")) {
                        printf(" in container ");
                        safe(stdout, get_str(f, "container"));
                        if (get_str(f, "ns_pid"))
                                printf(" (pid %s there)", get_str(f, "ns_pid"));
                }
                printf("  ");
                safe(stdout, get_str(f, "user") ?: "?");
                if (get_str(f, "application_name")) {
                        printf(" [");
                        safe(stdout, get_str(f, "application_name"));
                        printf("]");
                }
                if (get_str(f, "detail")) {
                        printf("  ");
                        safe(stdout, get_str(f, "detail"));
                }
                if (get_str(f, "command")) { /* foreign_process: not PostgreSQL, below its backend */
                        printf("  FOREIGN uid %s: ", get_str(f, "uid") ?: "?");
                        safe(stdout, get_str(f, "command"));
                        if (get_str(f, "backend_pid"))
                                printf("  (backend %s%s)", get_str(f, "backend_pid"),
                                       json_object_get_boolean(json_object_object_get(f, "detached")) ? ", detached" : "");
                }
                if (get_str(f, "backend_xmin_age"))
                        printf("  xmin age %s", get_str(f, "backend_xmin_age"));
                int used = printf("  → %s%s%s%s", get_str(f, "rule") ? "rule " : "", get_str(f, "rule") ?: "",
                                  get_str(f, "rule") ? ": " : "", get_str(f, "action"));
                (void) used;
                json_object *b;
                if (json_object_object_get_ex(f, "blocker", &b) && b && get_str(b, "query")) {
                        size_t tw = term_width();
                        _cleanup_free_ char *q = one_line(get_str(b, "query"), tw > 30 ? tw - 24 : 0);
                        printf("\n    root blocker %s runs: ", get_str(b, "pid"));
                        safe(stdout, q ?: "");
                }
                if (get_str(f, "query")) {
                        /* one line, cut to the terminal's width: the full text is in show and --json */
                        size_t tw = term_width();
                        _cleanup_free_ char *q = one_line(get_str(f, "query"), tw > 10 ? tw - 4 : 0);
                        printf("\n    ");
                        safe(stdout, q ?: "");
                }
                printf("\n");
        }
}

/* One node of a blocking tree (Locks, Show) and what it blocks. */
static void print_chain(json_object *n, unsigned depth, pid_t mark) {
        printf("  ");
        for (unsigned d = 1; d < depth; d++)
                printf("   ");
        int pid = json_object_get_int(json_object_object_get_ex(n, "pid", NULL) ? json_object_object_get(n, "pid") : NULL);
        printf("%s%d", depth ? "└─ " : "", pid);
        if (get_str(n, "user")) {
                printf("  ");
                safe(stdout, get_str(n, "user"));
                if (get_str(n, "database")) {
                        printf("@");
                        safe(stdout, get_str(n, "database"));
                }
        }
        if (get_str(n, "state")) {
                char d[32] = "";
                if (get_str(n, "state_s"))
                        duration(atof(get_str(n, "state_s")), d, sizeof d);
                printf("  ");
                safe(stdout, get_str(n, "state"));
                if (*d)
                        printf(" %s", d);
        }
        if (get_str(n, "wait_event_type") && !strcmp(get_str(n, "wait_event_type"), "Lock"))
                printf("  waits for %s", get_str(n, "wait_event") ?: "a lock");
        json_object *v;
        if (depth == 0)
                printf(json_object_object_get_ex(n, "cycle", &v) ? "  [cycle of waiting sessions]" : "  [root blocker]");
        if (pid == mark)
                printf("  ← this one");
        if (get_str(n, "query")) {
                size_t tw = term_width();
                _cleanup_free_ char *q = one_line(get_str(n, "query"), tw > 12 ? tw - 8 - 3 * depth : 0);
                printf("\n  ");
                for (unsigned d = 0; d < depth; d++)
                        printf("   ");
                printf("    ");
                safe(stdout, q ?: "");
        }
        printf("\n");
        if (json_object_object_get_ex(n, "blocks", &v))
                for (size_t i = 0; i < json_object_array_length(v); i++)
                        print_chain(json_object_array_get_idx(v, i), depth + 1, mark);
}

static int show_show(json_object *o) {
        json_object *p, *fa, *chains;
        if (!json_object_object_get_ex(o, "process", &p))
                return EXIT_FAILED;
        printf("cluster            %s\n", get_str(o, "cluster") ?: "(orphan: no live postmaster)");
        print_object(p, "");
        if (json_object_object_get_ex(o, "lock_chains", &chains) && json_object_array_length(chains) > 0) {
                printf("\nlock chains (root blocker → the sessions it blocks):\n");
                for (size_t i = 0; i < json_object_array_length(chains); i++)
                        print_chain(json_object_array_get_idx(chains, i), 0, (pid_t) atoi(get_str(p, "pid") ?: "0"));
        }
        if (json_object_object_get_ex(o, "findings", &fa) && json_object_array_length(fa) > 0) {
                printf("\nfindings:\n");
                print_findings(fa);
        }
        return EXIT_OK;
}

static int show_orphans(json_object *o) {
        json_object *oa, *fa;
        json_object_object_get_ex(o, "orphans", &oa);
        json_object_object_get_ex(o, "findings", &fa);
        size_t n = oa ? json_object_array_length(oa) : 0;
        if (n == 0)
                printf("no orphan processes\n");
        for (size_t i = 0; i < n; i++) {
                json_object *p = json_object_array_get_idx(oa, i);
                printf("%-7s ppid %-7s %-16s ", get_str(p, "pid"), get_str(p, "ppid"), get_str(p, "backend_type"));
                safe(stdout, get_str(p, "data_directory") ?: "(data directory unknown)");
                if (get_str(p, "container")) { /* where it runs, and its pid there */
                        printf(" in container ");
                        safe(stdout, get_str(p, "container"));
                        if (get_str(p, "ns_pid"))
                                printf(" (pid %s there)", get_str(p, "ns_pid"));
                }
                printf("  ");
                safe(stdout, get_str(p, "title"));
                printf("\n");
        }
        printf("\n");
        print_findings(fa);
        return EXIT_OK;
}

static int show_long(json_object *o) {
        json_object *fa;
        json_object_object_get_ex(o, "findings", &fa);
        print_findings(fa);
        return EXIT_OK;
}

static int show_signal(json_object *o) {
        json_object *arr;
        if (!json_object_object_get_ex(o, "results", &arr))
                return EXIT_FAILED;
        int ex = EXIT_OK;
        size_t n = json_object_array_length(arr);
        if (n == 0) {
                printf("no matching session\n");
                return EXIT_FAILED;
        }
        for (size_t i = 0; i < n; i++) {
                json_object *r = json_object_array_get_idx(arr, i);
                const char *res = get_str(r, "result") ?: "?";
                const char *reason = get_str(r, "reason") ?: "";
                /* "sent SIGTERM to pid N" says it all; other results are named before their reason */
                if (!strncmp(reason, res, strlen(res)))
                        printf("pid %-7s ", get_str(r, "pid"));
                else
                        printf("pid %-7s %-8s ", get_str(r, "pid"), res);
                safe(stdout, reason);
                printf("\n");
                if (strcmp(res, "sent") && strcmp(res, "would"))
                        ex = EXIT_FAILED;
        }
        return ex;
}

static int show_metrics(json_object *o) {
        fputs(get_str(o, "text") ?: "", stdout);
        return EXIT_OK;
}

static int show_reload(json_object *o) {
        printf("pgtreed reloaded its configuration\n");
        return EXIT_OK;
}

/* ---- events, from the journal ---- */

static const char *const message_ids[] = {
        MSGID_STARTED, MSGID_STOPPED, MSGID_RELOADED, MSGID_CONFIG_INVALID, MSGID_CLUSTER_UNREACHABLE,
        MSGID_CLUSTER_REACHABLE, MSGID_FINDING_OPENED, MSGID_FINDING_ESCALATED, MSGID_FINDING_RESOLVED,
        MSGID_ACTION_SENT, MSGID_ACTION_DRY_RUN, MSGID_ACTION_REFUSED, MSGID_ACTION_FAILED,
        MSGID_ACTION_DID_NOT_EXIT, MSGID_ACTION_HELD_BACK, MSGID_ACTION_EXITED, MSGID_ALERT_RAN,
        MSGID_ALERT_FAILED, MSGID_SCAN_FAILED, MSGID_CLIENT_DENIED, MSGID_POSTMASTER_EXITED, MSGID_METRICS_FAILED,
        MSGID_REMOTE_SERVER_CHANGED,
};

/* Where events are read: the local journal, or a central one (a directory of journal files that
 * systemd-journal-remote writes, or the files themselves). host: only entries of that _HOSTNAME. */
typedef struct EventSource {
        const char *directory;
        const char *files[33];  /* NULL-terminated */
        size_t n_files;
        const char *host;
} EventSource;

static bool show_host = false;
/* --json without --follow: the entries as one array ([] when there are none) */
static json_object *events_array = NULL;

static void put_text(FILE *out, const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                fputc((unsigned char) s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i], out);
}

static void print_entry(sd_journal *j) {
        uint64_t usec;
        sd_journal_get_realtime_usec(j, &usec);
        if (json_out) {
                json_object *o = json_object_new_object();
                const void *data;
                size_t len;
                json_object_object_add(o, "__REALTIME_TIMESTAMP", json_object_new_uint64(usec));
                SD_JOURNAL_FOREACH_DATA(j, data, len) {
                        const char *eq = memchr(data, '=', len);
                        if (!eq)
                                continue;
                        char key[128];
                        size_t kl = (size_t) (eq - (const char *) data);
                        if (kl >= sizeof key || (strncmp(data, "PGTREE_", 7) && strncmp(data, "MESSAGE", 7) &&
                                                 strncmp(data, "PRIORITY", 8) && strncmp(data, "_PID", 4) &&
                                                 strncmp(data, "_HOSTNAME", 9)))
                                continue;
                        memcpy(key, data, kl);
                        key[kl] = 0;
                        json_object_object_add(o, key, json_object_new_string_len(eq + 1, (int) (len - kl - 1)));
                }
                if (events_array) {
                        json_object_array_add(events_array, o);
                        return;
                }
                puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
                return;
        }
        time_t t = (time_t) (usec / 1000000);
        struct tm tm;
        char when[32];
        localtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        const void *data;
        size_t len;
        if (sd_journal_get_data(j, "MESSAGE", &data, &len) >= 0) {
                printf("%s ", when);
                const void *host;
                size_t hl;
                if (show_host && sd_journal_get_data(j, "_HOSTNAME", &host, &hl) >= 0 && hl > 10) {
                        put_text(stdout, (const char *) host + 10, hl - 10);
                        printf(" ");
                }
                /* messages carry names anyone can choose (application_name, a lookalike's
                 * cluster_name): no control character reaches the terminal */
                put_text(stdout, (const char *) data + 8, len - 8);
                printf("\n");
        }
}

/* NULL if path is what we need (a directory, or a regular file), else why not. */
static const char *check_path(const char *path, bool directory) {
        struct stat st;
        if (stat(path, &st) < 0)
                return strerror(errno);
        if (directory && !S_ISDIR(st.st_mode))
                return "not a directory";
        if (!directory && !S_ISREG(st.st_mode))
                return S_ISDIR(st.st_mode) ? "a directory (use --directory)" : "not a regular file";
        return NULL;
}

static int open_events(const EventSource *src, sd_journal **ret) {
        const char *why;
        int r;
        if (src->directory) {
                if ((why = check_path(src->directory, true))) {
                        fprintf(stderr, "pgtree events: --directory %s: %s\n", src->directory, why);
                        return EXIT_USAGE;
                }
                r = sd_journal_open_directory(ret, src->directory, 0);
        } else if (src->n_files > 0) {
                for (size_t i = 0; i < src->n_files; i++)
                        if ((why = check_path(src->files[i], false))) {
                                fprintf(stderr, "pgtree events: --file %s: %s\n", src->files[i], why);
                                return EXIT_USAGE;
                        }
                r = sd_journal_open_files(ret, (const char **) src->files, 0);
        } else
                r = sd_journal_open(ret, SD_JOURNAL_LOCAL_ONLY);
        if (r < 0) {
                fprintf(stderr, "pgtree events: cannot open the journal%s%s: %s\n",
                        src->directory ? " in " : src->n_files ? " file " : "",
                        src->directory ? src->directory : src->n_files ? src->files[0] : "", strerror(-r));
                return EXIT_FAILED;
        }
        return EXIT_OK;
}

static int cmd_events(const EventSource *src, const char *since, bool follow, int count) {
        sd_journal *j;
        int r = open_events(src, &j);
        if (r != EXIT_OK)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(message_ids); i++) {
                char m[64];
                snprintf(m, sizeof m, "MESSAGE_ID=%s", message_ids[i]);
                sd_journal_add_match(j, m, 0);
        }
        if (cluster_opt) {
                _cleanup_free_ char *m = NULL;
                if (asprintf(&m, "PGTREE_CLUSTER=%s", cluster_opt) < 0) {
                        sd_journal_close(j);
                        return EXIT_FAILED;
                }
                sd_journal_add_conjunction(j);
                sd_journal_add_match(j, m, 0);
        }
        if (src->host) {
                _cleanup_free_ char *m = NULL;
                if (asprintf(&m, "_HOSTNAME=%s", src->host) < 0) {
                        sd_journal_close(j);
                        return EXIT_FAILED;
                }
                sd_journal_add_conjunction(j);
                sd_journal_add_match(j, m, 0);
        }
        show_host = src->directory || src->n_files;
        if (since) {
                uint64_t ago;
                struct tm tm = {};
                uint64_t at;
                if (parse_duration(since, &ago) == 0) {
                        struct timespec ts;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        at = (uint64_t) ts.tv_sec * 1000000ULL - ago;
                } else if (strptime(since, "%Y-%m-%d %H:%M:%S", &tm) || strptime(since, "%Y-%m-%d", &tm)) {
                        tm.tm_isdst = -1;
                        at = (uint64_t) mktime(&tm) * 1000000ULL;
                } else {
                        fprintf(stderr, "pgtree: --since: '%s' is neither a time (2026-11-21 10:00:00) nor a duration ago (1h)\n", since);
                        sd_journal_close(j);
                        return EXIT_USAGE;
                }
                sd_journal_seek_realtime_usec(j, at);
        } else {
                sd_journal_seek_tail(j);
                sd_journal_previous_skip(j, (uint64_t) count + 1);
        }
        int n = 0;
        if (json_out && !follow)
                events_array = json_object_new_array();
        while (sd_journal_next(j) > 0) {
                print_entry(j);
                n++;
        }
        if (events_array) {
                puts(json_object_to_json_string_ext(events_array, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(events_array);
                events_array = NULL;
        }
        fflush(stdout);
        while (follow) {
                r = sd_journal_wait(j, (uint64_t) -1);
                if (r < 0)
                        break;
                while (sd_journal_next(j) > 0)
                        print_entry(j);
                fflush(stdout);
        }
        if (n == 0 && !json_out)
                printf("no pgtree events in the journal%s\n", since ? " since then" : "");
        sd_journal_close(j);
        return EXIT_OK;
}

/* ---- the command line ---- */

/* "kill", "-9", "-KILL", "--signal=9", "SIGKILL"…; a bare number is a pid, not a signal. */
static bool is_kill_word(const char *a) {
        return (a[0] == '-' || a[0] < '0' || a[0] > '9') && signal_spelling_is_sigkill(a);
}

static int parse_pid(const char *s, json_object **params) {
        char *e;
        errno = 0;
        long v = s ? strtol(s, &e, 10) : 0;
        if (!s || errno || *e || v <= 0 || v > 0x7fffffff) {
                fprintf(stderr, "pgtree: '%s' is not a process id\n", s ? s : "");
                return -EINVAL;
        }
        *params = json_object_new_object();
        json_object_object_add(*params, "pid", json_object_new_int((int) v));
        return 0;
}

/* Adds --cluster to a call's parameters. */
static json_object *with_cluster(json_object *p) {
        if (!p)
                p = json_object_new_object();
        if (cluster_opt)
                json_object_object_add(p, "cluster", json_object_new_string(cluster_opt));
        return p;
}

static int cmd_signal(const char *action, int argc, char **argv) {
        const char *app = NULL;
        bool yes = false, dry = false;
        const char *pid = NULL;
        for (int i = 0; i < argc; i++) {
                if (is_kill_word(argv[i]) || ((!strcmp(argv[i], "--signal") || !strcmp(argv[i], "-s")) && i + 1 < argc &&
                                              (!strcmp(argv[i + 1], "9") || !strcasecmp(argv[i + 1], "kill") ||
                                               !strcasecmp(argv[i + 1], "sigkill")))) {
                        fputs(sigkill_refusal, stderr);
                        return EXIT_SIGKILL;
                }
                if (!strcmp(argv[i], "--app") && i + 1 < argc)
                        app = argv[++i];
                else if (!strncmp(argv[i], "--app=", 6))
                        app = argv[i] + 6;
                else if (!strcmp(argv[i], "--cluster") && i + 1 < argc)
                        cluster_opt = argv[++i];
                else if (!strncmp(argv[i], "--cluster=", 10))
                        cluster_opt = argv[i] + 10;
                else if (!strcmp(argv[i], "--yes") || !strcmp(argv[i], "-y"))
                        yes = true;
                else if (!strcmp(argv[i], "--dry-run"))
                        dry = true;
                else if (argv[i][0] != '-' && !pid)
                        pid = argv[i];
                else {
                        fprintf(stderr, "pgtree %s: unexpected argument '%s' (see pgtree %s --help)\n", action, argv[i], action);
                        return EXIT_USAGE;
                }
        }
        if (!app == !pid || (app && !strcmp(action, "cancel") && false)) {
                fprintf(stderr, "pgtree %s: give a PID or --app NAME\n", action);
                return EXIT_USAGE;
        }
        json_object *params;
        if (pid) {
                if (parse_pid(pid, &params) < 0)
                        return EXIT_USAGE;
        } else {
                params = json_object_new_object();
                json_object_object_add(params, "application_name", json_object_new_string(app));
        }
        json_object_object_add(params, "action", json_object_new_string(action));
        with_cluster(params);
        if (app && !dry && !yes) {
                /* show what would be ended, and ask */
                json_object *preview = json_object_get(params);
                json_object_object_add(preview, "dry_run", json_object_new_boolean(true));
                json_object *reply;
                char *error;
                int r = call(VARLINK_INTERFACE ".Signal", json_object_get(preview), &reply, &error);
                json_object_put(preview);
                if (r < 0) {
                        json_object_put(params);
                        return report_call_error(r);
                }
                if (error) {
                        int ex = report_error(error, reply);
                        free(error);
                        json_object_put(reply);
                        json_object_put(params);
                        return ex;
                }
                json_object *arr;
                json_object_object_get_ex(reply, "results", &arr);
                size_t n = arr ? json_object_array_length(arr) : 0;
                printf("%s would %s %zu session%s of application %s:\n", "pgtree", action, n, n == 1 ? "" : "s", app);
                for (size_t i = 0; i < n; i++) {
                        json_object *x = json_object_array_get_idx(arr, i);
                        printf("  pid %-7s ", get_str(x, "pid"));
                        safe(stdout, get_str(x, "reason"));
                        printf("\n");
                }
                json_object_put(reply);
                if (n == 0) {
                        json_object_put(params);
                        return EXIT_FAILED;
                }
                if (!isatty(STDIN_FILENO)) {
                        fprintf(stderr, "pgtree: not a terminal: add --yes to %s them\n", action);
                        json_object_put(params);
                        return EXIT_USAGE;
                }
                printf("%s them? [y/N] ", action);
                fflush(stdout);
                char answer[16] = "";
                if (!fgets(answer, sizeof answer, stdin) || (answer[0] != 'y' && answer[0] != 'Y')) {
                        printf("nothing done\n");
                        json_object_put(params);
                        return EXIT_FAILED;
                }
        }
        if (dry)
                json_object_object_add(params, "dry_run", json_object_new_boolean(true));
        return run(VARLINK_INTERFACE ".Signal", params, show_signal);
}

static int usage_error(const char *cmd, const char *what) {
        fprintf(stderr, "pgtree %s: %s (see pgtree %s --help)\n", cmd, what, cmd);
        return EXIT_USAGE;
}

static int unexpected(const char *cmd, const char *arg) {
        fprintf(stderr, "pgtree %s: unexpected argument '%s' (see pgtree %s --help)\n", cmd, arg, cmd);
        return EXIT_USAGE;
}

/* status --cluster NAME: that cluster's line, from the tree. */
static int show_cluster_status(json_object *o) {
        json_object *arr;
        if (!json_object_object_get_ex(o, "clusters", &arr) || json_object_array_length(arr) == 0) {
                fprintf(stderr, "pgtree: no cluster named %s\n", cluster_opt);
                return EXIT_FAILED;
        }
        columns_opt = NULL;
        return show_clusters(o);
}

/* metrics --cluster NAME: the series of that cluster (and the comments). */
static int show_metrics_of_cluster(json_object *o) {
        const char *text = get_str(o, "text") ?: "";
        _cleanup_free_ char *want = NULL;
        if (asprintf(&want, "cluster=\"%s\"", cluster_opt) < 0)
                return EXIT_FAILED;
        for (const char *line = text; *line;) {
                const char *nl = strchr(line, '\n');
                size_t l = nl ? (size_t) (nl - line) + 1 : strlen(line);
                _cleanup_free_ char *copy = strndup(line, l);
                if (copy && (line[0] == '#' || strstr(copy, want)))
                        fputs(copy, stdout);
                line += l;
        }
        return EXIT_OK;
}

int main(int argc, char **argv) {
        const char *env = getenv("PGTREE_SOCKET");
        if (env && *env)
                socket_path = env;
        /* options of every command, before or after it: taken out of the line; what is left is the
         * command and its own arguments */
        _cleanup_free_ char **rest_argv = calloc((size_t) argc + 1, sizeof(char *));
        if (!rest_argv)
                return EXIT_FAILED;
        int n_rest = 0;
        bool want_help = false, want_version = false, after_dashdash = false;
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                if (after_dashdash || a[0] != '-') {
                        rest_argv[n_rest++] = argv[i];
                        continue;
                }
                if (!strcmp(a, "--")) {
                        after_dashdash = true;
                        continue;
                }
                const char **value = !strcmp(a, "--socket") ? &socket_path
                                   : !strcmp(a, "--cluster") ? &cluster_opt
                                   : !strcmp(a, "-o") || !strcmp(a, "--output") ? &columns_opt : NULL;
                if (value) {
                        if (i + 1 >= argc || !argv[i + 1][0]) {
                                fprintf(stderr, "pgtree: %s needs %s (see --help)\n", a,
                                        value == &socket_path ? "a path" : value == &cluster_opt ? "a cluster name" : "column names");
                                return EXIT_USAGE;
                        }
                        *value = argv[++i];
                } else if (!strncmp(a, "--socket=", 9))
                        socket_path = a + 9;
                else if (!strncmp(a, "--cluster=", 10) && a[10])
                        cluster_opt = a + 10;
                else if (!strncmp(a, "--output=", 9) && a[9])
                        columns_opt = a + 9;
                else if (!strncmp(a, "-o", 2) && a[2])
                        columns_opt = a + 2;
                else if (!strcmp(a, "--json"))
                        json_out = true;
                else if (!strcmp(a, "--no-headings") || !strcmp(a, "--noheadings"))
                        no_headings = true;
                else if (!strcmp(a, "--raw"))
                        raw_out = true;
                else if (!strcmp(a, "-h") || !strcmp(a, "--help"))
                        want_help = true;
                else if (!strcmp(a, "--version"))
                        want_version = true;
                else
                        rest_argv[n_rest++] = argv[i]; /* the command's own option */
        }
        if (cluster_opt && (strlen(cluster_opt) > 4096 || strchr(cluster_opt, '\n'))) {
                fprintf(stderr, "pgtree: --cluster: not a cluster name\n");
                return EXIT_USAGE;
        }
        const char *cmd = NULL;
        int first = 0;
        /* the command is the first word that is not an option */
        for (int k = 0; k < n_rest && !cmd; k++)
                if (rest_argv[k][0] != '-') {
                        cmd = rest_argv[k];
                        first = k;
                }
        if (want_version && !cmd) {
                printf("pgtree %s\n", PGTREE_VERSION);
                return EXIT_OK;
        }
        if (!cmd) {
                for (int k = 0; k < n_rest; k++)
                        if (is_kill_word(rest_argv[k])) {
                                fputs(sigkill_refusal, stderr);
                                return EXIT_SIGKILL;
                        }
                if (n_rest > 0) {
                        fprintf(stderr, "pgtree: unknown option '%s' (see --help)\n", rest_argv[0]);
                        return EXIT_USAGE;
                }
                help();
                return want_help ? EXIT_OK : EXIT_USAGE;
        }
        /* options of the command must follow it */
        for (int k = 0; k < first; k++) {
                if (is_kill_word(rest_argv[k])) {
                        fputs(sigkill_refusal, stderr);
                        return EXIT_SIGKILL;
                }
                fprintf(stderr, "pgtree: unknown option '%s' (see --help)\n", rest_argv[k]);
                return EXIT_USAGE;
        }
        int rest = n_rest - first - 1;
        char **args = rest_argv + first + 1;
        color = !json_out && isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
        if (is_kill_word(cmd) || !strcmp(cmd, "signal")) {
                for (int k = 0; k < rest; k++)
                        if (!strcmp(args[k], "-15") || !strcmp(args[k], "-TERM"))
                                goto not_kill;
                fputs(sigkill_refusal, stderr);
                return EXIT_SIGKILL;
        not_kill:
                fprintf(stderr, "pgtree: use 'pgtree terminate PID' for SIGTERM\n");
                return EXIT_USAGE;
        }
        if (!strcmp(cmd, "help")) {
                if (rest == 0) {
                        help();
                        return EXIT_OK;
                }
                const Command *c = find_command(args[0]);
                if (!c || rest > 1) {
                        fprintf(stderr, "pgtree help: no command '%s' (see pgtree --help)\n", args[0]);
                        return EXIT_USAGE;
                }
                help_command(c);
                return EXIT_OK;
        }
        const Command *command = find_command(cmd);
        if (!command) {
                fprintf(stderr, "pgtree: unknown command '%s' (see --help)\n", cmd);
                return EXIT_USAGE;
        }
        if (want_help) {
                help_command(command);
                return EXIT_OK;
        }
        if ((columns_opt || no_headings || raw_out) && strcmp(cmd, "sessions") && strcmp(cmd, "clusters") &&
            strcmp(cmd, "status"))
                return usage_error(cmd, "-o, --no-headings and --raw are for tables (sessions, clusters)");
        if (!strcmp(cmd, "status")) {
                if (rest > 0)
                        return unexpected(cmd, args[0]);
                if (cluster_opt)
                        return run(VARLINK_INTERFACE ".Tree", with_cluster(NULL), show_cluster_status);
                return run(VARLINK_INTERFACE ".Status", NULL, show_status);
        }
        if (!strcmp(cmd, "tree")) {
                bool group = false;
                for (int k = 0; k < rest; k++) {
                        if (!strcmp(args[k], "--group"))
                                group = true;
                        else
                                return unexpected(cmd, args[k]);
                }
                json_object *p = with_cluster(NULL);
                if (!json_out)
                        json_object_object_add(p, "text", json_object_new_boolean(true));
                json_object_object_add(p, "group_by_application", json_object_new_boolean(group));
                if (!json_out && term_width() > 0)
                        json_object_object_add(p, "width", json_object_new_int((int) term_width()));
                return run(VARLINK_INTERFACE ".Tree", p, show_text);
        }
        if (!strcmp(cmd, "locks")) {
                if (rest > 0)
                        return unexpected(cmd, args[0]);
                json_object *p = with_cluster(NULL);
                if (!json_out)
                        json_object_object_add(p, "text", json_object_new_boolean(true));
                if (!json_out && term_width() > 0)
                        json_object_object_add(p, "width", json_object_new_int((int) term_width()));
                return run(VARLINK_INTERFACE ".Locks", p, show_locks);
        }
        if (!strcmp(cmd, "clusters")) {
                if (rest > 0)
                        return unexpected(cmd, args[0]);
                return run(VARLINK_INTERFACE ".Tree", with_cluster(NULL), show_clusters);
        }
        if (!strcmp(cmd, "sessions")) {
                json_object *p = with_cluster(NULL);
                static const struct {
                        const char *opt, *param;
                } opts[] = { { "--user", "user" }, { "--database", "database" }, { "--app", "application_name" },
                             { "--state", "state" }, { "--sort", "sort" } };
                for (int k = 0; k < rest; k++) {
                        if (!strcmp(args[k], "--all")) {
                                json_object_object_add(p, "all", json_object_new_boolean(true));
                                continue;
                        }
                        size_t o;
                        for (o = 0; o < ELEMENTSOF(opts); o++)
                                if (!strcmp(args[k], opts[o].opt) && k + 1 < rest)
                                        break;
                        if (o == ELEMENTSOF(opts)) {
                                json_object_put(p);
                                return unexpected(cmd, args[k]);
                        }
                        json_object_object_add(p, opts[o].param, json_object_new_string(args[++k]));
                }
                return run(VARLINK_INTERFACE ".Sessions", p, show_sessions);
        }
        if (!strcmp(cmd, "show")) {
                if (rest != 1)
                        return usage_error(cmd, rest ? "give one PID" : "give a PID");
                json_object *p;
                if (parse_pid(args[0], &p) < 0)
                        return EXIT_USAGE;
                if (cluster_opt) {
                        /* the pid must be a process of that cluster */
                        json_object *s = NULL;
                        char *error = NULL;
                        int r = call(VARLINK_INTERFACE ".Show", json_object_get(p), &s, &error);
                        if (r >= 0 && !error) {
                                const char *c = get_str(s, "cluster");
                                json_object *tp = NULL;
                                char *terr = NULL;
                                bool ok = false;
                                if (c && call(VARLINK_INTERFACE ".Tree", with_cluster(NULL), &tp, &terr) >= 0 && !terr) {
                                        json_object *arr;
                                        if (json_object_object_get_ex(tp, "clusters", &arr))
                                                for (size_t i = 0; i < json_object_array_length(arr) && !ok; i++)
                                                        ok = !strcmp(get_str(json_object_array_get_idx(arr, i), "name") ?: "", c);
                                }
                                free(terr);
                                json_object_put(tp);
                                json_object_put(s);
                                if (!ok) {
                                        json_object_put(p);
                                        fprintf(stderr, "pgtree: pid %s is not a process of cluster %s\n", args[0], cluster_opt);
                                        return EXIT_NO_PROCESS;
                                }
                        }
                        free(error);
                        if (r < 0 || error)
                                json_object_put(s);
                }
                return run(VARLINK_INTERFACE ".Show", p, show_show);
        }
        if (!strcmp(cmd, "top")) {
                TopOptions o = {};
                char filter[4200];
                for (int k = 0; k < rest; k++) {
                        if (!strcmp(args[k], "--flat"))
                                o.flat = true;
                        else if (!strcmp(args[k], "--no-idle"))
                                o.hide_idle = true;
                        else if (!strcmp(args[k], "--sort") && k + 1 < rest)
                                o.sort = args[++k];
                        else if (!strcmp(args[k], "--filter") && k + 1 < rest)
                                o.filter = args[++k];
                        else
                                return unexpected(cmd, args[k]);
                }
                if (cluster_opt) {
                        snprintf(filter, sizeof filter, "%s%scluster=%s", o.filter ? o.filter : "", o.filter ? " " : "",
                                 cluster_opt);
                        o.filter = filter;
                }
                return top_run(socket_path, &o);
        }
        if (!strcmp(cmd, "orphans") || !strcmp(cmd, "long")) {
                if (rest > 0)
                        return unexpected(cmd, args[0]);
                if (!strcmp(cmd, "orphans"))
                        return run(VARLINK_INTERFACE ".Orphans", with_cluster(NULL), show_orphans);
                return run(VARLINK_INTERFACE ".LongRunners", with_cluster(NULL), show_long);
        }
        if (!strcmp(cmd, "cancel") || !strcmp(cmd, "terminate"))
                return cmd_signal(cmd, rest, args);
        if (!strcmp(cmd, "reload")) {
                if (rest > 0)
                        return unexpected(cmd, args[0]);
                if (cluster_opt)
                        return usage_error(cmd, "--cluster: pgtreed reloads its whole configuration, for every cluster");
                return run(VARLINK_INTERFACE ".Reload", NULL, show_reload);
        }
        if (!strcmp(cmd, "metrics")) {
                if (rest > 0)
                        return unexpected(cmd, args[0]);
                return run(VARLINK_INTERFACE ".Metrics", NULL, cluster_opt && !json_out ? show_metrics_of_cluster : show_metrics);
        }
        /* events */
        EventSource src = {};
        const char *since = NULL;
        bool follow = false;
        int count = 50;
        for (int k = 0; k < rest; k++) {
                if (!strcmp(args[k], "--since") && k + 1 < rest)
                        since = args[++k];
                else if (!strcmp(args[k], "--follow") || !strcmp(args[k], "-f"))
                        follow = true;
                else if (!strcmp(args[k], "-n") && k + 1 < rest && atoi(args[k + 1]) > 0)
                        count = atoi(args[++k]);
                else if (!strcmp(args[k], "--directory") && k + 1 < rest && !src.directory && !src.n_files)
                        src.directory = args[++k];
                else if (!strcmp(args[k], "--file") && k + 1 < rest && !src.directory &&
                         src.n_files < ELEMENTSOF(src.files) - 1)
                        src.files[src.n_files++] = args[++k];
                else if (!strcmp(args[k], "--host") && k + 1 < rest && args[k + 1][0] && strlen(args[k + 1]) < 256 &&
                         !strchr(args[k + 1], '\n'))
                        src.host = args[++k];
                else
                        return unexpected(cmd, args[k]);
        }
        return cmd_events(&src, since, follow, count);
}
