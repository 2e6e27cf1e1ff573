/* SPDX-License-Identifier: MIT */
#pragma once

#include "journal.h"
#include "manager.h"

/* The last step of manager_act for a session of a managed server: after every check manager_act
 * makes (client backend, not pgtree's own, protection, enforcement, rate limit), the one
 * statement of lib/remote.c — pg_cancel_backend / pg_terminate_backend only if pid and
 * backend_start (and the server) still match — queued on the server's action connection and
 * driven by the event loop, bounded by the cluster's action_timeout. Returns "pending" when it
 * was queued: the outcome is logged on e (consumed), counted, and given to done (if any) when it
 * is known. Returns "failed" when it could not be queued (why says why: the pending limit, the
 * server gone from the configuration); e is then logged at once. */
const char *manager_act_remote(Manager *m, const PgProcess *p, const Finding *f, Action action, bool through_leader,
                               const char *requested_by, const char *rate_key, LogEntry *e, char *why, size_t why_size,
                               ManagerActDone done, void *userdata);

/* The event sources of the action connections: released before anything that may close their
 * sockets (a cycle's begin and end, processing) and armed again after. */
void manager_remote_acts_release(Manager *m);
void manager_remote_acts_arm(Manager *m);
/* At daemon exit, before the engine is freed (its free reports the actions still pending: logged,
 * nothing armed any more). */
void manager_remote_acts_free(Manager *m);
