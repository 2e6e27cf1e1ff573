#!/usr/bin/python3
"""One command for the watcher benchmarks (issue 10): what a user pays per refresh, client CPU plus
the CPU of the watcher's own backend, for pgtreed (one or more builds, e.g. before/after) and its
peers, interleaved A/B/A/B in one run, on a cluster whose sessions are 80 % idle, 15 % active
(pg_sleep) and 5 % idle in transaction.

Tools, each measured over a window of W seconds per round, the others stopped meanwhile:
  pgtreed[NAME]  the daemon itself at --interval, discovery at its default cadence (30 s):
                 its CPU (/proc/PID/schedstat) and its backend's, divided by its scheduled
                 cycles (extra cycles and looks between cycles are counted in)
  floor          tests/bench/bench-floor: one prepared query of the same columns (binary) plus
                 /proc/PID/stat of every postmaster child: the least possible work
  pg_activity    Debian's pg-activity, its own UI loop (tests/bench/pg_activity_refresh.py),
                 per steady refresh, and its backend's CPU
  exporter       Debian's prometheus-postgres-exporter (default collectors), started once and
                 scraped over HTTP (no spawn cost): its CPU (/proc/PID/stat, all threads) and
                 its backends', per scrape
CPU is time on a CPU (not wall time): other sessions load this machine. Each cell is the median
of the rounds' means. Everything runs in a private PID namespace (unshare --pid --mount-proc)
so that pgtreed sees only the benchmark's processes, not other clusters of the host.

usage: tests/bench/run.py [--build NAME=DIR ...] [--scales 50,500,2000] [--rounds 3]
                          [--window 10] [--interval 1] [--tools pgtreed,floor,pg_activity,exporter]
                          [--extra-procs 0]   (idle host processes added, for the host-size test)
                          [--host-size N [--age 130]]  (each round twice: as is, then with N more
                              idle host processes, started for the round, aged AGE seconds while
                              pgtreed runs, and stopped by pid after it: rows "+0" and "+N")
                          [--latency]  (then tests/bench/latency.py: detection latency per finding
                              kind at 1 s and 5 s, pgbench -C churn; its table follows)
                          [--layouts 1x500,10x50]  (clusters x connections each: every layout set up
                              at once, each in its own PID namespace, measured in turn per round;
                              the table compares each to the first)
                          [--clusters 1]      (split the connections over that many clusters)
"""
import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ap = argparse.ArgumentParser()
ap.add_argument("--build", action="append", default=[], help="NAME=BUILD_DIR (repeatable); default new=ROOT/build")
ap.add_argument("--scales", default="50,500,2000")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--window", type=float, default=10.0)
ap.add_argument("--interval", type=float, default=1.0)
ap.add_argument("--tools", default="pgtreed,floor,pg_activity,exporter")
ap.add_argument("--extra-procs", type=int, default=0)
ap.add_argument("--host-size", type=int, default=0)
ap.add_argument("--age", type=float, default=130.0)
ap.add_argument("--layouts", default="")
ap.add_argument("--latency", action="store_true")
ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
ap.add_argument("--clusters", type=int, default=1)
ap.add_argument("--json", help="also write the raw results here")
ap.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
args = ap.parse_args()

if not args.in_namespace and os.geteuid() == 0 and not args.layouts:
    # a private PID namespace: pgtreed's discovery sees this benchmark's processes only
    os.execvp("unshare", ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, os.path.abspath(__file__),
                          "--in-namespace"] + sys.argv[1:])

sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import psycopg2  # noqa: E402
import psycopg2.extensions  # noqa: E402
from pgharness import Cluster, free_port, stop_on_signals, wait_for  # noqa: E402

stop_on_signals()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

builds = []
for b in args.build or [f"new={os.path.join(ROOT, 'build')}"]:
    name, _, d = b.partition("=")
    builds.append((name, os.path.abspath(d)))
tools = args.tools.split(",")
floor_bin = os.path.join(ROOT, "build", "tests", "bench", "bench-floor")
HZ = os.sysconf("SC_CLK_TCK")


def schedstat_ms(pid):
    """Time on a CPU of one thread (ns precision)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e6
    except OSError:
        return None


def ctxt_switches(pid):
    """Voluntary + involuntary context switches of a process."""
    n = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                    n += int(line.split()[1])
    except OSError:
        return None
    return n


def process_cpu_ms(pid):
    """utime + stime of a whole process (every thread, ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / HZ


def tasks_cpu_ms(pid):
    """Sum of the schedstat of every thread of a process (ns precision; exited threads lost)."""
    total = 0.0
    for t in os.listdir(f"/proc/{pid}/task"):
        v = schedstat_ms(f"{pid}/task/{t}")
        total += v or 0
    return total


# ---- the cluster and its sessions ----

class Mix:
    """N sessions: 80 % idle, 15 % active (pg_sleep), 5 % idle in transaction."""

    def __init__(self, cluster, n):
        self.conns = []
        n_active = n * 15 // 100
        n_iit = n * 5 // 100
        for i in range(n):
            kind = "active" if i < n_active else "iit" if i < n_active + n_iit else "idle"
            c = psycopg2.connect(dbname="postgres", user="postgres", host=cluster.base, port=cluster.port,
                                 application_name=f"bench-{kind}", async_=(kind == "active"))
            if kind == "active":
                wait_async(c)
                c.cursor().execute("SELECT pg_sleep(86400)")
            else:
                c.autocommit = kind == "idle"
                with c.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetchall()
            self.conns.append(c)

    def close(self):
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.cancel()
            with contextlib.suppress(Exception):
                c.close()


def wait_async(conn):
    import select
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], 10)
        else:
            select.select([conn.fileno()], [], [], 10)


def backends_of(cluster, where):
    return [r[0] for r in cluster.sql(f"SELECT pid FROM pg_stat_activity WHERE {where}")]


# ---- the tools ----

class Pgtreed:
    def __init__(self, name, build, clusters):
        self.name = name
        self.build = build
        self.clusters = clusters
        self.dir = tempfile.mkdtemp(prefix="pgtree-bench-")
        self.sock = os.path.join(self.dir, "pgtree.sock")
        cfg = os.path.join(self.dir, "pgtree.ini")
        self.app = f"pgtreed-{name}"
        with open(cfg, "w") as f:
            f.write(f"[daemon]\nsocket = {self.sock}\ninterval = {int(args.interval * 1000)}ms\n"
                    f"conninfo = dbname=postgres user=pgtree application_name={self.app}\n")
        self.proc = subprocess.Popen([os.path.join(build, "daemon", "pgtreed"), "--config", cfg],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.sock), 30, what="pgtreed's socket")
        wait_for(lambda: all(backends_of(c, f"application_name = '{self.app}'") for c in clusters), 60,
                 what=f"{self.app} connected")
        self.stop()

    def cycles(self):
        out = subprocess.run([os.path.join(self.build, "client", "pgtree"), "--socket", self.sock, "--json", "status"],
                             capture_output=True, text=True, check=True, timeout=60)
        st = json.loads(out.stdout)
        # per scheduled refresh: what extra cycles (thresholds, dead clients) and the looks at
        # clients between cycles cost is counted in the refresh they belong to
        return int(st["cycles"]) - int(st.get("extra_cycles", 0))

    def stop(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def cont(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def measure(self):
        backends = [p for c in self.clusters for p in backends_of(c, f"application_name = '{self.app}'")]
        self.cont()
        k0 = self.cycles()
        d0 = schedstat_ms(self.proc.pid)
        b0 = [schedstat_ms(p) for p in backends]
        x0 = [ctxt_switches(p) for p in backends]
        time.sleep(args.window)
        d1 = schedstat_ms(self.proc.pid)
        b1 = [schedstat_ms(p) for p in backends]
        x1 = [ctxt_switches(p) for p in backends]
        k1 = self.cycles()
        after = [p for c in self.clusters for p in backends_of(c, f"application_name = '{self.app}'")]
        self.stop()
        n = max(k1 - k0, 1)
        if sorted(after) != sorted(backends):
            # it reconnected (a query timed out under load): its new backend's CPU is not counted,
            # so the round is left out of the medians
            return {"client_ms": (d1 - d0) / n, "server_ms": float("nan"), "refreshes": n, "backend_ctxt": 0.0,
                    "invalid": "reconnected"}
        server = sum((y - x) for x, y in zip(b0, b1) if x is not None and y is not None)
        ctxt = sum((y - x) for x, y in zip(x0, x1) if x is not None and y is not None)
        return {"client_ms": (d1 - d0) / n, "server_ms": server / n, "refreshes": n, "backend_ctxt": ctxt / n}

    def close(self):
        with contextlib.suppress(ProcessLookupError):
            self.cont()
            self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


class Floor:
    def __init__(self, clusters):
        self.clusters = clusters

    def measure(self):
        n = max(int(args.window / args.interval), 1)
        procs = []
        for c in self.clusters:
            conninfo = f"host={c.base} port={c.port} dbname=postgres user=pgtree"
            procs.append(subprocess.Popen([floor_bin, conninfo, str(c.pm_pid), str(int(args.interval * 1000)), str(n)],
                                          stdout=subprocess.PIPE, text=True))
        rs = [json.loads(p.communicate(timeout=args.window * 3 + 60)[0]) for p in procs]
        return {"client_ms": sum(r["client_ms"] for r in rs), "server_ms": sum(r["server_ms"] for r in rs),
                "refreshes": n, "backend_ctxt": sum(r["backend_ctxt"] for r in rs)}

    def close(self):
        pass


class PgActivity:
    def __init__(self, clusters):
        self.clusters = clusters

    def measure(self):
        n = max(int(args.window / max(args.interval, 0.5)), 3)
        client = server = 0.0
        for c in self.clusters:  # one pg_activity per cluster (it watches one server)
            env = dict(os.environ, LINES="60", COLUMNS="200")
            p = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "pg_activity_refresh.py"), str(n),
                                str(max(args.interval, 0.5)), "-h", c.base, "-p", str(c.port), "-U", "postgres",
                                "-d", "postgres"], capture_output=True, text=True, env=env, timeout=600)
            kv = dict(x.split("=", 1) for x in p.stdout.split() if "=" in x)
            if "steady_cpu_mean_ms" not in kv:
                raise RuntimeError("pg_activity failed: " + (p.stdout + p.stderr)[-800:])
            client += float(kv["steady_cpu_mean_ms"])
            server += float(kv["backend_cpu_mean_ms"])
        return {"client_ms": client, "server_ms": server, "refreshes": n}

    def close(self):
        pass


class Exporter:
    def __init__(self, clusters):
        self.clusters = clusters
        self.procs = []
        for i, c in enumerate(clusters):
            c.sql("DO $$BEGIN CREATE ROLE bench_exporter LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;"
                  "GRANT pg_monitor TO bench_exporter")
            port = free_port()
            env = dict(os.environ, DATA_SOURCE_NAME=f"host={c.base} port={c.port} user=bench_exporter "
                                                    f"dbname=postgres sslmode=disable")
            p = subprocess.Popen(["/usr/bin/prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{port}"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append((p, port, c))
        for p, port, c in self.procs:
            wait_for(lambda: self._scrape(port), 30, what="postgres_exporter")
            os.kill(p.pid, signal.SIGSTOP)

    @staticmethod
    def _scrape(port):
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
                body = r.read()
                return b"pg_up 1" in body
        return False

    def measure(self):
        n = max(int(args.window / args.interval), 1)
        for p, _, _ in self.procs:
            os.kill(p.pid, signal.SIGCONT)
        backends = [b for _, _, c in self.procs for b in backends_of(c, "usename = 'bench_exporter'")]
        e0 = [process_cpu_ms(p.pid) for p, _, _ in self.procs]
        b0 = {b: schedstat_ms(b) for b in backends}
        for i in range(n):
            t = time.monotonic()
            for _, port, _ in self.procs:
                if not self._scrape(port):
                    raise RuntimeError("postgres_exporter: pg_up is not 1")
            time.sleep(max(0.0, args.interval - (time.monotonic() - t)))
        e1 = [process_cpu_ms(p.pid) for p, _, _ in self.procs]
        server = 0.0
        for _, _, c in self.procs:
            for b in backends_of(c, "usename = 'bench_exporter'"):
                v = schedstat_ms(b)
                if v is not None:
                    server += v - (b0.get(b) or 0.0)
        for p, _, _ in self.procs:
            os.kill(p.pid, signal.SIGSTOP)
        return {"client_ms": sum(y - x for x, y in zip(e0, e1)) / n, "server_ms": server / n, "refreshes": n}

    def close(self):
        for p, _, _ in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
                p.terminate()
            p.wait(30)


def extra_processes(n):
    """n idle host processes that are not PostgreSQL (the host-size benchmark)."""
    return [subprocess.Popen(["sleep", "86400"]) for _ in range(n)]


def stop_processes(procs):
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
    for p in procs:
        p.wait()


def host_size_round(r, instances, results, total):
    """One round of --host-size: every tool as is, then with args.host_size more processes (aged
    args.age seconds while the pgtreed instances run: discovery sees them new, then young, then
    as the long-lived processes of a big host)."""
    for phase in (0, args.host_size):
        extra = []
        try:
            if phase:
                t0 = time.monotonic()
                extra = extra_processes(phase)
                for _, inst in instances:
                    if isinstance(inst, Pgtreed):
                        inst.cont()
                time.sleep(max(0.0, args.age - (time.monotonic() - t0)))
                for _, inst in instances:
                    if isinstance(inst, Pgtreed):
                        inst.stop()
            for label, inst in instances:
                res = inst.measure()
                results.setdefault(f"{label} +{phase}", []).append(res)
                print(f"  {total} conns, round {r + 1}: {label:22} +{phase:<5} client {res['client_ms']:8.2f} ms  "
                      f"server {res['server_ms']:8.2f} ms  ({res['refreshes']} refreshes)"
                      f"{'  LEFT OUT: ' + res['invalid'] if 'invalid' in res else ''}", file=sys.stderr, flush=True)
        finally:
            stop_processes(extra)


# ---- the run ----

def run_scale(total):
    per = total // args.clusters
    results = {}
    with contextlib.ExitStack() as stack:
        clusters, mixes = [], []
        for i in range(args.clusters):
            c = stack.enter_context(Cluster(name=f"bench{total}_{i}",
                                            settings={"max_connections": per + 40, "autovacuum_naptime": "'60s'"}))
            clusters.append(c)
            m = Mix(c, per)
            stack.callback(m.close)
            mixes.append(m)
        extra = extra_processes(args.extra_procs)
        stack.callback(lambda: [(p.terminate(), p.wait()) for p in extra])
        instances = []
        for t in tools:
            if t == "pgtreed":
                for name, build in builds:
                    inst = Pgtreed(name, build, clusters)
                    stack.callback(inst.close)
                    instances.append((f"pgtreed[{name}]", inst))
            elif t == "floor":
                instances.append(("floor", Floor(clusters)))
            elif t == "pg_activity":
                instances.append(("pg_activity", PgActivity(clusters)))
            elif t == "exporter":
                inst = Exporter(clusters)
                stack.callback(inst.close)
                instances.append(("postgres_exporter", inst))
        if args.serve:  # --layouts: measure when the parent says so
            print(json.dumps({"ready": True}), flush=True)
            for line in sys.stdin:
                if line.strip() != "measure":
                    break
                print(json.dumps({label: inst.measure() for label, inst in instances}), flush=True)
            return results
        for r in range(args.rounds if args.host_size else 0):
            host_size_round(r, instances, results, total)
        for r in range(args.rounds if not args.host_size else 0):
            for label, inst in instances:
                res = inst.measure()
                results.setdefault(label, []).append(res)
                print(f"  {total} conns, round {r + 1}: {label:22} client {res['client_ms']:8.2f} ms  "
                      f"server {res['server_ms']:8.2f} ms  ({res['refreshes']} refreshes"
              f"{', backend context switches %.1f' % res['backend_ctxt'] if 'backend_ctxt' in res else ''})"
                      f"{'  LEFT OUT: ' + res['invalid'] if 'invalid' in res else ''}", file=sys.stderr, flush=True)
    return results


def med(rs, key):
    v = [r[key] for r in rs if "invalid" not in r]
    return statistics.median(v) if v else float("nan")


def round_ratio(res, label, fkey="floor"):
    """Median over the rounds of total / the floor's total of the same round (the load of the
    machine changes between rounds, not within one)."""
    if fkey not in res:
        return None
    v = [(r["client_ms"] + r["server_ms"]) / (f["client_ms"] + f["server_ms"])
         for r, f in zip(res[label], res[fkey]) if "invalid" not in r and "invalid" not in f]
    return statistics.median(v) if v else None


def run_layouts():
    """--layouts: one server process per layout, each in its own PID namespace (its pgtreed sees
    its own clusters only), all set up at once, measured in turn round after round."""
    layouts = [tuple(int(x) for x in spec.split("x")) for spec in args.layouts.split(",")]
    passthrough = []
    for b in args.build:
        passthrough += ["--build", b]
    passthrough += ["--window", str(args.window), "--interval", str(args.interval), "--tools", args.tools]
    servers = []
    for n_clusters, per in layouts:
        argv = [sys.executable, os.path.abspath(__file__), "--in-namespace", "--serve", "--scales",
                str(n_clusters * per), "--clusters", str(n_clusters)] + passthrough
        if os.geteuid() == 0:
            argv = ["unshare", "--pid", "--fork", "--mount-proc"] + argv
        servers.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    try:
        for p in servers:
            if "ready" not in json.loads(p.stdout.readline() or "{}"):
                raise RuntimeError("a layout failed to set up")
        results = {}
        for r in range(args.rounds):
            for (n_clusters, per), p in zip(layouts, servers):
                p.stdin.write("measure\n")
                p.stdin.flush()
                got = json.loads(p.stdout.readline())
                for label, res in got.items():
                    results.setdefault(f"{n_clusters}x{per} {label}", []).append(res)
                    print(f"  round {r + 1}: {n_clusters:>2} x {per:<5} {label:22} client {res['client_ms']:8.2f} ms  "
                          f"server {res['server_ms']:8.2f} ms  ({res['refreshes']} refreshes)"
                          f"{'  LEFT OUT: ' + res['invalid'] if 'invalid' in res else ''}", file=sys.stderr, flush=True)
    finally:
        for p in servers:
            with contextlib.suppress(Exception):
                p.stdin.close()
        for p in servers:
            p.wait(300)
    print(f"\nlayouts: {args.layouts}; interval {args.interval:g} s, window {args.window:g} s, {args.rounds} rounds; "
          f"load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print("CPU per refresh (ms), client + its backends; ratio = / the first layout's, median of the rounds' own ratios")
    first = f"{layouts[0][0]}x{layouts[0][1]}"
    for key, rs in results.items():
        lay, label = key.split(" ", 1)
        c, sv = med(rs, "client_ms"), med(rs, "server_ms")
        base = results[f"{first} {label}"]
        v = [(x["client_ms"] + x["server_ms"]) / (y["client_ms"] + y["server_ms"]) for x, y in zip(rs, base)
             if "invalid" not in x and "invalid" not in y]
        ratio = f"{statistics.median(v):6.2f}x" if v else ""
        print(f"{lay:>9} | {label:22} | {c:8.2f} | {sv:8.2f} | {c + sv:8.2f} | {ratio}  "
              f"(rounds: {', '.join(f'{x:.2f}' for x in v)})")
    sys.exit(0)


if args.layouts:
    run_layouts()

all_results = {}
for scale in [int(x) for x in args.scales.split(",")]:
    all_results[scale] = run_scale(scale)

cpu = open("/proc/cpuinfo").read()
model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("model name")), "?")
print(f"\nmachine: {os.cpu_count()} CPUs, {model}, kernel {os.uname().release}; interval {args.interval:g} s, "
      f"window {args.window:g} s, {args.rounds} rounds, {args.clusters} cluster(s), +{args.extra_procs} host processes")
print(f"load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
print("CPU per refresh (ms), client + its backend = total; median of the rounds' means; / floor = total / the "
      "floor's; per round = median of the rounds' own ratios (rounds where pgtreed reconnected left out)")
print(f"{'connections':>11} | {'tool':22} | {'client':>8} | {'backend':>8} | {'total':>8} | {'/ floor':>8} | "
      f"{'per round':>9}")
for scale, res in all_results.items():
    fkey = "floor" if "floor" in res else "floor +0" if "floor +0" in res else None
    floor = med(res[fkey], "client_ms") + med(res[fkey], "server_ms") if fkey else None
    for label, rs in res.items():
        c, s = med(rs, "client_ms"), med(rs, "server_ms")
        ratio = f"{(c + s) / floor:7.2f}x" if floor else ""
        rr = round_ratio(res, label, fkey)
        per = f"{rr:8.2f}x" if rr else ""
        print(f"{scale:>11} | {label:22} | {c:8.2f} | {s:8.2f} | {c + s:8.2f} | {ratio:>8} | {per:>9}")
if args.host_size:
    print(f"host size: pgtreed with +{args.host_size} host processes / with +0, median of the rounds' own ratios")
    for scale, res in all_results.items():
        for label in [k[:-3] for k in res if k.endswith(" +0") and k.startswith("pgtreed")]:
            a, b = res[f"{label} +0"], res[f"{label} +{args.host_size}"]
            v = [(y["client_ms"] + y["server_ms"]) / (x["client_ms"] + x["server_ms"]) for x, y in zip(a, b)
                 if "invalid" not in x and "invalid" not in y]
            if v:
                print(f"{scale:>11} | {label:22} | {statistics.median(v):6.2f}x  (rounds: "
                      f"{', '.join(f'{x:.2f}' for x in v)})")
if args.json:
    with open(args.json, "w") as f:
        json.dump(all_results, f, indent=1)
if args.latency:
    sys.stdout.flush()
    subprocess.run([sys.executable, os.path.join(HERE, "latency.py"), "--build",
                    builds[-1][1]], check=True)
