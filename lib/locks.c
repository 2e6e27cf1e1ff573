/* SPDX-License-Identifier: MIT */
/* Who blocks whom: root blockers and the blocking forest, from pg_blocking_pids(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "locks.h"
#include "macro.h"

static bool blocks(const ActivityRow *r, pid_t pid) {
        for (size_t i = 0; i < r->n_blocked_by; i++)
                if (r->blocked_by[i] == pid)
                        return true;
        return false;
}

static size_t row_index(const ActivitySnapshot *s, const ActivityRow *r) {
        return (size_t) (r - s->rows);
}

/* Is candidate a better root than best? */
static bool better_root(const ActivityRow *cand, pid_t cand_pid, const ActivityRow *best, pid_t best_pid) {
        if (!best_pid)
                return true;
        if (!cand != !best)
                return cand != NULL; /* a listed session first */
        double a = cand && cand->xact_start > 0 ? cand->xact_start : 0, b = best && best->xact_start > 0 ? best->xact_start : 0;
        if (a != b) {
                if (a == 0 || b == 0)
                        return a != 0;
                return a < b;
        }
        return cand_pid < best_pid;
}

int lock_root_blocker(const ActivitySnapshot *s, pid_t waiter, pid_t *ret_root, unsigned *ret_depth) {
        const ActivityRow *w = activity_snapshot_find(s, waiter);
        if (!activity_row_blocked(w))
                return -ENOENT;
        /* breadth first over the waiters; each row is expanded once */
        _cleanup_free_ bool *seen = calloc(s->n, sizeof(bool));
        _cleanup_free_ size_t *queue = malloc(s->n * sizeof(size_t));
        _cleanup_free_ unsigned *dist = malloc(s->n * sizeof(unsigned));
        if (!seen || !queue || !dist)
                return -ENOMEM;
        size_t head = 0, tail = 0;
        size_t wi = row_index(s, w);
        seen[wi] = true;
        dist[wi] = 0;
        queue[tail++] = wi;
        pid_t best = 0;
        const ActivityRow *best_row = NULL;
        unsigned best_depth = 0;
        while (head < tail) {
                size_t i = queue[head++];
                const ActivityRow *r = &s->rows[i];
                for (size_t k = 0; k < r->n_blocked_by; k++) {
                        pid_t b = r->blocked_by[k];
                        const ActivityRow *br = activity_snapshot_find(s, b);
                        if (br && activity_row_blocked(br)) {
                                size_t bi = row_index(s, br);
                                if (!seen[bi]) {
                                        seen[bi] = true;
                                        dist[bi] = dist[i] + 1;
                                        queue[tail++] = bi;
                                }
                                continue;
                        }
                        /* it blocks and does not wait: a root */
                        if (better_root(br, b, best_row, best)) {
                                best = b;
                                best_row = br;
                                best_depth = dist[i] + 1;
                        }
                }
        }
        if (!best)
                return -ELOOP;
        *ret_root = best;
        if (ret_depth)
                *ret_depth = best_depth;
        return 0;
}

size_t lock_count_blocked(const ActivitySnapshot *s, pid_t pid) {
        size_t n = 0;
        for (size_t i = 0; s && i < s->n; i++)
                n += blocks(&s->rows[i], pid);
        return n;
}

typedef struct Forest {
        const ActivitySnapshot *s;
        size_t *waiters;        /* indexes of blocked rows, in pid order */
        size_t n_waiters;
        bool *expanded;         /* per row */
        LockLine *lines;
        size_t n, allocated;
} Forest;

static int emit(Forest *f, pid_t pid, const ActivityRow *r, unsigned depth, bool cycle, bool *ret_expand) {
        if (GROW(f->lines, f->allocated, f->n + 1) < 0)
                return -ENOMEM;
        LockLine *l = &f->lines[f->n++];
        *l = (LockLine){ .pid = pid, .row = r, .depth = depth, .cycle = cycle };
        *ret_expand = true;
        if (r) {
                size_t i = row_index(f->s, r);
                if (f->expanded[i]) {
                        l->repeat = true;
                        *ret_expand = false;
                } else
                        f->expanded[i] = true;
        }
        return 0;
}

/* Everything pid blocks, depth first. Each row is expanded once, so the recursion ends and is at
 * most as deep as there are waiters. */
static int expand(Forest *f, pid_t pid, unsigned depth) {
        for (size_t k = 0; k < f->n_waiters; k++) {
                const ActivityRow *w = &f->s->rows[f->waiters[k]];
                if (!blocks(w, pid))
                        continue;
                bool more;
                int r = emit(f, w->pid, w, depth, false, &more);
                if (r < 0)
                        return r;
                if (more && (r = expand(f, w->pid, depth + 1)) < 0)
                        return r;
        }
        return 0;
}

static int cmp_pid(const void *a, const void *b) {
        pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;
        return (x > y) - (x < y);
}

int lock_forest(const ActivitySnapshot *s, LockLine **ret, size_t *ret_n) {
        *ret = NULL;
        *ret_n = 0;
        if (!s || s->n == 0)
                return 0;
        Forest f = { .s = s };
        _cleanup_free_ size_t *waiters = malloc(s->n * sizeof(size_t));
        _cleanup_free_ bool *expanded = calloc(s->n, sizeof(bool));
        _cleanup_free_ size_t *stamp = calloc(s->n, sizeof(size_t));
        _cleanup_free_ pid_t *roots = NULL;
        size_t n_roots = 0, roots_allocated = 0;
        if (!waiters || !expanded || !stamp)
                return -ENOMEM;
        f.waiters = waiters;
        f.expanded = expanded;
        for (size_t i = 0; i < s->n; i++)
                if (activity_row_blocked(&s->rows[i]))
                        waiters[f.n_waiters++] = i;
        /* roots: pids that block someone and do not wait themselves */
        for (size_t k = 0; k < f.n_waiters; k++) {
                const ActivityRow *w = &s->rows[waiters[k]];
                for (size_t j = 0; j < w->n_blocked_by; j++) {
                        pid_t b = w->blocked_by[j];
                        if (activity_row_blocked(activity_snapshot_find(s, b)))
                                continue;
                        bool dup = false;
                        for (size_t x = 0; x < n_roots && !dup; x++)
                                dup = roots[x] == b;
                        if (dup)
                                continue;
                        if (GROW(roots, roots_allocated, n_roots + 1) < 0)
                                goto oom;
                        roots[n_roots++] = b;
                }
        }
        if (n_roots > 1)
                qsort(roots, n_roots, sizeof *roots, cmp_pid);
        for (size_t k = 0; k < n_roots; k++) {
                bool more;
                if (emit(&f, roots[k], activity_snapshot_find(s, roots[k]), 0, false, &more) < 0 ||
                    (more && expand(&f, roots[k], 1) < 0))
                        goto oom;
        }
        /* waiters no root leads to: every session they wait for waits too, so following the first
         * blocker from one of them comes back to a session already passed, which is on a cycle:
         * that one heads the cycle (and what hangs off it) */
        for (size_t k = 0; k < f.n_waiters; k++) {
                if (expanded[waiters[k]])
                        continue;
                size_t i = waiters[k];
                for (size_t steps = 0; steps <= f.n_waiters && stamp[i] != k + 1; steps++) {
                        stamp[i] = k + 1;
                        const ActivityRow *next = activity_snapshot_find(s, s->rows[i].blocked_by[0]);
                        if (!activity_row_blocked(next))
                                break; /* cannot happen: it would have been a root */
                        i = row_index(s, next);
                }
                const ActivityRow *head = &s->rows[i];
                bool more;
                if (emit(&f, head->pid, head, 0, true, &more) < 0 || (more && expand(&f, head->pid, 1) < 0))
                        goto oom;
        }
        *ret = f.lines;
        *ret_n = f.n;
        return 0;
oom:
        free(f.lines);
        return -ENOMEM;
}
