"""PostgreSQL clusters in containers made of plain namespaces, for pgtree's tests.

A ContainerCluster runs `unshare --pid --fork --mount --ipc --uts --mount-proc`: a new PID
namespace (the postmaster is its pid 1), a private mount namespace with a tmpfs over the
cluster's base directory (data directory and socket: the host sees an empty directory at that
path), its own SysV IPC and hostname (also written to an /etc/hostname bound over the host's, as
container engines do). The postmaster is stopped by its HOST pid with SIGINT (fast shutdown):
nothing here signals a pid of the container's namespace from outside.

With init=True the container's pid 1 is a shell that starts the postmaster and stays (as a
container engine's init does): the postmaster is its child, and a postmaster that dies leaves
its backends re-parented to that init. The init exits when the test asks (stop()), after the
cluster's processes are gone.

With userns=BASE the container also gets its own user namespace: uids and gids 0-65535 inside
are BASE-BASE+65535 on the host (written to uid_map/gid_map by the test, root on the host, as a
container engine's newuidmap does). The postmaster runs as os_user's uid inside, BASE + that uid
outside; the host's files (root's) show as nobody inside.
"""
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import textwrap

import psycopg2

from pgharness import children, crash_postmaster, free_port, pg_bindir, pid_alive, server_major, wait_for


def ns_pids(pid):
    """The NSpid line of /proc/PID/status: [host pid, …, innermost pid]."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    return [pid]


# Run as: python3 -c USERNS_LAUNCHER W R COMMAND…: a new user namespace; tell the test (on fd W)
# and wait (on fd R) until it has written the uid and gid maps, then become root inside (the
# capabilities stay across exec) and exec COMMAND in it.
USERNS_LAUNCHER = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        e = ctypes.get_errno()
        sys.exit(f"unshare(CLONE_NEWUSER): {os.strerror(e)}")
    w, r = int(sys.argv[1]), int(sys.argv[2])
    os.write(w, b"u")
    os.close(w)
    if os.read(r, 1) != b"m":
        sys.exit("no uid map")
    os.close(r)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.execvp(sys.argv[3], sys.argv[3:])
""")


def userns_popen(argv, base, count=65536, **kw):
    """Popen of argv in a new user namespace mapping 0..count-1 inside to base.. outside."""
    r1, w1 = os.pipe()   # child -> test
    r2, w2 = os.pipe()   # test -> child
    p = subprocess.Popen(["python3", "-c", USERNS_LAUNCHER, str(w1), str(r2)] + argv,
                         pass_fds=(w1, r2), **kw)
    os.close(w1)
    os.close(r2)
    try:
        if os.read(r1, 1) != b"u":
            p.wait(30)
            raise RuntimeError(f"the user namespace was not created (exit {p.returncode})")
        for f in ("uid_map", "gid_map"):
            with open(f"/proc/{p.pid}/{f}", "w") as m:
                m.write(f"0 {base} {count}\n")
        os.write(w2, b"m")
    finally:
        os.close(r1)
        os.close(w2)
    return p



class ContainerCluster:
    def __init__(self, name, hostname, os_user="postgres", settings=None, bindir=None, init=False, userns=None,
                 image_bindir=False):
        self.name, self.hostname, self.os_user = name, hostname, os_user
        # the server's binaries at a path only the container has (as an image's are): the host's
        # installation bound under the container's private base directory
        self.image_bindir = image_bindir
        self.init = init
        self.userns = userns
        self.settings = settings or {}
        self.bindir = bindir or pg_bindir()
        self.major = server_major(self.bindir)
        # the path inside the container; on the host it stays an empty directory
        self.base = tempfile.mkdtemp(prefix=f"pgtree-ctr-{name}-", dir=os.environ.get("PGTREE_TEST_TMP"))
        os.chmod(self.base, 0o755)
        self.data = os.path.join(self.base, "data")
        self.logdir = tempfile.mkdtemp(prefix=f"pgtree-ctrlog-{name}-", dir=os.environ.get("PGTREE_TEST_TMP"))
        self.log = os.path.join(self.logdir, "server.log")
        self.port = free_port()
        self.stopfile = os.path.join(self.logdir, "init-may-exit")
        self.proc = None
        self.pm_pid = None       # host pid
        self.init_pid = None     # host pid of the container's init (init=True), else the postmaster
        self._conns = []

    def start(self):
        pw = pwd.getpwnam(self.os_user)
        conf = {
            "port": self.port, "listen_addresses": "''", "unix_socket_directories": f"'{self.base}'",
            "cluster_name": f"'{self.name}'", "max_connections": 40, "shared_buffers": "'16MB'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
        }
        conf.update(self.settings)
        conf_text = "".join(f"{k} = {v}\n" for k, v in conf.items())
        as_user = f"setpriv --reuid={pw.pw_uid} --regid={pw.pw_gid} --init-groups"
        image_bindir = self.image_bindir
        bindir = f"{self.base}/pg/bin" if image_bindir else self.bindir
        # RLIMIT_CORE 0 for the whole container (no core file of a server process anywhere)
        script = f"""set -e
ulimit -c 0
hostname {self.hostname}
mount -t tmpfs -o mode=0755 pgtree-ctr {self.base}
echo {self.hostname} > {self.base}/hostname
mount --bind {self.base}/hostname /etc/hostname
chown {pw.pw_uid}:{pw.pw_gid} {self.base}
{f"mkdir {self.base}/pg && mount --bind {os.path.dirname(self.bindir)} {self.base}/pg" if image_bindir else ""}
{as_user} {self.bindir}/initdb -D {self.data} -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
cat >> {self.data}/postgresql.conf <<'PGTREE_EOF'
{conf_text}PGTREE_EOF
cd {self.data}
"""
        if self.init:
            script += f"""{as_user} {bindir}/postgres -D {self.data} &
while [ ! -e {self.stopfile} ]; do sleep 0.3; done
"""
        else:
            script += f"exec {as_user} {bindir}/postgres -D {self.data}\n"
        self._logf = open(self.log, "w")
        argv = ["unshare", "--pid", "--fork", "--mount", "--ipc", "--uts", "--mount-proc",
                "--propagation", "private", "sh", "-c", script]
        kw = dict(stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)
        if self.userns is not None:
            self.proc = userns_popen(argv, self.userns, **kw)
        else:
            self.proc = subprocess.Popen(argv, **kw)

        def postmaster():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: the container exited: {open(self.log).read()[-3000:]}")
            tops = children(self.proc.pid)
            if self.init:
                self.init_pid = tops[0] if tops else None
                tops = [c for t in tops for c in children(t)]
            for c in tops:
                with contextlib.suppress(OSError):
                    with open(f"/proc/{c}/comm") as f:
                        if f.read().strip() == "postgres":
                            return c
            return None
        self.pm_pid = wait_for(postmaster, 180, what=f"{self.name}'s postmaster")
        if not self.init:
            self.init_pid = self.pm_pid

        def ready():
            with contextlib.suppress(OSError):
                with open(f"{self.root}{self.data}/postmaster.pid") as f:
                    return f.read().rstrip().endswith("ready")
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: the container exited: {open(self.log).read()[-3000:]}")
            return False
        wait_for(ready, 180, what=f"{self.name} ready")
        self.sql("CREATE ROLE pgtree LOGIN; GRANT pg_monitor TO pgtree")
        return self

    @property
    def root(self):
        return f"/proc/{self.pm_pid}/root"

    @property
    def host_socket_dir(self):
        """The socket directory as the host reaches it."""
        return f"{self.root}{self.base}"

    def connect(self, application_name=None, dbname="postgres", user="postgres", autocommit=True):
        kw = dict(dbname=dbname, user=user, port=self.port, host=self.host_socket_dir, connect_timeout=10)
        if application_name:
            kw["application_name"] = application_name
        conn = psycopg2.connect(**kw)
        conn.autocommit = autocommit
        self._conns.append(conn)
        return conn

    def sql(self, query, params=None):
        with contextlib.closing(self.connect()) as c, c.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else None

    def host_pid_of(self, ns_pid):
        """The host pid of the postmaster's child whose pid in the container is ns_pid."""
        for c in children(self.pm_pid):
            with contextlib.suppress(OSError):
                if ns_pids(c)[-1] == ns_pid:
                    return c
        return None

    def crash_postmaster(self):
        """The postmaster dies abruptly (pgharness.crash_postmaster(), never SIGKILL); its
        backends stay, orphaned (re-parented to the container's init), until they notice. Only
        with init=True: a postmaster that is pid 1 cannot be crashed without its namespace
        ending by SIGKILL."""
        # only this test's own postmaster, known by its parent (this container's init)
        assert self.init and self.init_pid != self.pm_pid
        with open(f"/proc/{self.pm_pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[1] == str(self.init_pid)
        crash_postmaster(self.pm_pid)

    def stop(self):
        if self.pm_pid and pid_alive(self.pm_pid) and self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pm_pid, signal.SIGINT)  # fast shutdown, by its host pid
        if self.init and self.proc:
            # the init stays until told: first the cluster's processes end (the postmaster by
            # SIGINT above; backends a test orphaned by SIGTERM, the way pgtree ends them)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not pid_alive(self.pm_pid), 60, what=f"{self.name}'s postmaster to stop")
            left = []
            for pid in children(self.init_pid) if self.init_pid else []:
                with contextlib.suppress(OSError):
                    if pid != self.pm_pid and open(f"/proc/{pid}/comm").read().strip() == "postgres":
                        os.kill(pid, signal.SIGTERM)
                        left.append(pid)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not any(pid_alive(p) for p in left), 60, what=f"{self.name}'s orphans to exit")
            with contextlib.suppress(OSError):
                open(self.stopfile, "w").close()
        if self.proc:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                # the postmaster did not stop: end the unshare process (not PostgreSQL's)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
        for c in self._conns:
            with contextlib.suppress(Exception):
                c.close()
        with contextlib.suppress(Exception):
            self._logf.close()
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.logdir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
