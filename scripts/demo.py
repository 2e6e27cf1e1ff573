#!/usr/bin/python3
"""A throwaway cluster with sample sessions, pgtreed watching it, and the pgtree client.

   demo.py BUILD            the tour: shows what an operator sees, then tears everything down
   demo.py BUILD --keep     leaves the cluster, its sessions and pgtreed running, prints the
                            commands to try and the one command (by PID) that stops it all
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from pgharness import Cluster, stop_on_signals, wait_for  # noqa: E402

build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "build")
keep = "--keep" in sys.argv[1:]
supervisor_fd = int(os.environ.get("PGTREE_DEMO_SUPERVISOR_FD", "-1"))
pgtreed = os.path.join(build, "daemon", "pgtreed")
pgtree = os.path.join(build, "client", "pgtree")
tty = sys.stdout.isatty()
sock = None


def banner(text):
    print(f"\n\033[1m== {text}\033[0m" if tty else f"\n== {text}", flush=True)


def client(*args, show=True):
    p = subprocess.run([pgtree, "--socket", sock, *args], capture_output=True, text=True)
    if show:
        print(f"$ pgtree {' '.join(args)}")
        print(p.stdout + p.stderr, end="", flush=True)
    return p


def config_text(c, sock):
    return f"""[daemon]
interval = 1s
socket = {sock}
enforce = no                 ; every other cluster on this host: observe only

[cluster demo]
data_directory = {c.data}
enforce = yes                ; this throwaway cluster only

[rule fake-parent-2002]
kind = long_query
after = 8s
application_name = FakeParent:2002
action = terminate

[rule idle-transactions]
kind = idle_in_transaction
after = 5s
action = log

[rule lock-waits]
kind = lock_wait
after = 3s
action = log
"""


def prepare(c):
    c.sql("CREATE TABLE sample_data AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 20000) g")
    c.sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int); INSERT INTO accounts VALUES (1, 100), (2, 100)")
    c.sql(f"CREATE FUNCTION simulate_long_query() RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep({86400 if keep else 30}) $$")
    c.sql("""CREATE FUNCTION slow_row(i int) RETURNS bool LANGUAGE plpgsql PARALLEL SAFE
             AS $$ BEGIN PERFORM pg_sleep(0.005); RETURN true; END $$""")


def lock_chain(c, held):
    """A holds a row lock idle in transaction, B waits for A holding another one, C waits for B."""
    a = c.connect(autocommit=False, application_name="teller-a")
    a.cursor().execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
    b = c.connect(autocommit=False, application_name="teller-b")
    b.cursor().execute("UPDATE accounts SET balance = balance - 10 WHERE id = 2")
    held += [a, b]
    b_pid = b.get_backend_pid()
    threading.Thread(target=lambda: b.cursor().execute("UPDATE accounts SET balance = balance + 10 WHERE id = 1"),
                     daemon=True).start()
    wait_for(lambda: c.sql("SELECT cardinality(pg_blocking_pids(%s)) > 0", (b_pid,))[0][0], 20, what="B to wait for A")
    c.run_async("UPDATE accounts SET balance = balance + 10 WHERE id = 2", application_name="teller-c")


def sessions(c, held):
    for tag in ("FakeParent:1001", "FakeParent:1001", "FakeParent:2002", "FakeParent:2002"):
        c.run_async("SELECT simulate_long_query()", application_name=tag, tcp=True)
    tx = c.connect(autocommit=False, application_name="report")
    tx.set_session(isolation_level="REPEATABLE READ")
    tx.cursor().execute("SELECT count(*) FROM sample_data")
    held.append(tx)
    lock_chain(c, held)


def start_daemon(config, log_target, out):
    return subprocess.Popen([pgtreed, "--config", config, "--log-target", log_target], stderr=out,
                            stdout=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL)


def say(line):
    """The supervisor tells the foreground what it does."""
    os.write(supervisor_fd, (line + "\n").encode())


def supervise():
    """--keep, in the background (its own session): everything stays up until SIGTERM."""
    stop_on_signals()
    base = tempfile.mkdtemp(prefix="pgtree-demo-", dir="/tmp")  # outside the sandbox's private mounts
    c = Cluster(name="demo", base_dir=base)
    held = []
    daemon = None
    try:
        say("starting a throwaway PostgreSQL cluster 'demo'")
        c.start()
        prepare(c)
        global sock
        sock = os.path.join(base, "pgtree.sock")
        config = os.path.join(base, "pgtree.ini")
        with open(config, "w") as f:
            f.write(config_text(c, sock))
        say("starting pgtreed")
        log = open(os.path.join(base, "pgtreed.log"), "w")
        daemon = start_daemon(config, "stderr", log)
        wait_for(lambda: os.path.exists(sock), 15, what="pgtreed's socket")
        say("starting sample sessions (long queries, an idle transaction, a lock chain)")
        sessions(c, held)
        wait_for(lambda: client("locks", "--cluster", "demo", show=False).stdout.count("└─") >= 2, 30,
                 what="the lock chain seen by pgtreed")
        # and the sessions in its process tree: the lock chain comes from pg_stat_activity, which
        # a cycle reads after /proc, so it can name sessions its tree does not have yet
        wait_for(lambda: len(client("sessions", "--cluster", "demo", "--no-headings", "--raw", "-o", "pid",
                                    show=False).stdout.split()) >= 8, 30, what="the sample sessions in pgtreed's tree")
        say("READY " + json.dumps({"supervisor": os.getpid(), "pgtreed": daemon.pid, "postmaster": c.pm_pid,
                                   "base": base, "socket": sock, "config": config, "data": c.data, "port": c.port}))
        os.close(supervisor_fd)
        while True:
            signal.pause()
    except BaseException as e:
        if not isinstance(e, SystemExit):
            try:
                say(f"FAILED {e!r}")
            except OSError:
                pass
        raise
    finally:
        for conn in held:
            try:
                conn.close()
            except Exception:
                pass
        if daemon:
            daemon.terminate()
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                pass
        c.stop()


def keep_foreground():
    """Starts the supervisor in its own session and reports what it does; exits when it is ready."""
    r, w = os.pipe()
    env = dict(os.environ, PGTREE_DEMO_SUPERVISOR_FD=str(w))
    logpath = tempfile.mktemp(prefix="pgtree-demo-supervisor-", suffix=".log", dir="/tmp")
    with open(logpath, "w") as log:
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), build, "--keep"], env=env, pass_fds=[w],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    os.close(w)
    info = None
    with os.fdopen(r) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("READY "):
                info = json.loads(line[6:])
            elif line.startswith("FAILED "):
                print(f"demo: {line[7:]} (see {logpath})", file=sys.stderr)
            else:
                print(f"demo: {line}", flush=True)
    if not info:
        p.wait(60)
        print(f"demo: the background part ended early (exit {p.returncode}); its log: {logpath}", file=sys.stderr)
        sys.exit(1)
    os.unlink(logpath)
    cli = f"{pgtree} --socket {info['socket']}"
    banner("the demo keeps running: try")
    for cmd in ("tree --cluster demo", "locks --cluster demo", "sessions --cluster demo",
                "sessions --cluster demo -o pid,application,state,wait,blocked_by,query", "long --cluster demo",
                "show PID", "top --cluster demo", "terminate --app FakeParent:1001 --dry-run", "help"):
        print(f"  {cli} {cmd}")
    print(f"\n  psql -h {info['base']} -p {info['port']} -U postgres     (the cluster)")
    print(f"  pgtreed's config: {info['config']}   its log: {info['base']}/pgtreed.log")
    print(f"  running: supervisor {info['supervisor']}, pgtreed {info['pgtreed']}, postmaster {info['postmaster']}")
    banner("stop it all (sessions, pgtreed, the cluster and its files) with")
    print(f"  kill -TERM {info['supervisor']}", flush=True)


def tour():
    stop_on_signals()
    global sock
    with Cluster(name="demo") as c:
        banner(f"a throwaway cluster 'demo' in {c.base} (port {c.port}) with sample sessions")
        prepare(c)
        sock = os.path.join(c.base, "pgtree.sock")
        config = os.path.join(c.base, "pgtree.ini")
        with open(config, "w") as f:
            f.write(config_text(c, sock))
        print(open(config).read())

        daemon = subprocess.Popen([pgtreed, "--config", config, "--log-target", "both"], stderr=subprocess.PIPE, text=True)

        def pump():
            for line in daemon.stderr:
                print("   | " + line, end="", flush=True)
        threading.Thread(target=pump, daemon=True).start()
        wait_for(lambda: os.path.exists(sock), 15, what="pgtreed's socket")

        banner("sessions: simulate_long_query() x2 tagged FakeParent:1001, x2 tagged FakeParent:2002, "
               "an idle transaction, a lock chain (teller-a blocks teller-b blocks teller-c), a parallel query")
        held = []
        sessions(c, held)
        _, leader, _ = c.run_async("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
                                   "SET min_parallel_table_scan_size = 0; "
                                   "SELECT count(*) FROM sample_data WHERE slow_row(id)", application_name="analytics")
        wait_for(lambda: c.sql("SELECT count(*) FROM pg_stat_activity WHERE leader_pid = %s", (leader,))[0][0] >= 1, 20,
                 what="parallel workers")
        time.sleep(2.5)

        banner("the real tree of this demo's cluster (pg_stat_activity shows no parent; here parallel workers sit "
               "under their leader, and lock chains follow)")
        client("tree", "--group", "--cluster", "demo")

        banner("who blocks whom")
        client("locks", "--cluster", "demo")

        banner("the FakeParent:2002 long runners pass 8s: the rule terminates them (SIGTERM, never SIGKILL)")
        wait_for(lambda: "terminate pid" in client("events", "--since", "5m", show=False).stdout, 30,
                 what="the rule's terminations")
        time.sleep(1.5)
        client("long", "--cluster", "demo")

        banner("an operator ends the FakeParent:1001 group by hand")
        client("terminate", "--app", "FakeParent:1001", "--dry-run")
        client("terminate", "--app", "FakeParent:1001", "--yes")
        banner("and asks for kill -9, which pgtree refuses")
        client("kill", "-9", str(leader))

        time.sleep(1.5)
        banner("what pgtreed logged (journald, read by pgtree events)")
        client("events", "--since", "5m", "--cluster", "demo")
        banner("the tree now")
        client("tree", "--cluster", "demo")

        log = c.server_log()
        ended = log.count("terminating connection due to administrator command")
        crash = "terminated by signal 9" in log or "reinitializing" in log
        banner("server log: " + ("CRASH RECOVERY happened (this is a bug)" if crash else
                                 f"no crash recovery; {ended} sessions ended by administrator command"))
        for conn in held:
            conn.close()
        daemon.terminate()
        daemon.wait(10)
        banner("stopping the throwaway cluster")
        if crash:
            sys.exit(1)
    print("done. To look around at your own pace: ./scripts/demo --keep, then pgtree top (the live view) "
          "and the other commands it prints.")


if supervisor_fd >= 0:
    supervise()
elif keep:
    keep_foreground()
else:
    tour()
