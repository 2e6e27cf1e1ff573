"""pg_stat_activity joined with the tree; findings and rules from an ini file
(issue 3), against a real PostgreSQL cluster."""
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import cluster_of
from pgharness import Cluster, pid_alive, wait_for

RULES = """
[daemon]
query_max_length = 20
[rule q]
kind = long_query
after = 1s
application_name = FakeParent:1001
action = terminate
[rule idle]
kind = idle_in_transaction
after = 1s
[rule tx]
kind = long_transaction
after = 1s
[rule lock]
kind = lock_wait
after = 1s
action = cancel
[rule orphans]
kind = orphans
"""


def once(pgtreed, config_text=None, *extra):
    argv = [pgtreed, "--once", *extra]
    path = None
    if config_text is not None:
        fd, path = tempfile.mkstemp(suffix=".ini")
        with os.fdopen(fd, "w") as f:
            f.write(config_text)
        argv += ["--config", path]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    finally:
        if path:
            os.unlink(path)
    assert p.returncode == 0, p.stderr
    return p.stdout


def once_json(pgtreed, config_text=None):
    return json.loads(once(pgtreed, config_text, "--json"))


def backend_pid(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


@pytest.fixture(scope="module")
def scene(cluster):
    cluster.sql("CREATE TABLE lockt (id int); INSERT INTO lockt VALUES (1); CREATE TABLE readt (id int)")
    s = {"conns": []}
    s["sleepers"] = [cluster.run_async("SELECT pg_sleep(120)", application_name="FakeParent:1001")[1]
                     for _ in range(2)]
    other = cluster.run_async("SELECT pg_sleep(120)", application_name="FakeParent:2002")
    s["other_sleeper"] = other[1]
    tx = cluster.connect(autocommit=False, application_name="FakeParent:2002")
    tx.set_session(isolation_level="REPEATABLE READ")
    tx.cursor().execute("SELECT count(*) FROM readt")
    s["idle_tx"] = backend_pid(tx)
    holder = cluster.connect(autocommit=False, application_name="holder")
    holder.cursor().execute("LOCK TABLE lockt IN ACCESS EXCLUSIVE MODE")
    s["holder"] = backend_pid(holder)
    s["waiters"] = [cluster.run_async("SELECT count(*) FROM lockt", application_name="waiter")[1],
                    cluster.run_async("UPDATE lockt SET id = 2", application_name="waiter")[1]]
    s["conns"] += [tx, holder]
    wait_for(lambda: cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0] == 2,
             10, what="two lock waiters")
    time.sleep(1.5)
    yield s
    for c in s["conns"]:
        c.close()
    for pid in s["sleepers"] + [s["other_sleeper"]] + s["waiters"]:
        cluster.sql("SELECT pg_cancel_backend(%s)", (pid,))


def findings(data, kind, cluster):
    """The findings of one kind about this test's cluster: pgtreed --once sees the whole host,
    where other clusters (another test suite running beside this one) have findings too."""
    return {f["pid"]: f for f in data["findings"] if f["kind"] == kind and f["cluster"] == cluster.name}


def test_long_runners_from_rules(pgtreed, cluster, scene):
    data = once_json(pgtreed, RULES)
    cl = cluster_of(data, cluster.pm_pid)
    assert cl["activity"] == "ok"

    # long_query: exactly the FakeParent:1001 group, as dry runs (--once never acts)
    q = findings(data, "long_query", cluster)
    assert set(q) == set(scene["sleepers"])
    for f in q.values():
        assert (f["rule"], f["action"], f["dry_run"]) == ("q", "terminate", True)
        assert f["application_name"] == "FakeParent:1001"
        assert f["duration_s"] >= 1

    # idle in transaction, measured from state_change, with the xmin horizon it holds back
    it = findings(data, "idle_in_transaction", cluster)
    assert scene["idle_tx"] in it and scene["holder"] in it
    assert it[scene["idle_tx"]]["backend_xmin_age"] is not None
    assert it[scene["idle_tx"]]["rule"] == "idle"

    # long transactions: from xact_start
    lt = findings(data, "long_transaction", cluster)
    assert {scene["idle_tx"], scene["holder"], *scene["sleepers"]} <= set(lt)

    # the lock-wait chain
    lw = findings(data, "lock_wait", cluster)
    assert set(lw) == set(scene["waiters"])
    for f in lw.values():
        assert (f["action"], f["dry_run"]) == ("cancel", True)

    # nothing was signalled
    for pid in scene["sleepers"] + scene["waiters"]:
        assert pid_alive(pid)
    assert cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                       (scene["sleepers"] + scene["waiters"],))[0][0] == 4


def test_activity_fields_joined(pgtreed, cluster, scene):
    data = once_json(pgtreed, RULES)
    procs = {p["pid"]: p for p in cluster_of(data, cluster.pm_pid)["processes"]}
    s = procs[scene["sleepers"][0]]
    assert s["application_name"] == "FakeParent:1001"
    assert s["activity_joined"] is True
    assert s["query"] == "SELECT pg_sleep(120)"[:20]
    assert s["query_start"].endswith("Z") and s["xact_start"].endswith("Z")
    assert s["wait_event_type"] == "Timeout" and s["wait_event"] == "PgSleep"
    w = procs[scene["waiters"][0]]
    assert w["wait_event_type"] == "Lock"
    assert procs[scene["idle_tx"]]["state"] == "idle in transaction"
    # query text switched off
    data = once_json(pgtreed, RULES.replace("query_max_length = 20", "query_max_length = 0"))
    procs = {p["pid"]: p for p in cluster_of(data, cluster.pm_pid)["processes"]}
    assert procs[scene["sleepers"][0]]["query"] is None


def test_groups_in_text(pgtreed, cluster, scene):
    out = once(pgtreed, RULES, "--group")
    assert "◆ application FakeParent:1001 (2 sessions)" in out
    assert "◆ application FakeParent:2002 (2 sessions)" in out
    assert re.search(r"long_query\s+pid %d .*rule q: terminate \(dry run\)" % scene["sleepers"][0], out)


def client_gone_case(pgtreed, cluster, host, tag):
    # a psql client whose process is killed (the client, not PostgreSQL) while its backend works
    client = subprocess.Popen(["psql", "-X", "-h", host, "-p", str(cluster.port), "-U", "postgres", "-d", "postgres",
                               "-c", "SELECT pg_sleep(60)"],
                              env={**os.environ, "PGAPPNAME": tag}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = wait_for(lambda: (cluster.sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
                                            (tag,)) or [[None]])[0][0], 10, what="client's backend")
        data = once_json(pgtreed)
        assert pid not in findings(data, "client_gone", cluster)
        client.send_signal(signal.SIGKILL)  # not PostgreSQL: the psql client
        client.wait()
        # the kernel tears the connection down after the client's exit: wait for it (10 s bound)
        seen = {}

        def reported():
            seen["data"] = once_json(pgtreed)
            return pid in findings(seen["data"], "client_gone", cluster)
        try:
            wait_for(reported, 10, interval=0.2, what="client_gone finding")
        except TimeoutError:
            raise AssertionError(seen["data"]["findings"])
        assert pid_alive(pid)  # the backend keeps working: that is the finding
        return pid
    finally:
        if client.poll() is None:
            client.kill()  # not PostgreSQL: the psql client
            client.wait()


def test_client_gone_tcp(pgtreed, cluster):
    pid = client_gone_case(pgtreed, cluster, "127.0.0.1", "gone-tcp")
    cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_client_gone_unix(pgtreed, cluster):
    pid = client_gone_case(pgtreed, cluster, cluster.base, "gone-unix")
    cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_unavailable_activity_keeps_tree(pgtreed, cluster):
    data = once_json(pgtreed, "[daemon]\nconninfo = dbname=postgres user=nosuchrole\n")
    cl = cluster_of(data, cluster.pm_pid)
    assert cl["activity"].startswith("unavailable: cannot connect")
    assert 'role "nosuchrole" does not exist' in cl["activity"]
    assert len(cl["processes"]) >= 6
    assert all(p["activity_joined"] is False for p in cl["processes"])
    text = once(pgtreed, "[daemon]\nconninfo = dbname=postgres user=nosuchrole\n")
    assert "activity unavailable: cannot connect" in text


def test_check_config(pgtreed, tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[daemon]\ninterval = 5x\n[rule r]\nkind = long_query\nafter = 1m\naction = kill\n")
    p = subprocess.run([pgtreed, "--check-config", str(bad)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert f"{bad}:2: interval: invalid duration '5x'" in p.stderr
    assert f"{bad}:6: action: 'kill': SIGKILL is refused" in p.stderr
    good = tmp_path / "good.ini"
    good.write_text(RULES)
    p = subprocess.run([pgtreed, "--check-config", str(good)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "OK (5 rules" in p.stdout
    p = subprocess.run([pgtreed, "--once", "--config", str(bad)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "interval: invalid duration" in p.stderr


def test_no_stale_activity_under_churn(cluster, daemon_factory):
    """pgbench -C opens and closes a connection per transaction for 20 s while pgtreed scans
    every 200 ms: none of those short-lived backends may be reported as stale_activity or
    unlisted_process. The property is "no false finding over N cycles that ran during M
    connections", with N and M measured and both required to be more than a few (a rate would
    be a benchmark: it depends on the machine's load)."""
    bindir = cluster.bindir
    subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pgbench", "-i", "-q", "-s", "1", "-h", cluster.base,
                    "-p", str(cluster.port), "postgres"], check=True, capture_output=True, timeout=120)
    d = daemon_factory("[daemon]\ninterval = 200ms\nunlisted_grace = 1s\n[rule o]\nkind = orphans\n").start()
    d.wait_log(rf"cluster {cluster.name}: pg_stat_activity is available")
    before = d.client_json("status")["cycles"]
    bench = subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pgbench", "-n", "-C", "-S", "-c", "4", "-j", "2",
                            "-T", "20", "-h", cluster.base, "-p", str(cluster.port), "postgres"],
                           capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stderr
    cycles = d.client_json("status")["cycles"] - before
    d.wait_cycles(6)  # a stale row must be seen in two consecutive cycles, an unlisted one for 1 s
    connections = int(re.search(r"number of transactions actually processed: (\d+)", bench.stdout).group(1))
    assert connections >= 200, bench.stdout  # each one a backend that started and ended
    assert cycles >= 20, cycles  # cycles that ran while they did
    # this cluster's: pgtreed sees the whole host, where other suites run clusters of their own
    false = [l for l in d.lines if re.search(rf"(stale_activity|unlisted_process) opened: pid \d+ on {cluster.name} ", l)]
    assert not false, false


RESTART_INTERVAL = 0.3
# one interval to see the new postmaster ready, one cycle to connect and query, and slack for a
# loaded 2-core machine; before the fix it took up to ~30 s (the discovery interval, and backoff)
RESTART_BOUND = RESTART_INTERVAL + 2.5


def test_reconnects_after_restart(pgtreed, pgtree_client, daemon_factory):
    """After a restart, pg_stat_activity is joined again within one interval of the server being
    ready (pg_ctl start -w returns when postmaster.pid says ready), under the new postmaster's name
    and socket: discovery keeps going after a postmaster exits, a starting server is not
    connected to (no failures, no backoff), the new postmaster gets a fresh connection."""
    c = Cluster(name=f"pgtree_restart_{os.getpid()}")
    c.start()
    try:
        d = daemon_factory(f"[daemon]\ninterval = {int(RESTART_INTERVAL * 1000)}ms\nconnect_timeout = 1s\n").start()
        d.wait_log(rf"cluster {c.name}: pg_stat_activity is available")
        old_pm = c.pm_pid
        c.restart()
        ready = time.monotonic()
        assert c.pm_pid != old_pm
        try:
            d.wait_log(rf"cluster {c.name}: pg_stat_activity is available", count=2, timeout=60)
        except TimeoutError:
            raise AssertionError("no reconnection after the restart:\n" + d.log())
        took = time.monotonic() - ready
        print(f"pg_stat_activity available {took:.2f}s after the restarted server was ready")
        d.wait_log(rf"postmaster {old_pm} of cluster .* exited: scanning for orphans now")
        assert took <= RESTART_BOUND, f"{took:.2f}s after ready (bound {RESTART_BOUND}s)"
        # (a Tree answered while a cycle runs shows that cycle's tree, not joined yet: ask again)
        cl = wait_for(lambda: [x for x in [cluster_of(d.client_json("tree"), c.pm_pid)] if x["activity"] == "ok"], 10,
                      what="a tree with activity ok")[0]
        assert cl["name"] == c.name
        # (other clusters of the host are none of this test's business)
        assert not [l for l in d.lines if "cannot connect" in l and (f"cluster {c.name}:" in l or c.data in l)], d.log()
    finally:
        c.stop()


def test_lifecycle_open_once_resolve(cluster, daemon_factory):
    d = daemon_factory("[daemon]\ninterval = 200ms\n[rule q]\nkind = long_query\nafter = 500ms\n"
                       "application_name = lifecycle\n").start()
    _, pid, _ = cluster.run_async("SELECT pg_sleep(60)", application_name="lifecycle")
    d.wait_log(rf"long_query opened: pid {pid} ")
    d.wait_cycles(5)  # several cycles: still one "opened"
    assert len([l for l in d.lines if f"long_query opened: pid {pid} " in l]) == 1
    cluster.sql("SELECT pg_cancel_backend(%s)", (pid,))
    d.wait_log(rf"long_query resolved: pid {pid} ")
    assert len([l for l in d.lines if f"long_query opened: pid {pid} " in l]) == 1


def test_alerts_and_metrics_file(cluster, daemon_factory, tmp_path):
    """action = alert runs the command with the finding in its environment, without blocking;
    a failing command is logged, not fatal; metrics_file is written each cycle."""
    out = tmp_path / "alert.env"
    ok = tmp_path / "page-oncall"
    ok.write_text(f"#!/bin/sh\nenv | grep ^PGTREE_ | sort > {out}\n")
    ok.chmod(0o755)
    bad = tmp_path / "broken-pager"
    bad.write_text("#!/bin/sh\nexit 3\n")
    bad.chmod(0o755)
    prom = tmp_path / "pgtree.prom"
    os.chmod(tmp_path, 0o755)
    d = daemon_factory(f"""[daemon]
interval = 300ms
metrics_file = {prom}
[rule page]
kind = long_query
after = 500ms
application_name = alerted
cluster = {cluster.name}
action = alert
alert_command = {ok}
[rule page-broken]
kind = idle_in_transaction
after = 500ms
application_name = alerted-tx
cluster = {cluster.name}
action = alert
alert_command = {bad}
""").start()
    _, pid, _ = cluster.run_async("SELECT pg_sleep(30)", application_name="alerted")
    tx = cluster.connect(autocommit=False, application_name="alerted-tx")
    tx.cursor().execute("SELECT 1")
    wait_for(lambda: out.exists() and "PGTREE_PID" in out.read_text(), 15, what="the alert's output")
    env = dict(l.split("=", 1) for l in out.read_text().splitlines())
    assert env["PGTREE_KIND"] == "long_query" and env["PGTREE_PID"] == str(pid)
    assert env["PGTREE_RULE"] == "page" and env["PGTREE_APPLICATION"] == "alerted"
    assert env["PGTREE_CLUSTER"] == cluster.name and int(env["PGTREE_DURATION"]) >= 0
    d.wait_log(r"alert .*page-oncall for long_query pid %d ran" % pid)
    d.wait_log(r"alert .*broken-pager for idle_in_transaction pid \d+ failed with exit status 3")
    assert d.proc.poll() is None
    wait_for(lambda: prom.exists() and 'pgtree_alerts_total{result="failed"} 1' in prom.read_text(), 10,
             what="metrics file with the alerts")
    text = prom.read_text()
    assert 'pgtree_alerts_total{result="ok"} 1' in text
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    tx.close()
    cluster.sql("SELECT pg_cancel_backend(%s)", (pid,))


def test_backend_that_does_not_exit_is_reported_not_killed(cluster, daemon_factory):
    """A backend that cannot act on SIGTERM (here: stopped with SIGSTOP by the test) is reported
    after terminate_grace and never escalated; once it can, it exits."""
    d = daemon_factory(f"""[daemon]
interval = 200ms
terminate_grace = 1s
[cluster it]
data_directory = {cluster.data}
enforce = yes
[rule stuck]
kind = long_query
after = 300ms
application_name = stuck
action = terminate
""").start()
    _, pid, _ = cluster.run_async("SELECT pg_sleep(60)", application_name="stuck")
    wait_for(lambda: cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'", (pid,))[0][0],
             10, what="active session")
    os.kill(pid, signal.SIGSTOP)
    try:
        d.wait_log(rf"terminate pid {pid} \(rule stuck\): sent SIGTERM to pid {pid}")
        d.wait_log(rf"pid {pid} did not exit within 1s of SIGTERM; pgtree never escalates to SIGKILL")
        assert pid_alive(pid)
        d.wait_cycles(5)
        assert len([l for l in d.lines if f"terminate pid {pid} " in l]) == 1  # sent once, not repeated
    finally:
        os.kill(pid, signal.SIGCONT)
    d.wait_log(rf"pid {pid} exited [0-9.]+s after SIGTERM")
    log = cluster.server_log()
    assert "terminated by signal 9" not in log and "reinitializing" not in log
