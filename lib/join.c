/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "join.h"

void join_activity(PgTree *t, size_t ci, const ActivitySnapshot *snap, JoinStats *stats) {
        JoinStats st = {};
        PgCluster *c = &t->clusters[ci];
        c->snapshot = snap;
        size_t rows_matched = 0;
        for (size_t i = 0; i < t->n_procs; i++) {
                PgProcess *p = &t->procs[i];
                if (p->cluster != (int) ci)
                        continue;
                p->act = NULL;
                p->act_mismatch = false;
                p->own = false;
                /* a container's server lists its sessions under the pids of its PID namespace */
                pid_t ns_pid = pg_process_ns_pid(p);
                const ActivityRow *r = activity_snapshot_find(snap, ns_pid);
                if (!r)
                        continue;
                rows_matched++;
                double start = pg_process_start_time(t, p);
                if (r->backend_start > 0 && start > 0 && fabs(r->backend_start - start) > JOIN_START_TOLERANCE_S) {
                        p->act_mismatch = true;
                        st.mismatched++;
                        continue;
                }
                p->act = r;
                p->own = snap->own_pid == ns_pid;
                st.joined++;
        }
        st.rows_without_process = snap ? snap->n - rows_matched : 0;
        if (stats)
                *stats = st;
}

static const char *nonempty(const char *s) {
        return s && *s ? s : NULL;
}

const char *proc_user(const PgProcess *p) {
        if (p->act && p->act->usename)
                return p->act->usename;
        return nonempty(p->title.user);
}

const char *proc_database(const PgProcess *p) {
        if (p->act && p->act->datname)
                return p->act->datname;
        return nonempty(p->title.database);
}

const char *proc_application(const PgProcess *p) {
        return p->act ? p->act->application_name : NULL;
}

const char *proc_state(const PgProcess *p) {
        if (p->act && p->act->state)
                return p->act->state;
        return nonempty(p->title.state);
}

const char *proc_backend_type(const PgProcess *p) {
        if (p->act && p->act->backend_type)
                return p->act->backend_type;
        return backend_type_name(p->title.backend_type, p->server_major);
}

void proc_client(const PgProcess *p, char *buf, size_t size) {
        if (p->act && p->act->client_port == -1) {
                snprintf(buf, size, "local");
                return;
        }
        if (p->act && p->act->client_addr && p->act->client_port > 0) {
                bool v6 = strchr(p->act->client_addr, ':') != NULL;
                snprintf(buf, size, v6 ? "[%s]:%d" : "%s:%d", p->act->client_addr, p->act->client_port);
                return;
        }
        snprintf(buf, size, "%s", p->title.client);
}

bool proc_is_client_backend(const PgProcess *p) {
        const char *bt = proc_backend_type(p);
        return !p->own && bt && strcmp(bt, "client backend") == 0;
}

/* Only what pgtreed knows to be its own connection (the backend pid its libpq connection
 * reported), never what calls itself "pgtreed": application_name is the client's to choose, and
 * a session must not hide from the operator by taking that name. */
bool pg_process_is_pgtree(const PgProcess *p) {
        return p->own;
}
