#!/usr/bin/python3
"""Detection latency per finding kind, and pgbench -C churn (issue 10).

Latency: pgtreed runs as a daemon at --intervals (default 1 s and 5 s) with one rule per kind
(action = log). Each trial, at a random phase of the daemon's cycle, sets up the long runners at
once (long_query, idle_in_transaction, long_transaction: thresholds interval + 1 s; lock_wait:
interval + 0.5 s) and then, once a cycle has seen them and after another random pause, kills
the clients of two queries (psql over a Unix socket and over TCP: psql is the client, never
PostgreSQL). It records, per kind, the time from the condition becoming true (the rule's
threshold passed, the client killed) to the daemon's "KIND opened: pid N" line (read as it is
written). About 10 minutes with the defaults.

Clusters starting and stopping (--lifecycle-trials per interval, on clusters of their own):
"postmaster exit" — a configured cluster stopped (pg_ctl -m fast), from its postmaster's exit (a
pidfd) to pgtreed's "postmaster N ... exited" line and to the first tree without it (the path an
orphan's finding takes: no orphan is made, that needs a postmaster killed, and nothing here sends
SIGKILL to PostgreSQL); "restart" — the same cluster started again; "new cluster" — a cluster
pgtreed was never told of, whose socket is in a directory another watched cluster uses (as
/var/run/postgresql): from its postmaster.pid appearing to the first tree that has it ("in tree")
and to pgtreed's "pg_stat_activity is available" line for it ("connected").

Churn: `pgbench -n -C -S` over a Unix socket for --churn-seconds, without pgtreed and with it
(1 s interval, a client_gone rule), interleaved over --churn-rounds: connections per second and
the client_gone findings opened (all of them false: every pgbench client disconnects cleanly).

usage: tests/bench/latency.py [--build DIR] [--intervals 1,5] [--trials 16] [--lifecycle-trials 4]
                              [--churn-rounds 2] [--churn-seconds 15]
Prints one table (median and max latency per kind and interval, as seconds and as a fraction of
the interval; churn throughput and false findings).
"""
import argparse
import json
import os
import random
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from pgharness import Cluster, stop_on_signals, wait_for  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--build", default=os.path.join(ROOT, "build"))
ap.add_argument("--intervals", default="1,5")
ap.add_argument("--trials", type=int, default=16)
ap.add_argument("--lifecycle-trials", type=int, default=4)
ap.add_argument("--churn-rounds", type=int, default=2)
ap.add_argument("--churn-seconds", type=int, default=15)
args = ap.parse_args()
stop_on_signals()

KINDS = ["long_query", "idle_in_transaction", "long_transaction", "lock_wait", "client_gone unix", "client_gone tcp"]
LIFECYCLE = ["postmaster exit: logged", "postmaster exit: tree", "restart: in tree", "restart: connected",
             "new cluster: in tree", "new cluster: connected"]
ROWS = KINDS + LIFECYCLE
def thresholds(interval):
    """Longer than the interval: a cycle sees each session before its threshold, as with the
    minutes-long thresholds of real rules and intervals of seconds (a threshold shorter than the
    interval is reached, for a session begun after the last cycle, before any cycle saw it)."""
    return {"long_query": interval + 1.0, "idle_in_transaction": interval + 1.0, "long_transaction": interval + 1.0,
            "lock_wait": interval + 0.5}


AFTER = {}


class Daemon:
    def __init__(self, cluster, interval, rules, more=""):
        self.dir = tempfile.mkdtemp(prefix="pgtree-latency-")
        self.sock = os.path.join(self.dir, "pgtree.sock")
        cfg = os.path.join(self.dir, "pgtree.ini")
        with open(cfg, "w") as f:
            f.write(f"[daemon]\nsocket = {self.sock}\ninterval = {int(interval * 1000)}ms\n"
                    f"[cluster bench]\ndata_directory = {cluster.data}\n" + more + rules)
        self.lines = []  # (monotonic time read, line)
        self.proc = subprocess.Popen([os.path.join(args.build, "daemon", "pgtreed"), "--config", cfg],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        wait_for(lambda: any(" started: " in l for _, l in self.lines) or self.proc.poll() is not None, 30,
                 what="pgtreed started")
        if self.proc.poll() is not None:
            raise RuntimeError("pgtreed exited: " + "\n".join(l for _, l in self.lines))

    def _pump(self):
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def opened(self, kind, pid, since):
        rx = re.compile(rf"\b{kind} opened: pid {pid}\b")
        for t, line in list(self.lines):
            if t >= since and rx.search(line):
                return t
        return None

    def logged(self, pattern, since):
        rx = re.compile(pattern)
        for t, line in list(self.lines):
            if t >= since and rx.search(line):
                return t
        return None

    def tree(self):
        out = subprocess.run([os.path.join(args.build, "client", "pgtree"), "--socket", self.sock, "--json", "tree"],
                             capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout) if out.returncode == 0 else {"clusters": []}

    def count_opened(self, kind, since):
        rx = re.compile(rf"\b{kind} opened: pid \d+")
        return sum(1 for t, line in list(self.lines) if t >= since and rx.search(line))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def backend_of(cluster, app):
    rows = cluster.sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))
    return rows[0][0] if rows else None


def psql(cluster, host, app, sql):
    return subprocess.Popen(["psql", "-X", "-h", host, "-p", str(cluster.port), "-U", "postgres", "-d", "postgres",
                             "-c", sql], env={**os.environ, "PGAPPNAME": app},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_findings(d, kinds, pid_of, true_at):
    start = min(true_at.values()) - 5
    try:
        wait_for(lambda: all(d.opened(k.split()[0], pid_of[k], start) for k in kinds), 60, interval=0.02,
                 what="every finding")
    except TimeoutError:
        missing = [k for k in kinds if not d.opened(k.split()[0], pid_of[k], start)]
        raise RuntimeError(f"not found: {missing}; pids {pid_of}; log:\n" +
                           "\n".join(l for _, l in d.lines[-30:]))
    return {k: d.opened(k.split()[0], pid_of[k], start) - true_at[k] for k in kinds}


def trial(cluster, d, n, interval):
    """Every condition; returns {kind: latency seconds}."""
    tag = f"lat{n}"
    true_at, pid_of, clients, conns = {}, {}, [], []
    try:
        # long_query
        c = cluster.connect(application_name=f"{tag}-lq")
        conns.append(c)
        pid_of["long_query"] = backend_of(cluster, f"{tag}-lq")
        threading.Thread(target=lambda: _run_quiet(c, "SELECT pg_sleep(60)"), daemon=True).start()
        true_at["long_query"] = time.monotonic() + AFTER["long_query"]
        # idle in transaction, long transaction: one session
        c2 = cluster.connect(application_name=f"{tag}-tx", autocommit=False)
        conns.append(c2)
        c2.cursor().execute("SELECT 1")
        t = time.monotonic()
        pid_of["idle_in_transaction"] = pid_of["long_transaction"] = backend_of(cluster, f"{tag}-tx")
        true_at["idle_in_transaction"] = t + AFTER["idle_in_transaction"]
        true_at["long_transaction"] = t + AFTER["long_transaction"]
        # lock_wait: c4 holds a lock, c3 waits for it
        c4 = cluster.connect(application_name=f"{tag}-lh", autocommit=False)
        conns.append(c4)
        c4.cursor().execute(f"LOCK TABLE lat_{n % 2} IN ACCESS EXCLUSIVE MODE")
        c3 = cluster.connect(application_name=f"{tag}-lw")
        conns.append(c3)
        pid_of["lock_wait"] = backend_of(cluster, f"{tag}-lw")
        threading.Thread(target=lambda: _run_quiet(c3, f"SELECT * FROM lat_{n % 2}"), daemon=True).start()
        wait_for(lambda: cluster.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                                     (pid_of["lock_wait"],)), 10, interval=0.005, what="the lock wait")
        true_at["lock_wait"] = time.monotonic() + AFTER["lock_wait"]
        result = wait_findings(d, KINDS[:4], pid_of, true_at)
        # another phase for client_gone: a cycle run for the long runners above must not be what
        # catches it
        time.sleep(random.uniform(0, interval))
        # client_gone: psql killed mid-query, over a Unix socket and over TCP
        for via, host in (("unix", cluster.base), ("tcp", "127.0.0.1")):
            p = psql(cluster, host, f"{tag}-cg{via}", "SELECT pg_sleep(60)")
            clients.append(p)
            pid_of[f"client_gone {via}"] = wait_for(lambda: backend_of(cluster, f"{tag}-cg{via}"), 20,
                                                    what="psql's backend")
        wait_for(lambda: all(cluster.sql("SELECT state = 'active' FROM pg_stat_activity WHERE pid = %s", (pid_of[k],))
                             for k in ("client_gone unix", "client_gone tcp")), 20, what="psql running")
        # running a while, as the queries whose clients die are: seen by a cycle, then killed at a
        # random phase of the daemon's cycle
        wait_for(lambda: all(seen_in_tree(d, pid_of[k]) for k in ("client_gone unix", "client_gone tcp")), 30,
                 interval=0.05, what="psql's backends in the tree")
        time.sleep(random.uniform(0, interval))
        for via, p in zip(("unix", "tcp"), clients):
            p.send_signal(signal.SIGKILL)  # not PostgreSQL: the psql client
            p.wait()
            true_at[f"client_gone {via}"] = time.monotonic()
        result.update(wait_findings(d, KINDS[4:], pid_of, {k: true_at[k] for k in KINDS[4:]}))
        return result
    finally:
        for p in clients:
            if p.poll() is None:
                p.kill()  # not PostgreSQL: the psql client
                p.wait()
        cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
                    (f"{tag}-%",))
        for c in conns:
            try:
                c.close()
            except Exception:
                pass


def seen_in_tree(d, pid):
    return any(p.get("pid") == pid for c in d.tree().get("clusters", []) for p in c.get("processes", []))


def watch_file(path, stop):
    """The monotonic time path appears (polled every 2 ms), or None."""
    while not stop.is_set():
        if os.path.exists(path):
            return time.monotonic()
        time.sleep(0.002)
    return None


def in_tree(d, data, pm_pid):
    return any(c.get("postmaster", {}).get("data_directory") == data and c["postmaster"].get("pid") == pm_pid
               for c in d.tree().get("clusters", []))


def started(d, c):
    """Starts c (stopped); returns (postmaster.pid appeared, in the tree, connected) times."""
    pmfile = os.path.join(c.data, "postmaster.pid")
    stop = threading.Event()
    seen = {}
    th = threading.Thread(target=lambda: seen.update(at=watch_file(pmfile, stop)), daemon=True)
    th.start()
    t0 = time.monotonic()
    c.launch()
    th.join(30)
    stop.set()
    appeared = seen.get("at") or t0
    wait_for(lambda: in_tree(d, c.data, c.pm_pid), 60, interval=0.02, what="the cluster in the tree")
    tree_at = time.monotonic()
    rx = rf"cluster {re.escape(c.name)}(:{c.port})?: pg_stat_activity is available"
    wait_for(lambda: d.logged(rx, appeared), 60, interval=0.02, what="the cluster connected")
    return appeared, tree_at, d.logged(rx, appeared)


def stopped(d, c):
    """Stops c (pg_ctl -m fast); returns (postmaster exited, logged, gone from the tree) times."""
    pm = c.pm_pid
    fd = os.pidfd_open(pm)
    try:
        subprocess.Popen(c._as_user([f"{c.bindir}/pg_ctl", "-D", c.data, "-m", "fast", "-w", "stop"]),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=c.base)
        select.select([fd], [], [], 60)
        exited = time.monotonic()
    finally:
        os.close(fd)
    wait_for(lambda: d.logged(rf"postmaster {pm} of cluster .* exited", exited - 1), 60, interval=0.01,
             what="the exit logged")
    logged = d.logged(rf"postmaster {pm} of cluster .* exited", exited - 1)
    wait_for(lambda: not in_tree(d, c.data, pm), 60, interval=0.02, what="the cluster gone from the tree")
    return exited, logged, time.monotonic()


def new_cluster(cluster, n):
    """A cluster pgtreed was never told of nor saw (stopped), its socket beside the bench cluster's
    (one socket directory for several clusters, as Debian's /var/run/postgresql)."""
    fresh = Cluster(name=f"pgtree_lat_new{n}", settings={"unix_socket_directories": f"'{cluster.base}'"})
    fresh.init().launch()
    fresh._run(["psql", "-X", "-h", cluster.base, "-p", str(fresh.port), "-U", "postgres", "-d", "postgres", "-c",
                "CREATE ROLE pgtree LOGIN; GRANT pg_monitor TO pgtree"])
    fresh._run([f"{fresh.bindir}/pg_ctl", "-D", fresh.data, "-m", "fast", "-w", "stop"])
    return fresh


def lifecycle(d, restarting, fresh, out, interval):
    """postmaster exit and restart of a configured cluster; a cluster never configured started."""
    exited, logged, gone = stopped(d, restarting)
    out.setdefault("postmaster exit: logged", []).append(logged - exited)
    out.setdefault("postmaster exit: tree", []).append(gone - exited)
    time.sleep(random.uniform(0, interval))
    appeared, tree_at, connected = started(d, restarting)
    out.setdefault("restart: in tree", []).append(tree_at - appeared)
    out.setdefault("restart: connected", []).append(connected - appeared)
    time.sleep(random.uniform(0, interval))
    appeared, tree_at, connected = started(d, fresh)
    out.setdefault("new cluster: in tree", []).append(tree_at - appeared)
    out.setdefault("new cluster: connected", []).append(connected - appeared)
    fresh.stop()  # (again at the end: nothing left to do then)


def _run_quiet(conn, sql):
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    except Exception:
        pass


def pgbench(cluster, seconds):
    out = subprocess.run(["pgbench", "-n", "-C", "-S", "-c", "4", "-j", "2", "-T", str(seconds), "-h", cluster.base,
                          "-p", str(cluster.port), "-U", "postgres", "postgres"],
                         capture_output=True, text=True, timeout=seconds + 120)
    m = re.search(r"tps = ([0-9.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError("pgbench failed: " + out.stdout[-500:] + out.stderr[-500:])
    return float(m.group(1))


def rules():
    return "".join(f"[rule {k}]\nkind = {k}\nafter = {int(AFTER[k] * 1000)}ms\naction = log\n" for k in AFTER) + \
        "[rule client_gone]\nkind = client_gone\naction = log\n"


def main():
    load_start = " ".join(open("/proc/loadavg").read().split()[:3])
    lat = {}
    churn = {"without": [], "with": [], "false": []}
    with Cluster(name="pgtree_latency", settings={"max_connections": 60}) as cluster:
        cluster.sql("CREATE TABLE lat_0 (i int); CREATE TABLE lat_1 (i int)")
        run = ["pgbench", "-i", "-q", "-s", "1", "-h", cluster.base, "-p", str(cluster.port), "-U", "postgres",
               "postgres"]
        subprocess.run(["runuser", "-u", cluster.os_user, "--"] + run if os.geteuid() == 0 else run,
                       check=True, capture_output=True, timeout=120)
        restarting = Cluster(name="pgtree_lat_restart").start()
        # made before any pgtreed runs: none has seen them
        intervals = [float(x) for x in args.intervals.split(",")]
        fresh, used = [], 0
        for n in range(args.lifecycle_trials * len(intervals)):
            fresh.append(new_cluster(cluster, n))
        try:
            for interval in intervals:
                AFTER.update(thresholds(interval))
                d = Daemon(cluster, interval, rules(), f"[cluster restart]\ndata_directory = {restarting.data}\n")
                try:
                    time.sleep(3 * interval)  # connected, a few cycles run
                    for n in range(args.trials):
                        r = trial(cluster, d, n, interval)
                        for k, v in r.items():
                            lat.setdefault((interval, k), []).append(v)
                        print(f"  interval {interval:g} s, trial {n + 1}: " +
                              ", ".join(f"{k} {v:.2f}" for k, v in r.items()), file=sys.stderr, flush=True)
                        # a random phase against the daemon's cycle: trials that each take the same
                        # time would all meet the cycle at the same point (one latency, five times)
                        time.sleep(random.uniform(0, interval))
                    for n in range(args.lifecycle_trials):
                        r = {}
                        lifecycle(d, restarting, fresh[used], r, interval)
                        used += 1
                        for k, v in r.items():
                            lat.setdefault((interval, k), []).extend(v)
                        print(f"  interval {interval:g} s, lifecycle {n + 1}: " +
                              ", ".join(f"{k} {v[0]:.2f}" for k, v in r.items()), file=sys.stderr, flush=True)
                        time.sleep(random.uniform(0, interval))
                finally:
                    d.stop()
        finally:
            for c in fresh:
                c.stop()
            restarting.stop()
        for r in range(args.churn_rounds):
            churn["without"].append(pgbench(cluster, args.churn_seconds))
            d = Daemon(cluster, 1, "[rule client_gone]\nkind = client_gone\naction = log\n")
            try:
                time.sleep(3)
                t0 = time.monotonic()
                churn["with"].append(pgbench(cluster, args.churn_seconds))
                time.sleep(3)  # the cycles after the last disconnects
                churn["false"].append(d.count_opened("client_gone", t0))
            finally:
                d.stop()
            print(f"  churn round {r + 1}: without {churn['without'][-1]:.0f} conn/s, with {churn['with'][-1]:.0f} "
                  f"conn/s, false client_gone {churn['false'][-1]}", file=sys.stderr, flush=True)

    cpu = open("/proc/cpuinfo").read()
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("model name")), "?")
    print(f"\nmachine: {os.cpu_count()} CPUs, {model}, kernel {os.uname().release}; {args.trials} trials per interval "
          f"({args.lifecycle_trials} of cluster stops and starts); "
          f"load average at the start {load_start}, at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print("detection latency: from the condition becoming true to the finding opened (s, and / interval)")
    print(f"{'kind':24} | {'interval':>8} | {'median':>7} | {'max':>7} | {'med/int':>7} | {'max/int':>7}")
    for (interval, k), v in sorted(lat.items(), key=lambda x: (ROWS.index(x[0][1]), x[0][0])):
        m, x = statistics.median(v), max(v)
        print(f"{k:24} | {interval:>7g}s | {m:7.2f} | {x:7.2f} | {m / interval:7.2f} | {x / interval:7.2f}")
    if not churn["with"]:
        return
    print(f"pgbench -C -S (4 clients, Unix socket, {args.churn_seconds} s, {args.churn_rounds} rounds interleaved): "
          f"without pgtreed {statistics.median(churn['without']):.0f} conn/s, with pgtreed (1 s) "
          f"{statistics.median(churn['with']):.0f} conn/s, false client_gone findings {sum(churn['false'])}")


main()
