"""pgtree against real servers of every major version 12–18 (npm builds, scripts/install-pg-versions).

Per version a topology runs side by side with the others: a primary with a workload (idle,
active, idle in transaction and aborted, a lock wait, TCP and Unix clients, names with spaces,
application_name tags, a parallel query, a slowed-down autovacuum worker, pg_prewarm's
autoprewarm leader, the logger, archive_mode = on, wal_level = logical, summarize_wal on 17+,
io_method = worker on 18), a streaming standby made from a cold copy (walsender, walreceiver,
startup, slotsync worker on 17+) and a logical subscriber with update_process_title = off (launcher,
apply worker, a tablesync worker kept waiting on a lock).

PGTREE_TEST_PG_VERSIONS="12 18" runs fewer versions (CI runs all of them).
"""
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, Daemon, cluster_of, run_once
from pgharness import Cluster, pid_alive, wait_for

ALL_MAJORS = [12, 13, 14, 15, 16, 17, 18]
RESULTS = {}  # major -> {column: value}, printed as a table at the end


def selected_majors():
    env = os.environ.get("PGTREE_TEST_PG_VERSIONS", "").strip()
    if not env or env == "all":
        return ALL_MAJORS
    if env == "quick":
        return [ALL_MAJORS[0], ALL_MAJORS[-1]]
    majors = [int(x) for x in env.replace(",", " ").split()]
    bad = [m for m in majors if m not in ALL_MAJORS]
    if bad:
        raise ValueError(f"PGTREE_TEST_PG_VERSIONS: no server for {bad} (have {ALL_MAJORS})")
    return majors


def install(majors):
    """major → bindir. Installs what is missing (a no-op when the cache has them)."""
    p = subprocess.run([os.path.join(ROOT, "scripts", "install-pg-versions"), "--print",
                        *map(str, majors)], capture_output=True, text=True, timeout=900,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        pytest.fail(f"scripts/install-pg-versions failed: {p.stderr}")
    out = {}
    for line in p.stdout.splitlines():
        m, d = line.split(" ", 1)
        out[int(m)] = d
    return out


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(x) for x in f.read().split()}
    except OSError:
        return set()


def title(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return None


# Children that pg_stat_activity does not list, per version, with the type pgtree must give them
# (PostgreSQL's own name: GetBackendTypeDesc / the bgworker's type).
def unlisted_types(major, role):
    t = {"logger", "background worker"}          # + autoprewarm leader/master
    if major <= 14:
        t.add("stats collector")
    if major <= 13 and role != "standby":
        t.add("archiver")
    return t


class Topology:
    def __init__(self, major, bindir):
        self.major = major
        self.bindir = bindir
        tag = f"{major}_{os.getpid()}"
        common = {
            "logging_collector": "on",
            "log_directory": "'log'",
            "shared_preload_libraries": "'pg_prewarm'",
            "wal_level": "logical",
            "archive_mode": "on",
            "archive_command": "'true'",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "max_worker_processes": 16,
        }
        if major >= 17:
            common["summarize_wal"] = "on"
        if major >= 18:
            common["io_method"] = "worker"
        self.primary = Cluster(name=f"vt{tag}p", bindir=bindir, settings=common)
        self.standby = None
        sub = dict(common, update_process_title="off")
        self.subscriber = Cluster(name=f"vt{tag}l", bindir=bindir, settings=sub)
        self.conns = []
        self.busy = set()       # client backends that run a query on purpose (long_query)
        self.no_status = set()  # client backends of the subscriber (update_process_title = off)

    def clusters(self):
        return [(r, c) for r, c in (("primary", self.primary), ("standby", self.standby),
                                    ("subscriber", self.subscriber)) if c is not None]

    def hold(self, cluster, sql=(), **kw):
        """A session that keeps its connection: runs sql and stays (autocommit off keeps a
        transaction open)."""
        conn = cluster.connect(**kw)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            for q in sql:
                with contextlib.suppress(Exception):
                    cur.execute(q)
        self.conns.append(conn)
        return pid

    def run(self, cluster, query, **kw):
        _, pid, _ = cluster.run_async(query, **kw)
        return pid

    def build(self):
        P = self.primary
        P.init()
        P.launch()
        P.sql("CREATE ROLE pgtree LOGIN; GRANT pg_monitor TO pgtree")
        P.sql('CREATE ROLE "app user" LOGIN SUPERUSER')
        P.sql('CREATE DATABASE "shop db" OWNER "app user"')
        P.sql("""
            CREATE TABLE items (id int PRIMARY KEY, v text);
            INSERT INTO items SELECT g, 'x' FROM generate_series(1, 1000) g;
            CREATE TABLE big AS SELECT g FROM generate_series(1, 200000) g;
            CREATE TABLE locked (x int);
            CREATE TABLE av (x int, pad text) WITH (autovacuum_vacuum_cost_delay = 100,
                autovacuum_vacuum_cost_limit = 1, autovacuum_vacuum_threshold = 0,
                autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 2000000000);
            INSERT INTO av SELECT g, repeat('p', 60) FROM generate_series(1, 100000) g;
            ANALYZE big;
            CREATE PUBLICATION pub FOR TABLE items;
            SELECT pg_create_physical_replication_slot('standby_slot');
        """, dbname="shop db")
        sb = {"primary_slot_name": "'standby_slot'", "hot_standby_feedback": "on",
              "primary_conninfo": f"'host={P.base} port={P.port} user=postgres dbname=postgres'"}
        if self.major >= 17:
            sb["sync_replication_slots"] = "on"
        self.standby = P.make_standby(f"vt{self.major}_{os.getpid()}s", sb)
        P.launch()
        self.standby.launch()

        L = self.subscriber
        L.start()
        L.sql('CREATE DATABASE "shop db"')
        L.sql("CREATE TABLE items (id int PRIMARY KEY, v text)", dbname="shop db")
        # The tablesync worker opens the table RowExclusive: a SHARE lock keeps it waiting, alive.
        self.hold(L, ["BEGIN", "LOCK TABLE items IN SHARE MODE"], dbname="shop db", autocommit=False)
        L.sql(f"CREATE SUBSCRIPTION sub CONNECTION 'host={P.base} port={P.port} user=postgres "
              f"dbname=''shop db''' PUBLICATION pub", dbname="shop db")

        # the workload on the primary
        self.hold(P, [], tcp=True, user="app user", dbname="shop db", application_name="vt idle tcp")
        self.hold(P, [], application_name="vt idle unix")
        self.busy.add(self.run(P, "SELECT pg_sleep(3600)", tcp=True, application_name="vt busy"))
        self.hold(P, ["BEGIN", "LOCK TABLE locked IN ACCESS EXCLUSIVE MODE"], dbname="shop db",
                  autocommit=False, user="app user", application_name="vt locker")
        self.busy.add(self.run(P, "SELECT * FROM locked", dbname="shop db", tcp=True,
                               application_name="vt waiter"))
        self.hold(P, ["BEGIN", "SELECT 1/0"], autocommit=False, application_name="vt aborted")
        self.busy.add(self.run(P, "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
                                  "SET min_parallel_table_scan_size = 0; "
                                  "SELECT count(*) FROM big WHERE pg_sleep(0.01) IS NOT NULL",
                               dbname="shop db", application_name="vt parallel"))
        P.sql("DELETE FROM av", dbname="shop db")  # dead rows: a (slow) autovacuum worker
        self.hold(self.standby, [], application_name="vt standby idle")
        self.no_status.add(self.hold(L, [], application_name="vt sub idle"))
        pid = self.run(L, "SELECT pg_sleep(3600)", tcp=True, application_name="vt sub busy")
        self.no_status.add(pid)
        self.busy.add(pid)
        self.wait_ready()
        return self

    def backend_types(self, cluster):
        return dict(cluster.sql("SELECT pid, backend_type FROM pg_stat_activity"))

    def wait_ready(self):
        P, S, L = self.primary, self.standby, self.subscriber

        def types(c):
            return set(self.backend_types(c).values())

        want_p = {"walsender", "parallel worker", "autovacuum worker", "client backend"} | \
            ({"walsummarizer"} if self.major >= 17 else set()) | ({"io worker"} if self.major >= 18 else set())
        want_s = {"startup", "walreceiver"} | ({"slotsync worker"} if self.major >= 17 else set())
        want_l = {"logical replication launcher"}
        wait_for(lambda: want_p <= types(P), 90, 0.3, what=f"{self.major} primary: {want_p}")
        wait_for(lambda: want_s <= types(S), 90, 0.3, what=f"{self.major} standby: {want_s}")
        wait_for(lambda: want_l <= types(L) and len(
            [t for t in types(L) if t.startswith("logical replication") and t != "logical replication launcher"]) >= 1
            and L.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0] >= 1,
            90, 0.3, what=f"{self.major} subscriber: apply and a waiting tablesync worker")
        wait_for(lambda: P.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0] >= 1,
                 30, 0.2, what="the lock wait")

    def stop(self):
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.close()
        for _, c in self.clusters():
            with contextlib.suppress(Exception):
                c.stop()


@pytest.fixture(scope="module")
def fleet():
    majors = selected_majors()
    bindirs = install(majors)
    topos = {m: Topology(m, bindirs[m]) for m in majors}
    try:
        # side by side: initdb and start-up wait on the disk and on each other, not on one core
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(topos)) as ex:
            futures = {m: ex.submit(t.build) for m, t in topos.items()}
            for m, f in futures.items():
                f.result()
        yield topos
    finally:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(topos) * 3) as ex:
            list(ex.map(lambda t: t.stop(), topos.values()))
        print_table()


def print_table():
    if not RESULTS:
        return
    cols = ["processes", "with activity", "titles only", "daemon cycles", "false findings"]
    lines = ["", "version | " + " | ".join(cols)]
    for m in sorted(RESULTS):
        r = RESULTS[m]
        lines.append(f"{m:7} | " + " | ".join(str(r.get(c, "-")) for c in cols))
    print("\n".join(lines))
    path = os.environ.get("PGTREE_VERSIONS_TABLE")
    if path:
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


def config(text):
    fd, path = tempfile.mkstemp(prefix="pgtree-vt-", suffix=".ini", dir=os.environ.get("PGTREE_TEST_TMP"))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def truth(topos):
    """What the servers say, per cluster: children of the postmaster and pg_stat_activity."""
    out = {}
    for m, t in topos.items():
        for role, c in t.clusters():
            out[(m, role)] = (children(c.pm_pid), t.backend_types(c))
    return out


def check_cluster(topo, role, c, cl, before, after, titles_only):
    """Returns (processes, right types) for one cluster of the snapshot cl; asserts on errors."""
    m = topo.major
    procs = {p["pid"]: p for p in cl["processes"]}
    pm = c.pm_pid
    assert procs[pm]["backend_type"] == "postmaster"
    (kids_b, act_b), (kids_a, act_a) = before, after
    stable = kids_b & kids_a
    missing = stable - set(procs)
    assert not missing, f"{m} {role}: children not shown: {[(p, title(p)) for p in missing]}"
    errors, right = [], 0
    for pid in sorted(stable):
        p = procs[pid]
        assert p["ppid"] == pm, f"{m} {role}: {pid} has ppid {p['ppid']}, not {pm}"
        want = act_b.get(pid) if act_b.get(pid) == act_a.get(pid) else None
        if pid in act_b or pid in act_a:
            if want is None:
                continue  # changed in between (a worker that ended, a pid reused)
        else:
            allowed = unlisted_types(m, role)
            if p["title"] == procs[pm]["title"] and p["backend_type"] == "unknown":
                continue  # forked and not titled yet when read (a loaded host): nothing to type it by
            if p["backend_type"] not in allowed:
                errors.append(f"{pid} unlisted in pg_stat_activity, typed {p['backend_type']!r} "
                              f"(allowed {sorted(allowed)}): {p['title']!r}")
                continue
            right += 1
            continue
        if p["backend_type"] != want:
            errors.append(f"{pid} {p['title']!r}: pgtree {p['backend_type']!r}, pg_stat_activity {want!r}")
        else:
            right += 1
    assert not errors, f"PostgreSQL {m} {role} ({'titles only' if titles_only else 'activity'}):\n" + \
        "\n".join(errors)
    # what must be there
    unlisted = {procs[p]["backend_type"] for p in stable if p not in act_b and p not in act_a}
    required = {"logger"} | ({"stats collector"} if m <= 14 else set()) | \
        ({"archiver"} if m <= 13 and role != "standby" else set())
    assert required <= unlisted, f"{m} {role}: unlisted children {unlisted}, expected {required}"
    return len(stable) + 1, right + 1


def snapshot_check(topos, pgtreed, conninfo, titles_only):
    cfg = config(f"[daemon]\nconninfo = {conninfo}\n")
    try:
        before = truth(topos)
        data = json.loads(run_once(pgtreed, "--json", "--config", cfg).stdout)
        after = truth(topos)
    finally:
        os.unlink(cfg)
    counts = {}
    for m, t in topos.items():
        n = ok = 0
        for role, c in t.clusters():
            cl = cluster_of(data, c.pm_pid)
            if titles_only:
                assert cl["activity"].startswith("unavailable"), cl["activity"]
            else:
                assert cl["activity"] == "ok", f"{m} {role}: {cl['activity']}"
            a, b = check_cluster(t, role, c, cl, before[(m, role)], after[(m, role)], titles_only)
            n, ok = n + a, ok + b
        counts[m] = (n, ok)
    return data, counts


def test_types_with_activity(fleet, pgtreed):
    _, counts = snapshot_check(fleet, pgtreed, "dbname=postgres user=pgtree", False)
    for m, (n, ok) in counts.items():
        RESULTS.setdefault(m, {})["processes"] = n
        RESULTS[m]["with activity"] = f"{ok}/{n}"


def test_types_titles_only(fleet, pgtreed):
    """pg_stat_activity unavailable (the role does not exist): the types from the titles, named
    by each server's version, are the ones pg_stat_activity gives."""
    data, counts = snapshot_check(fleet, pgtreed, "dbname=postgres user=no_such_role_vt", True)
    for m, (n, ok) in counts.items():
        RESULTS.setdefault(m, {})["titles only"] = f"{ok}/{n}"
    # update_process_title = off: the subscriber's sessions have no status; pgtree says so
    for m, t in fleet.items():
        cl = cluster_of(data, t.subscriber.pm_pid)
        procs = {p["pid"]: p for p in cl["processes"]}
        for pid in t.no_status:
            p = procs[pid]
            assert p["backend_type"] == "client backend"
            assert p["state"] is None and p["status"] is None, p
            assert p["title_status"] is False, p
        # the primary's sessions do have one
        cl = cluster_of(data, t.primary.pm_pid)
        states = {p["state"] for p in cl["processes"] if p["backend_type"] == "client backend"}
        assert {"idle", "active", "idle in transaction", "idle in transaction (aborted)"} <= states, (m, states)


def test_no_false_findings_over_daemon_cycles(fleet, pgtreed, pgtree_client):
    """pgtreed as a daemon, 1 s cycles, unlisted processes reported after 1 s: over at least
    three cycles no healthy process of any version is a finding; the sessions that run a query
    on purpose are long_query findings and nothing else is."""
    cycles = 4
    d = Daemon(pgtreed, pgtree_client, "[daemon]\ninterval = 1s\nunlisted_grace = 1s\n"
               "conninfo = dbname=postgres user=pgtree\n"
               "[rule slow]\nkind = long_query\nafter = 1s\naction = log\n")
    with d:
        start = d.client_json("status")["cycles"]
        wait_for(lambda: d.client_json("status")["cycles"] >= start + cycles + 2, 60, 0.3,
                 what="daemon cycles")
        tree = d.client_json("tree")
        orphans = d.client_json("orphans")
        long = d.client_json("long")
        seen = d.client_json("status")["cycles"] - start
    findings = orphans["findings"] + long["findings"]
    for m, t in fleet.items():
        pids, names = set(), set()
        for _, c in t.clusters():
            cl = cluster_of(tree, c.pm_pid)
            assert cl["activity"] == "ok", cl["activity"]
            pids |= {p["pid"] for p in cl["processes"]}
            names.add(cl["name"])
        mine = [f for f in findings if f["pid"] in pids or f["cluster"] in names]
        false = [f for f in mine if not (f["kind"] == "long_query" and f["pid"] in t.busy)]
        RESULTS.setdefault(m, {})["daemon cycles"] = seen
        RESULTS[m]["false findings"] = len(false)
        assert not false, f"PostgreSQL {m}: " + json.dumps(false, indent=1)
        got = {f["pid"] for f in mine if f["kind"] == "long_query"}
        assert got == t.busy, (m, got, t.busy)


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_orphan_backend(which, pgtreed):
    """The postmaster of this test's own cluster crashes (never by SIGKILL) while a CPU-bound query runs: the
    backend is an orphan_backend that says it blocks the restart; the logger, which outlives the
    postmaster as long as a backend keeps its pipe open, is listed but is no finding (it holds
    no shared memory). SIGTERM ends the backend; the logger then exits by itself."""
    majors = selected_majors()
    major = majors[0] if which == "oldest" else majors[-1]
    bindir = install([major])[major]
    c = Cluster(name=f"vt{major}_orphan_{os.getpid()}", bindir=bindir,
                settings={"logging_collector": "on", "log_directory": "'log'"})
    c.start()
    try:
        pid = c.run_async("DO $$ BEGIN LOOP PERFORM 1; END LOOP; END $$", tcp=True)[1]
        wait_for(lambda: c.sql("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
                 == [("active",)], 10, what="busy backend")
        logger = next(p for p in children(c.pm_pid) if (title(p) or "").rstrip().endswith("logger"))
        # only this test's own postmaster, identified by its data directory
        assert os.readlink(f"/proc/{c.pm_pid}/cwd") == c.data
        c.crash_postmaster()  # abruptly, never by SIGKILL
        wait_for(lambda: not pid_alive(c.pm_pid), 10, what="postmaster exit")
        # the other children notice and exit; the busy backend and the logger stay
        wait_for(lambda: {p for p in c.backend_pids() if pid_alive(p)} <= {pid, logger}, 30, 0.2,
                 what="children other than the busy backend and the logger to exit")
        assert pid_alive(pid) and pid_alive(logger)

        data = json.loads(run_once(pgtreed, "--json").stdout)
        orphans = {o["pid"]: o for o in data["orphans"]}
        assert orphans[pid]["backend_type"] == "client backend"
        assert orphans[pid]["blocks_restart"] is True
        assert orphans[logger]["backend_type"] == "logger"
        assert orphans[logger]["blocks_restart"] is False
        f = [x for x in data["findings"] if x["pid"] in (pid, logger)]
        assert [(x["pid"], x["kind"]) for x in f] == [(pid, "orphan_backend")], f
        assert "shared memory" in f[0]["detail"] and "restart" in f[0]["detail"], f[0]["detail"]

        assert os.readlink(f"/proc/{pid}/cwd") == c.data
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 15, what="orphan exit on SIGTERM")
        wait_for(lambda: not pid_alive(logger), 15, what="logger exit once no backend is left")
    finally:
        c.stop()
