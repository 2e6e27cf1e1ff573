"""Managed servers (issue 14): a PostgreSQL server that pgtreed reaches only over TCP with TLS
(its own CA, verify-full, scram-sha-256, the password in a passfile), started in its own PID
namespace so that its pids mean nothing on this host, watched from pg_stat_activity alone and
acted on through pg_terminate_backend in one statement that re-checks the session's identity.
And twenty remote servers in one daemon, one refusing connections and one hung, the others
keeping their cadence."""
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time

import psycopg2
import pytest

from conftest import Daemon
from pgharness import free_port, pg_bindir, pid_alive, query_in_thread, wait_for

TAG = f"rt{os.getpid() % 100000}"
READER, ADMIN = f"{TAG}r", f"{TAG}a"
SUPER_PW = f"super-{os.getpid()}"
PGTREE_PW = f"pgtree-{os.getpid()}"
APP_PW = f"app-{os.getpid()}"
SERVER_NAME = "db.pgtree.test"

PARALLEL_QUERY = """
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
SELECT count(*) FROM sample_data WHERE slow_row(id)
"""


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120, **kw)


def make_tls(d):
    """A CA of our own and a server certificate for db.pgtree.test and 127.0.0.1."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", "-new", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt",
       "-days", "2", "-subj", "/CN=pgtree test CA")
    sh("openssl", "req", "-new", *ec, "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr",
       "-subj", f"/CN={SERVER_NAME}")
    with open(f"{d}/ext", "w") as f:
        f.write(f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\n")
    sh("openssl", "x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key",
       "-CAcreateserial", "-out", f"{d}/server.crt", "-days", "2", "-extfile", f"{d}/ext")
    # a second CA: what a man in the middle would present
    sh("openssl", "req", "-x509", "-new", *ec, "-keyout", f"{d}/other.key", "-out", f"{d}/other.crt",
       "-days", "2", "-subj", "/CN=someone else")


class NsServer:
    """PostgreSQL 15 listening on 127.0.0.1 only (no Unix socket), TLS required, in its own PID
    namespace: its postmaster is pid 1 there. Stopped by its host pid (SIGINT: fast shutdown)."""

    def __init__(self, base, tls):
        self.base, self.tls = base, tls
        self.data = os.path.join(base, "data")
        self.log = os.path.join(base, "server.log")
        self.bindir = pg_bindir()
        self.port = None
        self.proc = None

    def _as_postgres(self, argv):
        return ["runuser", "-u", "postgres", "--"] + argv

    def start(self):
        pw = pwd.getpwnam("postgres")
        os.chown(self.base, pw.pw_uid, pw.pw_gid)
        pwfile = os.path.join(self.base, "pw")
        with open(pwfile, "w") as f:
            f.write(SUPER_PW + "\n")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        sh(*self._as_postgres([f"{self.bindir}/initdb", "-D", self.data, "-U", "postgres", "--auth=scram-sha-256",
                               f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8", "--locale=C"]))
        os.unlink(pwfile)
        for n in ("server.crt", "server.key"):
            shutil.copy(os.path.join(self.tls, n), os.path.join(self.data, n))
            os.chown(os.path.join(self.data, n), pw.pw_uid, pw.pw_gid)
            os.chmod(os.path.join(self.data, n), 0o600)
        self.port = free_port()
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""port = {self.port}
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
password_encryption = 'scram-sha-256'
max_connections = 40
shared_buffers = '16MB'
fsync = off
autovacuum = off
max_worker_processes = 8
max_parallel_workers = 4
max_parallel_workers_per_gather = 2
log_line_prefix = '%m [%p] '
""")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("hostssl all all 127.0.0.1/32 scram-sha-256\n")
        logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "setpriv", "--reuid=postgres", "--regid=postgres",
             "--init-groups", "--", f"{self.bindir}/postgres", "-D", self.data],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        wait_for(self._ready, 60, 0.2, "the namespaced server to accept connections")
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            self.host_pm_pid = int(f.read().split()[0])
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("server exited: " + open(self.log).read())
        try:
            self.connect().close()
            return True
        except psycopg2.OperationalError:
            return False

    def connect(self, user="postgres", password=SUPER_PW, application_name=None, dbname="shop", sslmode="verify-full",
                autocommit=True, rootcert=None):
        kw = dict(host=SERVER_NAME, hostaddr="127.0.0.1", port=self.port, user=user, password=password,
                  dbname=dbname if os.path.exists(os.path.join(self.base, ".shop")) else "postgres",
                  sslmode=sslmode, sslrootcert=rootcert or os.path.join(self.tls, "ca.crt"), connect_timeout=10)
        if application_name:
            kw["application_name"] = application_name
        c = psycopg2.connect(**kw)
        c.autocommit = autocommit
        return c

    def sql(self, q, params=None):
        with contextlib.closing(self.connect()) as c, c.cursor() as cur:
            cur.execute(q, params)
            return cur.fetchall() if cur.description else None

    def run_async(self, query, **kw):
        _, pid, holder = query_in_thread(self.connect(**kw), query)
        return pid, holder

    def host_children(self):
        try:
            with open(f"/proc/{self.host_pm_pid}/task/{self.host_pm_pid}/children") as f:
                return {int(x) for x in f.read().split()}
        except OSError:
            return set()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            if pid_alive(self.host_pm_pid):
                os.kill(self.host_pm_pid, signal.SIGINT)  # fast shutdown, by its host pid
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="module")
def users():
    made_u, made_g = [], []
    try:
        for g in (READER, ADMIN):
            sh("groupadd", g)
            made_g.append(g)
        reader = f"{TAG}rd"
        sh("useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-U", "-G", READER, reader)
        made_u.append(reader)
        yield {"reader": reader}
    finally:
        for u in made_u:
            subprocess.run(["userdel", u], capture_output=True)
            subprocess.run(["groupdel", u], capture_output=True)
        for g in made_g:
            subprocess.run(["groupdel", g], capture_output=True)


@pytest.fixture(scope="module")
def remote():
    base = tempfile.mkdtemp(prefix="pgtree-remote-", dir=os.environ.get("PGTREE_TEST_TMP"))
    os.chmod(base, 0o755)
    tls = os.path.join(base, "tls")
    os.mkdir(tls)
    make_tls(tls)
    os.chmod(tls, 0o755)
    srv = NsServer(os.path.join(base, "srv"), tls)
    os.mkdir(srv.base)
    try:
        srv.start()
        srv.sql(f"CREATE ROLE pgtree LOGIN PASSWORD '{PGTREE_PW}'; GRANT pg_monitor, pg_signal_backend TO pgtree")
        srv.sql(f"CREATE ROLE app LOGIN PASSWORD '{APP_PW}'")
        srv.sql("CREATE DATABASE shop OWNER app")
        open(os.path.join(srv.base, ".shop"), "w").close()
        with contextlib.closing(srv.connect(user="app", password=APP_PW)) as c, c.cursor() as cur:
            cur.execute("CREATE TABLE sample_data AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
            cur.execute("ANALYZE sample_data")
            cur.execute("CREATE FUNCTION simulate_long_query(s float8) RETURNS void LANGUAGE sql AS "
                        "$$ SELECT pg_sleep(s) $$")
            cur.execute("CREATE FUNCTION slow_row(i int) RETURNS bool LANGUAGE plpgsql PARALLEL SAFE AS "
                        "$$ BEGIN PERFORM pg_sleep(0.01); RETURN true; END $$")
        passfile = os.path.join(base, "pgpass")
        with open(passfile, "w") as f:
            f.write(f"{SERVER_NAME}:{srv.port}:*:pgtree:{PGTREE_PW}\n")
        os.chmod(passfile, 0o600)
        srv.passfile = passfile
        srv.conninfo = f"host={SERVER_NAME} hostaddr=127.0.0.1 port={srv.port} dbname=shop user=pgtree sslmode=verify-full"
        srv.section = f"conninfo = {srv.conninfo}\nsslrootcert = {tls}/ca.crt\npassfile = {passfile}\n"
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


def config(srv, enforce, interval="500ms", extra_daemon="", rule=True):
    text = f"""[daemon]
interval = {interval}
max_actions_per_minute = 100
socket_group = {READER}
admin_group = {ADMIN}
{extra_daemon}
[cluster azure-sim]
host = remote
{srv.section}parent_tag = FakeParent:*
enforce = {"yes" if enforce else "no"}
"""
    if rule:
        text += """
[rule fakeparent-1001]
kind = long_query
after = 3s
application_name = FakeParent:1001
cluster = azure-sim
action = terminate
"""
    return text


def remote_cluster(data, name="azure-sim"):
    for c in data["clusters"]:
        if c["name"] == name and c.get("view") == "remote":
            return c
    raise AssertionError(f"no remote cluster {name}: {[c['name'] for c in data['clusters']]}")


def alive_on_server(srv, pid):
    return bool(srv.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


@pytest.fixture
def scenario(remote):
    """The seeds' sessions: FakeParent:1001 ×2 and FakeParent:2002 ×1 in simulate_long_query,
    a parallel query under FakeParent:2002, and a superuser's session."""
    s = {"1001": [], "2002": [], "holders": []}
    for tag, n in (("1001", 2), ("2002", 1)):
        for _ in range(n):
            pid, h = remote.run_async("SELECT simulate_long_query(600)", user="app", password=APP_PW,
                                      application_name=f"FakeParent:{tag}")
            s[tag].append(pid)
            s["holders"].append(h)
    s["leader"], h = remote.run_async(PARALLEL_QUERY, user="app", password=APP_PW, application_name="FakeParent:2002")
    s["holders"].append(h)
    s["super"], h = remote.run_async("SELECT pg_sleep(600)", application_name="FakeParent:9009")
    s["holders"].append(h)
    wait_for(lambda: len(remote.sql("SELECT 1 FROM pg_stat_activity WHERE leader_pid = %s AND pid <> %s",
                                    (s["leader"], s["leader"]))) >= 1, 30, what="parallel workers")
    yield s
    for pid in s["1001"] + s["2002"] + [s["leader"], s["super"]]:
        remote.sql("SELECT pg_terminate_backend(%s)", (pid,))
    for h in s["holders"]:
        with contextlib.suppress(Exception):
            h["conn"].close()


def write_config(base, text):
    path = os.path.join(base, "pgtree.ini")
    with open(path, "w") as f:
        f.write(text)
    return path


def test_config_auto_and_checks(pgtreed, remote, tmp_path):
    """host = auto: a conninfo naming another machine is remote; a Unix socket or 127.0.0.1 is
    local. A remote section with a password or a data_directory is refused with FILE:LINE."""
    bad = tmp_path / "bad.ini"
    bad.write_text("[cluster a]\nhost = remote\nconninfo = host=db.example.com password=hunter2\n"
                   "[cluster b]\nhost = remote\nconninfo = host=db.example.com\ndata_directory = /srv/pg\n"
                   "[cluster c]\nhost = sideways\nconninfo = host=db.example.com\n")
    p = subprocess.run([pgtreed, "--check-config", str(bad)], capture_output=True, text=True)
    assert p.returncode != 0
    assert f"{bad}:1: cluster 'a': a password in the conninfo" in p.stdout + p.stderr
    assert f"{bad}:4: cluster 'b' has host = remote and a data_directory" in p.stdout + p.stderr
    assert f"{bad}:9: host: expected auto, local or remote, got 'sideways'" in p.stdout + p.stderr


def test_tls_verify_full(pgtreed, remote, tmp_path):
    """The server takes TLS only; pgtreed with another CA refuses the server's certificate and
    says so; with the right CA it reads the sessions."""
    with pytest.raises(psycopg2.OperationalError):
        remote.connect(sslmode="disable")
    wrong = remote.section.replace("/ca.crt", "/other.crt")
    cfg = write_config(str(tmp_path), f"[cluster azure-sim]\nhost = remote\n{wrong}")
    data = json.loads(subprocess.run([pgtreed, "--once", "--json", "--config", cfg], capture_output=True, text=True,
                                     timeout=60, check=True).stdout)
    c = remote_cluster(data)
    assert c["activity"].startswith("unavailable: cannot connect") and "certificate verify failed" in c["activity"], c
    assert c["processes"] == []
    # the password as a systemd credential: LoadCredential=pgpass:… gives $CREDENTIALS_DIRECTORY/pgpass
    creds = tmp_path / "creds"
    creds.mkdir()
    shutil.copy(remote.passfile, creds / "pgpass")
    os.chmod(creds / "pgpass", 0o600)
    section = remote.section.replace(f"passfile = {remote.passfile}", "passfile = credential:pgpass")
    cfg = write_config(str(tmp_path), f"[cluster azure-sim]\nhost = remote\n{section}")
    p = subprocess.run([pgtreed, "--once", "--json", "--config", cfg], capture_output=True, text=True, timeout=60,
                       check=True, env={k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"})
    assert "CREDENTIALS_DIRECTORY is not set" in remote_cluster(json.loads(p.stdout))["activity"]
    data = json.loads(subprocess.run([pgtreed, "--once", "--json", "--config", cfg], capture_output=True, text=True,
                                     timeout=60, check=True,
                                     env=dict(os.environ, CREDENTIALS_DIRECTORY=str(creds))).stdout)
    c = remote_cluster(data)
    assert c["activity"] == "ok", c
    assert c["server"] == f"{SERVER_NAME}:{remote.port}"


def test_tree_from_pg_stat_activity_only(pgtreed, remote, scenario, tmp_path):
    cfg = write_config(str(tmp_path), config(remote, enforce=False, rule=False))
    data = json.loads(subprocess.run([pgtreed, "--once", "--json", "--config", cfg], capture_output=True, text=True,
                                     timeout=60, check=True).stdout)
    c = remote_cluster(data)
    print(json.dumps(c, indent=1)[:6000])
    assert c["view"] == "remote" and c["activity"] == "ok" and c["postmaster"]["pid"] is None
    assert set(c["unavailable"]) >= {"orphan_backend", "unlisted_process", "client_gone", "cpu_percent", "rss_anon_kb"}
    procs = {p["pid"]: p for p in c["processes"]}
    # the server's pids are its namespace's: none of them is one of its processes on this host
    assert not set(procs) & remote.host_children(), (sorted(procs), sorted(remote.host_children()))
    assert all(pid < 1000 for pid in procs), sorted(procs)
    for tag in ("1001", "2002"):
        for pid in scenario[tag]:
            assert procs[pid]["application_name"] == f"FakeParent:{tag}"
            assert procs[pid]["backend_type"] == "client backend" and procs[pid]["cpu_percent"] is None
    workers = [p for p in c["processes"] if p["backend_type"] == "parallel worker"]
    assert workers and all(w["leader_pid"] == scenario["leader"] for w in workers), workers
    assert {"checkpointer", "walwriter"} <= {p["backend_type"] for p in c["processes"]}
    assert any(p.get("pgtree_connection") for p in c["processes"])

    text = subprocess.run([pgtreed, "--once", "--config", cfg], capture_output=True, text=True, timeout=60,
                          check=True).stdout
    print(text)
    block = text.split("cluster azure-sim", 1)[1].split("\n\n", 1)[0]
    assert "remote: from pg_stat_activity only" in block.splitlines()[0]
    assert "◆ application FakeParent:1001 (2 sessions)" in block
    assert "◆ application FakeParent:2002 (2 sessions)" in block
    lines = block.splitlines()
    lead = [i for i, l in enumerate(lines) if l.split()[0] == str(scenario["leader"])]
    assert lead, block
    after = lines[lead[0] + 1:lead[0] + 1 + len(workers)]
    assert all("parallel worker" in l and f"leader {scenario['leader']}" in l for l in after), block


def test_dry_run_then_terminate_exactly_the_group(pgtreed, pgtree_client, remote, scenario, users):
    # enforcement off: the rule's terminate is a dry run, logged, nothing happens
    d = Daemon(pgtreed, pgtree_client, config(remote, enforce=False))
    d.start()
    try:
        for pid in scenario["1001"]:
            d.wait_log(rf"dry run: would call pg_terminate_backend\({pid}\) on {SERVER_NAME}", 30)
        d.wait_cycles(2)  # the dry run stays with the findings, not only in the cycle that decided it
        f = [x for x in d.client_json("long")["findings"] if x["cluster"] == "azure-sim" and x["kind"] == "long_query"]
        assert {x["pid"] for x in f if x["rule"] == "fakeparent-1001"} == set(scenario["1001"])
        assert all(x["dry_run"] for x in f if x["rule"] == "fakeparent-1001"), f
        assert all(alive_on_server(remote, pid) for pid in scenario["1001"])

        # a reader may look but not act
        r = d.client("terminate", str(scenario["2002"][0]), user=users["reader"], check=False)
        assert r.returncode != 0 and "needs" in r.stderr, (r.returncode, r.stderr)
        assert alive_on_server(remote, scenario["2002"][0])
    finally:
        d.stop()

    # enforcement on: exactly the FakeParent:1001 sessions end, through SQL
    d = Daemon(pgtreed, pgtree_client, config(remote, enforce=True))
    d.start()
    try:
        for pid in scenario["1001"]:
            d.wait_log(rf"terminate pid {pid} on azure-sim \(rule fakeparent-1001\): pg_terminate_backend\({pid}\) "
                       rf"on {SERVER_NAME}:{remote.port}: the server accepted it", 30)
        wait_for(lambda: not any(alive_on_server(remote, p) for p in scenario["1001"]), 20, what="1001 sessions gone")
        for pid in scenario["2002"] + [scenario["leader"], scenario["super"]]:
            assert alive_on_server(remote, pid), pid
        # a superuser's session: pg_signal_backend cannot signal it, and pgtree says so
        r = d.client_json("terminate", str(scenario["super"]))
        res = r["results"][0]
        assert res["result"] == "refused" and "superuser" in res["reason"], res
        assert alive_on_server(remote, scenario["super"])
        # no way to ask for SIGKILL
        r = d.client("kill", "-9", str(scenario["2002"][0]), check=False)
        assert r.returncode != 0 and alive_on_server(remote, scenario["2002"][0])
        print("\n".join(l for l in d.lines if "azure-sim" in l)[-3000:])
        print(d.client("tree").stdout)
    finally:
        d.stop()


def test_reused_pid_is_not_terminated(pgtreed, pgtree_client, remote):
    """The daemon saw session A with pid P; A ended and B got pid P (ns_last_pid steered in the
    server's PID namespace). A terminate of P from the daemon's view reaches nobody."""
    pid_a, ha = remote.run_async("SELECT simulate_long_query(600)", user="app", password=APP_PW,
                                 application_name="FakeParent:3003")
    d = Daemon(pgtreed, pgtree_client, config(remote, enforce=True, interval="1h", rule=False))
    d.start()
    holders = [ha]
    try:
        c = remote_cluster(d.client_json("tree"))
        assert pid_a in {p["pid"] for p in c["processes"]}
        remote.sql("SELECT pg_terminate_backend(%s)", (pid_a,))
        wait_for(lambda: not alive_on_server(remote, pid_a), 20, what="session A gone")
        pid_b = None
        for _ in range(20):
            subprocess.run(["nsenter", "-t", str(remote.host_pm_pid), "-p", "-m", "sh", "-c",
                            f"echo {pid_a - 1} > /proc/sys/kernel/ns_last_pid"], check=True, timeout=30)
            pid_b, hb = remote.run_async("SELECT simulate_long_query(600)", user="app", password=APP_PW,
                                         application_name="FakeParent:3003")
            holders.append(hb)
            if pid_b == pid_a:
                break
        assert pid_b == pid_a, f"could not steer the pid: got {pid_b}, wanted {pid_a}"
        r = d.client_json("terminate", str(pid_a))
        res = r["results"][0]
        print(res)
        assert res["result"] == "refused" and "pid reused" in res["reason"], res
        time.sleep(1)
        assert alive_on_server(remote, pid_b), "the new session with the reused pid was terminated"
        d.wait_log(rf"terminate pid {pid_a} on azure-sim .*pid reused, nothing done", 5)
    finally:
        d.stop()
        remote.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'FakeParent:3003'")
        for h in holders:
            with contextlib.suppress(Exception):
                h["conn"].close()


def test_same_pid_on_two_servers_needs_cluster(pgtreed, pgtree_client, remote):
    """Managed servers' pids repeat: a pid that is a session of two clusters is refused unless
    --cluster says which; with it, only that cluster's session is acted on."""
    pid, h = remote.run_async("SELECT simulate_long_query(600)", user="app", password=APP_PW,
                              application_name="FakeParent:4004")
    text = config(remote, enforce=False, rule=False)
    text += f"[cluster azure-twin]\nhost = remote\n{remote.section}"
    d = Daemon(pgtreed, pgtree_client, text)
    d.start()
    try:
        wait_for(lambda: all(pid in {p["pid"] for p in remote_cluster(d.client_json("tree"), n)["processes"]}
                             for n in ("azure-sim", "azure-twin")), 20, what="the session in both views")
        r = d.client("terminate", str(pid), check=False)
        assert r.returncode != 0 and "more than one cluster (azure-sim, azure-twin)" in r.stderr, r.stderr
        res = d.client_json("terminate", str(pid), "--cluster", "azure-twin")["results"]
        assert len(res) == 1 and res[0]["result"] == "dry-run" and "azure-twin" in res[0]["reason"], res
        assert alive_on_server(remote, pid)
    finally:
        d.stop()
        remote.sql("SELECT pg_terminate_backend(%s)", (pid,))
        with contextlib.suppress(Exception):
            h["conn"].close()


# ---- twenty remote servers ----

def hung_listener():
    """A TCP listener that accepts and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    accepted = []
    stop = threading.Event()

    def loop():
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(s.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return s, stop, accepted


def test_twenty_remote_servers_keep_cadence(pgtreed, pgtree_client, tmp_path):
    bindir = pg_bindir()
    base = tempfile.mkdtemp(prefix="pgtree-fleet-", dir=os.environ.get("PGTREE_TEST_TMP"))
    os.chmod(base, 0o755)
    pw = pwd.getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    template = os.path.join(base, "template")
    servers = []
    hung, stop_hung, accepted = hung_listener()
    try:
        sh("runuser", "-u", "postgres", "--", f"{bindir}/initdb", "-D", template, "-U", "postgres", "--auth=trust",
           "--no-sync", "-E", "UTF8", "--locale=C")
        with open(os.path.join(template, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '127.0.0.1'\nmax_connections = 10\nshared_buffers = '1MB'\n"
                    "fsync = off\nautovacuum = off\nmax_wal_senders = 0\nwal_level = minimal\n"
                    "max_worker_processes = 2\nlogging_collector = off\n")
        for i in range(18):
            d = os.path.join(base, f"s{i}")
            sh("cp", "-a", template, d)
            port = free_port()
            with open(os.path.join(d, "postgresql.conf"), "a") as f:
                f.write(f"port = {port}\nunix_socket_directories = '{d}'\ncluster_name = 'fleet{i}'\n")
            sh("runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", d, "-l", f"{d}.log", "-W", "start")
            servers.append((d, port))
        for d, port in servers:
            wait_for(lambda: subprocess.run([f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                                            capture_output=True).returncode == 0, 120, 0.2, f"server {port}")
        refused_port = free_port()  # nothing listens there: connections are refused
        text = "[daemon]\ninterval = 1s\nconnect_timeout = 4s\nquery_timeout = 4s\n"
        for i, (d, port) in enumerate(servers):
            text += (f"[cluster fleet-{i}]\nhost = remote\n"
                     f"conninfo = host=127.0.0.1 port={port} dbname=postgres user=postgres sslmode=disable\n")
        text += (f"[cluster refusing]\nhost = remote\nconninfo = host=127.0.0.1 port={refused_port} dbname=postgres "
                 f"user=postgres sslmode=disable\n")
        text += (f"[cluster hung]\nhost = remote\nconninfo = host=127.0.0.1 port={hung.getsockname()[1]} "
                 f"dbname=postgres user=postgres sslmode=disable\n")
        d = Daemon(pgtreed, pgtree_client, text)
        d.start()
        try:
            seen = {}       # cluster -> list of (local time, taken_at) when taken_at changed
            statuses = {}
            cycles0 = d.client_json("status")["cycles"]
            t0 = time.monotonic()
            while time.monotonic() - t0 < 20:
                data = d.client_json("tree")
                now = time.monotonic()
                for c in data["clusters"]:
                    if c.get("view") != "remote":
                        continue
                    statuses.setdefault(c["name"], set()).add(c["activity"].split(":")[0] + (
                        ": " + c["activity"].split(":")[1].strip() if ":" in c["activity"] else ""))
                    ta = c.get("activity_taken_at")
                    if ta and (not seen.get(c["name"]) or seen[c["name"]][-1][1] != ta):
                        seen.setdefault(c["name"], []).append((now, ta))
                time.sleep(0.2)
            cycles = d.client_json("status")["cycles"] - cycles0
            elapsed = time.monotonic() - t0
            gaps = {}
            for name, pts in seen.items():
                tas = [ta for _, ta in pts]
                gaps[name] = [b - a for a, b in zip(tas, tas[1:])]
            healthy = [f"fleet-{i}" for i in range(len(servers))]
            report = {n: (len(seen.get(n, [])), round(max(gaps.get(n) or [99]), 2),
                          round(statistics.median(gaps.get(n) or [99]), 2)) for n in healthy}
            print(f"\n{cycles} cycles in {elapsed:.1f}s; per server (refreshes, max gap s, median gap s): {report}")
            print("fleet statuses:", set().union(*(statuses.get(n, set()) for n in healthy)))
            print("refusing:", statuses.get("refusing"), "hung:", statuses.get("hung"), "accepted:", len(accepted))
            assert cycles >= elapsed * 0.75, (cycles, elapsed)
            for n in healthy:
                assert len(seen.get(n, [])) >= elapsed * 0.6, (n, report[n])
                assert max(gaps[n]) < 2.6, (n, gaps[n])
            assert not seen.get("refusing") and not seen.get("hung")
            assert any("cannot connect" in s for s in statuses["refusing"]), statuses["refusing"]
            assert all(s.startswith("unavailable") for s in statuses["hung"]), statuses["hung"]
            assert accepted, "the hung listener was never connected to"
        finally:
            d.stop()
    finally:
        stop_hung.set()
        hung.close()
        for d, _ in servers:
            subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", d, "-m", "fast", "-w",
                            "stop"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


# ---- actions never stall the loop ----

class StallProxy:
    """A TCP proxy in front of a server. It forwards both ways, but a connection on which the
    client sends `trigger` stalls there: that chunk and everything after it, either way, is held
    (the server never sees the statement, the client never gets an answer) until the proxy
    closes. Other connections (the activity queries, a cancel request) go through untouched."""

    def __init__(self, port, trigger):
        self.port, self.trigger = port, trigger
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.listen_port = self.sock.getsockname()[1]
        self.stalled = []       # monotonic times at which a connection stalled
        self.accepted = 0
        self.conns = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError:
                c.close()
                continue
            state = {"stalled": False}
            self.conns += [c, s]
            threading.Thread(target=self._pump, args=(c, s, state, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, state, False), daemon=True).start()

    def _pump(self, src, dst, state, from_client):
        src.settimeout(None)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and self.trigger in data and not state["stalled"]:
                    state["stalled"] = True
                    self.stalled.append(time.monotonic())
                if state["stalled"]:
                    continue    # held: never forwarded
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self):
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


@contextlib.contextmanager
def plain_server(port=None, conf=""):
    """A throwaway PostgreSQL (trust, 127.0.0.1 only), stopped by pg_ctl at the end."""
    bindir = pg_bindir()
    base = tempfile.mkdtemp(prefix="pgtree-stall-", dir=os.environ.get("PGTREE_TEST_TMP"))
    os.chmod(base, 0o755)
    pw = pwd.getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    data = os.path.join(base, "data")
    port = port or free_port()
    try:
        sh("runuser", "-u", "postgres", "--", f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust",
           "--no-sync", "-E", "UTF8", "--locale=C")
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{base}'\n"
                    f"max_connections = 40\nshared_buffers = '8MB'\nfsync = off\nautovacuum = off\n{conf}\n")
        sh("runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", data, "-l", f"{base}/log", "-W", "start")
        wait_for(lambda: subprocess.run([f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                                        capture_output=True).returncode == 0, 120, 0.2, f"server {port}")
        yield port
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w",
                        "stop"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def test_hung_action_does_not_stall_the_loop(pgtreed, pgtree_client):
    """A terminate whose statement never gets an answer (a proxy holds it) is pending for
    action_timeout while the daemon keeps its cycles, refreshes the other cluster and answers
    Status from another client; then it is reported failed (timed out) in the reply, the audit
    log and the counters, and the session is untouched. At most 8 actions are pending per
    server: the 9th and 10th are refused with a message naming the limit."""
    timeout_s = 10
    with plain_server() as port:
        proxy = StallProxy(port, b"pg_terminate_backend")
        sessions = []
        try:
            for _ in range(10):
                c = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                     application_name="stall-me")
                c.autocommit = True
                with c.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    sessions.append((cur.fetchone()[0], c))
            pids = {p for p, _ in sessions}
            base = "dbname=postgres user=postgres sslmode=disable host=127.0.0.1"
            text = (f"[daemon]\ninterval = 500ms\nmax_actions_per_minute = 100\n"
                    f"[cluster stalled]\nhost = remote\nconninfo = {base} port={proxy.listen_port}\nenforce = yes\n"
                    f"action_timeout = {timeout_s}s\n"
                    f"[cluster steady]\nhost = remote\nconninfo = {base} port={port}\n")
            d = Daemon(pgtreed, pgtree_client, text)
            d.start()
            try:
                wait_for(lambda: pids <= {p["pid"] for p in remote_cluster(d.client_json("tree"), "stalled")["processes"]},
                         30, what="the sessions in the stalled cluster's view")
                out = {}

                def act():
                    t = time.monotonic()
                    try:
                        out["reply"] = d.client_json("terminate", "--app", "stall-me", "--cluster", "stalled", "--yes")
                    except Exception as e:
                        out["error"] = e
                    out["took"] = time.monotonic() - t
                th = threading.Thread(target=act, daemon=True)
                th.start()
                wait_for(lambda: proxy.stalled or "error" in out, 30, 0.05, what="the action statement to be held by the proxy")
                assert "error" not in out, out
                stalled_at = proxy.stalled[0]
                # while it hangs: cycles go on, the other cluster is refreshed, Status answers
                cycles0 = d.client_json("status")["cycles"]
                latencies, taken = [], set()
                t0 = time.monotonic()
                while time.monotonic() - t0 < timeout_s * 0.6 and th.is_alive():
                    t = time.monotonic()
                    p = subprocess.run([pgtree_client, "--socket", d.socket, "--json", "status"], capture_output=True,
                                       text=True, timeout=timeout_s * 3)
                    latencies.append(time.monotonic() - t)
                    assert p.returncode == 0, p.stderr
                    taken.add(remote_cluster(d.client_json("tree"), "steady").get("activity_taken_at"))
                    time.sleep(0.2)
                window = time.monotonic() - t0
                cycles = d.client_json("status")["cycles"] - cycles0
                pending = th.is_alive()
                print(f"\nwhile the action hung ({window:.1f}s): {cycles} cycles, steady refreshed {len(taken)} times, "
                      f"status latency max {max(latencies):.2f}s median {statistics.median(latencies):.2f}s "
                      f"over {len(latencies)} calls; still pending: {pending}")
                assert pending, "the terminate came back before action_timeout"
                assert max(latencies) < 3, latencies
                assert cycles >= window, (cycles, window)          # interval 500ms: at least half the cadence
                assert len(taken) >= window / 2, (len(taken), window)
                th.join(timeout_s * 4)
                assert not th.is_alive(), "no reply to the terminate"
                assert "error" not in out, out
                res = out["reply"]["results"]
                print(json.dumps(res, indent=1)[:3000], f"took {out['took']:.1f}s")
                assert len(res) == 10 and {r["pid"] for r in res} == pids
                words = [r["result"] for r in res]
                assert words.count("refused") == 2, res
                assert all("at most 8 per remote server" in r["reason"] for r in res if r["result"] == "refused"), res
                failed = [r for r in res if r["result"] == "failed"]
                assert len(failed) == 8 and all("timed out" in r["reason"] for r in failed), res
                assert sum("no answer from" in r["reason"] and "cancelled" in r["reason"] for r in failed) == 1, res
                assert time.monotonic() - stalled_at >= timeout_s * 0.9
                assert out["took"] >= timeout_s * 0.9, out["took"]
                d.wait_log(r"terminate pid \d+ on stalled \(uid .*failed: timed out: no answer from 127\.0\.0\.1:\d+ "
                           r"within action_timeout", 10)
                assert len([l for l in d.lines if "on stalled (uid" in l and "failed: timed out" in l]) == 8
                assert all(alive for alive in (c.closed == 0 for _, c in sessions))
                with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=port, user="postgres",
                                                         dbname="postgres")) as c, c.cursor() as cur:
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stall-me'")
                    assert cur.fetchone()[0] == 10, "a session was terminated although nothing reached the server"
                m = d.client("metrics").stdout
                print("\n".join(l for l in m.splitlines() if "action" in l and "terminate" in l))

                # the client that asked goes away while its action is pending: the outcome is
                # still logged when known, and the daemon goes on
                one = sorted(pids)[0]
                p = subprocess.Popen([pgtree_client, "--socket", d.socket, "terminate", str(one), "--cluster", "stalled"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                wait_for(lambda: len(proxy.stalled) >= 2, 30, 0.05, what="the second action statement to be held")
                p.terminate()   # our own client process
                p.wait(10)
                d.wait_log(rf"terminate pid {one} on stalled \(uid .*failed: timed out: no answer from", timeout_s * 3)
                assert d.client_json("status")["cycles"] > cycles0
                wait_for(lambda: 'pgtree_actions_total{action="terminate",result="failed"} 9' in d.client("metrics").stdout,
                         30, what="the 9th failure in the metrics")
            finally:
                d.stop()
        finally:
            for _, c in sessions:
                with contextlib.suppress(Exception):
                    c.close()
            proxy.close()


# ---- failover behind one name ----

class NsPlain:
    """PostgreSQL (trust, 127.0.0.1:port only, no Unix socket) in its own PID namespace, so that
    its session pids can be steered with ns_last_pid. Stopped by its postmaster's host pid."""

    def __init__(self, base, port):
        self.base, self.port = base, port
        self.data = os.path.join(base, "data")
        self.bindir = pg_bindir()
        self.proc = None
        pw = pwd.getpwnam("postgres")
        os.makedirs(base)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        sh("runuser", "-u", "postgres", "--", f"{self.bindir}/initdb", "-D", self.data, "-U", "postgres",
           "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
                    "max_connections = 20\nshared_buffers = '8MB'\nfsync = off\nautovacuum = off\n")

    def start(self):
        logf = open(os.path.join(self.base, "log"), "a")
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "setpriv", "--reuid=postgres", "--regid=postgres",
             "--init-groups", "--", f"{self.bindir}/postgres", "-D", self.data],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("server exited: " + open(os.path.join(self.base, "log")).read()[-2000:])
            try:
                self.connect().close()
                return True
            except psycopg2.OperationalError:
                return False
        wait_for(ready, 120, 0.2, f"server on port {self.port}")
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            self.host_pm_pid = int(f.read().split()[0])
        return self

    def connect(self, application_name=None):
        c = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=10,
                             application_name=application_name or "")
        c.autocommit = True
        return c

    def sql(self, q, params=None):
        with contextlib.closing(self.connect()) as c, c.cursor() as cur:
            cur.execute(q, params)
            return cur.fetchall()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            if pid_alive(self.host_pm_pid):
                os.kill(self.host_pm_pid, signal.SIGINT)  # fast shutdown, by its host pid
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)


def sleeper(srv, app):
    """A session of srv in pg_sleep: (pid, connection)."""
    c = srv.connect(application_name=app)
    with c.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    threading.Thread(target=_sleep, args=(c,), daemon=True).start()
    return pid, c


def _sleep(c):
    try:
        with c.cursor() as cur:
            cur.execute("SELECT pg_sleep(600)")
    except Exception:
        pass  # ended by the test


def test_failover_behind_one_name(pgtreed, pgtree_client, tmp_path):
    """Server A answers at pg-primary.pgtree.test:P (a name that pgtreed's own mount namespace
    resolves through a bind-mounted hosts file); pgtreed is about to terminate A's session X (held
    by the test hook right before the statement is queued). A stops, another cluster B starts on
    the same port, and one of B's sessions gets pid X (ns_last_pid in B's PID namespace). The
    held terminate must not touch B's X; the daemon logs that the server behind the name changed
    (old and new system_identifier), shows it in status, and watches B within a few cycles."""
    name = "pg-primary.pgtree.test"
    port = free_port()
    base = tempfile.mkdtemp(prefix="pgtree-failover-", dir=os.environ.get("PGTREE_TEST_TMP"))
    os.chmod(base, 0o755)
    a, b = NsPlain(os.path.join(base, "a"), port), NsPlain(os.path.join(base, "b"), port)
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {name}\n")
    os.chmod(tmp_path, 0o755)
    wrapper = tmp_path / "pgtreed-ns"
    # pgtreed in a mount namespace of its own whose /etc/hosts names the server (the host's file
    # is untouched); unshare and sh exec, so the pid the test signals is pgtreed's
    wrapper.write_text("#!/bin/sh\nexec unshare -m --propagation private sh -c "
                       f"'mount --bind {hosts} /etc/hosts && exec \"$0\" \"$@\"' {pgtreed} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    gate = tmp_path / "gate"
    conns = []
    try:
        a.start()
        a_sysid = a.sql("SELECT system_identifier::text FROM pg_control_system()")[0][0]
        x, ca = sleeper(a, "failover-a")
        conns.append(ca)
        text = (f"[daemon]\ninterval = 500ms\nmax_actions_per_minute = 100\n"
                f"[cluster moving]\nhost = remote\nconninfo = host={name} port={port} dbname=postgres user=postgres "
                f"sslmode=disable connect_timeout=5\nenforce = yes\naction_timeout = 10s\n")
        d = Daemon(str(wrapper), pgtree_client, text,
                   env={"PGTREED_TEST_HOOKS": "1", "PGTREED_TEST_ACT_GATE": str(gate)})
        d.start()
        try:
            def proc_x():
                c = remote_cluster(d.client_json("tree"), "moving")
                return c["activity"] == "ok" and next((p for p in c["processes"] if p["pid"] == x), None)
            seen_a = wait_for(proc_x, 30, what="A's session in the view")
            assert d.client_json("status").get("server_changes", []) == []
            out = {}

            def act():
                try:
                    out["reply"] = d.client_json("terminate", str(x), "--cluster", "moving")
                except Exception as e:
                    out["error"] = e
            th = threading.Thread(target=act, daemon=True)
            th.start()
            wait_for(lambda: gate.exists() or "error" in out, 30, 0.05, what="the action to be held at the gate")
            assert "error" not in out, out
            assert int(gate.read_text()) == x
            # the failover, while pgtreed holds the action on A's session X
            a.stop()
            b.start()
            b_sysid = b.sql("SELECT system_identifier::text FROM pg_control_system()")[0][0]
            assert b_sysid != a_sysid
            xb = None
            for _ in range(30):
                subprocess.run(["nsenter", "-t", str(b.host_pm_pid), "-p", "-m", "sh", "-c",
                                f"echo {x - 1} > /proc/sys/kernel/ns_last_pid"], check=True, timeout=30)
                xb, cb = sleeper(b, "failover-b")
                conns.append(cb)
                if xb == x:
                    break
            assert xb == x, f"could not steer B's pid: got {xb}, wanted {x}"
            b_changed = time.monotonic()
            gate.unlink()
            th.join(60)
            assert not th.is_alive() and "error" not in out, out
            res = out["reply"]["results"]
            print("\nheld terminate of A's session:", res)
            assert len(res) == 1 and res[0]["result"] in ("refused", "failed"), res
            assert "server" in res[0]["reason"] and "changed" in res[0]["reason"], res
            time.sleep(1)
            assert b.sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (x,))[0][0] == 1, \
                "B's session with A's pid was terminated"
            line = d.wait_log(rf"the server behind moving \({name}:{port}\) changed: was system_identifier {a_sysid}, "
                              rf"started .* now system_identifier {b_sysid}, started .*another cluster", 30)
            print(line[-1])
            cycles0 = d.client_json("status")["cycles"]

            def watching_b():
                # B's session by its application: A and B can start within one second, and
                # backend_start is shown to the second
                p = proc_x()
                return p and p.get("application_name") == "failover-b" and p
            try:
                seen_b = wait_for(watching_b, 30, what="B's session X in the view")
            except TimeoutError:
                c = remote_cluster(d.client_json("tree"), "moving")
                raise AssertionError((c["activity"], [(p["pid"], p.get("backend_start")) for p in c["processes"]],
                                      seen_a["backend_start"], d.log()[-4000:]))
            took = time.monotonic() - b_changed
            print(f"B watched {took:.1f}s after its session X appeared, "
                  f"{d.client_json('status')['cycles'] - cycles0} cycles after the change was logged")
            assert seen_b["application_name"] == "failover-b"
            st = d.client_json("status")
            ch = st["server_changes"]
            assert len(ch) == 1 and ch[0]["cluster"] == "moving" and ch[0]["server"] == f"{name}:{port}", ch
            assert ch[0]["old"]["system_identifier"] == a_sysid and ch[0]["new"]["system_identifier"] == b_sysid, ch
            assert ch[0]["new"]["started"] > ch[0]["old"]["started"], ch
            human = d.client("status").stdout
            print(human)
            assert f"server changed behind moving ({name}:{port})" in human
            assert f"system_identifier {a_sysid}" in human and f"system_identifier {b_sysid}" in human
        finally:
            d.stop()
    finally:
        with contextlib.suppress(FileNotFoundError):
            gate.unlink()
        a.stop()  # first: closing a connection waits for its pg_sleep otherwise
        b.stop()
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
        shutil.rmtree(base, ignore_errors=True)
