#!/usr/bin/python3
"""Starts a throwaway cluster with sample sessions and runs pgtreed on it."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from pgharness import Cluster, stop_on_signals, wait_for  # noqa: E402

stop_on_signals()

pgtreed = sys.argv[1]


def banner(text):
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


with Cluster(name="demo") as c:
    banner(f"throwaway cluster 'demo' in {c.base}, port {c.port}")
    c.sql("CREATE TABLE sample_data AS SELECT g AS id, md5(g::text) AS payload "
          "FROM generate_series(1, 20000) g")
    c.sql("""CREATE FUNCTION simulate_long_query() RETURNS void LANGUAGE sql
             AS $$ SELECT pg_sleep(30) $$""")
    c.sql("""CREATE FUNCTION slow_row(i int) RETURNS bool LANGUAGE plpgsql PARALLEL SAFE
             AS $$ BEGIN PERFORM pg_sleep(0.005); RETURN true; END $$""")

    held = []
    for tag in ("FakeParent:1001", "FakeParent:1001", "FakeParent:2002"):
        c.run_async("SELECT simulate_long_query()", application_name=tag, tcp=True)
    idle = c.connect(application_name="FakeParent:2002")
    held.append(idle)
    tx = c.connect(autocommit=False, application_name="report")
    tx.cursor().execute("SELECT count(*) FROM sample_data")
    held.append(tx)
    _, leader, _ = c.run_async(
        "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
        "SET min_parallel_table_scan_size = 0; "
        "SELECT count(*) FROM sample_data WHERE slow_row(id)", application_name="analytics")
    wait_for(lambda: c.sql("SELECT count(*) FROM pg_stat_activity WHERE leader_pid = %s",
                           (leader,))[0][0] >= 1, 20, what="parallel workers")
    time.sleep(1)
    print("sessions: 3 x simulate_long_query() (FakeParent:1001 x2, FakeParent:2002), an idle "
          "session, an idle transaction, a parallel query; pid", leader, "leads the workers")

    banner("pgtreed --once  (the real postmaster -> backend tree, from /proc)")
    subprocess.run([pgtreed, "--once"], check=True)

    banner("pg_stat_activity, for comparison: no parent, no tree")
    for row in c.sql("SELECT pid, backend_type, application_name, state, leader_pid "
                     "FROM pg_stat_activity ORDER BY pid"):
        print("  ", row)

    banner("pgtreed --once --json | first process of the cluster")
    out = subprocess.run([pgtreed, "--once", "--json"], check=True, capture_output=True, text=True).stdout
    import json
    data = json.loads(out)
    cl = next(x for x in data["clusters"] if x["postmaster"]["pid"] == c.pm_pid)
    print(json.dumps({k: cl[k] for k in ("name", "postmaster")}, indent=2))
    for conn in held:
        conn.close()
    banner("stopping the throwaway cluster")
print("done")
