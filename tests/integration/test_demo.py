"""./scripts/demo --keep (issue 11, part F): the cluster, its sessions and pgtreed stay up, the
commands it prints work (its own cluster only, the lock chain), and the one stop command it
prints leaves nothing running (checked by PID)."""
import os
import re
import subprocess

from conftest import ROOT
from pgharness import pid_alive, wait_for


def test_demo_keep_then_stop(pgtree_client):
    env = dict(os.environ)
    env.pop("PGTREE_SANDBOX", None)          # the demo makes its own sandbox
    env["BUILD_DIR"] = os.environ.get("PGTREE_BUILD_DIR", os.path.join(ROOT, "build"))
    p = subprocess.run([os.path.join(ROOT, "scripts", "demo"), "--keep"], capture_output=True, text=True,
                       timeout=600, env=env, cwd=ROOT)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "demo: building pgtree" in out and "demo: starting pgtreed" in out, out   # not silent
    running = re.search(r"running: supervisor (\d+), pgtreed (\d+), postmaster (\d+)", out)
    stop = re.search(r"^  (kill -TERM (\d+))$", out, re.M)
    sock = re.search(r"--socket (\S+) tree --cluster demo", out)
    assert running and stop and sock, out
    supervisor, pgtreed, postmaster = (int(x) for x in running.groups())
    assert int(stop.group(2)) == supervisor
    try:
        # still running after the demo returned: the commands it prints work
        assert all(pid_alive(x) for x in (supervisor, pgtreed, postmaster)), out
        client = [pgtree_client, "--socket", sock.group(1)]
        tree = subprocess.run(client + ["tree", "--cluster", "demo"], capture_output=True, text=True, timeout=60).stdout
        assert [l for l in tree.splitlines() if l.startswith("cluster ")] == \
            [l for l in tree.splitlines() if l.startswith("cluster demo")], tree   # only its own cluster
        locks = wait_for(lambda: (o := subprocess.run(client + ["locks", "--cluster", "demo"], capture_output=True,
                                                      text=True, timeout=60).stdout).count("└─") >= 2 and o, 30,
                         what="the demo's lock chain")
        assert "[teller-a]" in locks and "[root blocker]" in locks, locks
        # the demo's own (pgtreed sees every cluster of the host: other suites' sessions outlive the demo)
        listing = subprocess.run(client + ["sessions", "--no-headings", "--raw", "-o", "pid,cluster,application",
                                           "--all", "--cluster", "demo"], capture_output=True, text=True, timeout=60)
        backends = [int(l.split()[0]) for l in listing.stdout.splitlines()]
        assert len(backends) >= 8, (listing.stdout, listing.stderr, tree)   # its 8 sample sessions at least
        data = os.readlink(f"/proc/{postmaster}/cwd")
    finally:
        # the printed command, as printed
        subprocess.run(["sh", "-c", stop.group(1)], check=True, timeout=30)
    everything = [supervisor, pgtreed, postmaster, *backends]
    wait_for(lambda: not any(pid_alive(x) for x in everything), 60, what="every demo process to exit")
    assert not os.path.exists(data) and not os.path.exists(os.path.dirname(sock.group(1)))
