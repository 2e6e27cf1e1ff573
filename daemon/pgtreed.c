/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <sys/resource.h>
#include <time.h>

#include "build-config.h"
#include "config.h"
#include "engine.h"
#include "journal.h"
#include "macro.h"
#include "manager.h"
#include "pidref.h"
#include "render.h"

typedef struct Args {
        bool once;
        bool json;
        bool group;
        bool no_config;
        const char *config;
        const char *check_config;
        LogTarget log_target;
} Args;

static void help(void) {
        printf("Usage: pgtreed [--config FILE | --no-config]\n"
               "       pgtreed --once [--json] [--group] [--config FILE | --no-config]\n"
               "       pgtreed --check-config FILE\n"
               "\n"
               "Shows every PostgreSQL server on this host as its real process tree\n"
               "(postmaster → children, from /proc) joined with pg_stat_activity, and the\n"
               "orphans and long runners that the rules of pgtree.ini find. Without --once it\n"
               "runs as a service (systemd Type=notify): logs to journald, acts per the rules\n"
               "(cancel = SIGINT, terminate = SIGTERM, never SIGKILL) when enforcement is on,\n"
               "and answers the pgtree client on its control socket.\n"
               "\n"
               "  --once               one full cycle, printed to stdout; signals nothing and\n"
               "                       runs no alert: cancel/terminate/alert are dry runs\n"
               "  --json               print the cycle as JSON (the contract of DESIGN.md)\n"
               "  --group              show client backends grouped by application_name\n"
               "  --config FILE        the configuration. Without it, the daemon and --once\n"
               "                       read %s when it exists\n"
               "                       (its rules, clusters and conninfo apply), else use\n"
               "                       the built-in defaults\n"
               "  --no-config          built-in defaults only, whatever file exists\n"
               "  --check-config FILE  validate FILE, print FILE:LINE: message per problem\n"
               "  --log-target T       auto (journald under systemd, else stderr), journal,\n"
               "                       stderr, or both\n"
               "  -h --help            this text\n"
               "  --version            the version\n",
               PGTREE_CONFIG_FILE);
}

/* Returns 1 to go on, 0 to exit successfully, −EINVAL on a bad command line (reported). */
static int parse_args(int argc, char **argv, Args *args) {
        enum { ARG_ONCE = 0x100, ARG_JSON, ARG_VERSION, ARG_CONFIG, ARG_NO_CONFIG, ARG_CHECK, ARG_GROUP, ARG_LOG_TARGET };
        static const struct option options[] = {
                { "once", no_argument, NULL, ARG_ONCE },
                { "json", no_argument, NULL, ARG_JSON },
                { "group", no_argument, NULL, ARG_GROUP },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "no-config", no_argument, NULL, ARG_NO_CONFIG },
                { "check-config", required_argument, NULL, ARG_CHECK },
                { "log-target", required_argument, NULL, ARG_LOG_TARGET },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        int c;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                switch (c) {
                case ARG_ONCE:
                        args->once = true;
                        break;
                case ARG_JSON:
                        args->json = true;
                        break;
                case ARG_GROUP:
                        args->group = true;
                        break;
                case ARG_CONFIG:
                        args->config = optarg;
                        break;
                case ARG_NO_CONFIG:
                        args->no_config = true;
                        break;
                case ARG_CHECK:
                        args->check_config = optarg;
                        break;
                case ARG_LOG_TARGET: {
                        int t = log_target_from_string(optarg);
                        if (t < 0) {
                                fprintf(stderr, "pgtreed: --log-target: '%s' is not auto, journal, stderr or both\n", optarg);
                                return -EINVAL;
                        }
                        args->log_target = (LogTarget) t;
                        break;
                }
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("pgtreed %s\n", PGTREE_VERSION);
                        return 0;
                case ':':
                        fprintf(stderr, "pgtreed: option '%s' needs an argument (see --help)\n", argv[optind - 1]);
                        return -EINVAL;
                default:
                        fprintf(stderr, "pgtreed: unknown option '%s' (see --help)\n", argv[optind - 1]);
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "pgtreed: unexpected argument '%s' (see --help)\n", argv[optind]);
                return -EINVAL;
        }
        if (args->no_config && args->config) {
                fprintf(stderr, "pgtreed: --config and --no-config exclude each other\n");
                return -EINVAL;
        }
        if (args->check_config && (args->once || args->config || args->json || args->no_config)) {
                fprintf(stderr, "pgtreed: --check-config takes no other option\n");
                return -EINVAL;
        }
        if (!args->once && (args->json || args->group)) {
                fprintf(stderr, "pgtreed: --json and --group go with --once\n");
                return -EINVAL;
        }
        return 1;
}

/* Loads the configuration: the file given, else the default file if it exists (unless
 * no_default), else defaults. Problems are printed as FILE:LINE: message. */
static int load_config(const char *path, bool no_default, Config **ret) {
        ConfigErrors errs = {};
        int r;
        if (!path && !no_default && access(PGTREE_CONFIG_FILE, F_OK) == 0)
                path = PGTREE_CONFIG_FILE;
        if (path)
                r = config_parse_file(path, ret, &errs);
        else
                r = config_new_default(ret);
        if (r < 0) {
                config_errors_print(&errs, stderr);
                if (r == -ENOMEM)
                        fprintf(stderr, "pgtreed: out of memory\n");
        }
        config_errors_clear(&errs);
        return r;
}

static int check_config(const char *path) {
        Config *c;
        int r = load_config(path, false, &c);
        if (r < 0)
                return r;
        printf("%s: OK (%zu rule%s, %zu cluster section%s%s)\n", path, c->n_rules, c->n_rules == 1 ? "" : "s",
               c->n_clusters, c->n_clusters == 1 ? "" : "s", c->builtin_rules ? ", built-in rules" : "");
        config_free(c);
        return 0;
}

static int run_once(const Args *args) {
        Config *config;
        int r = load_config(args->config, args->no_config, &config);
        if (r < 0)
                return r;
        Engine *e;
        r = engine_new(config, &e);
        if (r < 0) {
                fprintf(stderr, "pgtreed: cannot read /proc: %s\n", strerror(-r));
                config_free(config);
                return r;
        }
        r = engine_run_cycle_blocking(e, true, NULL);
        if (r < 0) {
                fprintf(stderr, "pgtreed: cycle failed: %s\n", strerror(-r));
                goto out;
        }
        /* --once acts on nothing: every action that would do something is a dry run */
        for (size_t i = 0; i < e->open.n; i++)
                e->open.items[i].dry_run = e->open.items[i].action != ACTION_LOG;

        if (args->json) {
                json_object *o = render_json(&e->tree, &e->open);
                json_object *scan = json_object_new_object();
                json_object_object_add(scan, "processes_examined", json_object_new_int64((int64_t) e->scan.examined));
                json_object_object_add(scan, "seconds", json_number(e->cycle_seconds));
                json_object_object_add(scan, "config", config->path ? json_object_new_string(config->path) : NULL);
                json_object_object_add(o, "scan", scan);
                puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
        } else {
                /* --once is for root and the cluster owner: query text, cut to the terminal */
                struct winsize ws;
                RenderOptions o = { .group_by_application = args->group, .query_text = true,
                                    .width = isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 ? ws.ws_col : 0 };
                render_text(stdout, &e->tree, &e->open, &o);
        }
        if (fflush(stdout) != 0)
                r = negative_errno();
out:
        engine_free(e);
        config_free(config);
        return r;
}

static int run_daemon(const Args *args) {
        log_setup(args->log_target);
        const char *path = args->config;
        if (!path && !args->no_config && access(PGTREE_CONFIG_FILE, F_OK) == 0)
                path = PGTREE_CONFIG_FILE;
        Config *config;
        int r = load_config(path, args->no_config, &config);
        if (r < 0) {
                log_plain(LOG_ERR, "configuration %s is invalid; not starting", path ? path : "(defaults)");
                return r;
        }
        /* Even a bug cannot send SIGKILL from here on. */
        r = nokill_install();
        if (r < 0) {
                log_plain(LOG_ERR, "cannot install the seccomp filter that forbids SIGKILL: %s; not starting", strerror(-r));
                config_free(config);
                return r;
        }
        Manager *m;
        r = manager_new(path, config, &m);
        if (r < 0) {
                log_plain(LOG_ERR, "cannot start: %s", strerror(-r));
                config_free(config);
                return r;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        m->start_time = (double) ts.tv_sec;
        r = manager_run(m);
        if (r < 0)
                log_plain(LOG_ERR, "event loop failed: %s", strerror(-r));
        manager_free(m);
        return r;
}

/* A descriptor per watched backend (its stat file, its pidfd): take the hard limit. */
static void raise_fd_limit(void) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

int main(int argc, char **argv) {
        Args args = {};
        raise_fd_limit();
        int r = parse_args(argc, argv, &args);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        if (args.check_config)
                return check_config(args.check_config) < 0 ? 1 : 0;
        if (args.once)
                return run_once(&args) < 0 ? 1 : 0;
        return run_daemon(&args) < 0 ? 1 : 0;
}
