"""Who may use the control socket, and what each may do — with real OS users and groups
(issue 8: authorization, connection limits, a flood of calls, query text, NULs in strings).

Every user and group here is created for this module and removed after it."""
import grp
import json
import os
import pwd
import resource
import socket
import subprocess
import threading
import time

import pytest

from osusers import connect_as, os_users
from pgharness import pid_alive, wait_for

TAG = f"pt{os.getpid() % 100000}"
READER, ADMIN = f"{TAG}r", f"{TAG}a"
# name -> (primary group or None for a group of its own, supplementary groups)
USERS = {
    "none": (None, []),
    "reader": (None, [READER]),
    "reader_primary": (READER, []),
    "admin": (None, [ADMIN]),
    "admin_primary": (ADMIN, []),
    "both": (None, [READER, ADMIN]),
    "daemon": (None, []),
    # more readers, for the limit that readers share
    "r2": (None, [READER]),
    "r3": (None, [READER]),
    "r4": (None, [READER]),
    "r5": (None, [READER]),
}


@pytest.fixture(scope="module")
def users():
    with os_users(TAG, [READER, ADMIN], {k.replace("_", "")[:12]: v for k, v in USERS.items()}) as names:
        yield {k: names[k.replace("_", "")[:12]] for k in USERS}


def config(cluster, extra=""):
    return f"""[daemon]
interval = 250ms
socket_group = {READER}
admin_group = {ADMIN}
max_actions_per_minute = 1000
{extra}
[cluster it]
data_directory = {cluster.data}
enforce = yes
[rule q]
kind = long_query
after = 1h
"""


@pytest.fixture(scope="module")
def authz_daemon(pgtreed, pgtree_client, cluster, users):
    from conftest import Daemon
    d = Daemon(pgtreed, pgtree_client, config(cluster))
    d.start()
    wait_for(lambda: d.client_json("status")["cycles"] >= 2, 20, what="two cycles")
    yield d
    d.stop()


def session(cluster, app):
    return cluster.run_async("SELECT pg_sleep(300)", application_name=app)[1]


def listed(d, pid):
    return pid in {s["pid"] for s in d.client_json("sessions")["sessions"]}


# expected role per user: "none", "read", "admin"
ROLES = {"none": "none", "reader": "read", "reader_primary": "read", "admin": "admin",
         "admin_primary": "admin", "both": "admin", "r2": "read"}


@pytest.mark.parametrize("who", sorted(ROLES))
def test_role_matrix(authz_daemon, cluster, users, who):
    d, user, role = authz_daemon, users[who], ROLES[who]
    pid = session(cluster, f"authz-{who}")
    wait_for(lambda: listed(d, pid), 20, what="session listed")

    st = d.client("--json", "status", user=user, check=False)
    if role == "none":
        # the socket is 0660 with an ACL for the admin group: nobody else can open it
        assert st.returncode == 4 and "access to" in st.stderr and "denied" in st.stderr, st.stderr
    else:
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)["clusters"] >= 1

    dry = d.client("--json", "terminate", str(pid), "--dry-run", user=user, check=False)
    rel = d.client("reload", user=user, check=False)
    if role == "admin":
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["results"][0]["result"] == "would"
        assert rel.returncode == 0, rel.stderr
        # and it really acts
        out = d.client("terminate", str(pid), user=user)
        assert "sent SIGTERM" in out.stdout
        wait_for(lambda: not pid_alive(pid), 20, what="terminated backend gone")
        d.wait_log(rf"terminate of pid {pid} requested by uid {pwd.getpwnam(user).pw_uid} ")
    else:
        assert dry.returncode == 4 and "denied" in dry.stderr, dry.stderr
        assert rel.returncode == 4, rel.stderr
        t = d.client("terminate", str(pid), user=user, check=False)
        c = d.client("cancel", str(pid), user=user, check=False)
        assert t.returncode == 4 and c.returncode == 4
        if role == "read":
            d.wait_log(rf"io\.pgtree\.Signal denied to uid {pwd.getpwnam(user).pw_uid} .*needs root or membership of group {ADMIN}")
        assert pid_alive(pid), "a denied terminate must leave the backend alone"
        cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_no_role_is_refused_by_the_daemon_too(authz_daemon, users):
    """Defence in depth: with the socket opened to everyone, the daemon itself still refuses."""
    d = authz_daemon
    os.chmod(d.socket, 0o666)
    try:
        for args in (["status"], ["tree"], ["terminate", "1234"], ["reload"]):
            p = d.client(*args, user=users["none"], check=False)
            assert p.returncode == 4 and "permission denied" in p.stderr, (args, p.stderr)
        d.wait_log(rf"io\.pgtree\.Status denied to uid {pwd.getpwnam(users['none']).pw_uid} ")
    finally:
        os.chmod(d.socket, 0o660)


def test_root_and_daemon_user_are_admins(pgtreed, pgtree_client, cluster, users):
    """pgtreed running as an ordinary user: that user may act, as root may."""
    from conftest import Daemon
    owner = users["daemon"]
    pw = pwd.getpwnam(owner)
    d = Daemon(pgtreed, pgtree_client, config(cluster))
    os.chown(d.dir, pw.pw_uid, pw.pw_gid)
    os.chown(d.config, pw.pw_uid, pw.pw_gid)
    d.env = {}
    d.run_as = owner
    d.start()
    try:
        wait_for(lambda: d.client_json("status")["cycles"] >= 1, 20, what="a cycle")
        assert d.client("reload", user=owner).returncode == 0
        assert d.client("reload").returncode == 0  # root
        # a reader is still only a reader there
        assert d.client("reload", user=users["reader"], check=False).returncode == 4
    finally:
        d.stop()


# ---- limits ----

def call(s, method, params=None, oneway=False, timeout=10.0):
    msg = {"method": method, "parameters": params or {}}
    if oneway:
        msg["oneway"] = True
    s.sendall(json.dumps(msg).encode() + b"\0")
    if oneway:
        return None
    return read_reply(s, timeout)


def read_reply(s, timeout=10.0):
    s.settimeout(timeout)
    buf = b""
    while b"\0" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return json.loads(buf.split(b"\0", 1)[0])


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def slots_free(d, users):
    """Closed connections are let go by the daemon soon after (it sees the hang-up in its
    loop): wait for that before the next test connects as the same users."""
    wait_for(lambda: all(d.client("status", user=users[w], check=False).returncode == 0
                         for w in ("reader", "r2", "r3", "r4", "r5")), 30, what="reader slots free again")


def test_connection_limits_keep_root_and_admins_in(authz_daemon, users):
    d = authz_daemon
    held = []
    try:
        # one reader: 16 connections, the 17th is refused with a reason
        for _ in range(16):
            s = connect_as(d.socket, users["reader"])
            assert call(s, "io.pgtree.Status")["parameters"]["clusters"] >= 1
            held.append(s)
        s = connect_as(d.socket, users["reader"])
        r = read_reply(s)
        assert r["error"] == "io.pgtree.TooManyConnections" and "limit per user" in r["parameters"]["reason"], r
        s.close()
        p = d.client("status", user=users["reader"], check=False)
        assert p.returncode == 1 and "refused this connection" in p.stderr and "limit per user" in p.stderr, p.stderr
        # readers share 64: three more readers fill it, a fifth is refused
        for who in ("r2", "r3", "r4"):
            for _ in range(16):
                held.append(connect_as(d.socket, users[who]))
        s = connect_as(d.socket, users["r5"])
        r = read_reply(s)
        assert r["error"] == "io.pgtree.TooManyConnections" and "readers" in r["parameters"]["reason"], r
        s.close()
        # root and an admin still get in, and are served
        assert d.client_json("status")["clusters"] >= 1
        assert json.loads(d.client("--json", "status", user=users["admin"]).stdout)["clusters"] >= 1
    finally:
        for s in held:
            s.close()
    slots_free(d, users)


def test_clients_that_do_not_read_are_dropped(authz_daemon, users):
    """16 connections pipeline Tree calls and never read: memory stays bounded (one reply
    queued per client), root is served, and after the write timeout they are dropped."""
    d = authz_daemon
    base = rss_kb(d.proc.pid)
    attackers = [connect_as(d.socket, users["reader"]) for _ in range(16)]
    stop = threading.Event()
    sent = [0]

    def flood(s):
        req = b"".join(json.dumps({"method": m, "parameters": {"text": True}}).encode() + b"\0"
                       for m in ("io.pgtree.Tree",) * 200)
        s.setblocking(False)
        while not stop.is_set():
            try:
                sent[0] += s.send(req)
            except BlockingIOError:
                time.sleep(0.05)
            except OSError:
                return
    threads = [threading.Thread(target=flood, args=(s,), daemon=True) for s in attackers]
    for t in threads:
        t.start()
    try:
        t0 = time.monotonic()
        peak = 0
        while time.monotonic() - t0 < 6:
            t1 = time.monotonic()
            assert d.client_json("status")["clusters"] >= 1
            assert time.monotonic() - t1 < 5, "root waited more than 5s for Status"
            peak = max(peak, rss_kb(d.proc.pid))
            time.sleep(0.3)
        # one queued reply per client, not thousands: a few MB at most on this small tree
        assert peak - base < 64 * 1024, f"pgtreed grew from {base} to {peak} kB"

        def all_dropped():
            n = 0
            for s in attackers:
                try:
                    s.setblocking(True)
                    s.settimeout(0.01)
                    while True:
                        chunk = s.recv(1 << 20)
                        if not chunk:
                            n += 1
                            break
                except (ConnectionResetError, BrokenPipeError):
                    n += 1
                except (socket.timeout, BlockingIOError):
                    pass
            return n == len(attackers)
        # drop after 10 s without progress; the reads above drain, so stop reading first
        stop.set()
        time.sleep(12)
        assert all_dropped(), "clients that never read their replies must be dropped"
        d.wait_log(r"did not read its reply for 10s")
    finally:
        stop.set()
        for s in attackers:
            s.close()
        slots_free(d, users)


def test_flood_of_calls_does_not_stall_the_scan(authz_daemon, users):
    """64 reader connections send oneway Tree calls (and normal ones) as fast as they can:
    the scan keeps its cadence and root's Status is answered promptly."""
    d = authz_daemon
    stop = threading.Event()
    conns = [connect_as(d.socket, users[w]) for w in ("reader", "r2", "r3", "r4") for _ in range(16)]

    def flood(s):
        oneway = b"".join(json.dumps({"method": "io.pgtree.Tree", "oneway": True,
                                      "parameters": {"text": True}}).encode() + b"\0" for _ in range(500))
        normal = json.dumps({"method": "io.pgtree.Tree", "parameters": {"text": True}}).encode() + b"\0"
        try:
            while not stop.is_set():
                s.sendall(oneway + normal)
                read_reply(s, 30)
        except OSError:
            pass
    threads = [threading.Thread(target=flood, args=(s,), daemon=True) for s in conns]
    interval = d.client_json("status")["interval_s"]
    c0 = d.client_json("status")["cycles"]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    worst = 0.0
    try:
        while time.monotonic() - t0 < 8:
            t1 = time.monotonic()
            d.client_json("status")
            worst = max(worst, time.monotonic() - t1)
            time.sleep(0.2)
        cycles = d.client_json("status")["cycles"] - c0
        expected = (time.monotonic() - t0) / interval
    finally:
        stop.set()
        for s in conns:
            s.close()
        slots_free(d, users)
    print(f"flood: {cycles} cycles of {expected:.1f} expected ({100 * cycles / expected:.0f}%), worst Status {worst:.3f}s")
    # 0.1.0 lost half its cycles and answered Status after 8 s; the bound leaves room for a
    # loaded 2-core machine without hiding a stall
    assert cycles >= 0.6 * expected, f"only {cycles} cycles of {expected:.0f}"
    assert worst < 3, f"Status took {worst:.2f}s"


# ---- query text ----

def test_query_text_for_admins_only_by_default(authz_daemon, cluster, users):
    d = authz_daemon
    secret = "SELECT pg_sleep(300) /* ALTER ROLE alice PASSWORD 'hunter2' */"
    pid = cluster.run_async(secret, application_name="secret-query")[1]
    wait_for(lambda: listed(d, pid), 20, what="session listed")

    def seen(user):
        out = []
        for args in (["sessions"], ["tree"], ["show", str(pid)]):
            out.append(d.client("--json", *args, user=user).stdout)
        return out
    wait_for(lambda: all("hunter2" in o for o in seen(None)), 20, what="root sees the query text")
    for o in seen(users["admin"]):
        assert "hunter2" in o
    for o in seen(users["reader"]):
        assert "hunter2" not in o
    s = next(x for x in d.client_json("sessions", user=users["reader"])["sessions"] if x["pid"] == pid)
    assert s["query"] is None and s["query_hidden"] is True
    assert "hunter2" not in d.client("tree", user=users["reader"]).stdout
    cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_foreign_process_query_for_admins_only(authz_daemon, cluster, users):
    """A foreign_process finding carries its backend's query: the same policy hides it from readers
    (orphans, tree), and admins see it."""
    d = authz_daemon
    cluster.sql("CREATE TABLE IF NOT EXISTS authz_fp (x text)")
    th, pid, _ = cluster.run_async("COPY authz_fp FROM PROGRAM 'sleep 63' /* hunter3 */", application_name="fp-secret")
    try:
        def seen(user):
            return [d.client(*args, user=user).stdout for args in (["orphans"], ["--json", "orphans"], ["--json", "tree"])]
        wait_for(lambda: all("hunter3" in o for o in seen(None)), 30, what="root sees the foreign process's query")
        assert all("hunter3" in o for o in seen(users["admin"]))
        reader = seen(users["reader"])
        assert all("hunter3" not in o for o in reader), reader
        assert "sleep 63" in reader[0] and "foreign_process" in reader[0]  # the finding itself is shown
    finally:
        cluster.sql("SELECT pg_cancel_backend(%s)", (pid,))


def test_query_text_for_readers_when_configured(pgtreed, pgtree_client, cluster, users):
    from conftest import Daemon
    d = Daemon(pgtreed, pgtree_client, config(cluster, "query_text_for_readers = yes"))
    d.start()
    try:
        pid = cluster.run_async("SELECT pg_sleep(300) /* readers-may-see */", application_name="shown-query")[1]
        wait_for(lambda: listed(d, pid), 20, what="session listed")
        wait_for(lambda: "readers-may-see" in d.client("--json", "sessions", user=users["reader"]).stdout, 20,
                 what="reader sees the query text")
        cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        d.stop()
    p = subprocess.run([pgtreed, "--check-config", "/dev/stdin"], input="[daemon]\nquery_text_for_readers = maybe\n",
                       capture_output=True, text=True)
    assert p.returncode != 0 and ":2: query_text_for_readers: expected yes or no, got 'maybe'" in p.stdout + p.stderr


# ---- NUL characters ----

def test_strings_with_nul_are_invalid(authz_daemon, cluster):
    d = authz_daemon
    pid = session(cluster, "nul-target")
    wait_for(lambda: listed(d, pid), 20, what="session listed")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.socket)
    raw = '{"method":"io.pgtree.Signal","parameters":{"action":"terminate\\u0000kill","pid":%d}}' % pid
    s.sendall(raw.encode() + b"\0")
    r = read_reply(s)
    assert r["error"] == "org.varlink.service.InvalidParameter" and r["parameters"]["parameter"] == "action", r
    s.sendall(b'{"method":"io.pgtree.Status\\u0000x"}\0')
    r = read_reply(s)
    assert r["error"] == "io.pgtree.InvalidRequest" and "NUL" in r["parameters"]["reason"], r
    s.close()
    assert pid_alive(pid)
    assert d.client_json("status")["clusters"] >= 1  # the daemon is fine
    cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_does_not_spin(authz_daemon):
    """accept() failing with EMFILE leaves the connection queued and the socket ready: pgtreed
    pauses accepting instead of spinning, and serves again once it can."""
    d = authz_daemon
    pid = d.proc.pid
    used_fds = {int(x) for x in os.listdir(f"/proc/{pid}/fd")}
    lowest_free = next(n for n in range(len(used_fds) + 1) if n not in used_fds)
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    waiting = []
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, hard))
        c0 = proc_cpu_seconds(pid)
        for _ in range(3):  # queued: accept() fails for each with EMFILE
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.socket)
            waiting.append(s)
        time.sleep(3)
        used = proc_cpu_seconds(pid) - c0
        assert used < 1.0, f"pgtreed used {used:.2f}s of CPU in 3s: spinning on accept()"
        d.wait_log(r"cannot accept a connection: Too many open files; trying again in 1s")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    r = call(waiting[0], "io.pgtree.Status")
    assert r["parameters"]["clusters"] >= 1
    for s in waiting:
        s.close()
    assert d.client_json("status")["clusters"] >= 1
