/* SPDX-License-Identifier: MIT */
#pragma once

#include "config.h"
#include "findings.h"

/* A finding's life: opened once when first confirmed, kept (and escalated if a stronger rule
 * comes to match as it lasts) while it lasts, resolved when it ends. Never re-announced. */
typedef enum FindingEventType {
        FINDING_OPENED,
        FINDING_ESCALATED,
        FINDING_RESOLVED,
} FindingEventType;

typedef struct FindingEvent {
        FindingEventType type;
        Finding finding;
        Action previous;        /* FINDING_ESCALATED: the action before */
} FindingEvent;

typedef struct FindingEvents {
        FindingEvent *items;
        size_t n;
        size_t allocated;
} FindingEvents;

typedef struct Tracked {
        Finding *f;             /* in the store's pool */
        unsigned cycles;        /* consecutive cycles it was seen in */
        bool open;
} Tracked;

/* The findings of the last cycle stay where that cycle's detection wrote them (pool): a Finding
 * is 8 KB, and with hundreds open, copying them into the store each cycle was a tenth of it. */
typedef struct FindingStore {
        Tracked *items;         /* sorted by (pid, kind, start_ticks) */
        size_t n;
        size_t allocated;
        Findings pool;
} FindingStore;

/* Feeds one cycle's candidates (now: epoch seconds). A candidate is confirmed when seen in two
 * consecutive cycles for stale_activity and unlisted_process (a race between the /proc scan and
 * the query is not a finding), and unlisted_process only after config->unlisted_grace. It opens
 * when a rule decides for it; orphan kinds open without a rule too (action log). Pure. */
int finding_store_update(FindingStore *s, const Findings *candidates, const Config *config, double now,
                         FindingEvents *events);
/* The same, taking the candidates over (*candidates is left empty, also on failure, when the
 * store stays as it was). */
int finding_store_update_take(FindingStore *s, Findings *candidates, const Config *config, double now,
                              FindingEvents *events);

/* Records what the rule's action came to for the tracked finding of f's identity: whether it was
 * a dry run stays with the finding for as long as it lasts (the cycles after too). */
void finding_store_set_dry_run(FindingStore *s, const Finding *f, bool dry_run);

/* The next moment (epoch seconds, after now) a cycle would change what the store says of what it
 * tracks as it is: a stale_activity or unlisted_process seen once needs its second look (now:
 * as soon as a cycle may run), an unlisted_process its grace, a finding a rule's threshold that
 * opens or escalates it. 0 if none. */
double finding_store_next_moment(const FindingStore *s, const Config *c, double now);

/* The open findings, in store order. */
int finding_store_list(const FindingStore *s, Findings *ret);
size_t finding_store_count_open(const FindingStore *s);
void finding_store_clear(FindingStore *s);
void finding_events_clear(FindingEvents *e);

const char *finding_event_type_to_string(FindingEventType t);
