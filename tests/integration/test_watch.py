"""io.pgtree.Watch: one reply per scan cycle for a call with "more": true (issue 11, part A).

A subscriber gets every cycle while it reads; one that does not read neither piles replies up
in the daemon nor stays connected; replies are rendered once per cycle and role however many
subscribers there are; a reader's stream carries no query text."""
import json
import os
import re
import socket
import time

import pytest

from conftest import Daemon
from osusers import connect_as, os_users
from pgharness import Cluster, wait_for

TAG = f"pw{os.getpid() % 100000}"
READER, ADMIN = f"{TAG}r", f"{TAG}a"


@pytest.fixture(scope="module")
def users():
    with os_users(TAG, [READER, ADMIN], {"rd": [READER], "ad": [ADMIN]}) as u:
        yield u


@pytest.fixture(scope="module")
def big_cluster():
    """Query texts of 16 kB, so that a Tree reply of 40 sessions outgrows a socket buffer."""
    c = Cluster(name=f"pgtree_watch_{os.getpid()}", settings={"track_activity_query_size": 16384})
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def daemon(pgtreed, pgtree_client, big_cluster, users):
    d = Daemon(pgtreed, pgtree_client, f"""[daemon]
interval = 250ms
socket_group = {READER}
admin_group = {ADMIN}
query_max_length = 16384
[cluster w]
data_directory = {big_cluster.data}
""")
    d.start()
    wait_for(lambda: d.client_json("status")["cycles"] >= 2, 30, what="two cycles")
    yield d
    d.stop()


class Stream:
    """One Watch subscription on its own connection."""

    def __init__(self, path, user=None, more=True):
        self.s = connect_as(path, user)
        self.buf = b""
        msg = {"method": "io.pgtree.Watch", "parameters": {}}
        if more:
            msg["more"] = True
        self.s.sendall(json.dumps(msg).encode() + b"\0")

    def next(self, timeout=20.0):
        self.s.settimeout(timeout)
        while b"\0" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                return None
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def close(self):
        self.s.close()


def metric(d, name):
    m = re.search(rf"^{name} (\d+)", d.client("metrics").stdout, re.M)
    return int(m.group(1))


def test_one_reply_per_cycle(daemon):
    st = Stream(daemon.socket)
    try:
        first = st.next()
        assert first["continues"] is True and "error" not in first, first
        p = first["parameters"]
        assert {"cycle", "time", "interval_s", "clusters", "orphans", "findings"} <= set(p), sorted(p)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", p["time"])
        cycles = [p["cycle"]]
        for _ in range(12):
            r = st.next()
            assert r["continues"] is True
            cycles.append(r["parameters"]["cycle"])
        # a reader that keeps up sees every cycle, each once, in order
        assert cycles == list(range(cycles[0], cycles[0] + len(cycles))), cycles
        assert daemon.client_json("status")["cycles"] >= cycles[-1]
    finally:
        st.close()


def test_without_more_one_reply(daemon):
    st = Stream(daemon.socket, more=False)
    try:
        r = st.next()
        assert "continues" not in r and r["parameters"]["clusters"], r
        # and the connection serves the next call as usual
        st.s.sendall(json.dumps({"method": "io.pgtree.Status"}).encode() + b"\0")
        assert st.next()["parameters"]["cycles"] >= 1
    finally:
        st.close()


def test_rendered_once_per_cycle_and_role(daemon, users):
    """12 subscribers (8 root, 4 reader): at most two renders per cycle, not twelve."""
    streams = [Stream(daemon.socket) for _ in range(8)] + [Stream(daemon.socket, users["rd"]) for _ in range(4)]
    try:
        for s in streams:
            assert s.next()["continues"]
        wait_for(lambda: metric(daemon, "pgtree_control_watchers") == 12, 20, what="12 watchers")
        r0, c0 = metric(daemon, "pgtree_control_watch_renders_total"), daemon.client_json("status")["cycles"]
        seen = {id(s): 0 for s in streams}
        end = time.monotonic() + 3
        while time.monotonic() < end:
            for s in streams:
                s.next()
                seen[id(s)] += 1
        r1, c1 = metric(daemon, "pgtree_control_watch_renders_total"), daemon.client_json("status")["cycles"]
        assert all(n >= 3 for n in seen.values()), seen
        print(f"{c1 - c0} cycles, {r1 - r0} renders for {len(streams)} watchers")
        assert c1 - c0 >= 3
        assert r1 - r0 <= 2 * (c1 - c0 + 1), f"{r1 - r0} renders in {c1 - c0} cycles"
    finally:
        for s in streams:
            s.close()
    # closed subscribers leave: their slots and the watcher count come back
    wait_for(lambda: metric(daemon, "pgtree_control_watchers") == 0, 20, what="watchers gone")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_slow_subscriber_skips_cycles_and_one_that_does_not_read_is_dropped(daemon, big_cluster):
    text = "SELECT pg_sleep(600) /* " + "x" * 15000 + " */"
    pids = [big_cluster.run_async(text, application_name=f"big{i}")[1] for i in range(40)]
    wait_for(lambda: len([s for s in daemon.client_json("sessions")["sessions"] if s["pid"] in pids]) == 40, 30,
             what="40 sessions listed")
    size = len(json.dumps(daemon.client_json("tree")))
    assert size > 500_000, f"a reply of {size} bytes fits in a socket buffer: the test would prove nothing"

    base = rss_kb(daemon.proc.pid)
    mute = Stream(daemon.socket)        # subscribes, never reads
    slow = Stream(daemon.socket)        # reads one reply a second
    fast = Stream(daemon.socket)        # keeps up
    try:
        slow_cycles, fast_cycles, peak = [], [], 0
        end = time.monotonic() + 6
        while time.monotonic() < end:
            slow_cycles.append(slow.next()["parameters"]["cycle"])
            t = time.monotonic() + 1
            while time.monotonic() < t:
                fast_cycles.append(fast.next()["parameters"]["cycle"])
            peak = max(peak, rss_kb(daemon.proc.pid))
        # the fast one is not held back by the others; the slow one skips cycles instead of
        # receiving a backlog (several cycles pass between two of its replies)
        assert len(fast_cycles) >= 8, fast_cycles
        gaps = [b - a for a, b in zip(slow_cycles, slow_cycles[1:])]
        assert gaps and max(gaps) >= 2 and all(g >= 1 for g in gaps), slow_cycles
        # what the daemon holds for them is one shared reply each, not a reply per cycle:
        # 24 cycles of 500+ kB for the mute one would be 12 MB and more
        assert peak - base < 8 * 1024, f"pgtreed grew from {base} to {peak} kB"

        # the mute subscriber is dropped after the write timeout; the slow one is not
        daemon.wait_log(r"control client uid 0 pid \d+ \(.*\) dropped: it did not read its reply for 10s", timeout=30)
        mute.s.settimeout(10)
        got = b""
        while True:
            chunk = mute.s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        # it got what fit in its socket buffer, then end of file
        assert got.count(b"\0") <= 2
        assert slow.next()["continues"] is True
    finally:
        for s in (mute, slow, fast):
            s.close()
        for pid in pids:
            big_cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_reader_stream_has_no_query_text(daemon, big_cluster, users):
    secret = "SELECT pg_sleep(300) /* watch-secret-4711 */"
    pid = big_cluster.run_async(secret, application_name="watch-secret")[1]

    def procs(reply):
        p = reply["parameters"]
        return [x for c in p["clusters"] for x in c["processes"]] + p["orphans"]

    root = Stream(daemon.socket)
    reader = Stream(daemon.socket, users["rd"])
    admin = Stream(daemon.socket, users["ad"])
    try:
        wait_for(lambda: any(x["pid"] == pid and x.get("query") for x in procs(root.next())), 20,
                 what="root's stream shows the query")
        wait_for(lambda: "watch-secret-4711" in json.dumps(admin.next()), 20, what="admin's stream shows it")
        hidden = 0
        for _ in range(4):
            r = reader.next()
            assert "watch-secret-4711" not in json.dumps(r)
            mine = [x for x in procs(r) if x["pid"] == pid]
            if mine:
                # a cycle whose pg_stat_activity did not answer in time (a loaded host) has no
                # query to hide for it: then no query_hidden either
                assert mine[0]["query"] is None and mine[0].get("query_hidden") in (True, None), mine[0]
                hidden += mine[0].get("query_hidden") is True
        assert hidden >= 1, "the reader was never told that a query was hidden"
        assert any(x["pid"] == pid for x in procs(reader.next()))
        # and without "more" too
        one = Stream(daemon.socket, users["rd"], more=False)
        assert "watch-secret-4711" not in json.dumps(one.next())
        one.close()
    finally:
        for s in (root, reader, admin):
            s.close()
        big_cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_interface_description_documents_watch(daemon):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(daemon.socket)
    s.sendall(json.dumps({"method": "org.varlink.service.GetInterfaceDescription",
                          "parameters": {"interface": "io.pgtree"}}).encode() + b"\0")
    buf = b""
    while b"\0" not in buf:
        buf += s.recv(65536)
    s.close()
    desc = json.loads(buf.split(b"\0")[0])["parameters"]["description"]
    assert "method Watch() ->" in desc and '"more": true' in desc and "continues" in desc
    assert "enforcing: []string" in desc
