"""A cluster started where pgtreed knows a data directory (a configured one that was not
running, or one whose postmaster exited) is watched within a couple of seconds: its
postmaster.pid appearing starts a discovery scan (issue 10), not the next discovery interval."""
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
