/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "foreign.h"
#include "join.h"
#include "macro.h"

/* May c be part of what a placeholder stands for? WAL file names and paths (%f, %p, %r):
 * letters, digits, '.', '_', '-', '+', '/'; a prompt (ssl_passphrase_command's %p): any printable
 * character but the shell's operators and quotes. Never a blank between words of a file name:
 * "; curl …" after a placeholder is not a file name. */
static bool placeholder_char(char c, bool prompt) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._-+/", c))
                return c != 0;
        return prompt && (unsigned char) c >= ' ' && c != 0x7f && !strchr(";&|$`()<>\\'\"", c);
}

#define MATCH_MAX 4096

bool foreign_setting_matches(const char *setting, const char *text, bool prompt) {
        size_t lt = strlen(text);
        if (lt >= MATCH_MAX || strlen(setting) >= MATCH_MAX)
                return false;
        /* cur[j]: the setting so far matches text[0, j) */
        _cleanup_free_ bool *cur = calloc(lt + 1, sizeof(bool)), *next = calloc(lt + 1, sizeof(bool));
        if (!cur || !next)
                return false;
        cur[0] = true;
        for (const char *s = setting; *s; s++) {
                bool ph = s[0] == '%' && s[1] && s[1] != '%' &&
                          ((s[1] >= 'a' && s[1] <= 'z') || (s[1] >= 'A' && s[1] <= 'Z'));
                char lit = s[0];
                if (s[0] == '%' && s[1] == '%')
                        s++;
                else if (ph)
                        s++;
                bool any = false;
                next[0] = false;
                for (size_t j = 1; j <= lt; j++) {
                        if (ph) /* one or more characters of the class */
                                next[j] = (next[j - 1] || cur[j - 1]) && placeholder_char(text[j - 1], prompt);
                        else
                                next[j] = cur[j - 1] && text[j - 1] == lit;
                        any |= next[j];
                }
                bool *x = cur;
                cur = next;
                next = x;
                if (!any)
                        return false;
        }
        return cur[lt];
}

static bool is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool ends_simple_command(char c) {
        return c == ';' || c == '&' || c == '|' || c == '(' || c == ')' || c == '\n' || c == '{' || c == '}';
}

/* The next word of a shell command from *s (quotes and backslashes removed) into buf; stops at
 * an unquoted operator. False if there is none before the operator or the end. */
static bool next_word(const char **s, char *buf, size_t size) {
        const char *p = *s;
        while (*p && is_space(*p) && *p != '\n')
                p++;
        size_t n = 0;
        char quote = 0;
        for (; *p; p++) {
                if (quote) {
                        if (*p == quote) {
                                quote = 0;
                                continue;
                        }
                        if (quote == '"' && *p == '\\' && p[1] && strchr("\"\\$`", p[1]))
                                p++;
                } else if (*p == '\'' || *p == '"') {
                        quote = *p;
                        continue;
                } else if (*p == '\\' && p[1]) {
                        p++;
                } else if (is_space(*p) || ends_simple_command(*p))
                        break;
                if (n + 1 < size)
                        buf[n++] = *p;
        }
        buf[n] = 0;
        *s = p;
        return n > 0;
}

/* Is argv0 the program of one of the setting's simple commands (as written: a path the same
 * path, a bare name the same base name)? */
static bool names_program(const char *setting, const char *argv0) {
        const char *base = strrchr(argv0, '/');
        base = base ? base + 1 : argv0;
        const char *s = setting;
        while (*s) {
                char word[512];
                bool first = true;
                while (next_word(&s, word, sizeof word)) {
                        if (!first)
                                continue; /* the rest of this simple command: its arguments */
                        /* what precedes the program: negation, assignments, exec */
                        if (!strcmp(word, "!") || !strcmp(word, "exec") || (strchr(word, '=') && word[0] != '=' && word[0] != '/'))
                                continue;
                        first = false;
                        if (strchr(word, '/') ? !strcmp(word, argv0) : !strcmp(word, base))
                                return true;
                }
                /* an operator, or the end */
                while (*s && (ends_simple_command(*s) || is_space(*s)))
                        s++;
        }
        return false;
}

bool foreign_command_matches(const char *setting, const char *cmdline, bool prompt) {
        if (!setting || !*setting || !cmdline || !*cmdline)
                return false;
        /* system(): /bin/sh with argv "sh", "-c", the command with its placeholders filled */
        static const char *const shells[] = { "sh -c ", "/bin/sh -c " };
        for (size_t i = 0; i < ELEMENTSOF(shells); i++) {
                size_t l = strlen(shells[i]);
                if (!strncmp(cmdline, shells[i], l) && foreign_setting_matches(setting, cmdline + l, prompt))
                        return true;
        }
        /* the shell exec'd the command: its words, unquoted (or, a script, its interpreter first) */
        if (foreign_setting_matches(setting, cmdline, prompt))
                return true;
        size_t l = strcspn(cmdline, " ");
        if (cmdline[l] == ' ' && cmdline[l + 1] != '-' && foreign_setting_matches(setting, cmdline + l + 1, prompt))
                return true;
        /* a program of the setting, run by its shell: argv[0] (or a script's path after its
         * interpreter) is that program */
        char word[512];
        for (int w = 0; w < 2; w++) {
                l = strcspn(cmdline, " ");
                if (l == 0 || l >= sizeof word)
                        return false;
                memcpy(word, cmdline, l);
                word[l] = 0;
                if (w == 0 && (!strcmp(word, "sh") || !strcmp(word, "/bin/sh")) && !strncmp(cmdline + l, " -c ", 4))
                        return false; /* a shell running something else */
                if (word[0] != '-' && names_program(setting, word))
                        return true;
                if (cmdline[l] != ' ')
                        return false;
                cmdline += l + 1;
        }
        return false;
}

/* The settings a process type runs, and their names. */
typedef struct Runs {
        const char *what;               /* "the archiver" */
        const char *name[2];
        const char *value[2];
        bool any_known;
} Runs;

static bool runs_of(const PgProcess *via, bool postmaster, const ServerCommands *c, Runs *r) {
        *r = (Runs){};
        BackendType bt = via->title.backend_type;
        if (postmaster) {
                *r = (Runs){ "the postmaster", { "ssl_passphrase_command" }, { c ? c->ssl_passphrase_command : NULL } };
        } else if (bt == BACKEND_ARCHIVER) {
                const char *cmd = c ? c->archive_command : NULL;
                /* PostgreSQL 15+: a library archives instead, and archive_command is not run */
                if (c && c->archive_library && c->archive_library[0])
                        cmd = "";
                *r = (Runs){ "the archiver", { "archive_command" }, { cmd } };
        } else if (bt == BACKEND_STARTUP)
                *r = (Runs){ "the startup process", { "restore_command", "recovery_end_command" },
                             { c ? c->restore_command : NULL, c ? c->recovery_end_command : NULL } };
        else if (bt == BACKEND_CHECKPOINTER)
                *r = (Runs){ "the checkpointer", { "archive_cleanup_command" }, { c ? c->archive_cleanup_command : NULL } };
        else
                return false;
        for (size_t i = 0; i < 2; i++)
                r->any_known |= c && c->known && r->name[i] && r->value[i];
        return true;
}

/* "archive_command is empty" / "archive_command is 'cp %p /x/%f'" (cut), for a reason. */
static void describe_settings(const Runs *r, const ServerCommands *c, char *buf, size_t size) {
        size_t n = 0;
        buf[0] = 0;
        for (size_t i = 0; i < 2 && r->name[i]; i++) {
                const char *v = r->value[i];
                int k;
                if (!v)
                        k = snprintf(buf + n, size - n, "%s%s is not known", n ? ", " : "", r->name[i]);
                else if (!*v && i == 0 && r->name[0] && !strcmp(r->name[0], "archive_command") && c &&
                         c->archive_library && c->archive_library[0])
                        k = snprintf(buf + n, size - n, "%sarchive_library '%.40s' is set (archive_command is not run)",
                                     n ? ", " : "", c->archive_library);
                else if (!*v)
                        k = snprintf(buf + n, size - n, "%s%s is empty", n ? ", " : "", r->name[i]);
                else
                        k = snprintf(buf + n, size - n, "%s%s is '%.60s%s'", n ? ", " : "", r->name[i], v,
                                     strlen(v) > 60 ? "…" : "");
                if (k < 0 || (size_t) k >= size - n)
                        return;
                n += (size_t) k;
        }
}

static int foreign_index(const PgTree *t, size_t ci, pid_t pid) {
        for (size_t i = 0; i < t->n_foreign; i++)
                if (t->foreign[i].cluster == (int) ci && t->foreign[i].rec.pid == pid)
                        return (int) i;
        return -1;
}

void foreign_judge(PgTree *t, size_t ci, const ServerCommands *commands) {
        const ServerCommands *c = commands && commands->known ? commands : NULL;
        size_t pm = t->clusters[ci].postmaster;
        /* by depth: a process is judged after its parent */
        for (int depth = 0; depth <= 64; depth++) {
                bool more = false;
                for (size_t i = 0; i < t->n_foreign; i++) {
                        PgForeign *g = &t->foreign[i];
                        if (g->cluster != (int) ci)
                                continue;
                        if (g->depth > depth)
                                more = true;
                        if (g->depth != depth)
                                continue;
                        g->judged[0] = 0;
                        if (g->via < 0 || g->detached || depth == 0) {
                                g->expected = false;
                                if (g->via >= 0 && g->detached)
                                        snprintf(g->judged, sizeof g->judged,
                                                 "it outlived the command that started it: PostgreSQL waits for what it runs");
                                continue;
                        }
                        const PgProcess *via = &t->procs[g->via];
                        Runs r;
                        if (!runs_of(via, (size_t) g->via == pm, c, &r)) {
                                g->expected = false;
                                continue;
                        }
                        char settings[256];
                        describe_settings(&r, c, settings, sizeof settings);
                        if (depth > 1) {
                                int parent = foreign_index(t, ci, g->rec.ppid);
                                g->expected = parent >= 0 && t->foreign[parent].expected;
                                snprintf(g->judged, sizeof g->judged, "%s",
                                         g->expected ? "run by an expected command" : "its parent is not an expected command");
                                continue;
                        }
                        if (!r.any_known) {
                                /* unknown settings: the process type decides, as without them */
                                g->expected = (size_t) g->via != pm;
                                if (g->expected)
                                        snprintf(g->judged, sizeof g->judged, "%s runs it; the server's settings are not "
                                                 "known (%s)", r.what, settings);
                                continue;
                        }
                        g->expected = false;
                        for (size_t k = 0; k < 2 && !g->expected; k++)
                                if (r.value[k] && foreign_command_matches(r.value[k], g->rec.title,
                                                                          !strcmp(r.name[k], "ssl_passphrase_command"))) {
                                        g->expected = true;
                                        snprintf(g->judged, sizeof g->judged, "what %s runs: %s", r.what, settings);
                                }
                        if (!g->expected)
                                snprintf(g->judged, sizeof g->judged, "below %s, but not what the server runs there: %s",
                                         r.what, settings);
                }
                if (!more)
                        break;
        }
}
