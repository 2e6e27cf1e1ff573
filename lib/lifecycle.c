/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lifecycle.h"
#include "macro.h"
#include "rules.h"

const char *finding_event_type_to_string(FindingEventType t) {
        switch (t) {
        case FINDING_OPENED:
                return "opened";
        case FINDING_ESCALATED:
                return "escalated";
        case FINDING_RESOLVED:
                return "resolved";
        }
        return "unknown";
}

static int cmp_key(const Finding *a, const Finding *b) {
        if (a->pid != b->pid)
                return a->pid < b->pid ? -1 : 1;
        if (a->kind != b->kind)
                return a->kind < b->kind ? -1 : 1;
        if (a->start_ticks != b->start_ticks)
                return a->start_ticks < b->start_ticks ? -1 : 1;
        return 0;
}

static int cmp_tracked(const void *a, const void *b) {
        return cmp_key(((const Tracked *) a)->f, ((const Tracked *) b)->f);
}

static int emit(FindingEvents *e, FindingEventType type, const Finding *f, Action previous) {
        if (!e)
                return 0;
        if (GROW(e->items, e->allocated, e->n + 1) < 0)
                return -ENOMEM;
        e->items[e->n++] = (FindingEvent){ .type = type, .finding = *f, .previous = previous };
        return 0;
}

/* Decides one tracked finding for this cycle. */
static int decide(Tracked *t, const Config *c, double now, FindingEvents *events) {
        Finding *f = t->f;
        double start = f->since > 0 ? f->since : f->first_seen;
        f->duration_s = now > start ? now - start : 0;

        bool confirmed = true;
        if (f->kind == FINDING_STALE_ACTIVITY || f->kind == FINDING_UNLISTED_PROCESS)
                confirmed = t->cycles >= 2;
        if (f->kind == FINDING_UNLISTED_PROCESS && f->duration_s * 1e6 < (double) c->unlisted_grace_usec)
                confirmed = false;
        if (!confirmed)
                return 0;

        Subject s, blocker;
        subject_of_finding(f, (uint64_t) (f->duration_s * 1e6), &s, &blocker);
        const Rule *r = rules_decide(c, &s);
        if (!r && !finding_kind_always_open(f->kind))
                return 0; /* a long runner below every threshold */
        Action action = r ? r->action : ACTION_LOG;
        if (!t->open) {
                t->open = true;
                snprintf(f->rule, sizeof f->rule, "%s", r ? r->name : "");
                f->action = action;
                f->act_on_blocker = r && r->target == RULE_TARGET_BLOCKER;
                return emit(events, FINDING_OPENED, f, ACTION_LOG);
        }
        if (action > f->action) {
                Action before = f->action;
                snprintf(f->rule, sizeof f->rule, "%s", r->name);
                f->action = action;
                f->act_on_blocker = r->target == RULE_TARGET_BLOCKER;
                return emit(events, FINDING_ESCALATED, f, before);
        }
        return 0;
}

/* Candidates in key order, the later of two with one key last; sorted as pointers: a Finding is
 * 8 KB, and copying, sorting and merging hundreds of them by value each cycle was a tenth of a
 * cycle at 2,000 sessions. */
static int cmp_candidate(const void *a, const void *b) {
        const Finding *x = *(const Finding *const *) a, *y = *(const Finding *const *) b;
        int c = cmp_key(x, y);
        return c ? c : (x > y) - (x < y);
}

int finding_store_update_take(FindingStore *s, Findings *candidates, const Config *c, double now,
                              FindingEvents *events) {
        size_t n = candidates->n;
        _cleanup_free_ Finding **cand = malloc((n ? n : 1) * sizeof *cand);
        Tracked *next = malloc((n ? n : 1) * sizeof *next);
        if (!cand || !next) {
                free(next);
                findings_free(candidates);
                return -ENOMEM;
        }
        for (size_t x = 0; x < n; x++)
                cand[x] = &candidates->items[x];
        qsort(cand, n, sizeof *cand, cmp_candidate);

        size_t i = 0, j = 0, k = 0;
        int r = 0;
        while (r >= 0 && (i < s->n || j < n)) {
                int cmp = i >= s->n ? 1 : j >= n ? -1 : cmp_key(s->items[i].f, cand[j]);
                if (cmp < 0) { /* tracked, not seen now: it ended */
                        if (s->items[i].open)
                                r = emit(events, FINDING_RESOLVED, s->items[i].f, s->items[i].f->action);
                        i++;
                        continue;
                }
                if (j + 1 < n && cmp_key(cand[j], cand[j + 1]) == 0) {
                        j++; /* a duplicate candidate: keep the last */
                        continue;
                }
                Tracked *t = &next[k++];
                t->f = cand[j++];
                if (cmp == 0) { /* kept: refresh what it says, keep its identity and decision */
                        const Tracked *old = &s->items[i++];
                        const Finding *keep = old->f;
                        t->open = old->open;
                        t->cycles = old->cycles + 1;
                        t->f->first_seen = keep->first_seen;
                        memcpy(t->f->rule, keep->rule, sizeof t->f->rule);
                        t->f->action = keep->action;
                        t->f->dry_run = keep->dry_run;
                        t->f->act_on_blocker = keep->act_on_blocker;
                        /* a foreign process whose backend is gone keeps that backend's evidence */
                        if (t->f->kind == FINDING_FOREIGN_PROCESS && !t->f->user[0] && keep->via_pid == t->f->via_pid) {
                                memcpy(t->f->user, keep->user, sizeof t->f->user);
                                memcpy(t->f->database, keep->database, sizeof t->f->database);
                                memcpy(t->f->application_name, keep->application_name, sizeof t->f->application_name);
                                memcpy(t->f->client, keep->client, sizeof t->f->client);
                                memcpy(t->f->backend_type, keep->backend_type, sizeof t->f->backend_type);
                                memcpy(t->f->query, keep->query, sizeof t->f->query);
                        }
                } else { /* new */
                        t->open = false;
                        t->cycles = 1;
                        t->f->first_seen = now;
                        t->f->action = ACTION_LOG;
                        t->f->rule[0] = 0;
                }
                r = decide(t, c, now, events);
        }
        if (r < 0) {
                free(next);
                findings_free(candidates);
                return r;
        }
        free(s->items);
        findings_free(&s->pool);
        s->items = next;
        s->n = k;
        s->allocated = n ? n : 1;
        s->pool = *candidates;
        *candidates = (Findings){};
        return 0;
}

int finding_store_update(FindingStore *s, const Findings *candidates, const Config *c, double now,
                         FindingEvents *events) {
        Findings copy = {};
        size_t n = candidates ? candidates->n : 0;
        if (n > 0) {
                if (!(copy.items = malloc(n * sizeof *copy.items)))
                        return -ENOMEM;
                memcpy(copy.items, candidates->items, n * sizeof *copy.items);
                copy.n = copy.allocated = n;
        }
        return finding_store_update_take(s, &copy, c, now, events);
}

double finding_store_next_moment(const FindingStore *s, const Config *c, double now) {
        double best = 0;
#define TAKE(at) do { if ((at) > now && (best == 0 || (at) < best)) best = (at); } while (0)
        for (size_t i = 0; i < s->n; i++) {
                const Tracked *t = &s->items[i];
                const Finding *f = t->f;
                double start = f->since > 0 ? f->since : f->first_seen;
                bool twice = f->kind == FINDING_STALE_ACTIVITY || f->kind == FINDING_UNLISTED_PROCESS;
                if (twice && t->cycles < 2)
                        TAKE(now + 1e-3); /* the second look: as soon as the next cycle may run */
                if (f->kind == FINDING_UNLISTED_PROCESS)
                        TAKE(start + (double) c->unlisted_grace_usec / 1e6);
                for (size_t r = 0; r < c->n_rules; r++) {
                        const Rule *rule = &c->rules[r];
                        if (!(rule->kinds & (1u << f->kind)) || rule->after_usec == 0)
                                continue;
                        double at = start + (double) rule->after_usec / 1e6;
                        if (at <= now || (best > 0 && at >= best))
                                continue;
                        Subject subj, blocker;
                        subject_of_finding(f, rule->after_usec, &subj, &blocker);
                        if (rule_matches(rule, &subj))
                                best = at;
                }
        }
#undef TAKE
        return best;
}

int finding_store_list(const FindingStore *s, Findings *ret) {
        for (size_t i = 0; i < s->n; i++) {
                if (!s->items[i].open)
                        continue;
                Finding *x = findings_add(ret);
                if (!x)
                        return -ENOMEM;
                *x = *s->items[i].f;
        }
        return 0;
}

size_t finding_store_count_open(const FindingStore *s) {
        size_t n = 0;
        for (size_t i = 0; i < s->n; i++)
                n += s->items[i].open;
        return n;
}

void finding_store_clear(FindingStore *s) {
        if (!s)
                return;
        free(s->items);
        findings_free(&s->pool);
        *s = (FindingStore){};
}

void finding_events_clear(FindingEvents *e) {
        if (!e)
                return;
        free(e->items);
        *e = (FindingEvents){};
}

void finding_store_set_dry_run(FindingStore *s, const Finding *f, bool dry_run) {
        Tracked key = { .f = (Finding *) f };
        Tracked *t = s->n ? bsearch(&key, s->items, s->n, sizeof *s->items, cmp_tracked) : NULL;
        if (t)
                t->f->dry_run = dry_run;
}
