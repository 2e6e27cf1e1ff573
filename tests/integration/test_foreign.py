"""foreign_process (issue 13, part 2): what runs below a cluster's processes and is not
PostgreSQL, with the backend it came from."""
import contextlib
import os
import signal
import tempfile
import time

import pytest

from conftest import cluster_of, once_json
from pgharness import Cluster, pid_alive, wait_for
from test_identity import once


def foreign_findings(data, **match):
    return [f for f in data["findings"] if f["kind"] == "foreign_process"
            and all(f.get(k) == v for k, v in match.items())]


def descendants(pid):
    """pids below pid, from /proc (children files)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError), open(f"/proc/{p}/task/{p}/children") as f:
            kids = [int(x) for x in f.read().split()]
            out += kids
            todo += kids
    return out


def cmdline(pid):
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


@pytest.fixture(scope="module")
def copy_table(cluster):
    cluster.sql("CREATE TABLE IF NOT EXISTS fp_t (x text)")
    return "fp_t"


def start_copy(cluster, seconds, app):
    marker = f"{seconds}.{os.getpid() % 1000}"
    th, pid, holder = cluster.run_async(f"COPY fp_t FROM PROGRAM 'sleep {marker}'", application_name=app)
    sleeper = wait_for(lambda: next((p for p in descendants(pid) if cmdline(p) == f"sleep {marker}"), None), 20,
                       what="the COPY's program")
    return pid, sleeper, marker


def end_session(cluster, pid):
    cluster.sql("SELECT pg_cancel_backend(%s)", (pid,))


def test_copy_from_program_reported(cluster, copy_table, pgtreed):
    pid, sleeper, marker = start_copy(cluster, 60, "copy-app")
    try:
        data = once_json(pgtreed)
        fs = foreign_findings(data, pid=sleeper)
        assert len(fs) == 1, data["findings"]
        f = fs[0]
        assert f["cluster"] == cluster_of(data, cluster.pm_pid)["name"]
        assert f["backend_pid"] == pid
        assert (f["user"], f["database"], f["application_name"], f["client"]) == ("postgres", "postgres", "copy-app", "local")
        assert f["query"] == f"COPY fp_t FROM PROGRAM 'sleep {marker}'"
        assert f["command"] == f"sleep {marker}" and f["exe"] == "/usr/bin/sleep"
        assert f["uid"] == os.stat(cluster.data).st_uid and f["detached"] is False
        assert f["action"] == "log" and f["started"]
        # the session itself is no foreign process, nor is any PostgreSQL process
        pg = {p["pid"] for p in cluster_of(data, cluster.pm_pid)["processes"]}
        assert not {x["pid"] for x in data["foreign_processes"]} & pg
    finally:
        end_session(cluster, pid)


def test_allow_pattern_silences(cluster, copy_table, pgtreed):
    pid, sleeper, marker = start_copy(cluster, 60, "copy-allowed")
    try:
        data = once(pgtreed, "[daemon]\nallow_foreign = sleep *, sh -c sleep *\n")
        assert not [f for f in foreign_findings(data) if f["backend_pid"] == pid], data["findings"]
        mine = [x for x in data["foreign_processes"] if x["backend_pid"] == pid]
        assert mine and all(x["allowed"] for x in mine), mine
        # another pattern does not silence it
        data = once(pgtreed, "[daemon]\nallow_foreign = /usr/bin/gzip*\n")
        assert foreign_findings(data, pid=sleeper)
    finally:
        end_session(cluster, pid)


def test_daemonized_program_still_found(cluster, copy_table, pgtreed):
    marker = f"{300 + os.getpid() % 100}.{os.getpid() % 1000}"
    # double fork + setsid: the sleeper's parent exits at once, it is re-parented, the COPY ends
    cluster.sql(f"COPY fp_t FROM PROGRAM '( setsid sleep {marker} </dev/null >/dev/null 2>&1 & ); echo done'")
    sleeper = wait_for(lambda: next((int(p) for p in os.listdir("/proc") if p.isdigit() and cmdline(p) == f"sleep {marker}"),
                                    None), 20, what="the daemonized program")
    try:
        assert sleeper not in descendants(cluster.pm_pid)
        data = once_json(pgtreed)
        fs = foreign_findings(data, pid=sleeper)
        assert len(fs) == 1, (data["findings"], data["foreign_processes"])
        assert fs[0]["detached"] is True
        assert fs[0]["cluster"] == cluster_of(data, cluster.pm_pid)["name"]
        assert "data directory" in fs[0]["detail"]
    finally:
        os.kill(sleeper, signal.SIGTERM)  # the test's own program, not PostgreSQL's


def test_archive_command_child_not_reported(pgtreed):
    with Cluster(name=f"pgtree_fp_arch_{os.getpid()}",
                 settings={"archive_mode": "on", "archive_command": "'sleep 30 && true'", "wal_level": "replica"}) as c:
        c.sql("CREATE TABLE a (x int); INSERT INTO a SELECT generate_series(1, 1000); SELECT pg_switch_wal()")
        child = wait_for(lambda: next((p for p in descendants(c.pm_pid) if "sleep 30" in cmdline(p)), None), 60,
                         what="archive_command's child")
        data = once_json(pgtreed)
        mine = [x for x in data["foreign_processes"] if x["pid"] == child]
        assert mine and mine[0]["expected"], data["foreign_processes"]
        name = cluster_of(data, c.pm_pid)["name"]
        assert not foreign_findings(data, cluster=name), data["findings"]


def test_terminate_acts_on_backend_never_postmaster(cluster, copy_table, daemon_factory):
    d = daemon_factory(f"""[daemon]
interval = 300ms
discovery_interval = 1h
[cluster it]
data_directory = {cluster.data}
enforce = yes
[rule no-programs]
kind = foreign_process
command = sleep *
action = terminate
""").start()
    time.sleep(1)  # the first (full) scan is done: the COPY is found by a refresh
    pid, sleeper, marker = start_copy(cluster, 60, "copy-terminated")
    d.wait_log(r"sent SIGTERM to pid %d \(the backend that runs foreign process %d\)" % (pid, sleeper), 30)
    # its program got SIGTERM too (a backend reading a program's output waits for it to end)
    d.wait_log(r"sent SIGTERM to foreign process %d\b" % sleeper, 30)
    wait_for(lambda: not pid_alive(pid), 20, what="the backend to exit")
    assert pid_alive(cluster.pm_pid)
    assert f"to pid {cluster.pm_pid}" not in d.log()
    assert f"sent SIGTERM to pid {sleeper}" not in d.log()


def test_orphans_command_lists_it(cluster, copy_table, daemon_factory):
    d = daemon_factory("[daemon]\ninterval = 300ms\n").start()
    pid, sleeper, marker = start_copy(cluster, 60, "copy-listed")
    try:
        out = wait_for(lambda: (lambda o: o if f"pid {sleeper}" in o or f"{sleeper} " in o else None)(
            d.client("orphans").stdout), 30, what="the foreign process in pgtree orphans")
        line = next(l for l in out.splitlines() if "foreign_process" in l and str(sleeper) in l)
        assert f"FOREIGN uid {os.stat(cluster.data).st_uid}: sleep {marker}" in line and f"(backend {pid})" in line, out
        # root is an admin: the backend's query is shown on the next line
        assert f"COPY fp_t FROM PROGRAM 'sleep {marker}'" in out.split(line, 1)[1].lstrip("\n").splitlines()[0], out
    finally:
        end_session(cluster, pid)
