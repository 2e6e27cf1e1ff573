"""pgtreed --once against a real PostgreSQL cluster: the tree agrees with ps and
with pg_stat_activity."""
import os
import re
import subprocess
import time

import pytest

from conftest import cluster_of, once_json, run_once
from pgharness import pid_alive, wait_for

PARALLEL_QUERY = """
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
SELECT count(*) FROM sample_data WHERE slow_row(id)
"""


@pytest.fixture(scope="module")
def sessions(cluster):
    cluster.sql("CREATE TABLE sample_data AS SELECT g AS id, md5(g::text) AS v "
                "FROM generate_series(1, 20000) g")
    cluster.sql("""CREATE FUNCTION slow_row(i int) RETURNS bool LANGUAGE plpgsql
                   PARALLEL SAFE AS $$ BEGIN PERFORM pg_sleep(0.01); RETURN true; END $$""")
    s = {}
    s["tcp_idle"] = cluster.connect(tcp=True, application_name="FakeParent:1001")
    s["unix_idle"] = cluster.connect(application_name="FakeParent:1001")
    tx = cluster.connect(autocommit=False, application_name="FakeParent:2002")
    tx.cursor().execute("SELECT 1")
    s["idle_tx"] = tx
    _, s["sleep_pid"], _ = cluster.run_async("SELECT pg_sleep(120)", tcp=True)
    _, s["parallel_leader"], _ = cluster.run_async(PARALLEL_QUERY)
    wait_for(lambda: len(cluster.sql(
        "SELECT 1 FROM pg_stat_activity WHERE leader_pid = %s", (s["parallel_leader"],))) >= 1,
        20, what="parallel workers")
    yield s
    for k in ("tcp_idle", "unix_idle", "idle_tx"):
        s[k].close()
    for pid in (s["sleep_pid"], s["parallel_leader"]):
        cluster.sql("SELECT pg_cancel_backend(%s)", (pid,))


def backend_pid(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def ps_children(pm_pid):
    out = subprocess.run(["ps", "-o", "pid=,ppid=", "--ppid", str(pm_pid)],
                         capture_output=True, text=True).stdout
    return {int(a): int(b) for a, b in (line.split() for line in out.splitlines())}


def by_pid(cl):
    return {p["pid"]: p for p in cl["processes"]}


def test_every_child_appears_with_its_ppid(pgtreed, cluster, sessions):
    before = ps_children(cluster.pm_pid)
    data = once_json(pgtreed)
    after = ps_children(cluster.pm_pid)
    stable = set(before) & set(after)  # alive before and after the scan
    assert len(stable) >= 10
    procs = by_pid(cluster_of(data, cluster.pm_pid))
    missing = stable - set(procs)
    assert not missing, f"ps shows children pgtreed does not: {missing}"
    for pid in stable:
        assert procs[pid]["ppid"] == cluster.pm_pid
    # nothing invented: every child listed was a child of the postmaster by ps
    for pid, p in procs.items():
        if pid != cluster.pm_pid:
            assert pid in before or pid in after, f"pgtreed lists {pid}, which ps never saw"
    assert procs[cluster.pm_pid]["backend_type"] == "postmaster"
    types = {p["backend_type"] for p in procs.values()}
    for t in ("checkpointer", "background writer", "walwriter", "autovacuum launcher",
              "logical replication launcher", "client backend", "parallel worker"):
        assert t in types


def test_backend_type_agrees_with_pg_stat_activity(pgtreed, cluster, sessions):
    q = "SELECT pid, backend_type FROM pg_stat_activity"
    act1 = dict(cluster.sql(q))
    data = once_json(pgtreed)
    act2 = dict(cluster.sql(q))
    procs = by_pid(cluster_of(data, cluster.pm_pid))
    compared = set()
    for pid, bt in act1.items():
        if act2.get(pid) != bt or pid not in procs:
            continue
        assert procs[pid]["backend_type"] == bt, f"pid {pid}: {procs[pid]['title']!r}"
        compared.add(bt)
    assert {"client backend", "parallel worker", "checkpointer", "walwriter",
            "background writer", "autovacuum launcher"} <= compared


def test_session_fields(pgtreed, cluster, sessions):
    data = once_json(pgtreed)
    cl = cluster_of(data, cluster.pm_pid)
    assert cl["name"] == cluster.name
    assert cl["postmaster"]["data_directory"] == cluster.data
    assert cl["postmaster"]["port"] == cluster.port
    assert cl["postmaster"]["start_time"].endswith("Z")
    procs = by_pid(cl)

    tcp = procs[backend_pid(sessions["tcp_idle"])]
    port = cluster.sql("SELECT client_port FROM pg_stat_activity WHERE pid = %s", (tcp["pid"],))[0][0]
    assert tcp["client"] == f"127.0.0.1:{port}"
    assert (tcp["user"], tcp["database"], tcp["state"]) == ("postgres", "postgres", "idle")

    unix = procs[backend_pid(sessions["unix_idle"])]
    assert unix["client"] == "local"

    tx = procs[backend_pid(sessions["idle_tx"])]
    assert tx["state"] == "idle in transaction"

    sleeper = procs[sessions["sleep_pid"]]
    assert (sleeper["state"], sleeper["status"]) == ("active", "SELECT")

    leader = sessions["parallel_leader"]
    workers = [p for p in procs.values() if p["backend_type"] == "parallel worker"]
    assert workers and all(w["leader_pid"] == leader for w in workers)
    for p in procs.values():
        assert 0 <= p["cpu_percent"] <= 200
        # a process that exited while it was read (autovacuum workers come and go every second
        # here) has no memory left to count: only the ones still alive now must show some
        if pid_alive(p["pid"]):
            assert p["rss_anon_kb"] > 0, p


def test_text_forest(pgtreed, cluster, sessions):
    out = run_once(pgtreed).stdout
    assert f"cluster {cluster.name}  {cluster.data}  port {cluster.port}  ready" in out
    lines = out.splitlines()
    pm_line = next(i for i, l in enumerate(lines) if l.split()[:1] == [str(cluster.pm_pid)])
    assert "postmaster" in lines[pm_line]
    assert any("├─ checkpointer" in l for l in lines)
    assert any(re.search(r"client backend  postgres@postgres  local  \[FakeParent:2002\]  idle in transaction \d+s", l)
               for l in lines)
    leader = next(i for i, l in enumerate(lines) if l.split()[:1] == [str(sessions["parallel_leader"])])
    # workers are nested one level below their leader
    assert re.search(r"(│  |   )(├─|└─) parallel worker  postgres@postgres  .*leader %d$" % sessions["parallel_leader"],
                     lines[leader + 1]), lines[leader + 1]


def test_autovacuum_worker(pgtreed, cluster):
    cluster.sql("CREATE TABLE churn (id int PRIMARY KEY, n int) WITH "
                "(autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0, "
                "autovacuum_analyze_threshold = 0)")
    cluster.sql("INSERT INTO churn SELECT g, 0 FROM generate_series(1, 50000) g")
    end = time.monotonic() + 60
    while time.monotonic() < end:
        cluster.sql("UPDATE churn SET n = n + 1")
        data = once_json(pgtreed)
        workers = [p for p in cluster_of(data, cluster.pm_pid)["processes"]
                   if p["backend_type"] == "autovacuum worker"]
        if workers:
            assert all(w["ppid"] == cluster.pm_pid and w["database"] for w in workers)
            return
    pytest.fail("no autovacuum worker seen in 60 s")


def test_unprivileged_view(pgtreed, cluster, sessions):
    """As nobody, /proc/PID/cwd is unreadable: the data directory comes from -D."""
    data = once_json(pgtreed, user="nobody")
    cl = cluster_of(data, cluster.pm_pid)
    assert cl["postmaster"]["data_directory"] == cluster.data
    assert len(cl["processes"]) >= 10


def test_bad_command_lines(pgtreed):
    for argv, msg in (([pgtreed, "--bogus"], "unknown option '--bogus'"),
                      ([pgtreed, "--once", "stray"], "unexpected argument 'stray'"),
                      ([pgtreed, "--json"], "--json and --group go with --once"),
                      ([pgtreed, "--log-target", "syslog"], "--log-target: 'syslog' is not auto, journal, stderr or both"),
                      ([pgtreed, "--config"], "needs an argument")):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        assert p.returncode == 2
        assert msg in p.stderr
    p = subprocess.run([pgtreed, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "--once" in p.stdout
