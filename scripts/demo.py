#!/usr/bin/python3
"""A throwaway cluster with sample sessions, pgtreed watching it, and the pgtree client."""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from pgharness import Cluster, stop_on_signals, wait_for  # noqa: E402

stop_on_signals()
build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
pgtreed = os.path.join(build, "daemon", "pgtreed")
pgtree = os.path.join(build, "client", "pgtree")
tty = sys.stdout.isatty()


def banner(text):
    print(f"\n\033[1m== {text}\033[0m" if tty else f"\n== {text}", flush=True)


def client(*args, show=True):
    p = subprocess.run([pgtree, "--socket", sock, *args], capture_output=True, text=True)
    if show:
        print(f"$ pgtree {' '.join(args)}")
        print(p.stdout + p.stderr, end="", flush=True)
    return p


with Cluster(name="demo") as c:
    banner(f"a throwaway cluster 'demo' in {c.base} (port {c.port}) with sample sessions")
    c.sql("CREATE TABLE sample_data AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 20000) g")
    c.sql("CREATE FUNCTION simulate_long_query() RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(30) $$")
    c.sql("""CREATE FUNCTION slow_row(i int) RETURNS bool LANGUAGE plpgsql PARALLEL SAFE
             AS $$ BEGIN PERFORM pg_sleep(0.005); RETURN true; END $$""")

    sock = os.path.join(c.base, "pgtree.sock")
    config = os.path.join(c.base, "pgtree.ini")
    with open(config, "w") as f:
        f.write(f"""[daemon]
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
""")
    print(open(config).read())

    daemon = subprocess.Popen([pgtreed, "--config", config, "--log-target", "both"], stderr=subprocess.PIPE, text=True)

    def pump():
        for line in daemon.stderr:
            print("   | " + line, end="", flush=True)
    threading.Thread(target=pump, daemon=True).start()
    wait_for(lambda: os.path.exists(sock), 15, what="pgtreed's socket")

    banner("sessions: simulate_long_query() x2 tagged FakeParent:1001, x2 tagged FakeParent:2002, "
           "an idle transaction, a parallel query")
    held = []
    for tag in ("FakeParent:1001", "FakeParent:1001", "FakeParent:2002", "FakeParent:2002"):
        c.run_async("SELECT simulate_long_query()", application_name=tag, tcp=True)
    tx = c.connect(autocommit=False, application_name="report")
    tx.set_session(isolation_level="REPEATABLE READ")
    tx.cursor().execute("SELECT count(*) FROM sample_data")
    held.append(tx)
    _, leader, _ = c.run_async("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
                               "SET min_parallel_table_scan_size = 0; "
                               "SELECT count(*) FROM sample_data WHERE slow_row(id)", application_name="analytics")
    wait_for(lambda: c.sql("SELECT count(*) FROM pg_stat_activity WHERE leader_pid = %s", (leader,))[0][0] >= 1, 20,
             what="parallel workers")
    time.sleep(2.5)

    banner("the real tree (pg_stat_activity shows no parent; here parallel workers sit under their leader)")
    client("tree", "--group")

    banner("the FakeParent:2002 long runners pass 8s: the rule terminates them (SIGTERM, never SIGKILL)")
    wait_for(lambda: "terminate pid" in client("events", "--since", "5m", show=False).stdout, 30,
             what="the rule's terminations")
    time.sleep(1.5)
    client("long")

    banner("an operator ends the FakeParent:1001 group by hand")
    client("terminate", "--app", "FakeParent:1001", "--dry-run")
    client("terminate", "--app", "FakeParent:1001", "--yes")
    banner("and asks for kill -9, which pgtree refuses")
    client("kill", "-9", str(leader))

    time.sleep(1.5)
    banner("what pgtreed logged (journald, read by pgtree events)")
    client("events", "--since", "5m")
    banner("the tree now")
    client("tree")

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
print("done")
