import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pgharness import Cluster, stop_on_signals  # noqa: E402

# meson's timeout and CI send SIGTERM: turn it into an exception so fixtures stop clusters
stop_on_signals()

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def built(env, *relative):
    """A program of the build: from meson's environment, else build/."""
    path = os.environ.get(env) or os.path.join(ROOT, "build", *relative)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{relative[-1]} not built at {path} (run meson compile first)")
    return path


@pytest.fixture(scope="session")
def pgtreed():
    return built("PGTREED", "daemon", "pgtreed")


def run_once(pgtreed, *extra, user=None, check=True):
    argv = [pgtreed, "--once", *extra]
    if user:
        argv = ["runuser", "-u", user, "--"] + argv
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}: {p.stderr}")
    return p


def once_json(pgtreed, user=None):
    return json.loads(run_once(pgtreed, "--json", user=user).stdout)


def cluster_of(data, pm_pid):
    for c in data["clusters"]:
        if c["postmaster"]["pid"] == pm_pid:
            return c
    raise AssertionError(f"cluster with postmaster {pm_pid} not in output: "
                         f"{[c['postmaster']['pid'] for c in data['clusters']]}")


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(name=f"pgtree_it_{os.getpid()}")
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def pgtree_client():
    return built("PGTREE", "client", "pgtree")


class Daemon:
    """pgtreed in the foreground (logging to stderr), with its own config and socket."""

    def __init__(self, pgtreed, client, config_text, workdir=None, env=None):
        import tempfile
        self.dir = workdir or tempfile.mkdtemp(prefix="pgtreed-", dir=os.environ.get("PGTREE_TEST_TMP"))
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "pgtree.sock")
        self.config = os.path.join(self.dir, "pgtree.ini")
        self.pgtreed, self.client_path = pgtreed, client
        self.lines = []
        self.env = env
        self.write_config(config_text)

    def write_config(self, text):
        if "[daemon]" not in text:
            text = "[daemon]\n" + text
        text = text.replace("[daemon]\n", f"[daemon]\nsocket = {self.socket}\n", 1)
        with open(self.config, "w") as f:
            f.write(text)

    def start(self):
        import threading
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        env.update(self.env or {})
        kw = {}
        run_as = getattr(self, "run_as", None)
        if run_as:  # an ordinary user, with the groups the user database gives it
            import pwd
            pw = pwd.getpwnam(run_as)
            kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=os.getgrouplist(run_as, pw.pw_gid))
        self.proc = subprocess.Popen([self.pgtreed, "--config", self.config], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True, env=env, **kw)

        def pump():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()
        from pgharness import wait_for
        wait_for(lambda: self.proc.poll() is not None or any(" started: " in l for l in self.lines), 30,
                 what="pgtreed to start")
        if self.proc.poll() is not None:
            raise AssertionError("pgtreed exited: " + "\n".join(self.lines))
        return self

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(15)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(5)
        self.reader.join(5)
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode

    def wait_cycles(self, n, timeout=60):
        """Waits until the daemon has completed n more scan cycles (not a sleep: under load a
        second may hold fewer cycles)."""
        from pgharness import wait_for
        start = self.client_json("status")["cycles"]
        return wait_for(lambda: self.client_json("status")["cycles"] >= start + n, timeout, interval=0.1,
                        what=f"{n} more cycles")

    def log(self):
        return "\n".join(self.lines)

    def wait_log(self, pattern, timeout=20, count=1):
        import re
        from pgharness import wait_for
        rx = re.compile(pattern)
        return wait_for(lambda: [l for l in self.lines if rx.search(l)][count - 1:] and
                        [l for l in self.lines if rx.search(l)], timeout, what=f"log line /{pattern}/")

    def client(self, *args, user=None, check=True, input=None):
        argv = [self.client_path, "--socket", self.socket, *args]
        if user:
            argv = ["runuser", "-u", user, "--"] + argv
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"pgtree {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p

    def client_json(self, *args, **kw):
        return json.loads(self.client("--json", *args, **kw).stdout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def daemon_factory(pgtreed, pgtree_client):
    made = []

    def make(config_text, **kw):
        d = Daemon(pgtreed, pgtree_client, config_text, **kw)
        made.append(d)
        return d
    yield make
    for d in made:
        if getattr(d, "proc", None) is not None:
            d.stop()
