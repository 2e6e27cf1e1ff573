/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

typedef struct TopOptions {
        bool flat;              /* the sessions table instead of the tree */
        bool hide_idle;
        const char *sort;       /* cpu, duration, memory, pid */
        const char *filter;     /* as typed after 'f' */
} TopOptions;

/* pgtree top: runs until q. Returns an exit code. */
int top_run(const char *socket_path, const TopOptions *o);
