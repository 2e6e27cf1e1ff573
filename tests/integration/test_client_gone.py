"""client_gone (issue 10): a dead client is seen within one interval, Unix sockets included (their
backends' sockets are looked up by inode each cycle), and clean disconnects under pgbench -C
churn are never reported."""
import os
import re
import signal
import subprocess
import time

import pytest

from pgharness import Cluster, pid_alive, wait_for

INTERVAL_MS = 300


@pytest.fixture(scope="module")
def churn_cluster():
    with Cluster(name="pgtree_churn", settings={"max_connections": 80}) as c:
        subprocess.run(["runuser", "-u", c.os_user, "--", "pgbench", "-i", "-q", "-s", "1", "-h", c.base,
                        "-p", str(c.port), "-U", "postgres", "postgres"] if os.geteuid() == 0 else
                       ["pgbench", "-i", "-q", "-s", "1", "-h", c.base, "-p", str(c.port), "-U", "postgres", "postgres"],
                       check=True, capture_output=True, timeout=120)
        yield c


@pytest.fixture
def daemon(daemon_factory, churn_cluster):
    d = daemon_factory(f"""[daemon]
interval = {INTERVAL_MS}ms
[cluster churn]
data_directory = {churn_cluster.data}
[rule gone]
kind = client_gone
action = log
""")
    d.start()
    wait_for(lambda: d.client_json("status")["cycles"] >= 3, 20, what="three cycles")
    yield d
    d.stop()


def opened(d, cluster):
    """client_gone findings of this cluster only: pgtreed sees every cluster of the host, and
    other suites beside this one make dead clients of their own (its name gets :PORT when another
    cluster has the same cluster_name)."""
    rx = re.compile(rf"client_gone opened: pid \d+ on {re.escape(cluster.name)}(:{cluster.port})? \(")
    return [l for l in d.lines if rx.search(l)]


def cycles(d):
    return d.client_json("status")["cycles"]


def pgbench(cluster, host, seconds):
    return subprocess.Popen(["pgbench", "-n", "-C", "-S", "-c", "4", "-j", "2", "-T", str(seconds), "-h", host,
                             "-p", str(cluster.port), "-U", "postgres", "postgres"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_no_false_client_gone_under_connection_churn(daemon, churn_cluster, via):
    host = churn_cluster.base if via == "unix" else "127.0.0.1"
    c0 = cycles(daemon)
    p = pgbench(churn_cluster, host, 8)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    # real churn (with -C every transaction is a connection of its own): a precondition, not a rate
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    assert done and int(done.group(1)) >= 20, out
    wait_for(lambda: cycles(daemon) >= c0 + 20, 60, what="20 cycles during and after the churn")
    print(f"{done.group(1)} connections over {cycles(daemon) - c0} cycles via {via}: no client_gone")
    assert opened(daemon, churn_cluster) == [], "\n".join(opened(daemon, churn_cluster))


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_dead_client_within_one_interval(daemon, churn_cluster, via):
    """A client killed mid-query: the finding opens in the first cycle that begins after it died
    (counted in cycles, not seconds: the machine is loaded)."""
    host = churn_cluster.base if via == "unix" else "127.0.0.1"
    worst = 0
    for attempt in range(3):
        tag = f"gone-{via}-{attempt}"
        client = subprocess.Popen(["psql", "-X", "-h", host, "-p", str(churn_cluster.port), "-U", "postgres",
                                   "-d", "postgres", "-c", "SELECT pg_sleep(60)"],
                                  env={**os.environ, "PGAPPNAME": tag}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            pid = wait_for(lambda: (churn_cluster.sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                                                      "AND state = 'active'", (tag,)) or [[None]])[0][0], 20,
                           what="the client's backend")
            # let the daemon see the session working first (its socket is then known)
            k = cycles(daemon)
            wait_for(lambda: cycles(daemon) >= k + 2, 20, what="two cycles")
            client.send_signal(signal.SIGKILL)  # not PostgreSQL: the psql client
            client.wait()
            died = cycles(daemon)
            wait_for(lambda: any(f"pid {pid} " in l for l in opened(daemon, churn_cluster)), 30,
                     what=f"client_gone of {pid}")
            seen = cycles(daemon)
            worst = max(worst, seen - died)
            assert pid_alive(pid)
        finally:
            if client.poll() is None:
                client.kill()  # not PostgreSQL: the psql client
                client.wait()
            churn_cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                              (tag,))
    # the cycle running when it died, at most, and the one after it
    print(f"client_gone via {via}: worst {worst} cycles")
    assert worst <= 2, f"client_gone took {worst} cycles"


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_dead_client_seen_between_cycles(daemon_factory, churn_cluster, via):
    """interval 10 s: a client killed right after a cycle is found by the look at busy backends'
    clients between cycles (every 2.5 s), and its finding opens within a few seconds, not at the
    next regular cycle 10 s later."""
    d = daemon_factory(f"""[daemon]
interval = 10s
[cluster churn]
data_directory = {churn_cluster.data}
[rule gone]
kind = client_gone
action = log
""")
    d.start()
    host = churn_cluster.base if via == "unix" else "127.0.0.1"
    tag = f"probe-{via}"
    client = subprocess.Popen(["psql", "-X", "-h", host, "-p", str(churn_cluster.port), "-U", "postgres",
                               "-d", "postgres", "-c", "SELECT pg_sleep(60)"],
                              env={**os.environ, "PGAPPNAME": tag}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        pid = wait_for(lambda: (churn_cluster.sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                                                  "AND state = 'active'", (tag,)) or [[None]])[0][0], 20,
                       what="the client's backend")
        # seen working by a cycle, then killed right after the next one
        wait_for(lambda: any(p["pid"] == pid for c in d.client_json("tree")["clusters"] for p in c["processes"]),
                 30, interval=0.1, what="the backend in the tree")
        k = d.client_json("tree")["cycle"]
        wait_for(lambda: d.client_json("tree")["cycle"] > k, 30, interval=0.02, what="a cycle")
        client.send_signal(signal.SIGKILL)  # not PostgreSQL: the psql client
        client.wait()
        died = time.monotonic()
        wait_for(lambda: any(f"pid {pid} " in l for l in opened(d, churn_cluster)), 30, interval=0.02,
                 what=f"client_gone of {pid}")
        took = time.monotonic() - died
        print(f"client_gone via {via} opened {took:.2f} s after the client died (interval 10 s)")
        # a look half way (5 s), and a cycle; the regular cycle is 10 s after the last one
        assert took < 7.5, d.log()
        assert d.client_json("status")["client_probes"] >= 1
        assert pid_alive(pid)
    finally:
        if client.poll() is None:
            client.kill()  # not PostgreSQL: the psql client
            client.wait()
        churn_cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                          (tag,))
        d.stop()
