#!/usr/bin/python3
"""Benchmark (issue 3): the CPU time of one full pgtree cycle (refresh, query, join, findings)
with 500 connections, against, in the same run, (a) the floor: one prepared pg_stat_activity
query plus reading /proc/PID/stat of the cluster's processes, and (b) one refresh of
pg_activity (Debian's pg-activity, timed by shared/bench/pg_activity_refresh.py).

usage: tests/bench/cycle.py [BUILD_DIR] [--connections 500] [--rounds 30]"""
import argparse
import json
import os
import re
import subprocess

from benchlib import HERE, ROOT, busy_cluster
ap = argparse.ArgumentParser()
ap.add_argument("build", nargs="?", default=os.path.join(ROOT, "build"))
ap.add_argument("--connections", type=int, default=500)
ap.add_argument("--rounds", type=int, default=30)
ap.add_argument("--lines", default="60,600", help="pg_activity screen heights to measure")
args = ap.parse_args()
subprocess.run([os.path.join(ROOT, "scripts", "install-deps"), "--bench"], check=True)
pga_script = os.path.join(ROOT, "..", "shared", "bench", "pg_activity_refresh.py")
if not os.path.exists(pga_script):
    pga_script = os.path.join(HERE, "pg_activity_refresh.py")

with busy_cluster("benchcycle", args.connections) as c:
    conninfo = f"host={c.base} port={c.port} dbname=postgres user=pgtree"
    out = subprocess.run([os.path.join(args.build, "tests", "bench", "bench-cycle"), conninfo, str(c.pm_pid),
                          str(args.rounds)], capture_output=True, text=True, check=True)
    b = json.loads(out.stdout)
    pga = {}
    for lines in args.lines.split(","):
        env = dict(os.environ, LINES=lines, COLUMNS="200")
        p = subprocess.run(["/usr/bin/python3", pga_script, "10", "0.5", "-h", c.base, "-p", str(c.port),
                            "-U", "postgres", "-d", "postgres"], capture_output=True, text=True, env=env, timeout=300)
        m = re.search(r"steady_cpu_med_ms=([0-9.]+)", p.stdout)
        w = re.search(r"steady_wall_med_ms=([0-9.]+)", p.stdout)
        if not m:
            print("pg_activity failed: " + (p.stdout + p.stderr)[-500:])
            continue
        pga[lines] = (float(m.group(1)) / 1e3, float(w.group(1)))
    print(f"cluster with {args.connections} connections, {b['cycle_processes']} processes in the tree, "
          f"activity joined: {b['cycle_activity_joined']}")
    print(f"{'':24} {'CPU/round':>12} {'wall/round':>12}")
    print(f"{'floor (query + stat)':24} {b['floor_cpu_s'] * 1e3:>10.2f}ms {b['floor_wall_s'] * 1e3:>10.2f}ms")
    print(f"{'pgtree cycle':24} {b['cycle_cpu_s'] * 1e3:>10.2f}ms {b['cycle_wall_s'] * 1e3:>10.2f}ms"
          f"   (mean CPU {b['cycle_cpu_mean_s'] * 1e3:.2f}ms; floor mean {b['floor_cpu_mean_s'] * 1e3:.2f}ms)")
    for lines, (cpu, wall) in pga.items():
        print(f"{'pg_activity, ' + lines + ' lines':24} {cpu * 1e3:>10.2f}ms {wall:>10.2f}ms")
    print(f"cycle / floor: {b['cycle_cpu_s'] / b['floor_cpu_s']:.2f}x median, "
          f"{b['cycle_cpu_mean_s'] / b['floor_cpu_mean_s']:.2f}x mean (goal <= 1.5x)")
    for lines, (cpu, wall) in pga.items():
        print(f"pg_activity ({lines} lines) / cycle: {cpu / b['cycle_cpu_s']:.1f}x (goal >= 10x)")
