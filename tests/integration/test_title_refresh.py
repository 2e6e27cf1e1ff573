"""An active session's title is not read again while pg_stat_activity shows it running the same
statement (issue 10): the tree must still show the new title right after the session starts
another statement.

A title is also re-read every fifth cycle whatever happens, staggered by pid (pid mod 5), and by
every discovery scan: the sessions cover every residue of pid mod 5, so a daemon that kept titles
across a change of statement shows a stale title for one of them at least when the check comes
three cycles after the switch (four refreshes, one of them maybe under way) — unless a discovery
scan came in between (another cluster of the host exiting makes every cycle
one for two minutes): such a round proves less, and the sessions switch statement again, until a
round without one (at most 5 rounds; every round checks the titles)."""
import queue
import threading

import pytest

from conftest import cluster_of
from pgharness import wait_for

RESIDUES = 5
STATEMENTS = [("SELECT", "SELECT pg_sleep(120)"), ("DO", "DO $$BEGIN PERFORM pg_sleep(120); END$$")]


@pytest.fixture
def daemon(daemon_factory, cluster):
    d = daemon_factory(f"""[daemon]
interval = 1s
[cluster it]
data_directory = {cluster.data}
""")
    d.start()
    yield d
    d.stop()


def titles(d, cluster, pids):
    procs = {p["pid"]: p for p in cluster_of(d.client_json("tree"), cluster.pm_pid)["processes"]}
    return {pid: procs.get(pid, {}).get("title", "") for pid in pids}


def session(conn, work):
    while True:
        sql = work.get()
        if sql is None:
            return
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        except Exception:  # cancelled by the test: the next statement comes at once
            pass


def test_title_follows_a_new_statement(daemon, cluster):
    conns, pids, threads, queues, spare = [], [], [], [], []
    try:
        for i in range(60):  # one session per residue of its pid mod 5
            c = cluster.connect(application_name=f"title-{i}")
            with c.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pid = cur.fetchone()[0]
            if any(p % RESIDUES == pid % RESIDUES for p in pids):
                spare.append(c)
                continue
            pids.append(pid)
            conns.append(c)
            if len(pids) == RESIDUES:
                break
        for c in spare:
            c.close()
        assert len(pids) == RESIDUES, f"no backend pid for every residue mod {RESIDUES}: {pids}"
        for c in conns:
            q = queue.Queue()
            q.put(STATEMENTS[0][1])
            t = threading.Thread(target=session, args=(c, q), daemon=True)
            t.start()
            threads.append(t)
            queues.append(q)

        clean_rounds = 0
        for rnd in range(1, 6):
            tag, _ = STATEMENTS[(rnd - 1) % 2]
            wait_for(lambda: all(t.endswith(" " + tag) for t in titles(daemon, cluster, pids).values()), 30,
                     what=f"every session's title shows {tag}")
            daemon.wait_cycles(3)  # the same statement in two answers: its titles are kept now
            assert all(t.endswith(" " + tag) for t in titles(daemon, cluster, pids).values())

            new_tag, new_sql = STATEMENTS[rnd % 2]
            st0 = daemon.client_json("status")
            for q in queues:
                q.put(new_sql)
            cluster.sql("SELECT pg_cancel_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
            wait_for(lambda: len(cluster.sql("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s) AND state = 'active' "
                                             "AND query = %s", (pids, new_sql))) == len(pids), 30,
                     what=f"every session runs {new_tag}")
            # the cycle under way may have read the titles before; the next one reads them with the
            # answer that shows the new statement, and the one after must not keep them (1 s
            # cycles: the tree is read before a fourth one ends)
            daemon.wait_cycles(3)
            now = titles(daemon, cluster, pids)
            stale = {pid: t for pid, t in now.items() if not t.endswith(" " + new_tag)}
            assert not stale, f"round {rnd}: titles not re-read after the statement changed to {new_tag}: {stale}"
            st1 = daemon.client_json("status")
            if st1["full_scans"] == st0["full_scans"] and st1["cycles"] - st0["cycles"] <= 3:
                clean_rounds += 1
                break
            print(f"round {rnd}: a discovery scan, or more cycles, may have re-read every title meanwhile: again")
        if not clean_rounds:
            print("every round had a discovery scan in it (clusters of the host exiting)")
    finally:
        for q in queues:
            q.put(None)
        if pids:
            cluster.sql("SELECT pg_cancel_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
        for t in threads:
            t.join(10)
        for c in conns:
            c.close()
