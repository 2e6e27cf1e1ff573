/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "foreign.h"

static void test_placeholders(void **state) {
        assert_true(foreign_setting_matches("cp %p /arch/%f", "cp pg_wal/000000010000000000000003 /arch/000000010000000000000003", false));
        assert_true(foreign_setting_matches("echo 100%% %f", "echo 100% 00000002.history", false));
        assert_false(foreign_setting_matches("echo 100%% %f", "echo 100%% 00000002.history", false));
        /* a placeholder is never empty, never a blank nor an operator */
        assert_false(foreign_setting_matches("cp %p /arch/%f", "cp  /arch/x", false));
        assert_false(foreign_setting_matches("cp %p /arch/%f", "cp pg_wal/x /arch/x; curl y", false));
        assert_false(foreign_setting_matches("cp %p /arch/%f", "cp pg_wal/x|sh /arch/x", false));
        assert_true(foreign_setting_matches("%p%f", "ab", false));
        /* a prompt has blanks, not operators */
        assert_true(foreign_setting_matches("/bin/ask '%p'", "/bin/ask 'Enter PEM pass phrase:'", true));
        assert_false(foreign_setting_matches("/bin/ask '%p'", "/bin/ask 'x'; curl 'y'", true));
        assert_false(foreign_setting_matches("/bin/ask '%p'", "/bin/ask 'x y'", false));
}

static void test_matches(void **state) {
        const char *ac = "test ! -f '/arch/%f' && cp %p /arch/%f";
        /* the shell system() starts, placeholders filled */
        assert_true(foreign_command_matches(ac, "sh -c test ! -f '/arch/00000001000000000000000A' && cp "
                                                "pg_wal/00000001000000000000000A /arch/00000001000000000000000A", false));
        assert_true(foreign_command_matches(ac, "/bin/sh -c test ! -f '/arch/X' && cp pg_wal/X /arch/X", false));
        /* a shell running something else */
        assert_false(foreign_command_matches(ac, "sh -c curl http://x | sh", false));
        assert_false(foreign_command_matches(ac, "sh -c test ! -f '/arch/X' && cp pg_wal/X /arch/X; curl x", false));
        /* the programs it names, as the shell runs them */
        assert_true(foreign_command_matches(ac, "cp pg_wal/X /arch/X", false));
        assert_true(foreign_command_matches(ac, "test ! -f /arch/X", false));
        assert_false(foreign_command_matches(ac, "curl http://x", false));
        assert_false(foreign_command_matches(ac, "sh", false));
        /* a script: its interpreter, then its path as written */
        const char *sc = "/etc/pg/arch.sh %p %f";
        assert_true(foreign_command_matches(sc, "/bin/sh /etc/pg/arch.sh pg_wal/X X", false));
        assert_true(foreign_command_matches(sc, "/bin/bash /etc/pg/arch.sh", false));
        assert_false(foreign_command_matches(sc, "/bin/bash /tmp/arch.sh pg_wal/X X", false));
        assert_false(foreign_command_matches(sc, "/bin/sh -c /tmp/x; /etc/pg/arch.sh", false));
        /* a path must be that path; a bare name matches a program of that name */
        const char *pb = "/usr/bin/pgbackrest --stanza=main archive-push %p";
        assert_true(foreign_command_matches(pb, "/usr/bin/pgbackrest --stanza=main archive-push pg_wal/X", false));
        assert_false(foreign_command_matches(pb, "/tmp/pgbackrest --stanza=main archive-push pg_wal/X", false));
        assert_false(foreign_command_matches(pb, "pgbackrest archive-push x", false));
        assert_true(foreign_command_matches("exec FOO=1 gzip < %p > /a/%f.gz", "gzip", false));
        /* a program path with a blank: only its shell is recognized (pgtree reads argv joined by blanks) */
        assert_true(foreign_command_matches("\"/opt/my tools/arch\" %p", "sh -c \"/opt/my tools/arch\" pg_wal/X", false));
        /* nothing configured: nothing matches */
        assert_false(foreign_command_matches("", "sh -c ", false));
        assert_false(foreign_command_matches(NULL, "cp a b", false));
        assert_false(foreign_command_matches("cp %p /a/%f", "", false));
}

/* A cluster whose archiver has foreign children, judged with and without settings. */
static void test_judge(void **state) {
        PgProcess procs[2] = {};
        procs[0].cluster = 0;
        procs[1].cluster = 0;
        procs[1].depth = 1;
        procs[1].title.backend_type = BACKEND_ARCHIVER;
        PgCluster cl = { .postmaster = 0 };
        PgForeign f[4] = {};
        char t0[] = "sh -c /bin/arch pg_wal/X", t1[] = "/bin/arch pg_wal/X", t2[] = "sleep 100", t3[] = "sh -c cp a b";
        f[0] = (PgForeign){ .rec = { .pid = 10, .ppid = 2, .title = t0 }, .cluster = 0, .via = 1, .depth = 1 };
        f[1] = (PgForeign){ .rec = { .pid = 11, .ppid = 10, .title = t1 }, .cluster = 0, .via = 1, .depth = 2 };
        f[2] = (PgForeign){ .rec = { .pid = 12, .ppid = 1, .title = t2 }, .cluster = 0, .via = 1, .depth = 0, .detached = true };
        f[3] = (PgForeign){ .rec = { .pid = 13, .ppid = 2, .title = t3 }, .cluster = 0, .via = 1, .depth = 1 };
        PgTree t = { .procs = procs, .n_procs = 2, .clusters = &cl, .n_clusters = 1, .foreign = f, .n_foreign = 4 };

        /* settings unknown: the process type decides (detached ones are never expected) */
        foreign_judge(&t, 0, NULL);
        assert_true(f[0].expected && f[1].expected && f[3].expected);
        assert_false(f[2].expected);
        assert_non_null(strstr(f[2].judged, "outlived"));

        ServerCommands c = { .known = true, .archive_command = strdup("/bin/arch %p") };
        foreign_judge(&t, 0, &c);
        assert_true(f[0].expected);
        assert_true(f[1].expected);
        assert_false(f[2].expected);
        assert_false(f[3].expected);
        assert_string_equal(f[3].judged, "below the archiver, but not what the server runs there: archive_command is '/bin/arch %p'");

        /* empty: nothing is expected, the reason says so */
        free(c.archive_command);
        c.archive_command = strdup("");
        foreign_judge(&t, 0, &c);
        assert_false(f[0].expected || f[1].expected || f[3].expected);
        assert_string_equal(f[0].judged, "below the archiver, but not what the server runs there: archive_command is empty");
        assert_string_equal(f[1].judged, "its parent is not an expected command");

        /* archive_library set: archive_command is not run */
        free(c.archive_command);
        c.archive_command = strdup("/bin/arch %p");
        c.archive_library = strdup("basic_archive");
        foreign_judge(&t, 0, &c);
        assert_false(f[0].expected);
        assert_non_null(strstr(f[0].judged, "archive_library 'basic_archive' is set"));
        server_commands_clear(&c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_placeholders),
                cmocka_unit_test(test_matches),
                cmocka_unit_test(test_judge),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
