/* SPDX-License-Identifier: MIT */
#pragma once

typedef struct Manager Manager;
typedef struct ControlServer ControlServer;

/* The control socket: Varlink (io.pgtree) on the sd-event loop. Takes a socket-activated fd if
 * there is one, else binds [daemon] socket. A socket that cannot be set up is logged; the
 * daemon goes on watching without it. */
int control_new(Manager *m, ControlServer **ret);
ControlServer *control_free(ControlServer *c);
/* A cycle ended: cached replies are stale. */
void control_cycle_done(ControlServer *c);
void control_config_changed(ControlServer *c);
