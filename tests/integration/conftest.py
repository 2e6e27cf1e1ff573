import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pgharness import Cluster  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def pgtreed():
    path = os.environ.get("PGTREED") or os.path.join(ROOT, "build", "daemon", "pgtreed")
    if not os.access(path, os.X_OK):
        pytest.fail(f"pgtreed not built at {path} (run meson compile first)")
    return path


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
