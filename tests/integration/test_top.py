"""pgtree top in a real terminal (issue 11, part B): tmux runs it against a real pgtreed and a
real cluster, send-keys drives it, capture-pane reads the screen."""
import os
import re
import shlex
import subprocess
import time

import pytest

from conftest import Daemon
from osusers import os_users
from tmuxterm import Tmux
from pgharness import pid_alive, wait_for

TAG = f"pk{os.getpid() % 100000}"
READER, ADMIN = f"{TAG}r", f"{TAG}a"


def lines_with(screen, word):
    return [l for l in screen.splitlines() if word in l]


def row_pid(line):
    return int(line.split()[0])


@pytest.fixture(scope="module")
def users():
    with os_users(TAG, [READER, ADMIN], {"rd": [READER], "ad": [ADMIN]}) as u:
        yield u


@pytest.fixture(scope="module")
def daemon(pgtreed, pgtree_client, cluster, users):
    d = Daemon(pgtreed, pgtree_client, f"""[daemon]
interval = 500ms
socket_group = {READER}
admin_group = {ADMIN}
max_actions_per_minute = 1000
[cluster top]
data_directory = {cluster.data}
enforce = yes
""")
    d.start()
    wait_for(lambda: d.client_json("status")["cycles"] >= 2, 30, what="two cycles")
    yield d
    d.stop()


def top(d, *args, user=None, **kw):
    argv = [d.client_path, "--socket", d.socket, "top", *args]
    if user:
        argv = ["runuser", "-u", user, "--"] + argv
    return Tmux(argv, **kw)


def test_sort_filter_search_expand_and_terminate(daemon, cluster):
    # a CPU burner, a memory holder, two sleepers (one of another application), one idle
    burn = cluster.run_async("SELECT count(*) FROM generate_series(1, 400000000) /* burner */",
                             application_name="top-burn")[1]
    mem = cluster.run_async("SELECT pg_sleep(600) FROM (SELECT string_agg(md5(i::text), '') FROM "
                            "generate_series(1, 400000) i) s /* holder */", application_name="top-mem")[1]
    sleep_a = cluster.run_async("SELECT pg_sleep(600) /* sleeper-a */", application_name="top-sleep")[1]
    sleep_b = cluster.run_async("SELECT pg_sleep(600) /* sleeper-b */", application_name="other-app")[1]
    idle_conn = cluster.connect(application_name="top-idle")
    # other tests' clusters may run on this host: this one only
    t = top(daemon, "--filter", f"cluster={cluster.name}", width=200)
    try:
        t.wait(r"sleeper-b")
        t.wait(r"400000000")
        # the tree: cluster heading, postmaster, auxiliaries, backends with their query
        s = t.screen()
        assert re.search(r"^cluster pgtree_it_\d+ ", s, re.M), s
        assert "checkpointer" in s and "postmaster" in s
        assert re.search(r"[├└]─ ", s), s  # UTF-8 locale: box drawing

        # the flat table sorted by CPU: the burner first
        t.keys("v")
        t.keys("C")
        wait_for(lambda: lines_with(t.screen(), "top-burn") and
                 row_pid(t.screen().splitlines()[3]) == burn, 30, 0.2, what="burner on top by CPU")
        t.save("top-sort-cpu")
        # by pid: ascending pids
        t.keys("P")
        t.wait(r"sorted by pid")
        pids = [row_pid(l) for l in t.screen().splitlines()[3:-1] if re.match(r"^\s*\d+ ", l)]
        assert pids == sorted(pids) and len(pids) >= 5, t.screen()
        # by memory: the holder (its string_agg) above the sleepers
        t.keys("M")
        t.wait(r"sorted by memory")
        wait_for(lambda: [row_pid(l) for l in t.screen().splitlines()[3:-1] if re.match(r"^\s*\d+ ", l)].index(mem) <
                 [row_pid(l) for l in t.screen().splitlines()[3:-1] if re.match(r"^\s*\d+ ", l)].index(sleep_a),
                 30, 0.3, what="holder above the sleepers by memory")

        # filter: only application top-sleep
        t.keys("f")
        t.type(" app=top-sleep")  # the prompt starts with the filter in force
        t.keys("Enter")
        t.wait(r"filter: cluster=\S+ app=top-sleep")
        s = t.wait(r"sleeper-a")
        assert "sleeper-b" not in s and "400000000" not in s, s
        t.save("top-filter")
        # a bare word filters too; empty clears
        t.keys("f")
        for _ in range(80):
            t.keys("BSpace")
        t.keys("Enter")
        t.wait(r"filter:", absent=True)
        t.wait(r"sleeper-b")
        t.keys("f")
        t.type(f"cluster={cluster.name}")
        t.keys("Enter")

        # idle sessions hidden and shown again
        t.wait(r"top-idle")
        t.keys("i")
        t.wait(r"top-idle", absent=True)
        t.keys("i")
        t.wait(r"top-idle")

        # search selects the row; Enter expands it with everything show knows
        t.keys("/")
        t.type("sleeper-b")
        t.keys("Enter")
        t.keys("Enter")
        s = t.wait(rf"pid {sleep_b}  \(Enter or Esc closes\)")
        assert "application_name" in s and "other-app" in s and "backend_start" in s, s
        t.keys("Escape")
        t.wait(r"Enter or Esc closes", absent=True)

        # pause: the cycle number stands still
        t.keys("space")
        t.wait(r"PAUSED")
        c1 = re.search(r"cycle (\d+)", t.screen()).group(1)
        time.sleep(2)
        assert re.search(r"cycle (\d+)", t.screen()).group(1) == c1
        t.keys("space")
        t.wait(r"PAUSED", absent=True)
        wait_for(lambda: re.search(r"cycle (\d+)", t.screen()).group(1) != c1, 20, 0.2, what="cycles again")

        # terminate the selected session (sleeper-b), after a confirmation that names it
        t.keys("/")
        t.type("sleeper-b")
        t.keys("Enter")
        t.keys("t")
        s = t.wait(rf"Terminate pid {sleep_b} postgres@postgres \[other-app\] active .*sleeper-b.*\(SIGTERM\) y/N")
        t.save("top-terminate-confirm")
        t.keys("n")
        t.wait(r"nothing done")
        assert pid_alive(sleep_b)
        t.keys("t")
        t.wait(rf"Terminate pid {sleep_b} ")
        t.keys("y")
        t.wait(rf"sent SIGTERM to pid {sleep_b}")
        t.save("top-terminate-done")
        wait_for(lambda: not pid_alive(sleep_b), 20, what="terminated backend gone")
        # exactly that one
        for pid in (burn, mem, sleep_a):
            assert pid_alive(pid), pid
        t.wait(rf"^\s*{sleep_b} ", absent=True)
        daemon.wait_log(rf"terminate of pid {sleep_b} requested by uid 0 ")

        # q quits cleanly
        t.keys("q")
        t.wait(r"^EXITED 0", timeout=10)
    finally:
        t.close()
        idle_conn.close()
        for pid in (burn, mem, sleep_a, sleep_b):
            cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_reader_is_refused_and_sees_no_query_text(daemon, cluster, users):
    pid = cluster.run_async("SELECT pg_sleep(600) /* top-secret-2323 */", application_name="top-reader")[1]
    # other suites' clusters on this host must not push the session off the screen
    t = top(daemon, "--flat", "--filter", f"cluster={cluster.name}", user=users["rd"])
    try:
        s = t.wait(r"top-reader")
        assert "top-secret-2323" not in s and "(query text hidden: admins only)" in s, s
        t.keys("/")
        t.type("top-reader")
        t.keys("Enter")
        t.keys("t")
        s = t.wait(r"terminate refused: io\.pgtree\.Signal needs root or membership of group " + ADMIN)
        t.save("top-reader-refused")
        assert "y/N" not in s
        t.keys("c")
        t.wait(r"cancel refused: io\.pgtree\.Signal needs")
        assert pid_alive(pid)
        # the expanded view does not carry the query text either
        t.keys("Enter")
        s = t.wait(rf"pid {pid}  \(Enter or Esc closes\)")
        assert "top-secret-2323" not in s and "query_hidden" in s, s
    finally:
        t.close()
        cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_resize_small_terminal_no_color_ascii(daemon, cluster):
    pid = cluster.run_async("SELECT pg_sleep(600) /* resize-me */", application_name="top-resize")[1]
    t = top(daemon, "--filter", f"cluster={cluster.name}", env={"NO_COLOR": "1", "LANG": "C", "LC_ALL": "C"},
            width=160, height=30)
    try:
        s = t.wait(r"resize-me")
        # not UTF-8: an ASCII tree
        assert re.search(r"[|`]- ", s) and "├" not in s and "└" not in s, s
        assert "CLIENT" in s and "APPLICATION" in s
        t.save("top-ascii")
        # narrower: the least useful columns go, the query still shows
        t.resize(80, 20)
        s = t.wait(r"CLIENT", absent=True)
        assert "PID" in s and "CPU%" in s and f"{pid} " in s and "SELECT pg_sleep(600)" in s, s
        assert all(len(l) <= 80 for l in s.splitlines())
        t.save("top-narrow")
        # too small: says so
        t.resize(30, 5)
        t.wait(r"terminal too small")
        # and back
        t.resize(160, 30)
        t.wait(r"APPLICATION")
        t.wait(r"resize-me")
    finally:
        t.close()
        cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_daemon_restart_reconnects(pgtreed, pgtree_client, cluster):
    cfg = f"[daemon]\ninterval = 500ms\n[cluster top]\ndata_directory = {cluster.data}\n"
    d = Daemon(pgtreed, pgtree_client, cfg)
    d.start()
    d2 = None
    t = top(d)
    try:
        t.wait(r"checkpointer")
        d.proc.send_signal(15)
        d.proc.wait(15)
        t.wait(r"pgtreed went away \(restarting\?\): reconnecting|not reachable")
        s = t.screen()
        assert "checkpointer" in s, "the last cycle stays on screen: " + s
        t.save("top-daemon-gone")
        # a new daemon on the same socket
        d2 = Daemon(pgtreed, pgtree_client, cfg, workdir=d.dir)
        d2.start()
        t.wait(r"reconnected to pgtreed", timeout=30)
        t.wait(r"DISCONNECTED", absent=True)
    finally:
        t.close()
        if d2:
            d2.stop()
        else:
            d.stop()


def test_no_terminal_and_bad_options(daemon):
    p = daemon.client("top", check=False)
    assert p.returncode == 2 and "needs a terminal" in p.stderr
    p = daemon.client("top", "--sort", "size", check=False)
    assert p.returncode == 2
