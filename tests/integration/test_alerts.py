"""Alerts under load, the action rate limit past 256, and pgtreed's own SIGKILL ban (issue 8
items 7-9, issue 15), with the real daemon, a real cluster and real processes. Nothing here
signals a PostgreSQL process but SIGINT/SIGTERM through pgtreed or pg_cancel_backend."""
import json
import os
import re
import signal
import socket
import subprocess
import time

from osusers import os_users
from pgharness import Cluster, children, pid_alive, wait_for


def script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path



def sessions(cluster, app, n):
    pids = [cluster.run_async("SELECT pg_sleep(300)", application_name=app)[1] for _ in range(n)]
    wait_for(lambda: cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
                                 (app,))[0][0] == n, 20, what=f"{n} active sessions")
    return pids


def end_sessions(cluster, app):
    cluster.sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,))


def metric(d, name):
    for line in d.client("metrics").stdout.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


def test_alert_fanout_is_capped_and_output_bounded(cluster, daemon_factory, tmp_path):
    """12 findings at once under an alert rule: never more than max_concurrent_alerts = 3 alert
    processes, the others dropped, counted and logged; each alert's output bounded into its
    result line (0.1.0 started one process per finding, all at once, output inherited)."""
    os.chmod(tmp_path, 0o755)
    alert = script(tmp_path / "page", "printf '%010000d' 0\nprintf 'oops\\n' >&2\nsleep 3\n")
    n = 12
    sessions(cluster, "fanout", n)
    d = daemon_factory(f"""[daemon]
interval = 300ms
max_concurrent_alerts = 3
max_alerts_per_minute = 1000
[rule page]
kind = long_query
after = 200ms
application_name = fanout
action = alert
alert_command = {alert}
""").start()
    try:
        ran_rx = re.compile(r"alert \S+/page for long_query pid \d+ ran")
        drop_rx = re.compile(r"(\d+) alerts? not run: (\d+) with (\d+) running \(max_concurrent_alerts = 3\), (\d+) over")
        peak = 0

        def settled():
            nonlocal peak
            peak = max(peak, len(children(d.proc.pid)))
            ran = [l for l in d.lines if ran_rx.search(l)]
            dropped = sum(int(drop_rx.search(l).group(2)) for l in d.lines if drop_rx.search(l))
            return (ran, dropped) if len(ran) + dropped >= n else None
        ran, dropped = wait_for(settled, 60, interval=0.02, what="every finding alerted or dropped")
        assert peak <= 3, f"{peak} alert processes at once"
        assert dropped >= 1 and len(ran) + dropped == n
        assert metric(d, 'pgtree_alerts_dropped_total{reason="max_concurrent_alerts"}') == dropped
        assert metric(d, 'pgtree_alerts_total{result="ok"}') == len(ran)
        # the first 4 KiB of stdout, the rest counted; stderr on its own
        assert all(('stdout "' + "0" * 4096 + '" (5904 more bytes discarded); stderr "oops\\n"') in l for l in ran), ran[0]
        assert metric(d, "pgtree_alert_output_discarded_bytes_total") == 5904 * len(ran)
        # nothing more later: each finding is alerted (or dropped) once
        time.sleep(1.5)
        assert len([l for l in d.lines if ran_rx.search(l)]) == len(ran)
    finally:
        end_sessions(cluster, "fanout")


def test_alert_rate_limit_per_cluster(cluster, daemon_factory, tmp_path):
    os.chmod(tmp_path, 0o755)
    alert = script(tmp_path / "page", "exit 0\n")
    sessions(cluster, "ratelimited", 5)
    d = daemon_factory(f"""[daemon]
interval = 300ms
max_alerts_per_minute = 2
[rule page]
kind = long_query
after = 200ms
application_name = ratelimited
action = alert
alert_command = {alert}
""").start()
    try:
        wait_for(lambda: metric(d, 'pgtree_alerts_dropped_total{reason="max_alerts_per_minute"}') == 3, 30,
                 what="three alerts dropped by the rate limit")
        d.wait_log(r"over max_alerts_per_minute = 2 of their cluster")
        wait_for(lambda: metric(d, 'pgtree_alerts_total{result="ok"}') == 2, 30, what="two alerts run")
        time.sleep(1)
        assert metric(d, 'pgtree_alerts_total{result="ok"}') == 2
    finally:
        end_sessions(cluster, "ratelimited")


def test_alert_rate_limit_per_owner(cluster, daemon_factory, tmp_path):
    """All the clusters of one OS user share max_alerts_per_minute_per_owner: a local user who
    starts clusters of their own cannot crowd out the alerts of another user's cluster, however
    many they start (red team). Two clusters of the test's PostgreSQL user, one of another user."""
    os.chmod(tmp_path, 0o755)
    alert = script(tmp_path / "page", "exit 0\n")
    tag = f"pgo{os.getpid() % 100000}"
    second = Cluster(name=f"pgtree_owner_a_{os.getpid()}").start()
    try:
        with os_users(tag, [], {"b": []}) as u:
            other = Cluster(name=f"pgtree_owner_b_{os.getpid()}", os_user=u["b"]).start()
            try:
                for c in (cluster, second):
                    sessions(c, "ownerlimit", 3)
                d = daemon_factory(f"""[daemon]
interval = 300ms
max_concurrent_alerts = 50
max_alerts_per_minute = 100
max_alerts_per_minute_per_owner = 4
[rule page]
kind = long_query
after = 200ms
application_name = ownerlimit
action = alert
alert_command = {alert}
""").start()
                wait_for(lambda: metric(d, 'pgtree_alerts_dropped_total{reason="max_alerts_per_minute_per_owner"}') == 2,
                         30, what="two alerts of the first owner's six dropped")
                wait_for(lambda: metric(d, 'pgtree_alerts_total{result="ok"}') == 4, 30, what="four alerts run")
                d.wait_log(r"over max_alerts_per_minute_per_owner = 4 of their clusters' OS user")
                # the other user's cluster still gets its alerts
                sessions(other, "ownerlimit", 2)
                wait_for(lambda: metric(d, 'pgtree_alerts_total{result="ok"}') == 6, 30,
                         what="the other owner's two alerts run")
                assert metric(d, 'pgtree_alerts_dropped_total{reason="max_alerts_per_minute_per_owner"}') == 2
                assert metric(d, 'pgtree_alerts_dropped_total{reason="max_alerts_per_minute"}') == 0
            finally:
                other.stop()
    finally:
        for c in (cluster, second):
            end_sessions(c, "ownerlimit")
        second.stop()


def test_stuck_alert_reported_once_then_untracked(cluster, daemon_factory, tmp_path):
    """An alert that ignores SIGTERM: SIGTERM once, reported stuck once, then neither tracked
    (no pidfd of it left in pgtreed) nor SIGKILLed; pgtreed reaps it when it ends."""
    os.chmod(tmp_path, 0o755)
    pidfile = tmp_path / "alert.pid"
    alert = script(tmp_path / "stubborn", f"trap '' TERM\necho $$ > {pidfile}\necho waiting\nexec sleep 120\n")
    sessions(cluster, "stuck-alert", 1)
    d = daemon_factory(f"""[daemon]
interval = 300ms
alert_timeout = 1s
[rule page]
kind = long_query
after = 200ms
application_name = stuck-alert
action = alert
alert_command = {alert}
""").start()
    apid = None
    try:
        d.wait_log(r"stubborn for long_query pid \d+ timed out; sent SIGTERM to it")
        d.wait_log(r"stubborn \(pid \d+\) does not exit after SIGTERM; no longer tracked.*; stdout \"waiting\\n\"")
        apid = int(pidfile.read_text())
        time.sleep(2.5)  # more than two alert_timeouts: still said once
        assert len([l for l in d.lines if "does not exit after SIGTERM" in l]) == 1
        assert pid_alive(apid)
        fdinfo = f"/proc/{d.proc.pid}/fdinfo"
        pidfds = []
        for fd in os.listdir(fdinfo):
            try:
                with open(os.path.join(fdinfo, fd)) as f:
                    pidfds += [int(l.split()[1]) for l in f if l.startswith("Pid:")]
            except OSError:
                pass
        assert apid not in pidfds, "pgtreed still holds a pidfd of the stuck alert"
        os.kill(apid, signal.SIGINT)  # it ignores SIGTERM, not SIGINT
        wait_for(lambda: apid not in children(d.proc.pid) and not os.path.exists(f"/proc/{apid}"), 15,
                 what="the stuck alert reaped by pgtreed")
        apid = None
    finally:
        if apid and pid_alive(apid):
            os.kill(apid, signal.SIGINT)
        end_sessions(cluster, "stuck-alert")


def varlink(sock, method, params):
    sock.sendall(json.dumps({"method": method, "parameters": params}).encode() + b"\0")
    buf = b""
    while not buf.endswith(b"\0"):
        chunk = sock.recv(65536)
        assert chunk, "pgtreed closed the connection"
        buf += chunk
    return json.loads(buf[:-1])


def test_action_rate_limit_above_256(cluster, daemon_factory):
    """max_actions_per_minute = 260: 260 cancels in a minute are sent, the 261st is held
    (0.1.0 kept 256 times and let everything past them through). The target is an idle session:
    SIGINT to it cancels nothing."""
    conn = cluster.connect(application_name="rate-target")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    d = daemon_factory(f"""[daemon]
interval = 500ms
max_actions_per_minute = 260
[cluster it]
data_directory = {cluster.data}
enforce = yes
""").start()
    wait_for(lambda: pid in {s["pid"] for s in d.client_json("sessions")["sessions"]}, 15, what="session listed")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.socket)
    results = []
    t0 = time.monotonic()
    for _ in range(265):
        reply = varlink(s, "io.pgtree.Signal", {"pid": pid, "action": "cancel"})
        results.append(reply["parameters"]["results"][0]["result"])
    took = time.monotonic() - t0
    s.close()
    assert took < 55, f"the requests took {took:.0f}s, longer than the window"
    assert results[:260] == ["sent"] * 260, results.count("sent")
    assert results[260:] == ["held"] * 5
    d.wait_log(r"held back: 260 actions in the last minute")
    with conn.cursor() as cur:  # the session is still there
        cur.execute("SELECT 1")
    conn.close()


def test_daemon_runs_under_the_nokill_filter(daemon_factory, tmp_path):
    """pgtreed itself (not a forked test child) has the seccomp filter and no_new_privs, and a
    SIGKILL tried from inside it (test hook) fails with EPERM by each route: the target lives."""
    target = subprocess.Popen(["sleep", "300"])  # sacrificial, not PostgreSQL
    try:
        d = daemon_factory("[daemon]\ninterval = 1s\n",
                           env={"PGTREED_TEST_HOOKS": "1", "PGTREED_TEST_KILL_TARGET": str(target.pid)}).start()
        with open(f"/proc/{d.proc.pid}/status") as f:
            status = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
        assert status["Seccomp"].strip() == "2", status["Seccomp"]
        assert status["NoNewPrivs"].strip() == "1"
        d.proc.send_signal(signal.SIGUSR1)
        d.wait_log(rf"test hook: kill\({target.pid}, SIGKILL\): Operation not permitted")
        d.wait_log(rf"test hook: pidfd_send_signal\({target.pid}, SIGKILL\): Operation not permitted")
        d.wait_log(rf"test hook: fcntl\(F_SETSIG, SIGKILL\) owned by {target.pid}: Operation not permitted")
        time.sleep(0.2)
        assert target.poll() is None, "the target was killed"
        assert d.proc.poll() is None
    finally:
        target.terminate()
        target.wait(10)


def test_test_hook_refuses_postgresql_targets(daemon_factory, cluster):
    """The SIGKILL test hook refuses a target that is a PostgreSQL process (by comm and by
    pgtreed's own tree) before it tries anything: a backend of the test's cluster lives on."""
    _, pid, holder = cluster.run_async("SELECT pg_sleep(300)", application_name="hook-target")
    try:
        d = daemon_factory("[daemon]\ninterval = 1s\n",
                           env={"PGTREED_TEST_HOOKS": "1", "PGTREED_TEST_KILL_TARGET": str(pid)}).start()
        d.wait_cycles(2)
        d.proc.send_signal(signal.SIGUSR1)
        d.wait_log(rf"test hook: pid {pid} is a PostgreSQL process: refused")
        assert not re.search(rf"test hook: kill\({pid}", d.log()), "the hook tried a PostgreSQL target"
        assert pid_alive(pid)
        assert d.proc.poll() is None
    finally:
        cluster.sql("SELECT pg_cancel_backend(%s)", (pid,))
        holder["conn"].close()
