"""Throwaway PostgreSQL clusters for pgtree's tests, demo and benchmarks.

A cluster lives in its own temporary directory (data, socket, log), runs as an
unprivileged OS user (postgres by default: CI runs as root), on a free port, and
is stopped and removed by stop(). Nothing here touches a process it did not
start.
"""
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import psycopg2


def pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2]))
    if not dirs:
        raise RuntimeError("no PostgreSQL server installed (scripts/install-deps)")
    return dirs[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def stop_on_signals():
    """Turns SIGTERM and SIGHUP into SystemExit, so that `with Cluster()` blocks clean up. Only the
    first one: a second (meson forwards the SIGTERM its process group got too) must not cut the
    clean-up short and leave clusters running."""
    def handler(signum, frame):
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


def children(pid):
    """The pids of pid's children (none if it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def query_in_thread(conn, query):
    """Runs query on conn in a thread of its own: (thread, backend pid, holder); holder["error"]
    is what ended it (a cancel, a terminate, an orphaning)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    holder = {"conn": conn, "error": None}

    def work():
        try:
            with conn.cursor() as cur:
                cur.execute(query)
        except Exception as e:
            holder["error"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t, pid, holder


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


# How the tests make a postmaster die abruptly, leaving its backends orphaned (the postmaster
# gone at once, no shutdown of any kind, postmaster.pid and shared memory left behind, each
# backend running on until it notices): SIGVTALRM. Never SIGKILL: the project sends SIGKILL to
# no PostgreSQL process, by any route, tests included (test_nokill_guard.py checks the tree).
# - No postmaster of 12–18 catches or ignores it (pqsignal() in PostmasterMain sets HUP, INT,
#   QUIT, TERM, USR1, USR2, CHLD and ignores PIPE, ALRM, TTIN, TTOU, XFSZ, URG on some; SigCgt
#   and SigIgn of /proc/PID/status agree on Debian's 15 and the npm builds 12–18), so its
#   default action applies: the kernel ends the process, no handler and no exit code run.
# - That default action is "terminate", not "core" (unlike SIGABRT, SIGQUIT or SIGSEGV): the
#   kernel never starts a core dump, so no core file is written whatever kernel.core_pattern
#   says (a file, or a pipe to systemd-coredump or apport, which would run even with
#   RLIMIT_CORE=0). The clusters run with RLIMIT_CORE=0 all the same (Cluster._run,
#   ContainerCluster), for a crash the tests did not ask for.
# - Up to 15 the postmaster blocks every signal but SIGABRT and the synchronous faults outside
#   its select() (BlockSig): one that comes then waits for the next select(), a few ms (measured
#   1–7 ms on 12–18 with a busy backend). crash_postmaster() waits for the exit.
# A PID namespace's init (a containerized postmaster that is pid 1) gets from outside only the
# signals it catches, and when it dies the kernel SIGKILLs every process of its namespace:
# crash_postmaster() refuses it.
CRASH_SIGNAL = signal.SIGVTALRM


def _status_field(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1:]
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def crash_postmaster(pm_pid, timeout=30):
    """Makes the postmaster pm_pid die abruptly (CRASH_SIGNAL, above), as a crash would, and
    waits until it is gone; its children stay, orphaned, until they notice. The caller checks
    first that pm_pid is its own test's postmaster."""
    with open(f"/proc/{pm_pid}/comm") as f:
        comm = f.read().strip()
    if comm != "postgres":
        raise RuntimeError(f"crash_postmaster: pid {pm_pid} is {comm!r}, not a postmaster")
    if int(_status_field(pm_pid, "NSpid")[-1]) == 1:
        raise RuntimeError(f"crash_postmaster: pid {pm_pid} is its PID namespace's init: it gets only the "
                           "signals it catches, and its death would have the kernel SIGKILL its backends")
    bit = 1 << (CRASH_SIGNAL - 1)
    for key in ("SigCgt", "SigIgn"):
        if int(_status_field(pm_pid, key)[0], 16) & bit:
            raise RuntimeError(f"crash_postmaster: postmaster {pm_pid} has {CRASH_SIGNAL.name} in {key}: "
                               "it would not die of it")
    os.kill(pm_pid, CRASH_SIGNAL)
    wait_for(lambda: not pid_alive(pm_pid), timeout, interval=0.01, what=f"postmaster {pm_pid} to die")


def server_major(bindir):
    """The major version of the server in bindir (12, 13, …)."""
    out = subprocess.run([f"{bindir}/postgres", "--version"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return int(out.split()[-1].split(".")[0])


class Cluster:
    """bindir: the server's programs (default: the newest Debian one, today 15); the npm builds of
    12–18 come from scripts/install-pg-versions. settings: postgresql.conf lines that override
    the harness's own."""

    def __init__(self, name="pgtree_test", os_user="postgres", settings=None,
                 base_dir=None, bindir=None):
        self.name = name
        self.os_user = os_user if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.settings = settings or {}
        self.base = base_dir or tempfile.mkdtemp(prefix=f"pgtree-{name}-", dir=os.environ.get("PGTREE_TEST_TMP"))
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "server.log")
        self.port = None
        self.bindir = bindir or pg_bindir()
        self.major = server_major(self.bindir)
        self.started_pids = set()
        self.pm_pid = None
        self._threads = []

    # -- running things as the cluster's OS user
    def _as_user(self, argv):
        if os.geteuid() == 0:
            return ["runuser", "-u", self.os_user, "--"] + argv
        return argv

    def _run(self, argv, **kw):
        """argv as the cluster's user, with RLIMIT_CORE 0 (set by prlimit after runuser, whose
        pam_limits could raise it): no server process of the cluster writes a core file."""
        kw.setdefault("timeout", 180)
        return subprocess.run(self._as_user(["prlimit", "--core=0:0", "--"] + argv), check=True,
                              capture_output=True, text=True, cwd=self.base, **kw)

    def start(self):
        self.init()
        self.launch()
        # the role pgtreed connects as (README: "The PostgreSQL role")
        self.sql("CREATE ROLE pgtree LOGIN; GRANT pg_monitor TO pgtree")
        return self

    def init(self):
        """initdb and the configuration, without starting."""
        pw = pwd.getpwnam(self.os_user)
        os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o755)
        self._run([f"{self.bindir}/initdb", "-D", self.data, "-U", "postgres",
                   "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        self.configure(self.settings)
        return self

    def configure(self, settings):
        """Appends the harness's settings (a new port, this cluster's socket directory and name)
        and then settings to postgresql.conf: later lines win."""
        self.port = free_port()
        conf = {
            "port": self.port,
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "cluster_name": f"'{self.name}'",
            "max_connections": 60,
            "shared_buffers": "'16MB'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "autovacuum_naptime": "'1s'",
            "max_worker_processes": 8,
            "max_parallel_workers": 4,
            "max_parallel_workers_per_gather": 2,
            "log_line_prefix": "'%m [%p] '",
        }
        conf.update(settings)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")

    def launch(self):
        try:
            self._run([f"{self.bindir}/pg_ctl", "-D", self.data, "-l", self.log,
                       "-w", "-t", "120", "start"])
        except subprocess.CalledProcessError as e:
            logs = [self.log] + sorted(glob.glob(os.path.join(self.data, "log", "*")))
            text = ""
            for path in logs:
                with contextlib.suppress(OSError), open(path, errors="replace") as f:
                    text += f"--- {path}\n" + f.read()[-3000:]
            raise RuntimeError(f"{self.name}: pg_ctl start failed: {e.stdout}{e.stderr}\n{text}") from None
        self.pm_pid = self.postmaster_pid()
        self.started_pids.add(self.pm_pid)
        return self

    def shutdown(self):
        """A clean stop (the data directory can then be copied)."""
        self._run([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"])

    def make_standby(self, name, settings=None):
        """A streaming standby: a copy of this cluster's data directory, taken while it is stopped
        (the npm builds have no pg_basebackup), with standby.signal and primary_conninfo. Stops
        this cluster if it runs; start both afterwards."""
        if self.pm_pid and pid_alive(self.pm_pid):
            self.shutdown()
        sb = Cluster(name=name, os_user=self.os_user, bindir=self.bindir)
        shutil.chown(sb.base, self.os_user, self.os_user)
        os.chmod(sb.base, 0o755)
        shutil.copytree(self.data, sb.data, symlinks=True)
        for d, _, files in os.walk(sb.data):
            shutil.chown(d, self.os_user, self.os_user)
            for f in files:
                shutil.chown(os.path.join(d, f), self.os_user, self.os_user)
        conf = {"primary_conninfo": f"'host={self.base} port={self.port} user=postgres dbname=postgres'",
                "hot_standby": "on"}
        conf.update(settings or {})
        sb.settings = dict(self.settings, **conf)
        sb.configure(sb.settings)
        open(os.path.join(sb.data, "standby.signal"), "w").close()
        shutil.chown(os.path.join(sb.data, "standby.signal"), self.os_user, self.os_user)
        return sb

    def restart(self, stop_mode="fast"):
        """Stops the server and starts it again on the same port (a new postmaster)."""
        self._run([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", stop_mode, "-w", "-t", "60", "stop"])
        self._run([f"{self.bindir}/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start"])
        self.pm_pid = self.postmaster_pid()
        self.started_pids.add(self.pm_pid)

    def crash_postmaster(self):
        """This cluster's postmaster dies abruptly (crash_postmaster(), never SIGKILL); its
        backends stay, orphaned, until they notice."""
        # only this test's own postmaster, identified by its (unique) data directory
        assert os.readlink(f"/proc/{self.pm_pid}/cwd") == self.data
        crash_postmaster(self.pm_pid)
        # core_pattern "core" would put one in the postmaster's working directory
        assert not glob.glob(os.path.join(self.data, "core*")), os.listdir(self.data)

    def server_log(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def shm_id(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                lines = f.read().splitlines()
            return int(lines[6].split()[1])
        except (OSError, IndexError, ValueError):
            return None

    def connect(self, tcp=False, application_name=None, autocommit=True, dbname="postgres", user="postgres"):
        kw = dict(dbname=dbname, user=user, port=self.port,
                  host="127.0.0.1" if tcp else self.base, connect_timeout=10)
        if application_name:
            kw["application_name"] = application_name
        conn = psycopg2.connect(**kw)
        conn.autocommit = autocommit
        return conn

    def sql(self, query, params=None, dbname="postgres"):
        with contextlib.closing(self.connect(dbname=dbname)) as c, c.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else None

    def run_async(self, query, **connect_kw):
        """Runs query in a thread on its own connection; returns (thread, backend pid, holder)."""
        t, pid, holder = query_in_thread(self.connect(**connect_kw), query)
        self._threads.append((t, holder))
        return t, pid, holder

    def backend_pids(self):
        """pids of the postmaster's current children, from /proc."""
        try:
            with open(f"/proc/{self.pm_pid}/task/{self.pm_pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def _processes_in_data_dir(self):
        """Every process working in this cluster's (unique) data directory: its children, and
        the orphans a dead postmaster left behind."""
        found = set()
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{name}/cwd") == self.data:
                        found.add(int(name))
        return found

    def stop(self):
        # Remember our children first: if the postmaster is gone they must still be ended.
        ours = (set(self.backend_pids()) | self.started_pids if self.pm_pid else set()) | \
            self._processes_in_data_dir()
        if self.pm_pid and pid_alive(self.pm_pid) and self._in_our_data_dir(self.pm_pid):
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate",
                           "-w", "-t", "30", "stop"])
        for pid in ours | self._processes_in_data_dir():
            if pid_alive(pid) and self._in_our_data_dir(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not any(pid_alive(p) for p in ours), 15, what="cluster exit")
        for t, holder in self._threads:
            # closing a connection that a thread still uses would wait for that thread forever
            t.join(5)
            if not t.is_alive():
                with contextlib.suppress(Exception):
                    holder["conn"].close()
        shm = self.shm_id()
        if shm is not None and self.pm_pid is not None:
            subprocess.run(["ipcrm", "-m", str(shm)], capture_output=True, timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)

    def _in_our_data_dir(self, pid):
        try:
            return os.readlink(f"/proc/{pid}/cwd") == self.data
        except OSError:
            return pid in self.started_pids

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
