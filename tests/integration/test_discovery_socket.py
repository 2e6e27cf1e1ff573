"""Discovery is incremental (issue 10): a process that an earlier discovery read, older than the
young window, is not read again at every discovery. One that execs a PostgreSQL server is found
at once all the same: the server's socket appearing in a watched directory (/tmp here) makes
pgtreed discover every process. discovery_interval = 1h: nothing else finds it."""
import os
import pwd
import subprocess
import time

from pgharness import Cluster, pid_alive, wait_for

YOUNG_S = 2  # the young window of this test's pgtreed (PGTREED_TEST_YOUNG_WINDOW)


def accepting(c):
    try:
        return c.sql("SELECT 1") == [(1,)]
    except Exception:  # not up yet
        return False


def watched(d, data):
    """The cycle of the first tree that has the cluster, else None."""
    tree = d.client_json("tree")
    if any(c.get("postmaster", {}).get("data_directory") == data for c in tree["clusters"]):
        return tree["cycle"]
    return None


def test_old_process_that_execs_postgres_is_watched_at_once(daemon_factory):
    c = Cluster(name="pgtree_execd")
    c.init()
    # its sockets in /tmp too (every server has one in /tmp or /run/postgresql by default), the
    # harness's own directory first (postmaster.pid names it, the tests connect there)
    with open(os.path.join(c.data, "postgresql.conf"), "a") as f:
        f.write(f"unix_socket_directories = '{c.base},/tmp'\n")
    gate = os.path.join(c.base, "gate")
    os.mkfifo(gate, 0o600)
    pw = pwd.getpwnam(c.os_user)
    os.chown(gate, pw.pw_uid, pw.pw_gid)
    # a shell that waits, then becomes the server (an entrypoint, a supervisor's script)
    log = open(c.log, "w")
    os.chown(c.log, pw.pw_uid, pw.pw_gid)
    shell = subprocess.Popen(["sh", "-c", f"read _ < '{gate}'; exec '{c.bindir}/postgres' -D '{c.data}'"],
                             cwd=c.base, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    c.started_pids.add(shell.pid)
    d = daemon_factory("""[daemon]
interval = 500ms
discovery_interval = 1h
""", env={"PGTREED_TEST_HOOKS": "1", "PGTREED_TEST_YOUNG_WINDOW": str(YOUNG_S)})
    try:
        d.start()
        started = time.monotonic()
        k = d.client_json("status")["cycles"]
        wait_for(lambda: d.client_json("status")["cycles"] >= k + 2, 20, what="two cycles")
        assert watched(d, c.data) is None
        # old (past the young window), and past the bound between complete discoveries (10 s
        # after the first one): the trigger alone decides
        time.sleep(max(0.0, started + 11 - time.monotonic()))
        with open(gate, "w") as g:
            g.write("go\n")
        wait_for(lambda: accepting(c), 60, interval=0.2, what="the server accepting connections")
        c.pm_pid = c.postmaster_pid()
        assert c.pm_pid == shell.pid  # the very process that waited
        k = d.client_json("status")["cycles"]
        seen = wait_for(lambda: watched(d, c.data), 30, interval=0.1, what="the exec'd cluster in the tree")
        print(f"watched {seen - k} cycles after the server accepted connections")
        assert seen - k <= 4
        # by the trigger: its socket's (or another server's socket of the host, created in a
        # watched directory just before: one complete discovery serves both)
        ours = [l for l in d.lines if f"PostgreSQL socket .s.PGSQL.{c.port}" in l]
        others = [l for l in d.lines if "PostgreSQL socket .s.PGSQL." in l and l not in ours]
        assert ours or others, d.log()
        if not ours:
            print("another server's socket triggered the discovery:", others)
    finally:
        d.stop()
        c.stop()
        if pid_alive(shell.pid):
            shell.terminate()  # still waiting at the gate (a failed start): ours, by pid
        shell.wait(30)
        log.close()
