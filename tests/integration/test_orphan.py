"""A backend whose postmaster died keeps running a CPU-bound query: pgtreed
reports it as orphan_backend. The test crashes only the postmaster of the
throwaway cluster it started (never by SIGKILL: Cluster.crash_postmaster), then
ends the orphan with SIGTERM."""
import os
import signal

from conftest import once_json, run_once
from pgharness import Cluster, pid_alive, wait_for


def test_orphan_backend_after_postmaster_death(pgtreed):
    c = Cluster(name=f"pgtree_orphan_{os.getpid()}")
    c.start()
    try:
        _, pid, _ = c.run_async("DO $$ BEGIN LOOP PERFORM 1; END LOOP; END $$", tcp=True)
        wait_for(lambda: c.sql("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
                 == [("active",)], 10, what="busy backend")

        # Only this test's own postmaster, identified by its data directory; it dies abruptly
        # (never by SIGKILL: pgharness.crash_postmaster).
        assert os.readlink(f"/proc/{c.pm_pid}/cwd") == c.data
        c.crash_postmaster()
        wait_for(lambda: not pid_alive(c.pm_pid), 10, what="postmaster exit")
        assert pid_alive(pid), "the CPU-bound backend should outlive its postmaster"

        data = once_json(pgtreed)
        assert all(cl["postmaster"]["pid"] != c.pm_pid for cl in data["clusters"])
        orphan = next(o for o in data["orphans"] if o["pid"] == pid)
        assert orphan["backend_type"] == "client backend"
        assert orphan["data_directory"] == c.data
        assert orphan["ppid"] != c.pm_pid
        finding = next(f for f in data["findings"] if f["pid"] == pid)
        assert finding["kind"] == "orphan_backend"
        assert finding["cluster"] == c.data

        text = run_once(pgtreed).stdout
        assert "ORPHANS" in text and f"[{c.data}]" in text

        # End it the way pgtree will: SIGTERM, to this very process.
        assert os.readlink(f"/proc/{pid}/cwd") == c.data
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 15, what="orphan exit on SIGTERM")
        data = once_json(pgtreed)
        assert all(o["pid"] != pid for o in data["orphans"])
    finally:
        c.stop()
