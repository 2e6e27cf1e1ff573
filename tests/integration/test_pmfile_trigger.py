"""A cluster started where pgtreed knows a data directory (a configured one that was not
running, or one whose postmaster exited) is watched within a couple of seconds: its
postmaster.pid appearing starts a discovery scan (issue 10), not the next discovery interval."""
import os
import time

from pgharness import Cluster, wait_for


def watched(d, data):
    """The cycle of the first tree that has the cluster, else None (one answer: the cycle is the
    tree's own, not a second call's, which a loaded machine may let run a cycle later)."""
    tree = d.client_json("tree")
    if any(c.get("postmaster", {}).get("data_directory") == data for c in tree["clusters"]):
        return tree["cycle"]
    return None


def cycles(d):
    return d.client_json("status")["cycles"]


def test_configured_cluster_started_later_is_watched_at_once(daemon_factory):
    c = Cluster(name="pgtree_late")
    c.init()
    d = daemon_factory(f"""[daemon]
interval = 500ms
discovery_interval = 1h
[cluster late]
data_directory = {c.data}
""")
    d.start()
    try:
        k = d.client_json("status")["cycles"]
        wait_for(lambda: d.client_json("status")["cycles"] >= k + 2, 20, what="two cycles")
        assert watched(d, c.data) is None
        # counted in cycles (500 ms each), not seconds: the machine is loaded. pg_ctl -w returns
        # once the server accepts connections, after postmaster.pid appeared.
        c.launch()
        k = cycles(d)
        seen = wait_for(lambda: watched(d, c.data), 30, interval=0.1, what="the new cluster in the tree")
        print(f"watched {seen - k} cycles after pg_ctl start returned")
        assert seen - k <= 2
        # by the trigger (other clusters of the host starting and stopping also cause scans)
        assert any(f"postmaster.pid appeared in {c.data}" in l for l in d.lines), d.log()
        # and after a stop and a start (the exited postmaster's directory is watched)
        c._run([f"{c.bindir}/pg_ctl", "-D", c.data, "-m", "fast", "-w", "stop"])
        wait_for(lambda: watched(d, c.data) is None, 20, interval=0.1, what="the stopped cluster gone from the tree")
        time.sleep(1)
        c.launch()
        k = cycles(d)
        seen = wait_for(lambda: watched(d, c.data), 30, interval=0.1, what="the restarted cluster in the tree")
        print(f"watched {seen - k} cycles after pg_ctl start returned (restart)")
        assert seen - k <= 2
        assert len([l for l in d.lines if f"postmaster.pid appeared in {c.data}" in l]) >= 2, d.log()
    finally:
        d.stop()
        c.stop()


def connected(d, data):
    """Is the cluster of data in the tree with its pg_stat_activity read?"""
    return any(c.get("postmaster", {}).get("data_directory") == data and c.get("activity") == "ok"
               for c in d.client_json("tree")["clusters"])


def test_restarted_cluster_connected_when_ready(daemon_factory):
    """A server found while it starts (its postmaster.pid says starting) is connected to when the
    file says ready, not at the next cycle: interval 20 s, a restart that stays in archive
    recovery for a while (a restore_command that sleeps and finds nothing); connected within a
    few seconds of pg_ctl start returning (which waits for ready)."""
    c = Cluster(name="pgtree_ready")
    c.start()
    d = daemon_factory(f"""[daemon]
interval = 20s
discovery_interval = 1h
[cluster ready]
data_directory = {c.data}
""")
    d.start()
    try:
        wait_for(lambda: connected(d, c.data), 60, interval=0.1, what="the cluster connected")
        c._run([f"{c.bindir}/pg_ctl", "-D", c.data, "-m", "fast", "-w", "stop"])
        wait_for(lambda: watched(d, c.data) is None, 30, interval=0.1, what="the stopped cluster gone from the tree")
        c.configure({"restore_command": "'sleep 2; false'"})
        c._run(["touch", os.path.join(c.data, "recovery.signal")])
        c.launch()
        t0 = time.monotonic()
        wait_for(lambda: connected(d, c.data), 60, interval=0.1, what="the restarted cluster connected")
        took = time.monotonic() - t0
        print(f"connected {took:.2f} s after pg_ctl start returned (interval 20 s)")
        # the regular cycle is 20 s after the one its postmaster.pid appearing started
        assert took < 8.0, d.log()
    finally:
        d.stop()
        c.stop()


def test_new_cluster_in_a_watched_socket_directory(daemon_factory):
    """A cluster pgtreed was never told of, started with its socket in the directory of a
    cluster it watches (as clusters share /var/run/postgresql): found by its .s.PGSQL.PORT.lock
    at once, not at the discovery interval (1 h here); and lock files made there by anyone start
    at most one discovery scan per interval."""
    a = Cluster(name="pgtree_sockdir_a")
    a.start()
    b = Cluster(name="pgtree_sockdir_b", settings={"unix_socket_directories": f"'{a.base}'"})
    b.init()
    d = daemon_factory(f"""[daemon]
interval = 5s
discovery_interval = 1h
[cluster a]
data_directory = {a.data}
""")
    d.start()
    try:
        wait_for(lambda: connected(d, a.data), 60, interval=0.1, what="cluster a connected")
        b.launch()
        t0 = time.monotonic()
        wait_for(lambda: watched(d, b.data) is not None, 60, interval=0.1, what="the new cluster in the tree")
        took = time.monotonic() - t0
        print(f"new cluster in the tree {took:.2f} s after pg_ctl start returned")
        assert took < 4.0, d.log()
        assert any(f"PostgreSQL socket .s.PGSQL.{b.port}.lock created in {a.base}" in l for l in d.lines), d.log()
        # lock files made in a watched socket directory by anyone: at most one complete discovery
        # per 10 s (the requests wait), the regular cycles otherwise
        time.sleep(5.5)
        before = d.client_json("status")
        t0 = time.monotonic()
        for i in range(40):
            path = f"{a.base}/.s.PGSQL.{60000 + i}.lock"
            with open(path, "w") as f:
                f.write("x\n")
            os.unlink(path)
            time.sleep(0.1)
        after = d.client_json("status")
        elapsed = time.monotonic() - t0
        scans = after["full_scans"] - before["full_scans"]
        ran = after["cycles"] - before["cycles"]
        print(f"40 lock files in {elapsed:.1f} s: {scans} discovery scans, {ran} cycles (interval 5 s)")
        assert scans <= elapsed / 5 + 2 and ran <= 2 * elapsed / 5 + 3, d.log()
    finally:
        d.stop()
        b.stop()
        a.stop()
