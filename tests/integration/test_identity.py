"""Which processes are PostgreSQL, and which server pgtreed talks to (issue 8 items 6, 11, 13;
issue 9 item 5; issue 15: pid reuse between detection and action)."""
import contextlib
import json
import os
import pwd
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import cluster_of, once_json
from pgharness import Cluster, children, pid_alive, wait_for


@pytest.fixture
def os_user():
    """A throwaway unprivileged OS user (removed afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create users")
    name = f"pgtfake{os.getpid() % 100000}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


def write_config(text):
    fd, path = tempfile.mkstemp(suffix=".ini", dir=os.environ.get("PGTREE_TEST_TMP"))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def once(pgtreed, config_text, user=None, env=None):
    path = write_config(config_text)
    try:
        argv = [pgtreed, "--once", "--json", "--config", path]
        if user:
            argv = ["runuser", "-u", user, "--"] + argv
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    finally:
        os.unlink(path)


class Fakes:
    """Processes that look like an orphaned client backend: comm "postgres" (a symlink of that
    name to sleep), the title of a backend, no postmaster above them."""

    TITLE = "postgres: alice shop [local] idle"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pgtree-fake-", dir=os.environ.get("PGTREE_TEST_TMP"))
        os.chmod(self.dir, 0o755)
        self.link = os.path.join(self.dir, "postgres")
        os.symlink("/bin/sleep", self.link)
        self.procs = []

    def spawn(self, user=None, cwd=None, title=TITLE):
        argv = ["bash", "-c", f'exec -a "{title}" {self.link} 300']
        if user:
            argv = ["runuser", "-u", user, "--"] + argv
        p = subprocess.Popen(argv, cwd=cwd or self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        # runuser forks: the fake is its child (or the process itself)
        def fake_pid():
            for pid in [p.pid] + children(p.pid):
                with contextlib.suppress(OSError):
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if f.read().startswith(title.encode()):
                            return pid
            return None
        return wait_for(fake_pid, 10, what="the fake backend")

    def stop(self):
        for p in self.procs:
            for pid in children(p.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)



def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_lookalikes_are_not_orphans(pgtreed, daemon_factory, os_user):
    """A symlink named postgres, a backend's title, no postmaster: run by root, and by an
    unprivileged user (in a directory of their own holding PG_VERSION, as if a data directory).
    Neither is an orphan backend, neither is a finding, the daemon signals neither."""
    fakes = Fakes()
    own = tempfile.mkdtemp(prefix="pgtree-fakedata-", dir=os.environ.get("PGTREE_TEST_TMP"))
    try:
        with open(os.path.join(own, "PG_VERSION"), "w") as f:
            f.write("15\n")
        pw = pwd.getpwnam(os_user)
        os.chown(own, pw.pw_uid, pw.pw_gid)
        os.chown(os.path.join(own, "PG_VERSION"), pw.pw_uid, pw.pw_gid)
        os.chmod(own, 0o755)
        by_root = fakes.spawn()
        by_user = fakes.spawn(user=os_user, cwd=own)
        for pid in (by_root, by_user):
            assert comm(pid) == "postgres"

        data = once(pgtreed, "[rule o]\nkind = orphans\naction = terminate\n")
        orphans = {o["pid"] for o in data["orphans"]}
        assert by_root not in orphans and by_user not in orphans
        assert not [f for f in data["findings"] if f["pid"] in (by_root, by_user)]
        fake = {x["pid"]: x for x in data["not_postgresql"]}
        assert "runs as root" in fake[by_root]["reason"]
        assert fake[by_user]["uid"] == pw.pw_uid
        assert "not a PostgreSQL server binary" in fake[by_user]["reason"]
        assert fake[by_user]["title"] == Fakes.TITLE

        d = daemon_factory("[daemon]\ninterval = 200ms\nenforce = yes\n[rule o]\nkind = orphans\naction = terminate\n").start()
        start = d.client_json("status")["cycles"]
        wait_for(lambda: d.client_json("status")["cycles"] >= start + 5, 30, what="five cycles")
        assert pid_alive(by_root) and pid_alive(by_user)
        log = d.log()
        import re
        assert not re.search(rf"pid ({by_root}|{by_user})\b", log), log
    finally:
        fakes.stop()
        import shutil
        shutil.rmtree(own, ignore_errors=True)


def test_foreign_child_is_never_signalled(cluster, daemon_factory):
    """Below a real postmaster, a program that is not PostgreSQL's (here started by a superuser's
    COPY … FROM PROGRAM) titled as a client backend: shown as foreign, and `pgtree terminate`
    refuses it with the reason, at the daemon (manager_act)."""
    fakes = Fakes()
    os.chmod(fakes.dir, 0o755)
    cluster.sql("CREATE TABLE IF NOT EXISTS ident_sink (line text)")
    title = "postgres: alice shop [local] SELECT"
    pid = None
    program = f"""exec bash -c 'exec -a "{title}" {fakes.link} 60'"""  # popen's sh is dash: no exec -a
    t, backend, holder = cluster.run_async("COPY ident_sink FROM PROGRAM '%s'" % program.replace("'", "''"))
    try:
        def fake_pid():
            for pid in children(backend):
                for p in [pid] + children(pid):
                    with contextlib.suppress(OSError):
                        with open(f"/proc/{p}/cmdline", "rb") as f:
                            if f.read().startswith(title.encode()):
                                return p
            return None
        pid = wait_for(lambda: fake_pid() or holder["error"], 15, what="the program below the backend")
        assert isinstance(pid, int), pid
        assert comm(pid) == "postgres"
        # processes below backends are seen by discovery scans: one every cycle here
        d = daemon_factory(f"[daemon]\ninterval = 200ms\ndiscovery_interval = 100ms\n"
                           f"[cluster it]\ndata_directory = {cluster.data}\nenforce = yes\n").start()
        tree = d.client_json("tree")
        procs = {p["pid"]: p for p in cluster_of(tree, cluster.pm_pid)["processes"]}
        assert procs[pid]["identity"].startswith("foreign: it runs another program than its postmaster"), procs[pid]
        assert procs[pid]["backend_type"] != "client backend"
        assert procs[backend]["identity"] == "verified"
        r = d.client("terminate", str(pid), check=False)
        assert r.returncode != 0 or "refused" in r.stdout, r.stdout + r.stderr
        d.wait_log(rf"terminate pid {pid} .*: pid {pid} is not verified to be PostgreSQL's: it runs another program")
        time.sleep(0.5)
        assert pid_alive(pid)
        assert f"sent SIGTERM to pid {pid}" not in d.log()
    finally:
        # the program is ours (found by its title below our backend): end it, and the COPY ends
        if pid:
            os.kill(pid, signal.SIGTERM)
        else:
            cluster.sql("SELECT pg_cancel_backend(%s)", (backend,))
        t.join(30)
        fakes.stop()


def test_never_guesses_the_server(pgtreed, os_user):
    """pgtreed unprivileged cannot read postmaster.pid: it must not join the cluster with whatever
    libpq's defaults reach (here PGHOST/PGPORT point at another cluster)."""
    a = Cluster(name=f"pgtree_guess_a_{os.getpid()}")
    b = Cluster(name=f"pgtree_guess_b_{os.getpid()}")
    a.start()
    b.start()
    try:
        env = {"PGHOST": b.base, "PGPORT": str(b.port), "PGUSER": "pgtree", "PGDATABASE": "postgres"}
        data = once(pgtreed, "[daemon]\nconninfo = dbname=postgres user=pgtree\n", user=os_user, env=env)
        ca = cluster_of(data, a.pm_pid)
        assert ca["activity"].startswith("unavailable: postmaster.pid not readable: Permission denied"), ca["activity"]
        cb = cluster_of(data, b.pm_pid)
        assert cb["activity"].startswith("unavailable: "), cb["activity"]

        # root, with a [cluster] section that names the other cluster's socket: connected, but
        # the backend serving pgtreed is not a child of this postmaster: refused
        conf = (f"[cluster a]\ndata_directory = {a.data}\nconninfo = host={b.base} port={b.port} dbname=postgres user=pgtree\n")
        data = once(pgtreed, conf)
        ca = cluster_of(data, a.pm_pid)
        assert ca["activity"].startswith("unavailable: the server reached is not this cluster"), ca["activity"]
        assert f"not of postmaster {a.pm_pid}" in ca["activity"]
        assert all(p["activity_joined"] is False for p in ca["processes"])
        assert cluster_of(data, b.pm_pid)["activity"] == "ok"
    finally:
        a.stop()
        b.stop()


def test_same_cluster_name_gets_distinct_names(pgtreed):
    """Two clusters named alike (Debian: "main" for every version): distinct names in JSON and
    findings."""
    name = f"pgtree_dup_{os.getpid()}"
    a, b = Cluster(name=name), Cluster(name=name)
    a.start()
    b.start()
    try:
        a.run_async("SELECT pg_sleep(60)", application_name="dupname")
        b.run_async("SELECT pg_sleep(60)", application_name="dupname")
        time.sleep(1.2)
        data = once(pgtreed, "[rule q]\nkind = long_query\nafter = 1s\napplication_name = dupname\n")
        ca, cb = cluster_of(data, a.pm_pid), cluster_of(data, b.pm_pid)
        assert ca["cluster_name"] == cb["cluster_name"] == name
        assert (ca["name"], cb["name"]) == (f"{name}:{a.port}", f"{name}:{b.port}")
        assert ca["activity"] == cb["activity"] == "ok"
        found = {f["cluster"] for f in data["findings"] if f["kind"] == "long_query" and f["application_name"] == "dupname"}
        assert found == {ca["name"], cb["name"]}
        # one of them alone keeps its plain name
        b.stop()
        data = once(pgtreed, "")
        assert cluster_of(data, a.pm_pid)["name"] == name
    finally:
        a.stop()
        b.stop()


def set_last_pid(pid):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))


def test_pid_reused_between_detection_and_action(cluster, daemon_factory):
    """A terminate decided on pid P; before the signal goes out, P's backend ends and a new backend
    of the same postmaster gets pid P. The daemon refuses (start time differs) and says so; the
    new session is untouched."""
    if not os.path.exists("/proc/sys/kernel/ns_last_pid"):
        pytest.skip("no ns_last_pid")
    gate = os.path.join(tempfile.mkdtemp(prefix="pgtree-gate-", dir=os.environ.get("PGTREE_TEST_TMP")), "gate")
    d = daemon_factory(f"""[daemon]
interval = 200ms
[cluster it]
data_directory = {cluster.data}
enforce = yes
[rule reuse]
kind = long_query
after = 300ms
application_name = reuse-victim
action = terminate
""", env={"PGTREED_TEST_HOOKS": "1", "PGTREED_TEST_ACT_GATE": gate}).start()
    admin = cluster.connect()
    new = None
    try:
        _, pid, _ = cluster.run_async("SELECT pg_sleep(60)", application_name="reuse-victim")
        wait_for(lambda: os.path.exists(gate), 30, what="the action to reach the gate")
        with open(gate) as f:
            assert int(f.read()) == pid
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: not pid_alive(pid) and not os.path.exists(f"/proc/{pid}"), 15, what="the old backend to be gone")
        # a new backend of the same postmaster with the same pid
        for attempt in range(300):
            set_last_pid(pid)
            new = cluster.connect(application_name="reuse-new")
            with new.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                got = cur.fetchone()[0]
            if got == pid:
                break
            new.close()
            new = None
            if os.path.exists(f"/proc/{pid}"):
                break  # someone else took the pid: still another process than the one scanned
        os.unlink(gate)
        d.wait_log(rf"terminate pid {pid} \(rule reuse\): pid {pid} is not the process that was scanned any more "
                   r"\(start time or parent changed: pid reused\)")
        time.sleep(0.5)
        assert f"sent SIGTERM to pid {pid}" not in d.log()
        if new is not None:
            with new.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
        print(f"pid {pid} reused by {'a new backend' if new is not None else 'another process'} after {attempt + 1} attempts")
    finally:
        if os.path.exists(gate):
            os.unlink(gate)
        if new is not None:
            new.close()
        admin.close()


def test_section_by_name_survives_a_lookalike_of_that_name(pgtreed, os_user):
    """A [cluster NAME] section without data_directory/port selects the cluster by its name. An
    unprivileged user who starts a cluster of the same cluster_name (here: a copy of bash named
    postgres, whose child has the title of NAME's checkpointer) makes both be renamed NAME:PORT /
    NAME:DATA_DIRECTORY; the real cluster must keep its section (here: enforce = no while
    [daemon] enforce = yes), not fall back to [daemon] — else any local user flips the production
    cluster's enforcement (seen: a dry-run-only cluster's query cancelled)."""
    name = f"pgtree_sect_{os.getpid()}"
    real = Cluster(name=name)
    real.start()
    fake = tempfile.mkdtemp(prefix="pgtree-lookalike-", dir=os.environ.get("PGTREE_TEST_TMP"))
    pm = None
    try:
        pw = pwd.getpwnam(os_user)
        for d in ("pm", "kid", "data"):
            os.mkdir(os.path.join(fake, d))
        subprocess.run(["cp", "/bin/bash", f"{fake}/pm/postgres"], check=True)
        subprocess.run(["cp", "/bin/sleep", f"{fake}/kid/postgres"], check=True)
        with open(f"{fake}/data/PG_VERSION", "w") as f:
            f.write("15\n")
        for root, dirs, files in os.walk(fake):
            for n in dirs + files:
                os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
        os.chown(fake, pw.pw_uid, pw.pw_gid)
        os.chmod(fake, 0o755)
        script = f"(exec -a 'postgres: {name}: checkpointer ' {fake}/kid/postgres 120) & wait"
        pm = subprocess.Popen(["runuser", "-u", os_user, "--", "bash", "-c",
                               f'exec -a "postgres -D {fake}/data" {fake}/pm/postgres -c "{script}"'],
                              cwd=f"{fake}/data")
        # runuser → the lookalike postmaster → its "checkpointer"
        wait_for(lambda: any(children(k) for k in children(pm.pid)), 30, what="the lookalike's child")
        conf = f"[daemon]\nenforce = yes\n[cluster {name}]\nenforce = no\n"
        data = once(pgtreed, conf)
        names = [c["name"] for c in data["clusters"] if c.get("cluster_name") == name]
        assert len(names) == 2, names  # the lookalike is there, under the same cluster_name
        c = cluster_of(data, real.pm_pid)
        assert c["name"] == f"{name}:{real.port}"
        assert c["config_section"] == name, c
        assert c["enforce"] is False, c
    finally:
        if pm:
            for k in children(pm.pid):
                for g in children(k) + [k]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(g, signal.SIGTERM)
            pm.terminate()
            pm.wait(10)
        real.stop()
        subprocess.run(["rm", "-rf", fake])
