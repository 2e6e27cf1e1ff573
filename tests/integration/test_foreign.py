"""foreign_process (issue 13, part 2): what runs below a cluster's processes and is not
PostgreSQL, with the backend it came from."""
import contextlib
import os
import re
import shutil
import signal
import subprocess
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
    d.wait_cycles(2)  # the first (full) scan is done: the COPY is found by a refresh
    # not start_copy(): the rule may end the program before this test has seen it in /proc,
    # so its pid comes from pgtreed's log
    marker = f"60.{os.getpid() % 1000}"
    _, pid, _ = cluster.run_async(f"COPY fp_t FROM PROGRAM 'sleep {marker}'", application_name="copy-terminated")
    line = d.wait_log(r"sent SIGTERM to pid %d \(the backend that runs foreign process \d+\)" % pid, 30)[-1]
    sleeper = int(re.search(r"runs foreign process (\d+)", line).group(1))
    assert any(re.search(rf"foreign_process opened: pid {sleeper} .*copy-terminated", l) for l in d.lines), d.log()
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


def test_archiver_children_compared_with_settings(daemon_factory):
    """What runs below the archiver is compared with archive_command, read over pgtreed's
    connection once per connect and again when the server reloads its configuration: the
    configured script is expected; once archive_command names another program, or nothing, the
    same running child is a foreign_process with the reason; a program the script starts that
    outlives it (re-parented away from the archiver) is one too."""
    tmp = tempfile.mkdtemp(prefix="pgtree-arch-", dir=os.environ.get("PGTREE_TEST_TMP"))
    os.chmod(tmp, 0o777)
    arch = os.path.join(tmp, "arch.sh")
    arch2 = os.path.join(tmp, "arch2.sh")
    lingerer = os.path.join(tmp, "lingerer")
    os.symlink("/bin/sleep", lingerer)
    with open(arch, "w") as f:
        f.write(f"#!/bin/sh\nwhile [ ! -e {tmp}/release ]; do sleep 0.2; done\nexit 0\n")
    with open(arch2, "w") as f:
        f.write(f"#!/bin/sh\n{lingerer} 300 &\necho $! > {tmp}/lingerer.pid\n"
                f"while [ ! -e {tmp}/release2 ]; do sleep 0.2; done\nexit 0\n")
    for p in (arch, arch2):
        os.chmod(p, 0o755)
    linger_pid = None
    c = Cluster(name=f"pgtree_fp_set_{os.getpid()}",
                settings={"archive_mode": "on", "archive_command": f"'{arch} %p %f'", "wal_level": "replica"})
    c.start()
    # refreshes, not discovery scans, must see what the archiver runs
    d = daemon_factory("[daemon]\ninterval = 300ms\ndiscovery_interval = 1h\n").start()
    try:
        def archive_segment():
            c.sql("CREATE TABLE IF NOT EXISTS a (x int); INSERT INTO a SELECT generate_series(1, 1000); SELECT pg_switch_wal()")

        def foreign(pid):
            t = d.client_json("tree")
            return next((x for x in t["foreign_processes"] if x["pid"] == pid), None), t

        archive_segment()
        child = wait_for(lambda: next((p for p in descendants(c.pm_pid) if f"{arch} pg_wal/" in cmdline(p)), None), 60,
                         what="archive_command's child")
        fp = wait_for(lambda: foreign(child)[0], 30, interval=0.3, what="the child in the tree")
        assert fp["expected"] is True and fp["depth"] == 1, fp
        assert fp["judged"] == f"what the archiver runs: archive_command is '{arch} %p %f'", fp
        name = cluster_of(d.client_json("tree"), c.pm_pid)["name"]
        cl = cluster_of(d.client_json("tree"), c.pm_pid)
        assert cl["server_commands_known"] is True
        reads = cl["server_commands_reads"]
        assert reads >= 1
        # read once, not per cycle
        d.wait_cycles(10)
        assert cluster_of(d.client_json("tree"), c.pm_pid)["server_commands_reads"] == reads
        assert not foreign_findings(d.client_json("orphans"), cluster=name)

        # the same child, now that archive_command names another program: a finding, with why
        c.sql("ALTER SYSTEM SET archive_command = '/bin/true %p'")
        c.sql("SELECT pg_reload_conf()")
        f = wait_for(lambda: foreign_findings(d.client_json("orphans"), pid=child), 30, interval=0.3,
                     what="the archiver's child to be a finding")[0]
        assert ("below the archiver, but not what the server runs there: archive_command is '/bin/true %p'"
                in f["detail"]), f
        assert f["backend_type"] == "archiver" and f["cluster"] == name
        assert cluster_of(d.client_json("tree"), c.pm_pid)["server_commands_reads"] == reads + 1
        # empty: PostgreSQL runs nothing there
        c.sql("ALTER SYSTEM SET archive_command = ''")
        c.sql("SELECT pg_reload_conf()")
        wait_for(lambda: any("archive_command is empty" in x["detail"]
                             for x in foreign_findings(d.client_json("orphans"), pid=child)), 30, interval=0.3,
                 what="the reason to name the empty archive_command")

        # a script that starts a differently named program and exits before it
        c.sql(f"ALTER SYSTEM SET archive_command = '{arch2} %p %f'")
        c.sql("SELECT pg_reload_conf()")
        open(os.path.join(tmp, "release"), "w").close()
        wait_for(lambda: not pid_alive(child), 60, what="the first script to end")
        archive_segment()
        linger_pid = wait_for(lambda: (lambda s: int(s) if s.strip() else None)(
            open(os.path.join(tmp, "lingerer.pid")).read()) if os.path.exists(os.path.join(tmp, "lingerer.pid")) else None,
            60, what="the lingering program")
        lf = wait_for(lambda: foreign(linger_pid)[0], 30, interval=0.3, what="the lingering program in the tree")
        assert lf["expected"] is True and lf["depth"] >= 2 and not lf["detached"], lf
        assert not foreign_findings(d.client_json("orphans"), pid=linger_pid)
        open(os.path.join(tmp, "release2"), "w").close()
        f = wait_for(lambda: foreign_findings(d.client_json("orphans"), pid=linger_pid), 30, interval=0.3,
                     what="the program that outlived its script to be a finding")[0]
        assert f["detached"] is True, f
        assert "it outlived the command that started it" in f["detail"], f
        assert pid_alive(c.pm_pid)
    finally:
        for name in ("release", "release2"):
            open(os.path.join(tmp, name), "w").close()
        if linger_pid and pid_alive(linger_pid):
            os.kill(linger_pid, signal.SIGTERM)
        c.stop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def test_restore_command_child_expected(daemon_factory):
    """A standby's startup process runs restore_command: its child is expected because it is what
    restore_command says (the reason names the settings of the startup process)."""
    tmp = tempfile.mkdtemp(prefix="pgtree-restore-", dir=os.environ.get("PGTREE_TEST_TMP"))
    os.chmod(tmp, 0o777)
    script = os.path.join(tmp, "fetch.sh")
    with open(script, "w") as f:
        # "not in the archive" at once until the test holds it (the standby must first become
        # consistent from its own pg_wal), then waiting until released
        f.write(f"#!/bin/sh\nwhile [ -e {tmp}/hold ] && [ ! -e {tmp}/release ]; do sleep 0.2; done\nexit 1\n")
    os.chmod(script, 0o755)
    p = Cluster(name=f"pgtree_fp_rp_{os.getpid()}")
    p.start()
    sb = None
    try:
        sb = p.make_standby(f"pgtree_fp_rs_{os.getpid()}",
                            settings={"primary_conninfo": "''", "restore_command": f"'{script} %f %p'"})
        sb.launch()
        open(os.path.join(tmp, "hold"), "w").close()
        d = daemon_factory("[daemon]\ninterval = 300ms\n").start()
        child = wait_for(lambda: next((x for x in descendants(sb.pm_pid) if f"{script} " in cmdline(x)), None), 60,
                         what="restore_command's child")

        def judged():
            t = d.client_json("tree")
            return next((x for x in t["foreign_processes"] if x["pid"] == child and x["judged"]), None)
        fp = wait_for(judged, 30, interval=0.3, what="the child judged")
        assert fp["expected"] is True, fp
        assert fp["judged"] == (f"what the startup process runs: restore_command is '{script} %f %p', "
                                "recovery_end_command is empty"), fp
        assert not foreign_findings(d.client_json("orphans"), pid=child)
    finally:
        open(os.path.join(tmp, "release"), "w").close()
        if sb:
            sb.stop()
        p.stop()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def test_ssl_passphrase_command_child_expected(daemon_factory):
    """The postmaster runs ssl_passphrase_command when it reloads (with
    ssl_passphrase_command_supports_reload): while it waits for it, the command's shell below the
    postmaster is expected because it is what ssl_passphrase_command says, prompt filled in."""
    tmp = tempfile.mkdtemp(prefix="pgtree-ssl-", dir=os.environ.get("PGTREE_TEST_TMP"))
    os.chmod(tmp, 0o755)
    ask = os.path.join(tmp, "ask.sh")
    with open(ask, "w") as f:
        f.write(f"#!/bin/sh\nwhile [ -e {tmp}/hold ] && [ ! -e {tmp}/release ]; do sleep 0.2; done\necho pgtree-pass\n")
    os.chmod(ask, 0o755)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-passout", "pass:pgtree-pass", "-keyout", f"{tmp}/server.key", "-out", f"{tmp}/server.crt",
                    "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=120)
    for name in ("server.key", "server.crt"):
        shutil.chown(f"{tmp}/{name}", "postgres", "postgres")
    os.chmod(f"{tmp}/server.key", 0o600)
    setting = f'{ask} "%p"'
    c = Cluster(name=f"pgtree_fp_ssl_{os.getpid()}",
                settings={"ssl": "on", "ssl_cert_file": f"'{tmp}/server.crt'", "ssl_key_file": f"'{tmp}/server.key'",
                          "ssl_passphrase_command": "'" + setting.replace("'", "''") + "'",
                          "ssl_passphrase_command_supports_reload": "on"})
    c.start()
    try:
        d = daemon_factory("[daemon]\ninterval = 300ms\n").start()
        wait_for(lambda: (lambda cl: cl["activity"] == "ok" and cl["server_commands_known"])(
            cluster_of(d.client_json("tree"), c.pm_pid)), 60, interval=0.3, what="the cluster's settings read")
        open(os.path.join(tmp, "hold"), "w").close()
        c.sql("SELECT pg_reload_conf()")
        shell = wait_for(lambda: next((p for p in children(c.pm_pid) if cmdline(p).startswith(f"sh -c {ask} ")), None),
                         60, what="ssl_passphrase_command's shell below the postmaster")

        def judged():
            t = d.client_json("tree")
            return next((x for x in t["foreign_processes"] if x["pid"] == shell and x["judged"]), None)
        fp = wait_for(judged, 30, interval=0.3, what="the shell judged")
        assert fp["expected"] is True, fp
        assert fp["judged"] == f"what the postmaster runs: ssl_passphrase_command is '{setting}'", fp
        assert cmdline(shell) == f'sh -c {ask} "Enter PEM pass phrase:"'
        name = cluster_of(d.client_json("tree"), c.pm_pid)["name"]
        assert not foreign_findings(d.client_json("orphans"), cluster=name), d.client_json("orphans")["findings"]
    finally:
        open(os.path.join(tmp, "release"), "w").close()
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def children(pid):
    with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]
    return []
