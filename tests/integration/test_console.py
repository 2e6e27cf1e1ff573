"""Query text where operators look (issue 11, part C): tree, sessions and long show each
session's query on one line cut to the terminal's width; show and --json have it whole; readers
get none of it unless query_text_for_readers."""
import json
import os
import re
import socket

import pytest

from conftest import Daemon
from osusers import os_users
from pgharness import wait_for
from tmuxterm import Tmux

TAG = f"pq{os.getpid() % 100000}"
READER, ADMIN = f"{TAG}r", f"{TAG}a"
QUERY = "SELECT pg_sleep(600),\n       'console-" + "y" * 300 + "'   /* tail-marker */"


@pytest.fixture(scope="module")
def users():
    with os_users(TAG, [READER, ADMIN], {"rd": [READER]}) as u:
        yield u


@pytest.fixture(scope="module")
def daemon(pgtreed, pgtree_client, cluster, users):
    d = Daemon(pgtreed, pgtree_client, f"""[daemon]
interval = 250ms
socket_group = {READER}
admin_group = {ADMIN}
query_max_length = 4096
[cluster c]
data_directory = {cluster.data}
enforce = yes
[rule q]
kind = long_query
after = 1s
action = log
""")
    d.start()
    wait_for(lambda: d.client_json("status")["cycles"] >= 2, 30, what="two cycles")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def session(daemon, cluster):
    pid = cluster.run_async(QUERY, application_name="console-q")[1]
    wait_for(lambda: any(f["pid"] == pid for f in daemon.client_json("long")["findings"]), 30, what="long_query finding")
    yield pid
    cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def tree_text(d, **params):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.socket)
    s.sendall(json.dumps({"method": "io.pgtree.Tree", "parameters": {"text": True, **params}}).encode() + b"\0")
    buf = b""
    while b"\0" not in buf:
        buf += s.recv(1 << 20)
    s.close()
    return json.loads(buf.split(b"\0")[0])


def test_tree_query_one_line_cut_to_width(daemon, session):
    def line_of(**params):
        # a call answered while a cycle is half done can miss pg_stat_activity: wait for a joined one
        return wait_for(lambda: next((l for l in tree_text(daemon, **params)["parameters"]["text"].splitlines()
                                      if l.lstrip().startswith(f"{session} ") and "console-y" in l), None), 20,
                        what="the session's line with its query")
    line = line_of(width=220)
    assert "SELECT pg_sleep(600), 'console-yyy" in line, line      # one line, blanks squeezed
    assert "tail-marker" not in line and len(line) <= 220, line    # cut to the width
    # no width: the whole text, still on one line
    line = line_of()
    assert "tail-marker" in line
    # a bad width is refused
    assert tree_text(daemon, width=-1)["error"] == "org.varlink.service.InvalidParameter"
    assert tree_text(daemon, width="80")["error"] == "org.varlink.service.InvalidParameter"
    # and through the client (not a terminal: not cut)
    wait_for(lambda: any(l.lstrip().startswith(f"{session} ") and "tail-marker" in l
                         for l in daemon.client("tree").stdout.splitlines()), 20, what="tree with the whole query")


def test_sessions_and_long_show_the_query(daemon, session):
    # pg_stat_activity can miss a cycle on a loaded machine: wait for a joined one
    out = wait_for(lambda: (o := daemon.client("sessions", "--app", "console-q").stdout).count("\n") >= 2 and o, 20,
                   what="the session listed")
    assert out.splitlines()[0].split("\t")[-1] == "QUERY"
    row = out.splitlines()[1].split("\t")
    assert row[0] == str(session) and row[-1].startswith("SELECT pg_sleep(600), 'console-y") and "tail-marker" in row[-1]
    out = wait_for(lambda: (o := daemon.client("long").stdout) and "'console-y" in o and o, 20, what="long with the query")
    i = next(k for k, l in enumerate(out.splitlines()) if f"pid {session} " in l)
    assert "SELECT pg_sleep(600), 'console-" in out.splitlines()[i + 1], out
    # full text in show and --json
    show = daemon.client_json("show", str(session))
    assert show["process"]["query"] == QUERY
    # (a call answered while a cycle is half done can miss the join: wait for a whole one)
    wait_for(lambda: next(f for f in daemon.client_json("long")["findings"] if f["pid"] == session).get("query") == QUERY,
             20, what="the finding with its query")


def test_cut_to_the_terminal_in_a_terminal(daemon, session):
    # (tree: the Varlink test above checks its width; other clusters on this host make it too long to capture)
    # only this cluster's ([cluster c]): other suites' long queries on this host would make the
    # output longer than the terminal can capture
    for args in (["sessions", "--app", "console-q", "--cluster", "c"], ["long", "--cluster", "c"]):
        argv = [daemon.client_path, "--socket", daemon.socket, *args]
        # a call answered while a cycle is half done can miss pg_stat_activity: run again then
        for attempt in range(5):
            t = Tmux(argv, width=230, height=400)
            s = t.wait(r"^EXITED 0")
            lines = [l for l in s.splitlines() if "console-y" in l]
            if lines:
                break
            t.close()
        try:
            assert lines, s
            # the line ends at the terminal's edge: no wrapped continuation, no tail
            assert all(len(l) <= 230 for l in lines) and "tail-marker" not in s, s
            assert not any(l.startswith("yyyy") for l in s.splitlines()), s
        finally:
            t.close()


def test_readers_get_no_query_text(daemon, session, users):
    for args in (["tree"], ["sessions"], ["long"], ["--json", "long"], ["--json", "tree"]):
        out = daemon.client(*args, user=users["rd"]).stdout
        assert "console-y" not in out, (args, out)
    f = next(f for f in daemon.client_json("long", user=users["rd"])["findings"] if f["pid"] == session)
    assert f["query"] is None and f["query_hidden"] is True


def test_sent_sigterm_is_said_once(daemon, cluster):
    pid = cluster.run_async("SELECT pg_sleep(600)", application_name="console-once")[1]
    wait_for(lambda: any(s["pid"] == pid for s in daemon.client_json("sessions")["sessions"]), 20, what="listed")
    out = daemon.client("terminate", str(pid)).stdout
    # 0.1 printed "pid N sent     sent SIGTERM to pid N"
    assert out.strip() == f"pid {pid:<7} sent SIGTERM to pid {pid}", repr(out)
