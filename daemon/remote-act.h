/* SPDX-License-Identifier: MIT */
#pragma once

#include "journal.h"
#include "manager.h"

/* The last step of manager_act for a session of a managed server: after every check manager_act
 * makes (client backend, not pgtree's own, protection, enforcement, rate limit), the one
 * statement of lib/remote.c — pg_cancel_backend / pg_terminate_backend only if pid and
 * backend_start still match — over the server's action connection, bounded by the cluster's
 * action_timeout. Logs the outcome on e (consumed) and returns manager_act's result word. */
const char *manager_act_remote(Manager *m, const PgProcess *p, const Finding *f, Action action, bool through_leader,
                               const char *requested_by, LogEntry *e, char *why, size_t why_size);
