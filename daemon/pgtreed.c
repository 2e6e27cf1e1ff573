/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "findings.h"
#include "macro.h"
#include "render.h"
#include "scanner.h"

typedef struct Args {
        bool once;
        bool json;
} Args;

static void help(void) {
        printf("Usage: pgtreed --once [--json]\n"
               "\n"
               "Shows every PostgreSQL server on this host as its real process tree\n"
               "(postmaster → children, from /proc), with orphans and findings.\n"
               "\n"
               "  --once      one full scan, printed to stdout; signals nothing\n"
               "  --json      print the scan as JSON (the contract of DESIGN.md)\n"
               "  -h --help   this text\n"
               "  --version   the version\n");
}

/* Returns 1 to go on, 0 to exit successfully, −EINVAL on a bad command line (reported). */
static int parse_args(int argc, char **argv, Args *args) {
        enum { ARG_ONCE = 0x100, ARG_JSON, ARG_VERSION };
        static const struct option options[] = {
                { "once", no_argument, NULL, ARG_ONCE },
                { "json", no_argument, NULL, ARG_JSON },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        int c;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case ARG_ONCE:
                        args->once = true;
                        break;
                case ARG_JSON:
                        args->json = true;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("pgtreed %s\n", PGTREE_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "pgtreed: unknown option '%s' (see --help)\n", argv[optind - 1]);
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "pgtreed: unexpected argument '%s' (see --help)\n", argv[optind]);
                return -EINVAL;
        }
        if (!args->once) {
                fprintf(stderr, "pgtreed: this build runs one scan only; use --once (see --help)\n");
                return -EINVAL;
        }
        return 1;
}

static int run_once(const Args *args) {
        Scanner *s = NULL;
        int r = scanner_new(&s);
        if (r < 0) {
                fprintf(stderr, "pgtreed: cannot read /proc: %s\n", strerror(-r));
                return r;
        }
        PgTree t;
        ScanStats stats;
        r = scanner_refresh(s, true, &t, &stats);
        scanner_free(s);
        if (r < 0) {
                fprintf(stderr, "pgtreed: scan failed: %s\n", strerror(-r));
                return r;
        }
        Findings f = {};
        r = findings_from_tree(&t, &f);
        if (r < 0) {
                tree_free(&t);
                fprintf(stderr, "pgtreed: %s\n", strerror(-r));
                return r;
        }
        if (args->json) {
                json_object *o = render_json(&t, &f);
                json_object *scan = json_object_new_object();
                json_object_object_add(scan, "processes_examined", json_object_new_int64((int64_t) stats.examined));
                json_object_object_add(scan, "seconds", json_object_new_double(stats.seconds));
                json_object_object_add(o, "scan", scan);
                puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
        } else
                render_text(stdout, &t, &f);
        findings_free(&f);
        tree_free(&t);
        if (fflush(stdout) != 0)
                return negative_errno();
        return 0;
}

int main(int argc, char **argv) {
        Args args = {};
        int r = parse_args(argc, argv, &args);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        return run_once(&args) < 0 ? 1 : 0;
}
