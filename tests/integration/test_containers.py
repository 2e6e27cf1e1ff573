"""Clusters in containers (issue 13, part 1): PostgreSQL 15 servers started in their own PID,
mount, IPC and UTS namespaces (nsharness), next to an ordinary cluster on the host."""
import contextlib
import os
import pwd
import signal
import subprocess
import threading

import pytest

from conftest import cluster_of, once_json, run_once
from nsharness import ContainerCluster, children, ns_pids
from pgharness import Cluster, pid_alive, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")


@pytest.fixture(scope="module")
def scene():
    host = Cluster(name=f"pgtree_host_{os.getpid()}")
    a = ContainerCluster(f"ctr_a_{os.getpid()}", f"ctr-a-{os.getpid()}")
    b = ContainerCluster(f"ctr_b_{os.getpid()}", f"ctr-b-{os.getpid()}")
    try:
        host.start()
        a.start()
        b.start()
        yield host, a, b
    finally:
        for c in (b, a, host):
            c.stop()


def session(c, app, query=None):
    """A connection to c with application_name app: (connection, its pid in c's namespace)."""
    conn = c.connect(application_name=app)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    return conn, pid


def test_containerized_clusters_appear_joined(scene, pgtreed):
    host, a, b = scene
    # the host cannot see the container's files at their paths
    assert os.listdir(a.base) == [] and os.listdir(b.base) == []
    ca, pa = session(a, "app-in-a")
    cb, pb = session(b, "app-in-b")
    # the same pid in both containers: the one behind takes connections until it catches up
    # (autovacuum workers of either may have taken pids in between; pids only grow here)
    spare = []
    for _ in range(40):
        if pa == pb:
            break
        if pa < pb:
            spare.append(ca)
            ca, pa = session(a, "app-in-a")
        else:
            spare.append(cb)
            cb, pb = session(b, "app-in-b")
    for conn in spare:
        conn.close()
    ch, ph = host.connect(application_name="app-on-host"), None
    try:
        before = {c.pm_pid: set(children(c.pm_pid)) for c in (a, b)}
        data = wait_for(lambda: (lambda d: d if all(cluster_of(d, c.pm_pid)["activity"] == "ok" for c in (host, a, b))
                                 else None)(once_json(pgtreed)), 60, interval=0.5, what="activity of the three clusters")
        for c in (a, b):
            cl = cluster_of(data, c.pm_pid)
            assert cl["container"] == c.hostname, cl  # /etc/hostname inside its root
            assert cl["container_root"] == f"/proc/{c.pm_pid}/root"
            assert cl["postmaster"]["data_directory"] == c.data
            assert cl["postmaster"]["socket_directory"] == c.base
            assert cl["server_major"] == 15
            procs = {p["pid"]: p for p in cl["processes"]}
            # every child, by host pid, with its pid in the container
            # (those alive before and after the scan: autovacuum workers come and go)
            want = (before[c.pm_pid] & set(children(c.pm_pid))) | {c.pm_pid}
            assert want <= set(procs), (want, set(procs))
            for pid in want:
                if pid in procs:
                    assert procs[pid]["ns_pid"] == ns_pids(pid)[-1], procs[pid]
                    assert procs[pid]["identity"] == "verified", procs[pid]
            assert procs[c.pm_pid]["ns_pid"] == 1
        # sessions joined through their namespace pids: the two containers use the same ones
        assert pa == pb, "both containers should hand out the same pids (postmaster is pid 1)"
        ha, hb = a.host_pid_of(pa), b.host_pid_of(pb)
        assert ha and hb and ha != hb
        pra = {p["pid"]: p for p in cluster_of(data, a.pm_pid)["processes"]}[ha]
        prb = {p["pid"]: p for p in cluster_of(data, b.pm_pid)["processes"]}[hb]
        assert (pra["ns_pid"], pra["application_name"], pra["backend_type"]) == (pa, "app-in-a", "client backend")
        assert (prb["ns_pid"], prb["application_name"]) == (pb, "app-in-b")
        # the ordinary cluster is as before: no container, no ns_pid
        hc = cluster_of(data, host.pm_pid)
        assert hc["container"] is None
        assert all("ns_pid" not in p for p in hc["processes"])
        assert "app-on-host" in {p.get("application_name") for p in hc["processes"]}
    finally:
        for conn in (ca, cb, ch):
            conn.close()


def test_long_runner_in_container_terminated(scene, daemon_factory):
    host, a, b = scene
    d = daemon_factory(f"""[daemon]
interval = 300ms
enforce = yes
terminate_grace = 5s
[rule ctr-long]
kind = long_query
after = 1s
application_name = sleeper
container = {a.hostname}
action = terminate
""").start()
    results = {}

    def run(c, key):
        conn, pid = session(c, "sleeper")
        results[key + "_pid"] = pid
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(120)")
            results[key] = "finished"
        except Exception as e:  # terminated
            results[key] = str(e)
    threads = [threading.Thread(target=run, args=(c, k), daemon=True) for c, k in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    wait_for(lambda: "a_pid" in results and "b_pid" in results, 30, what="both sessions")
    ha, hb = wait_for(lambda: (lambda x, y: (x, y) if x and y else None)(a.host_pid_of(results["a_pid"]),
                                                                           b.host_pid_of(results["b_pid"])),
                      30, what="host pids of the sessions")
    wait_for(lambda: "a" in results, 60, what="the session in container a to be terminated")
    assert results["a"] != "finished"
    # SIGTERM went to the HOST pid of a's backend, through the rule, and a's server says so
    d.wait_log(r"sent SIGTERM to pid %d\b" % ha, 20)
    wait_for(lambda: "terminating connection due to administrator command" in open(a.log).read(), 20,
             what="a's server log")
    # the rule named container a: b's sleeper (same pid in its container) runs on; postmasters live
    assert "b" not in results and pid_alive(hb)
    assert pid_alive(a.pm_pid) and pid_alive(b.pm_pid)
    assert f"sent SIGTERM to pid {hb}" not in d.log()


def test_other_containers_server_refused(scene, pgtreed):
    """A [cluster] conninfo that reaches container b's server for container a's cluster: the
    backend pids of both containers are alike, but b's postmaster holds the socket: refused."""
    host, a, b = scene
    from test_identity import once
    conf = (f"[cluster a]\ndata_directory = {a.data}\n"
            f"conninfo = host={b.host_socket_dir} port={b.port} dbname=postgres user=pgtree\n")
    data = once(pgtreed, conf)
    ca = cluster_of(data, a.pm_pid)
    assert ca["activity"].startswith("unavailable: the server reached is not this cluster "
                                     f"(its socket is held by pid {b.pm_pid}, not by postmaster {a.pm_pid})"), ca
    assert all(p["activity_joined"] is False for p in ca["processes"])
    assert cluster_of(data, b.pm_pid)["activity"] == "ok"


def test_foreign_process_in_container(scene, pgtreed):
    host, a, b = scene
    a.sql("CREATE TABLE IF NOT EXISTS fp (x text)")
    conn, ns_backend = session(a, "copy-in-a")
    cur = conn.cursor()

    def run():
        try:
            cur.execute("COPY fp FROM PROGRAM 'sleep 61'")
        except Exception:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        hb = wait_for(lambda: a.host_pid_of(ns_backend), 20, what="the backend's host pid")
        sleeper = wait_for(lambda: next((p for p in descendants_of(hb) if open(f"/proc/{p}/cmdline").read() == "sleep\x0061\x00"),
                                        None), 20, what="the COPY's program")
        data = once_json(pgtreed)
        f = [x for x in data["findings"] if x["kind"] == "foreign_process" and x["pid"] == sleeper]
        assert len(f) == 1, data["findings"]
        f = f[0]
        assert f["container"] == a.hostname and f["backend_pid"] == hb and f["application_name"] == "copy-in-a"
        assert f["query"] == "COPY fp FROM PROGRAM 'sleep 61'"
        fp = next(x for x in data["foreign_processes"] if x["pid"] == sleeper)
        assert fp["ns_pid"] == ns_pids(sleeper)[-1] != sleeper
    finally:
        a.sql("SELECT pg_cancel_backend(%s)", (ns_backend,))
        conn.close()


def descendants_of(pid):
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def busy_backend(c, app):
    """A CPU-bound session in c (it outlives its postmaster): (connection, ns pid, host pid)."""
    conn, ns = session(c, app)

    def run():
        try:
            with conn.cursor() as cur:
                cur.execute("DO $$ BEGIN LOOP PERFORM 1; END LOOP; END $$")
        except Exception:  # ended by the test
            pass
    threading.Thread(target=run, daemon=True).start()
    host = wait_for(lambda: c.host_pid_of(ns), 30, what="the backend's host pid")
    wait_for(lambda: c.sql("SELECT state FROM pg_stat_activity WHERE pid = %s", (ns,)) == [("active",)], 30,
             what="busy backend")
    return conn, ns, host


def test_orphan_in_container(pgtreed, daemon_factory):
    """The postmaster of a containerized cluster dies (the test crashes its own, never by SIGKILL,
    as test_orphan does on the host) while a CPU-bound backend runs on, re-parented to the container's init:
    an orphan_backend of that container, with its host pid and its pid in the container."""
    c = ContainerCluster(f"ctr_orph_{os.getpid()}", f"ctr-orph-{os.getpid()}", init=True)
    with c:
        assert ns_pids(c.init_pid)[-1] == 1 and ns_pids(c.pm_pid)[-1] != 1
        conn, ns, pid = busy_backend(c, "orphan-in-ctr")
        try:
            # only this test's own postmaster, known by its parent (this container's init)
            assert open(f"/proc/{c.pm_pid}/stat").read().rsplit(")", 1)[1].split()[1] == str(c.init_pid)
            c.crash_postmaster()  # abruptly, never by SIGKILL
            wait_for(lambda: not pid_alive(c.pm_pid), 30, what="postmaster exit")
            assert pid_alive(pid), "the CPU-bound backend should outlive its postmaster"
            # re-parented to the container's init, not to the host's
            wait_for(lambda: pid in children(c.init_pid), 30, what="the backend re-parented to the init")

            data = once_json(pgtreed)
            assert all(cl["postmaster"]["pid"] != c.pm_pid for cl in data["clusters"])
            orphan = next(o for o in data["orphans"] if o["pid"] == pid)
            assert orphan["ns_pid"] == ns and ns != pid
            assert orphan["ppid"] == c.init_pid
            assert orphan["backend_type"] == "client backend"
            assert orphan["data_directory"] == c.data, orphan
            assert orphan["container"] == c.hostname, orphan
            assert orphan["identity"].startswith("verified"), orphan
            finding = next(f for f in data["findings"] if f["pid"] == pid)
            assert finding["kind"] == "orphan_backend"
            assert finding["ns_pid"] == ns, finding
            assert finding["container"] == c.hostname, finding
            assert finding["cluster"] == c.data, finding
            text = run_once(pgtreed).stdout
            assert f"!! [{c.data} in container {c.hostname}]" in text, text
            # the client's list of orphans says where it runs and its pid there
            d = daemon_factory("[daemon]\ninterval = 300ms\n").start()
            out = wait_for(lambda: (lambda o: o if f"{pid} " in o else None)(d.client("orphans").stdout), 30,
                           interval=0.3, what="the orphan in pgtree orphans")
            line = next(l for l in out.splitlines() if l.startswith(f"{pid} "))
            assert f"{c.data} in container {c.hostname} (pid {ns} there)" in line, out
            fline = next(l for l in out.splitlines() if l.startswith("orphan_backend") and f" pid {pid} " in l)
            assert f"in container {c.hostname} (pid {ns} there)" in fline, out
            d.stop()

            # end it the way pgtree would: SIGTERM to this very process (its host pid)
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not pid_alive(pid), 30, what="orphan exit on SIGTERM")
            data = once_json(pgtreed)
            assert all(o["pid"] != pid for o in data["orphans"])
        finally:
            conn.close()


def test_container_init_dies(daemon_factory):
    """The postmaster is the container's pid 1: when it dies the kernel ends the whole PID
    namespace. The running daemon drops the cluster (no orphan of it, no stale cluster) and
    lives on. The postmaster ends by immediate shutdown (SIGQUIT, what pg_ctl -m immediate
    sends: every backend quits at once, no checkpoint), not by a crash: from outside, a pid 1
    gets only the signals it catches, and the kernel would end the processes a dead init left
    in its namespace with SIGKILL, which the project never sends to PostgreSQL by any route."""
    c = ContainerCluster(f"ctr_gone_{os.getpid()}", f"ctr-gone-{os.getpid()}")
    d = daemon_factory("[daemon]\ninterval = 300ms\n").start()
    with c:
        conn, ns, pid = busy_backend(c, "dies-with-ctr")
        try:
            wait_for(lambda: any(cl["postmaster"]["pid"] == c.pm_pid and cl["activity"] == "ok"
                                 for cl in d.client_json("tree")["clusters"]), 60, interval=0.5,
                     what="the containerized cluster watched")
            assert ns_pids(c.pm_pid)[-1] == 1
            os.kill(c.pm_pid, signal.SIGQUIT)  # the test's own postmaster, its container's init
            wait_for(lambda: not pid_alive(c.pm_pid) and not pid_alive(pid), 30, what="the namespace to end")
            gone = lambda t: (all(cl["postmaster"]["pid"] != c.pm_pid for cl in t["clusters"]) and
                              all(o["pid"] != pid for o in t.get("orphans", [])))
            wait_for(lambda: gone(d.client_json("tree")), 30, interval=0.5, what="the cluster dropped")
            d.wait_cycles(5)
            t = d.client_json("tree")
            assert gone(t), t
            o = d.client_json("orphans")
            assert all(x["pid"] not in (pid, c.pm_pid) for x in o["findings"] + o.get("orphans", [])), o
            assert d.proc.poll() is None, d.log()
        finally:
            conn.close()


def test_user_namespace_cluster(pgtreed, daemon_factory):
    """A cluster in its own user namespace (0-65535 inside are BASE-BASE+65535 outside): found,
    its identity checked with the host's uids, its socket reached (the server check holds), a
    long runner terminated through the rule path by host pid, and a process of the namespace
    that claims to be a postmaster of that data directory under another uid is refused."""
    base = 300000 + (os.getpid() % 500) * 65536
    pw = pwd.getpwnam("postgres")
    host_uid = base + pw.pw_uid
    c = ContainerCluster(f"ctr_userns_{os.getpid()}", f"ctr-userns-{os.getpid()}", userns=base)
    fake = None
    with c:
        # the mapping, for real: inside uid ≠ outside uid
        with open(f"/proc/{c.pm_pid}/uid_map") as f:
            assert f.read().split() == ["0", str(base), "65536"]
        with open(f"/proc/{c.pm_pid}/status") as f:
            assert next(l for l in f if l.startswith("Uid:")).split()[1:3] == [str(host_uid)] * 2
        assert os.stat(f"{c.root}{c.data}").st_uid == host_uid
        conn, ns = session(c, "in-userns")
        try:
            data = wait_for(lambda: (lambda d: d if cluster_of(d, c.pm_pid)["activity"] == "ok" else None)(once_json(pgtreed)),
                            60, interval=0.5, what="the cluster in a user namespace joined")
            cl = cluster_of(data, c.pm_pid)
            assert cl["container"] == c.hostname and cl["postmaster"]["data_directory"] == c.data
            procs = {p["pid"]: p for p in cl["processes"]}
            assert procs[c.pm_pid]["uid"] == host_uid
            assert procs[c.pm_pid]["identity"] == "verified", procs[c.pm_pid]
            hb = c.host_pid_of(ns)
            assert procs[hb]["ns_pid"] == ns and procs[hb]["application_name"] == "in-userns"
            assert procs[hb]["identity"] == "verified" and procs[hb]["uid"] == host_uid

            # a process of the namespace, uid 1000 inside, in the data directory with a
            # postmaster's command line and comm: not a postmaster (uids compared on the host side)
            title = f"{c.bindir}/postgres -D {c.data}"
            inner = (f"ln -s /bin/sleep {c.base}/postgres && cd {c.data} && exec setpriv --reuid=1000 --regid=1000 "
                     f"--clear-groups bash -c 'exec -a \"{title}\" {c.base}/postgres 300'")
            fake = subprocess.Popen(["nsenter", "-t", str(c.init_pid), "-U", "-p", "-m", "-i", "-u", "sh", "-c", inner],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def fake_pid():
                for p in descendants_of(fake.pid):
                    with contextlib.suppress(OSError):
                        if open(f"/proc/{p}/cmdline").read().startswith(title + "\0"):
                            return p
                return None
            fp = wait_for(fake_pid, 30, what="the fake postmaster")
            data = once_json(pgtreed)
            assert all(x["postmaster"]["pid"] != fp for x in data["clusters"])
            lk = next(x for x in data["not_postgresql"] if x["pid"] == fp)
            assert lk["uid"] == base + 1000
            assert lk["reason"] == f"it runs as uid {base + 1000} but its data directory belongs to uid {host_uid}", lk
            assert cluster_of(data, c.pm_pid)["activity"] == "ok"
        finally:
            conn.close()
            if fake:
                fp = fake_pid()
                if fp:
                    os.kill(fp, signal.SIGTERM)
                fake.wait(30)

        d = daemon_factory(f"""[daemon]
interval = 300ms
enforce = yes
terminate_grace = 5s
[rule userns-long]
kind = long_query
after = 1s
application_name = sleeper-u
container = {c.hostname}
action = terminate
""").start()
        results = {}

        def run():
            conn, pid = session(c, "sleeper-u")
            results["pid"] = pid
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_sleep(120)")
                results["end"] = "finished"
            except Exception as e:  # terminated
                results["end"] = str(e)
        threading.Thread(target=run, daemon=True).start()
        wait_for(lambda: "pid" in results, 30, what="the session")
        hp = wait_for(lambda: c.host_pid_of(results["pid"]), 30, what="its host pid")
        wait_for(lambda: "end" in results, 60, what="the session to be terminated")
        assert results["end"] != "finished"
        d.wait_log(r"sent SIGTERM to pid %d\b" % hp, 20)
        wait_for(lambda: "terminating connection due to administrator command" in open(c.log).read(), 20,
                 what="the server's log")
        assert pid_alive(c.pm_pid)


def test_container_binary_at_an_image_path(pgtreed):
    """The server runs a binary at a path only its container has (as an image's
    /usr/lib/postgresql/… is): its program is judged through the container's root, not looked
    for on the host, and the cluster is a cluster, not a lookalike."""
    c = ContainerCluster(f"ctr_img_{os.getpid()}", f"ctr-img-{os.getpid()}", image_bindir=True)
    with c:
        exe = os.readlink(f"/proc/{c.pm_pid}/exe")
        assert exe == f"{c.base}/pg/bin/postgres" and not os.path.exists(os.path.dirname(exe))

        def joined():
            d = once_json(pgtreed)
            cl = next((x for x in d["clusters"] if x["postmaster"]["pid"] == c.pm_pid), None)
            return d if cl and cl["activity"] == "ok" else None
        data = wait_for(joined, 60, interval=0.5, what="the cluster whose binary only its container has")
        assert all(x["pid"] != c.pm_pid for x in data["not_postgresql"]), data["not_postgresql"]
        cl = cluster_of(data, c.pm_pid)
        assert cl["container"] == c.hostname
        procs = {p["pid"]: p for p in cl["processes"]}
        assert procs[c.pm_pid]["identity"] == "verified", procs[c.pm_pid]
        kids = [p for p in children(c.pm_pid) if p in procs]
        assert kids and all(procs[p]["identity"] == "verified" for p in kids), [procs[p] for p in kids]
