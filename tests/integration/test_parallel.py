"""The two targets pgtreed must handle specially, through both ways it signals (the Signal
method of the control socket, and rules): a parallel worker is acted on through its leader,
and pgtreed's own connection is never signalled."""
import pytest

from conftest import cluster_of
from pgharness import pid_alive, wait_for

PARALLEL = ("SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
            "SET min_parallel_table_scan_size = 0; "
            # a parallel seq scan whose filter sleeps (pg_sleep is parallel safe): each worker
            # stays busy for minutes, until the test ends the query
            "SELECT count(*) FROM par_big WHERE pg_sleep(0.01) IS NOT NULL")


@pytest.fixture(scope="module")
def big(cluster):
    cluster.sql("CREATE TABLE IF NOT EXISTS par_big AS SELECT g FROM generate_series(1, 200000) g; ANALYZE par_big")
    plan = "\n".join(r[0] for r in cluster.sql(
        "SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
        "SET min_parallel_table_scan_size = 0; "
        "EXPLAIN SELECT count(*) FROM par_big WHERE pg_sleep(0.01) IS NOT NULL"))
    assert "Parallel Seq Scan" in plan and "Workers Planned: 2" in plan, plan
    return cluster


def parallel_query(cluster, app):
    """Starts the parallel query; returns (leader pid, worker pids, holder of its error)."""
    _, leader, holder = cluster.run_async(PARALLEL, application_name=app)
    workers = wait_for(lambda: (lambda w: w if len(w) == 2 else None)(
        [r[0] for r in cluster.sql("SELECT pid FROM pg_stat_activity WHERE leader_pid = %s AND pid <> %s",
                                   (leader, leader))]), 20, what="two parallel workers")
    return leader, workers, holder


def terminated_by_sigterm(cluster, pid):
    """The server says that pid ended on SIGTERM (pg_terminate_backend's message), nothing worse."""
    wait_for(lambda: f"[{pid}] FATAL:  terminating connection due to administrator command" in cluster.server_log(),
             20, what=f"the server's log of pid {pid} terminated")
    log = cluster.server_log()
    assert "terminated by signal 9" not in log and "reinitializing" not in log


def own_backend(daemon, cluster):
    """pid of pgtreed's own connection to the cluster, as pgtreed marks it."""
    def find():
        cl = cluster_of(daemon.client_json("tree"), cluster.pm_pid)
        own = [p["pid"] for p in cl["processes"] if p.get("pgtree_connection")]
        return own[0] if own else None
    return wait_for(find, 20, what="pgtreed's own connection in the tree")


def test_signal_parallel_worker_acts_on_leader(big, daemon_factory):
    cluster = big
    d = daemon_factory(f"""[daemon]
interval = 300ms
; generous: a loaded machine must not make pgtreed drop and remake its own connection mid-test
query_timeout = 60s
connect_timeout = 30s
[cluster it]
data_directory = {cluster.data}
enforce = yes
""").start()
    leader, workers, holder = parallel_query(cluster, "par-signal")
    wait_for(lambda: set(workers) <= {p["pid"] for p in cluster_of(d.client_json("tree"), cluster.pm_pid)["processes"]
                                       if p["backend_type"] == "parallel worker" and p["leader_pid"] == leader},
             20, what="the workers in pgtreed's tree, with their leader")
    out = d.client("terminate", str(workers[0]))
    assert f"through leader {leader} of parallel worker {workers[0]}" in out.stdout, out.stdout
    assert f"sent SIGTERM to pid {leader}" in out.stdout, out.stdout
    wait_for(lambda: not pid_alive(leader), 20, what="the leader to exit")
    wait_for(lambda: holder["error"] is not None, 20, what="the query to end")
    terminated_by_sigterm(cluster, leader)
    d.wait_log(rf"terminate pid {workers[0]} \(.*\): sent SIGTERM to pid {leader} \(through leader {leader} of "
               rf"parallel worker {workers[0]}\)")
    log = cluster.server_log()
    assert "terminated by signal 9" not in log and "reinitializing" not in log


def test_signal_own_connection_refused(cluster, daemon_factory):
    d = daemon_factory(f"""[daemon]
interval = 300ms
; generous: a loaded machine must not make pgtreed drop and remake its own connection mid-test
query_timeout = 60s
connect_timeout = 30s
[cluster it]
data_directory = {cluster.data}
enforce = yes
""").start()
    own = own_backend(d, cluster)
    for action in ("terminate", "cancel"):
        p = d.client(action, str(own), check=False)
        assert p.returncode == 1, (p.returncode, p.stdout, p.stderr, d.log()[-3000:])
        assert "refused" in p.stdout and "it is pgtree's own connection" in p.stdout, p.stdout
    d.wait_cycles(3)
    assert pid_alive(own)
    assert own_backend(d, cluster) == own  # the same connection, still in use
    wait_for(lambda: cluster_of(d.client_json("tree"), cluster.pm_pid)["activity"] == "ok", 30, what="activity ok")


def test_rules_act_on_leader_and_spare_own_connection(big, daemon_factory):
    """A long_query rule naming parallel workers terminates their query through the leader; a
    rule that matches pgtreed's own connection (its user and application_name, a 1 ms
    threshold that its own running query always exceeds in its own snapshot) terminates an
    impostor with the same user and application_name, never pgtreed's own connection."""
    cluster = big
    d = daemon_factory(f"""[daemon]
interval = 300ms
; generous: a loaded machine must not make pgtreed drop and remake its own connection mid-test
query_timeout = 60s
connect_timeout = 30s
max_actions_per_minute = 100
[cluster it]
data_directory = {cluster.data}
enforce = yes
[rule workers]
kind = long_query
after = 1s
application_name = par-rule
cluster = {cluster.name}
backend_type = parallel worker
action = terminate
[rule own]
kind = long_runners
after = 1ms
user = pgtree
application_name = pgtreed
cluster = {cluster.name}
action = terminate
""").start()
    own = own_backend(d, cluster)

    leader, workers, holder = parallel_query(cluster, "par-rule")
    wait_for(lambda: holder["error"] is not None, 30, what="the parallel query to be terminated")
    terminated_by_sigterm(cluster, leader)
    line = d.wait_log(rf"terminate pid ({workers[0]}|{workers[1]}) \(rule workers\): sent SIGTERM to pid {leader} "
                      rf"\(through leader {leader} of parallel worker")
    assert line
    assert not any(f"sent SIGTERM to pid {w}" in l for w in workers for l in d.lines)  # never a worker itself

    import psycopg2
    imp = psycopg2.connect(dbname="postgres", user="pgtree", host=cluster.base, port=cluster.port,
                           application_name="pgtreed")
    imp.autocommit = True
    with imp.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        impostor = cur.fetchone()[0]
    import threading
    err = {}

    def run():
        try:
            with imp.cursor() as cur:
                cur.execute("SELECT pg_sleep(60)")
        except Exception as e:
            err["e"] = e
    threading.Thread(target=run, daemon=True).start()
    d.wait_log(rf"terminate pid {impostor} \(rule own\): sent SIGTERM to pid {impostor}")
    d.wait_cycles(10)
    assert pid_alive(own) and own_backend(d, cluster) == own
    assert not any(f"pid {own} " in l and "opened" in l for l in d.lines), d.log()
    assert not any(f"sent SIGTERM to pid {own}" in l or f"sent SIGINT to pid {own}" in l for l in d.lines)
    wait_for(lambda: cluster_of(d.client_json("tree"), cluster.pm_pid)["activity"] == "ok", 30, what="activity ok")
    imp.close()
