"""What the benchmarks share: a throwaway cluster holding N idle connections, and pgtreed."""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from pgharness import Cluster, stop_on_signals, wait_for  # noqa: E402,F401

stop_on_signals()


@contextlib.contextmanager
def busy_cluster(name, connections, extra=0):
    """A cluster with `connections` idle sessions (application_name FakeParent:0..6), and room
    for `extra` more (and 20 of headroom)."""
    with Cluster(name=name, settings={"max_connections": connections + extra + 20}) as c:
        conns = [c.connect(application_name=f"FakeParent:{i % 7}") for i in range(connections)]
        try:
            yield c
        finally:
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn.close()


@contextlib.contextmanager
def daemon(build, config_text=""):
    """pgtreed in the foreground with its own socket; yields (process, socket path)."""
    d = tempfile.mkdtemp(prefix="pgtree-bench-")
    sock = os.path.join(d, "pgtree.sock")
    cfg = os.path.join(d, "pgtree.ini")
    with open(cfg, "w") as f:
        f.write(f"[daemon]\nsocket = {sock}\n{config_text}")
    p = subprocess.Popen([os.path.join(build, "daemon", "pgtreed"), "--config", cfg], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock), 15, what="pgtreed's socket")
        yield p, sock
    finally:
        p.terminate()
        p.wait(10)
        shutil.rmtree(d, ignore_errors=True)
