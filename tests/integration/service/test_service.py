import os
import re
import socket
import subprocess
import time

import pytest

from conftest import MSG, SANDBOX, SOCKET, UNIT, journal, prop, sh, systemctl, wait_journal
from pgharness import pid_alive, wait_for


def test_ready_only_after_self_test(service, pg):
    """A cluster whose server never answers delays READY=1 until its connect timeout: the unit
    stays 'activating' until the self-test is done."""
    hung_dir = os.path.join(SANDBOX, "hung")
    os.makedirs(hung_dir, exist_ok=True)
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(os.path.join(hung_dir, ".s.PGSQL.5432"))
    os.chmod(os.path.join(hung_dir, ".s.PGSQL.5432"), 0o777)  # as PostgreSQL's: pgtreed runs as pgtree
    hung.listen(16)  # accepts nothing, answers nothing
    try:
        service.configure(f"[daemon]\nconnect_timeout = 3s\n[cluster svc]\ndata_directory = {pg.data}\n"
                          f"conninfo = host={hung_dir} port=5432 dbname=postgres user=pgtree\n")
        t0 = time.monotonic()
        systemctl("start", "--no-block", UNIT)
        states = set()
        while time.monotonic() - t0 < 20:
            st = prop("ActiveState")
            states.add(st)
            if st == "active":
                break
            time.sleep(0.1)
        ready_after = time.monotonic() - t0
        assert "activating" in states and prop("ActiveState") == "active"
        assert prop("SubState") == "running"
        assert ready_after >= 2.5, ready_after
        started = journal(MESSAGE_ID=MSG["STARTED"])
        assert started and started[-1]["SYSLOG_IDENTIFIER"] == "pgtreed"
        unreachable = wait_journal(MESSAGE_ID=MSG["CLUSTER_UNREACHABLE"], PGTREE_CLUSTER="svc")
        assert "connection timed out" in unreachable[-1]["PGTREE_REASON"]
        assert "svc" in service.client_json("status")["unreachable"]
        assert "STATUS" not in prop("StatusText") and "cluster" in prop("StatusText")
    finally:
        hung.close()


def test_reload_good_and_bad(service, pg):
    service.configure("[daemon]\ninterval = 1s\n")
    systemctl("start", UNIT)
    assert service.client_json("status")["interval_s"] == 1.0
    n = len(journal(MESSAGE_ID=MSG["RELOADED"]))
    service.configure("[daemon]\ninterval = 700ms\n")
    systemctl("reload", UNIT)
    wait_journal(MESSAGE_ID=MSG["RELOADED"], count=n + 1)
    wait_for(lambda: service.client_json("status")["interval_s"] == 0.7, 10, what="new interval")

    with open(service.config, "a") as f:
        f.write("[rule broken]\nkind = long_query\nafter = soon\naction = kill\n")
    systemctl("reload", UNIT)
    bad = wait_journal(MESSAGE_ID=MSG["CONFIG_INVALID"], count=3)
    messages = [e["MESSAGE"] for e in bad]
    assert any(re.search(re.escape(service.config) + r":\d+: after: invalid duration 'soon'", m) for m in messages)
    assert any("action: 'kill': SIGKILL is refused" in m for m in messages)
    assert any("the running configuration stays in force" in m for m in messages)
    service.wait_cycles(3)
    assert prop("ActiveState") == "active"
    assert service.client_json("status")["interval_s"] == 0.7


def test_runs_as_its_own_user_with_three_capabilities(service, pg):
    """The unit's own User=pgtree (systemd/pgtree.sysusers, created by the sandbox), with only
    the capabilities the unit grants: and with them it reads the cluster (postmaster.pid in a
    0700 data directory, /proc/PID/cwd) and joins pg_stat_activity."""
    import pwd
    service.configure(f"[daemon]\ninterval = 300ms\n[cluster svc]\ndata_directory = {pg.data}\n")
    systemctl("start", UNIT)
    pid = int(prop("MainPID"))
    with open(f"/proc/{pid}/status") as f:
        status = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    pw = pwd.getpwnam("pgtree")
    assert status["Uid"].split() == [str(pw.pw_uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(pw.pw_gid)] * 4, status["Gid"]
    # CAP_KILL (5), CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), nothing else
    want = (1 << 5) | (1 << 2) | (1 << 19)
    assert int(status["CapEff"], 16) == want and int(status["CapBnd"], 16) == want, status
    assert status["NoNewPrivs"].strip() == "1"
    wait_for(lambda: any(c.get("activity") == "ok" and c["postmaster"]["pid"] == pg.pm_pid
                         for c in service.client_json("tree")["clusters"]), 20, what="the cluster joined")


def test_stop_is_clean(service, pg):
    service.configure("[daemon]\ninterval = 1s\n")
    systemctl("start", UNIT)
    pid = int(prop("MainPID"))
    n = len(journal(MESSAGE_ID=MSG["STOPPED"]))
    systemctl("stop", UNIT)
    assert prop("ActiveState") == "inactive"
    assert prop("Result") == "success"
    assert prop("ExecMainStatus") == "0"
    assert not pid_alive(pid)
    assert not os.path.exists(SOCKET)
    assert len(journal(MESSAGE_ID=MSG["STOPPED"])) == n + 1


def test_watchdog_restarts_a_stalled_loop(service, pg):
    service.configure("[daemon]\ninterval = 500ms\n", watchdog="2s")
    systemctl("start", UNIT)
    pid = int(prop("MainPID"))
    restarts = int(prop("NRestarts"))
    systemctl("kill", "--kill-who=main", "-s", "USR2", UNIT)  # test hook: the loop stops
    wait_for(lambda: int(prop("NRestarts")) > restarts and prop("ActiveState") == "active"
             and int(prop("MainPID")) not in (0, pid), 30, what="restart by the watchdog")
    assert not pid_alive(pid)
    assert service.client_json("status")["cycles"] >= 1


def sessions(pg, app, n):
    return [pg.run_async("SELECT pg_sleep(120)", application_name=app)[1] for _ in range(n)]


def test_journal_long_runner_lifecycle_and_events(service, pg):
    service.configure(f"""[daemon]
interval = 300ms
[cluster svc]
data_directory = {pg.data}
enforce = yes
[rule jtest]
kind = long_query
after = 1s
application_name = jtest
action = terminate
""")
    systemctl("start", UNIT)
    pid = sessions(pg, "jtest", 1)[0]
    opened = wait_journal(MESSAGE_ID=MSG["FINDING_OPENED"], PGTREE_KIND="long_query", PGTREE_PID=pid)[0]
    sent = wait_journal(MESSAGE_ID=MSG["ACTION_SENT"], PGTREE_PID=pid)[0]
    exited = wait_journal(MESSAGE_ID=MSG["ACTION_EXITED"], PGTREE_PID=pid)[0]
    resolved = wait_journal(MESSAGE_ID=MSG["FINDING_RESOLVED"], PGTREE_KIND="long_query", PGTREE_PID=pid)[0]
    for e in (opened, resolved):
        for field in ("PGTREE_KIND", "PGTREE_CLUSTER", "PGTREE_PID", "PGTREE_START_TICKS", "PGTREE_USER",
                      "PGTREE_DATABASE", "PGTREE_APPLICATION", "PGTREE_CLIENT", "PGTREE_DURATION", "PGTREE_RULE",
                      "PGTREE_ACTION", "PGTREE_BACKEND_TYPE"):
            assert field in e, (field, e)
        assert e["SYSLOG_IDENTIFIER"] == "pgtreed" and e["PGTREE_APPLICATION"] == "jtest"
    assert opened["PGTREE_RULE"] == "jtest" and opened["PGTREE_ACTION"] == "terminate" and opened["PGTREE_DRY_RUN"] == "no"
    assert int(opened["PRIORITY"]) == 5
    assert sent["PGTREE_REQUESTED_BY"] == "rule jtest" and sent["PGTREE_SIGNAL"] == "SIGTERM"
    assert sent["PGTREE_DRY_RUN"] == "no" and sent["PGTREE_RESULT"] == "sent"
    assert float(exited["PGTREE_EXIT_SECONDS"]) < 5
    assert not pid_alive(pid)
    assert len(journal(MESSAGE_ID=MSG["FINDING_OPENED"], PGTREE_PID=pid)) == 1  # announced once

    text = service.client("events", "--since", "10m").stdout
    assert f"long_query opened: pid {pid} " in text
    assert f"terminate pid {pid} (rule jtest): sent SIGTERM to pid {pid}" in text
    assert f"long_query resolved: pid {pid} " in text
    events = __import__("json").loads(service.client("--json", "events", "-n", "200").stdout)  # one array
    assert any(e.get("PGTREE_PID") == str(pid) and e["MESSAGE_ID"] == MSG["ACTION_SENT"] for e in events)


def test_twenty_terminations_no_crash_recovery(service, pg):
    service.configure(f"""[daemon]
interval = 200ms
max_actions_per_minute = 100
[cluster svc]
data_directory = {pg.data}
enforce = yes
[rule safety]
kind = long_query
after = 300ms
application_name = safety
action = terminate
""")
    systemctl("start", UNIT)
    restarts = prop("NRestarts")
    pg.sql("CREATE TABLE IF NOT EXISTS keep (v int)")
    other = pg.connect(autocommit=False, application_name="unrelated")
    other.cursor().execute("INSERT INTO keep VALUES (42)")
    done = []
    for i in range(20):  # one after another
        pid = sessions(pg, "safety", 1)[0]
        wait_journal(MESSAGE_ID=MSG["ACTION_EXITED"], PGTREE_PID=pid, timeout=60)
        done.append(pid)
    assert prop("NRestarts") == restarts  # one daemon did all twenty
    other.commit()  # the unrelated transaction was not touched
    assert pg.sql("SELECT count(*) FROM keep WHERE v = 42")[0][0] >= 1
    other.close()
    log = pg.server_log()
    assert "terminated by signal 9" not in log and "reinitializing" not in log
    assert "terminating any other active server processes" not in log
    assert log.count("terminating connection due to administrator command") >= 20
    assert len({e["PGTREE_PID"] for e in journal(MESSAGE_ID=MSG["ACTION_SENT"], PGTREE_RULE="safety")}) == 20


def test_protected_users_never_signalled(service, pg):
    pg.sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keeper') THEN CREATE ROLE keeper LOGIN; END IF; END $$")
    service.configure(f"""[daemon]
interval = 200ms
[protected]
users = keeper
[cluster svc]
data_directory = {pg.data}
enforce = yes
[rule everything]
kind = long_runners, orphans
after = 300ms
backend_type = *
action = terminate
""")
    systemctl("start", UNIT)
    import psycopg2
    kc = psycopg2.connect(dbname="postgres", user="keeper", host=pg.base, port=pg.port, application_name="keeper-app")
    kc.autocommit = True
    import threading
    threading.Thread(target=lambda: kc.cursor().execute("SELECT pg_sleep(5)"), daemon=True).start()
    refused = wait_journal(MESSAGE_ID=MSG["ACTION_REFUSED"], PGTREE_USER="keeper")
    assert "protected user (keeper)" in refused[0]["MESSAGE"]
    for e in journal(MESSAGE_ID=MSG["ACTION_SENT"], PGTREE_RULE="everything"):
        assert e.get("PGTREE_USER") != "keeper"
    kc.close()


NEVER_SIGNALLED = ["postmaster", "checkpointer", "background writer", "walwriter", "autovacuum launcher",
                   "autovacuum worker", "logical replication launcher", "walsender", "logger", "archiver"]


def line_of(path, key):
    with open(path) as f:
        return next(i for i, l in enumerate(f, 1) if l.startswith(key))


def test_rules_naming_auxiliaries_refused_by_config(service, pg):
    """A cancel/terminate rule that names a backend type pgtree never signals is a config error
    at its line: the unit's ExecStartPre (--check-config) keeps the daemon from starting, and a
    reload keeps the running configuration."""
    sbin = os.path.join(service.inst, "usr", "sbin", "pgtreed")
    for bt in NEVER_SIGNALLED:
        for action in ("cancel", "terminate"):
            service.configure(f"[daemon]\ninterval = 1s\n[rule aux]\nkind = long_runners, orphans\nafter = 1s\n"
                              f"backend_type = {bt}\naction = {action}\n")
            p = sh(sbin, "--check-config", service.config, check=False)
            assert p.returncode != 0, (bt, action)
            line = line_of(service.config, "backend_type")
            assert f"{service.config}:{line}: backend_type: '{bt}' with action = {action}: pgtree signals only client " \
                   "backends" in p.stderr, p.stderr
        for action in ("log", "alert"):  # watching them is fine
            extra = "alert_command = /bin/true\n" if action == "alert" else ""
            service.configure(f"[daemon]\ninterval = 1s\n[rule aux]\nkind = long_runners\nafter = 1s\n"
                              f"backend_type = {bt}\naction = {action}\n{extra}")
            assert sh(sbin, "--check-config", service.config, check=False).returncode == 0, (bt, action)

    service.configure("[daemon]\ninterval = 1s\n[rule aux]\nkind = long_query\nafter = 1s\n"
                      "backend_type = checkpointer\naction = terminate\n")
    assert systemctl("start", UNIT, check=False).returncode != 0
    assert prop("ActiveState") != "active"
    line = line_of(service.config, "backend_type")
    wait_for(lambda: any(f"{service.config}:{line}: backend_type: 'checkpointer' with action = terminate" in e.get("MESSAGE", "")
                         for e in journal(SYSLOG_IDENTIFIER="pgtreed")), 20, what="the config error in the journal")
    systemctl("reset-failed", UNIT, check=False)

    service.configure("[daemon]\ninterval = 1s\n")
    systemctl("start", UNIT)
    n = len(journal(MESSAGE_ID=MSG["CONFIG_INVALID"]))
    with open(service.config, "a") as f:
        f.write("[rule aux]\nkind = long_query\nafter = 1s\nbackend_type = walwriter\naction = cancel\n")
    systemctl("reload", UNIT)
    bad = wait_journal(MESSAGE_ID=MSG["CONFIG_INVALID"], count=n + 1)
    assert any("backend_type: 'walwriter' with action = cancel" in e["MESSAGE"] for e in bad[n:])
    assert prop("ActiveState") == "active"


def stat_identity(pid):
    """(pid, start time in ticks) of a live process, None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else (pid, int(fields[19]))


def test_rules_matching_everything_never_touch_postmaster_or_auxiliaries(service, pg):
    """Two enforcing terminate rules that match everything they can (one without a backend_type
    filter, one with backend_type = *; every finding kind, long runners after 300 ms), with a
    walsender streaming (always 'active': a long_query for the backend_type = * rule): over many
    cycles the postmaster and every non-client process stays the same live process, the
    walsender's termination is refused at action time and logged, and no signal is sent to any
    of them."""
    import pwd
    import tempfile
    wal = tempfile.mkdtemp(prefix="receivewal-", dir=SANDBOX)
    pw = pwd.getpwnam(pg.os_user)
    os.chown(wal, pw.pw_uid, pw.pw_gid)
    recv = subprocess.Popen(["runuser", "-u", pg.os_user, "--", f"{pg.bindir}/pg_receivewal", "-D", wal,
                             "-h", pg.base, "-p", str(pg.port), "-U", "postgres", "--no-loop"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def streaming():
            assert recv.poll() is None, recv.stderr.read().decode(errors="replace")
            return (pg.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender'") or [[None]])[0][0]
        walsender = wait_for(streaming, 20, what="a walsender")
        # the long-lived ones (autovacuum and parallel workers come and go by themselves)
        lasting = dict(pg.sql("SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type IN "
                              "('checkpointer', 'background writer', 'walwriter', 'autovacuum launcher', "
                              "'logical replication launcher', 'walsender', 'archiver', 'startup')"))
        assert {"checkpointer", "background writer", "walwriter", "autovacuum launcher", "walsender"} <= \
            set(lasting.values()), lasting
        others = list(lasting) + [pg.pm_pid]
        before = {p: stat_identity(p) for p in others}
        assert all(before.values()), before
        service.configure(f"""[daemon]
interval = 200ms
max_actions_per_minute = 1000
[cluster svc]
data_directory = {pg.data}
enforce = yes
[rule everything]
kind = long_runners, orphans
after = 300ms
action = terminate
[rule everything-typed]
kind = long_runners, orphans
after = 300ms
backend_type = *
action = terminate
""")
        systemctl("start", UNIT)
        restarts = prop("NRestarts")
        refused = wait_journal(MESSAGE_ID=MSG["ACTION_REFUSED"], PGTREE_PID=walsender)
        assert "it is a walsender: pgtree signals only client backends" in refused[0]["MESSAGE"], refused[0]
        start = service.client_json("status")["cycles"]
        wait_for(lambda: service.client_json("status")["cycles"] >= start + 20, 60, what="20 more cycles")
        after = {p: stat_identity(p) for p in others}
        assert after == before  # the same processes, alive
        assert prop("NRestarts") == restarts
        assert recv.poll() is None  # the walsender's client still streams
        signalled = {e["PGTREE_PID"] for e in journal(MESSAGE_ID=MSG["ACTION_SENT"])}
        assert not ({str(p) for p in others} & signalled)
        log = pg.server_log()
        assert "terminated by signal" not in log and "reinitializing" not in log
    finally:
        recv.terminate()  # our pg_receivewal (a client program), by its pid
        recv.wait(30)


def test_dry_run_then_rate_limit(service, pg):
    base = f"""[daemon]
interval = 200ms
max_actions_per_minute = 2
[cluster svc]
data_directory = {pg.data}
enforce = {{enforce}}
[rule limit]
kind = long_query
after = 300ms
application_name = {{app}}
action = terminate
"""
    service.configure(base.format(enforce="no", app="dry"))
    systemctl("start", UNIT)
    dry = sessions(pg, "dry", 2)
    entries = wait_journal(MESSAGE_ID=MSG["ACTION_DRY_RUN"], PGTREE_APPLICATION="dry", count=2)
    assert all(e["PGTREE_DRY_RUN"] == "yes" for e in entries)
    assert "enforcement is off" in entries[0]["MESSAGE"]
    service.wait_cycles(5)
    assert all(pid_alive(p) for p in dry)
    for p in dry:
        pg.sql("SELECT pg_cancel_backend(%s)", (p,))
    systemctl("stop", UNIT)

    service.configure(base.format(enforce="yes", app="burst"))
    systemctl("start", UNIT)
    burst = sessions(pg, "burst", 5)
    wait_journal(MESSAGE_ID=MSG["ACTION_SENT"], PGTREE_APPLICATION="burst", count=2)
    held = wait_journal(MESSAGE_ID=MSG["ACTION_HELD_BACK"], PGTREE_APPLICATION="burst", count=3)
    assert "max_actions_per_minute" in held[0]["MESSAGE"]
    service.wait_cycles(10)
    assert len(journal(MESSAGE_ID=MSG["ACTION_SENT"], PGTREE_APPLICATION="burst")) == 2
    assert sum(pid_alive(p) for p in burst) == 3
    # held back once per finding, not every cycle
    assert len(journal(MESSAGE_ID=MSG["ACTION_HELD_BACK"], PGTREE_APPLICATION="burst")) == 3
    for p in burst:
        pg.sql("SELECT pg_cancel_backend(%s)", (p,))


def test_catalog_explains_every_message_id(tmp_path):
    root = tmp_path
    (root / "usr/lib/systemd/catalog").mkdir(parents=True)
    (root / "var/lib/systemd/catalog").mkdir(parents=True)
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "..", "systemd", "pgtree.catalog")) as f:
        (root / "usr/lib/systemd/catalog/pgtree.catalog").write_text(f.read())
    sh("journalctl", f"--root={root}", "--update-catalog")
    listed = sh("journalctl", f"--root={root}", "--list-catalog").stdout
    for name, mid in MSG.items():
        assert mid in listed, name


def test_security_exposure(installed):
    unit = os.path.join(installed, "lib", "systemd", "system", UNIT)
    out = sh("systemd-analyze", "security", "--offline=true", unit, check=False).stdout
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    assert score <= 1.5, out
