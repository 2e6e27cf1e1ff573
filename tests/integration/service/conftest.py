"""pgtreed as a systemd service: a real systemd user manager and a real journald, started by
tests/integration/sandbox in a private mount namespace. The unit is the installed one, with a
test drop-in (paths, the watchdog, the test hook, and the few sandboxing options that a
user manager in this sandbox cannot set up). It runs as the unit's own User=pgtree with its
AmbientCapabilities: the sandbox creates that user from systemd/pgtree.sysusers in its own
view of /etc (a root user manager can switch users)."""
import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from pgharness import Cluster, stop_on_signals, wait_for  # noqa: E402

stop_on_signals()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SANDBOX = os.environ.get("PGTREE_TEST_TMP", "")
INST = os.path.join(SANDBOX, "inst")
UNIT = "pgtreed.service"
SOCKET = "/run/user/0/pgtree/pgtree.sock"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PGTREE_SANDBOX") != "inside":
        raise pytest.UsageError("run these tests through tests/integration/sandbox")


def sh(*argv, check=True, **kw):
    p = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}: {p.stdout}{p.stderr}")
    return p


def systemctl(*args, check=True):
    return sh("systemctl", "--user", *args, check=check)


def prop(name):
    return systemctl("show", UNIT, "-p", name, "--value").stdout.strip()


def journal(**match):
    """Entries of the journal matching FIELD=value (all given), as dicts."""
    argv = ["journalctl", "--no-pager", "-o", "json"] + [f"{k}={v}" for k, v in match.items()]
    out = sh(*argv, check=False).stdout
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def wait_journal(timeout=30, count=1, **match):
    return wait_for(lambda: (lambda e: e if len(e) >= count else None)(journal(**match)), timeout,
                    what=f"journal entries {match}")


MSG = {}
with open(os.path.join(ROOT, "lib", "journal.h")) as f:
    for line in f:
        if line.startswith("#define MSGID_"):
            _, name, value = line.split()
            MSG[name[6:]] = value.strip('"')


@pytest.fixture(scope="session")
def installed():
    build = os.environ.get("PGTREE_BUILD_DIR", os.path.join(ROOT, "build"))
    sh("meson", "install", "-C", build, "--quiet", "--destdir", INST)
    unitdir = os.path.join(os.environ["HOME"], ".config", "systemd", "user")
    os.makedirs(os.path.join(unitdir, UNIT + ".d"), exist_ok=True)
    src = os.path.join(INST, "lib", "systemd", "system", UNIT)
    with open(src) as f, open(os.path.join(unitdir, UNIT), "w") as g:
        g.write(f.read())
    return INST


class Service:
    def __init__(self, inst):
        self.inst = inst
        self.config = os.path.join(SANDBOX, "pgtree.ini")
        self.dropin = os.path.join(os.environ["HOME"], ".config", "systemd", "user", UNIT + ".d", "test.conf")

    def configure(self, text, watchdog="30s"):
        # the installed unit's WatchdogSec (a test of the watchdog itself sets a short one): a
        # few seconds would restart a daemon that a loaded machine merely starved of CPU
        with open(self.config, "w") as f:
            f.write(text.replace("[daemon]\n", f"[daemon]\nsocket = {SOCKET}\n", 1) if "[daemon]" in text
                    else f"[daemon]\nsocket = {SOCKET}\n" + text)
        sbin = os.path.join(self.inst, "usr", "sbin", "pgtreed")
        with open(self.dropin, "w") as f:
            f.write(f"""[Service]
ExecStartPre=
ExecStartPre={sbin} --check-config {self.config}
ExecStart=
ExecStart={sbin} --config {self.config}
WatchdogSec={watchdog}
RestartSec=500ms
Environment=PGTREED_TEST_HOOKS=1
# What the user manager in this sandbox cannot set up (a tmpfs /run/user, no writable
# cgroupfs, hidepid /proc mounts refused): the installed unit keeps them.
ProtectHome=no
ProtectProc=default
ProcSubset=all
ProtectKernelTunables=no
ProtectKernelLogs=no
ProtectControlGroups=no
""")
        systemctl("daemon-reload")

    def client(self, *args, check=True):
        return sh(os.path.join(self.inst, "usr", "bin", "pgtree"), "--socket", SOCKET, *args, check=check)

    def client_json(self, *args):
        return json.loads(self.client("--json", *args).stdout)

    def wait_cycles(self, n, timeout=60):
        """Waits for n more completed scan cycles (not a sleep: under load a second holds fewer)."""
        start = self.client_json("status")["cycles"]
        return wait_for(lambda: self.client_json("status")["cycles"] >= start + n, timeout, interval=0.1,
                        what=f"{n} more cycles")


@pytest.fixture
def service(installed):
    s = Service(installed)
    yield s
    systemctl("stop", UNIT, check=False)
    systemctl("reset-failed", UNIT, check=False)


@pytest.fixture(scope="session")
def pg():
    c = Cluster(name="svc")
    c.start()
    yield c
    c.stop()
