/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "activity.h"
#include "tree.h"

/* PostgreSQL runs some commands on purpose, through `sh -c` (system()): archive_command (by the
 * archiver), restore_command and recovery_end_command (the startup process),
 * archive_cleanup_command (the checkpointer) and ssl_passphrase_command (the postmaster). A
 * foreign process below one of these is expected only if it is what the server is configured to
 * run (ServerCommands, read over pgtreed's connection once per connect and again when
 * pg_conf_load_time() changes):
 *
 *  - a direct child is the command's shell, `sh -c CMD` with CMD the setting with its
 *    placeholders filled (foreign_setting_matches); or one of the programs
 *    the setting names (the first word of each of its simple commands, as written: a path must
 *    be the same path, a bare name the same name) — the shell may have exec'd it;
 *  - a deeper process is expected while its parent is an expected one (what the configured
 *    command runs, scripts included);
 *  - a process that left the tree (detached: re-parented after its parent exited) never is:
 *    PostgreSQL waits for the command it runs, what outlives it is not that command;
 *  - a setting that is empty, or archive_command while archive_library is set (PostgreSQL 15+
 *    then runs no command), expects nothing: any child is a finding.
 * When the settings are not known (no connection yet, a server older than the setting, a role
 * that cannot read it) the process type decides, as before: children of the archiver, startup
 * process and checkpointer are expected, the postmaster's are not. A remote cluster has no
 * processes to judge. */

/* Is text the setting with its placeholders filled? "%%" is a '%'; any other "%X" stands for one
 * or more characters of a WAL file name or path ([A-Za-z0-9._+/-]), or with prompt (the prompt
 * of ssl_passphrase_command) of any printable text without shell operators or quotes. Pure. */
bool foreign_setting_matches(const char *setting, const char *text, bool prompt);

/* Does a command line (argv joined by spaces, as pgtree reads it) belong to the command a
 * setting runs, as a direct child of the process that runs it? Pure. */
bool foreign_command_matches(const char *setting, const char *cmdline, bool prompt);

/* Decides PgForeign.expected (and .judged, the reason) for the foreign processes of cluster ci
 * with its server's settings (NULL: unknown). */
void foreign_judge(PgTree *t, size_t ci, const ServerCommands *commands);
