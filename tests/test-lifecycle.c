/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "parse-config.h"

#include "lifecycle.h"


static Finding cand(FindingKind k, pid_t pid, double since) {
        Finding f = { .kind = k, .pid = pid, .start_ticks = 1000 + (uint64_t) pid, .since = since, .xmin_age = -1, .proc = -1 };
        strcpy(f.backend_type, "client backend");
        strcpy(f.user, "alice");
        strcpy(f.cluster, "main");
        return f;
}

static size_t count_events(const FindingEvents *e, FindingEventType type) {
        size_t n = 0;
        for (size_t i = 0; i < e->n; i++)
                n += e->items[i].type == type;
        return n;
}

static void cycle(FindingStore *s, const Config *c, double now, FindingEvents *ev, Finding *items, size_t n) {
        Findings f = { .items = items, .n = n, .allocated = n };
        finding_events_clear(ev);
        assert_int_equal(finding_store_update(s, &f, c, now, ev), 0);
}

static void test_open_once_then_resolve(void **state) {
        Config *c = parse_config("[rule q]\nkind = long_query\nafter = 60s\naction = terminate\n");
        FindingStore s = {};
        FindingEvents ev = {};
        Finding q = cand(FINDING_LONG_QUERY, 10, 1000);

        cycle(&s, c, 1030, &ev, &q, 1); /* 30 s: below the threshold */
        assert_int_equal(ev.n, 0);
        assert_int_equal(finding_store_count_open(&s), 0);
        cycle(&s, c, 1061, &ev, &q, 1); /* 61 s: opens */
        assert_int_equal(count_events(&ev, FINDING_OPENED), 1);
        assert_string_equal(ev.items[0].finding.rule, "q");
        assert_int_equal(ev.items[0].finding.action, ACTION_TERMINATE);
        assert_true(ev.items[0].finding.duration_s >= 61);
        for (int i = 0; i < 5; i++) { /* kept: never re-announced */
                cycle(&s, c, 1062 + i, &ev, &q, 1);
                assert_int_equal(ev.n, 0);
                assert_int_equal(finding_store_count_open(&s), 1);
        }
        cycle(&s, c, 1070, &ev, NULL, 0); /* gone */
        assert_int_equal(count_events(&ev, FINDING_RESOLVED), 1);
        assert_int_equal(ev.items[0].finding.pid, 10);
        assert_int_equal(finding_store_count_open(&s), 0);
        assert_int_equal(s.n, 0);
        cycle(&s, c, 1071, &ev, NULL, 0);
        assert_int_equal(ev.n, 0);
        finding_events_clear(&ev);
        finding_store_clear(&s);
        config_free(c);
}

/* A new process with the same pid is a new finding, not the old one kept. */
static void test_identity_includes_start(void **state) {
        Config *c = parse_config("[rule q]\nkind = long_query\nafter = 1s\n");
        FindingStore s = {};
        FindingEvents ev = {};
        Finding q = cand(FINDING_LONG_QUERY, 10, 100);
        cycle(&s, c, 200, &ev, &q, 1);
        assert_int_equal(count_events(&ev, FINDING_OPENED), 1);
        q.start_ticks += 50;
        cycle(&s, c, 201, &ev, &q, 1);
        assert_int_equal(count_events(&ev, FINDING_OPENED), 1);
        assert_int_equal(count_events(&ev, FINDING_RESOLVED), 1);
        finding_events_clear(&ev);
        finding_store_clear(&s);
        config_free(c);
}

static void test_stale_needs_two_cycles(void **state) {
        Config *c;
        assert_int_equal(config_new_default(&c), 0);
        FindingStore s = {};
        FindingEvents ev = {};
        Finding st = cand(FINDING_STALE_ACTIVITY, 20, 0);
        cycle(&s, c, 100, &ev, &st, 1);
        assert_int_equal(ev.n, 0); /* a race between scan and query is not a finding */
        cycle(&s, c, 102, &ev, NULL, 0);
        assert_int_equal(ev.n, 0);
        cycle(&s, c, 104, &ev, &st, 1);
        assert_int_equal(ev.n, 0); /* not consecutive: starts over */
        cycle(&s, c, 106, &ev, &st, 1);
        assert_int_equal(count_events(&ev, FINDING_OPENED), 1);
        assert_string_equal(ev.items[0].finding.rule, "builtin-orphans");
        finding_events_clear(&ev);
        finding_store_clear(&s);
        config_free(c);
}

static void test_unlisted_grace(void **state) {
        Config *c = parse_config("[daemon]\nunlisted_grace = 30s\n[rule o]\nkind = orphans\n");
        FindingStore s = {};
        FindingEvents ev = {};
        Finding u = cand(FINDING_UNLISTED_PROCESS, 30, 1000); /* started at 1000 */
        cycle(&s, c, 1010, &ev, &u, 1);
        cycle(&s, c, 1020, &ev, &u, 1);
        assert_int_equal(ev.n, 0);
        cycle(&s, c, 1031, &ev, &u, 1);
        assert_int_equal(count_events(&ev, FINDING_OPENED), 1);
        finding_events_clear(&ev);
        finding_store_clear(&s);
        config_free(c);
}

/* Orphans are reported even when no rule covers them; long runners need a rule. */
static void test_orphans_without_rule(void **state) {
        Config *c = parse_config("[rule q]\nkind = long_query\nafter = 1h\n");
        FindingStore s = {};
        FindingEvents ev = {};
        Finding items[] = { cand(FINDING_ORPHAN_BACKEND, 40, 0), cand(FINDING_IDLE_IN_TRANSACTION, 41, 1) };
        cycle(&s, c, 100000, &ev, items, 2);
        assert_int_equal(ev.n, 1);
        assert_int_equal(ev.items[0].finding.kind, FINDING_ORPHAN_BACKEND);
        assert_string_equal(ev.items[0].finding.rule, "");
        assert_int_equal(ev.items[0].finding.action, ACTION_LOG);
        finding_events_clear(&ev);
        finding_store_clear(&s);
        config_free(c);
}

static void test_escalation(void **state) {
        Config *c = parse_config("[rule warn]\nkind = long_query\nafter = 1m\n[rule stop]\nkind = long_query\nafter = 5m\naction = cancel\n");
        FindingStore s = {};
        FindingEvents ev = {};
        Finding q = cand(FINDING_LONG_QUERY, 50, 1);
        cycle(&s, c, 90, &ev, &q, 1);
        assert_int_equal(count_events(&ev, FINDING_OPENED), 1);
        assert_string_equal(ev.items[0].finding.rule, "warn");
        cycle(&s, c, 200, &ev, &q, 1);
        assert_int_equal(ev.n, 0);
        cycle(&s, c, 301, &ev, &q, 1);
        assert_int_equal(count_events(&ev, FINDING_ESCALATED), 1);
        assert_string_equal(ev.items[0].finding.rule, "stop");
        assert_int_equal(ev.items[0].finding.action, ACTION_CANCEL);
        assert_int_equal(ev.items[0].previous, ACTION_LOG);
        Findings open = {};
        assert_int_equal(finding_store_list(&s, &open), 0);
        assert_int_equal(open.n, 1);
        assert_int_equal(open.items[0].action, ACTION_CANCEL);
        findings_free(&open);
        finding_events_clear(&ev);
        finding_store_clear(&s);
        config_free(c);
}

/* When the time a condition began is unknown, it counts from when it was first seen. */
static void test_unknown_since(void **state) {
        Config *c = parse_config("[rule q]\nkind = lock_wait\nafter = 10s\n");
        FindingStore s = {};
        FindingEvents ev = {};
        Finding w = cand(FINDING_LOCK_WAIT, 60, 0);
        cycle(&s, c, 5000, &ev, &w, 1);
        assert_int_equal(ev.n, 0);
        cycle(&s, c, 5011, &ev, &w, 1);
        assert_int_equal(count_events(&ev, FINDING_OPENED), 1);
        assert_true(ev.items[0].finding.duration_s >= 11 && ev.items[0].finding.duration_s < 12);
        finding_events_clear(&ev);
        finding_store_clear(&s);
        config_free(c);
}

/* A rule's dry run stays with its finding in the cycles after the one that decided it (it was
 * shown for one cycle only: `pgtree long` said dry_run false a cycle later). */
static void test_dry_run_kept(void **state) {
        Config *c = parse_config("[rule q]\nkind = long_query\nafter = 60s\naction = terminate\n");
        FindingStore s = {};
        FindingEvents ev = {};
        Finding q = cand(FINDING_LONG_QUERY, 10, 1000), other = cand(FINDING_LONG_QUERY, 11, 1000);
        Finding both[] = { q, other };
        cycle(&s, c, 1061, &ev, both, 2);
        assert_int_equal(count_events(&ev, FINDING_OPENED), 2);
        finding_store_set_dry_run(&s, &q, true);
        Finding gone = cand(FINDING_LONG_QUERY, 12, 1000); /* not tracked: nothing happens */
        finding_store_set_dry_run(&s, &gone, true);
        for (int i = 0; i < 3; i++) {
                Finding again[] = { q, other };
                cycle(&s, c, 1062 + i, &ev, again, 2);
                Findings open = {};
                assert_int_equal(finding_store_list(&s, &open), 0);
                assert_int_equal(open.n, 2);
                for (size_t k = 0; k < open.n; k++)
                        assert_int_equal(open.items[k].dry_run, open.items[k].pid == 10);
                findings_free(&open);
        }
        finding_events_clear(&ev);
        finding_store_clear(&s);
        config_free(c);
}


/* When the store needs a cycle for what it tracks: a stale_activity seen once, its second look
 * (now); an unlisted_process also its grace; a rule's threshold that opens or escalates. */
static void test_next_moment(void **state) {
        Config *c = parse_config("[daemon]\nunlisted_grace = 60s\n"
                                 "[rule orphans]\nkind = stale_activity, unlisted_process\naction = log\n"
                                 "[rule q]\nkind = long_query\nafter = 60s\naction = log\n"
                                 "[rule q-kill]\nkind = long_query\nafter = 90s\naction = terminate\nuser = alice\n"
                                 "[rule q-bob]\nkind = long_query\nafter = 70s\naction = terminate\nuser = bob\n");
        FindingStore s = {};
        FindingEvents ev = {};
        assert_true(finding_store_next_moment(&s, c, 1000) == 0);
        Finding st = cand(FINDING_STALE_ACTIVITY, 20, 0);
        cycle(&s, c, 1000, &ev, &st, 1);
        double at = finding_store_next_moment(&s, c, 1000);
        assert_true(at > 1000 && at < 1000.01); /* the second look, at once */
        cycle(&s, c, 1000.5, &ev, &st, 1);
        assert_int_equal(count_events(&ev, FINDING_OPENED), 1);
        assert_true(finding_store_next_moment(&s, c, 1000.5) == 0); /* confirmed, open */

        /* unlisted since 1000: the second look, then its grace (60 s from its start) */
        finding_store_clear(&s);
        Finding un = cand(FINDING_UNLISTED_PROCESS, 30, 1000);
        cycle(&s, c, 1010, &ev, &un, 1);
        at = finding_store_next_moment(&s, c, 1010);
        assert_true(at > 1010 && at < 1010.01);
        cycle(&s, c, 1011, &ev, &un, 1);
        assert_int_equal(ev.n, 0);
        assert_true(finding_store_next_moment(&s, c, 1011) == 1060);

        /* a long query open by q (60 s) escalates at 90 s by q-kill (alice's; q-bob is not for her) */
        finding_store_clear(&s);
        Finding q = cand(FINDING_LONG_QUERY, 10, 1000);
        cycle(&s, c, 1061, &ev, &q, 1);
        assert_int_equal(count_events(&ev, FINDING_OPENED), 1);
        assert_true(finding_store_next_moment(&s, c, 1061) == 1090);
        cycle(&s, c, 1090, &ev, &q, 1);
        assert_int_equal(count_events(&ev, FINDING_ESCALATED), 1);
        assert_true(finding_store_next_moment(&s, c, 1090) == 0);
        finding_events_clear(&ev);
        finding_store_clear(&s);
        config_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_open_once_then_resolve),
                cmocka_unit_test(test_identity_includes_start),
                cmocka_unit_test(test_stale_needs_two_cycles),
                cmocka_unit_test(test_unlisted_grace),
                cmocka_unit_test(test_orphans_without_rule),
                cmocka_unit_test(test_escalation),
                cmocka_unit_test(test_unknown_since),
                cmocka_unit_test(test_dry_run_kept),
                cmocka_unit_test(test_next_moment),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
