#!/usr/bin/python3
"""Benchmark: one refresh of a known cluster with 300 connections, and one full
discovery scan, on a host with ~100, 1,000 and 4,000 extra processes, against
`ps -eo pid,ppid,stat,args` measured in the same run. Prints ratios.

usage: tests/bench/refresh.py [BUILD_DIR] [--connections N] [--extra 100,1000,4000]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import time

from benchlib import HERE, busy_cluster

ap = argparse.ArgumentParser()
ap.add_argument("build", nargs="?", default=os.path.join(HERE, "..", "..", "build"))
ap.add_argument("--connections", type=int, default=300)
ap.add_argument("--extra", default="100,1000,4000")
ap.add_argument("--rounds", type=int, default=15)
args = ap.parse_args()
bench_scan = os.path.join(args.build, "tests", "bench", "bench-scan")


def time_ps(rounds):
    """Median wall and CPU (user+sys of the child) of one `ps -eo pid,ppid,stat,args`."""
    walls, cpus = [], []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(["ps", "-eo", "pid,ppid,stat,args"], stdout=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return statistics.median(walls), statistics.median(cpus)


def count_procs():
    return sum(1 for d in os.listdir("/proc") if d.isdigit())


extra_procs = []


def spawn_extra(target):
    while len(extra_procs) < target:
        extra_procs.append(subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL))


with busy_cluster("bench", args.connections) as c:
    try:
        print(f"cluster with {args.connections} connections; {os.cpu_count()} cores")
        print(f"{'extra':>6} {'host':>6} | {'ps wall':>9} {'ps cpu':>9} | {'full wall':>9} {'full cpu':>9} "
              f"{'read':>5} | {'refr wall':>9} {'refr cpu':>9} {'read':>5} | "
              f"{'ps/refresh':>10} {'ps/full':>8}")
        rows = []
        for extra in [int(x) for x in args.extra.split(",")]:
            spawn_extra(extra)
            time.sleep(0.5)
            ps_wall, ps_cpu = time_ps(args.rounds)
            out = subprocess.run([bench_scan, str(args.rounds)], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"bench-scan failed: {out.stderr}")
            b = json.loads(out.stdout)
            ps_wall2, ps_cpu2 = time_ps(args.rounds)  # again: the machine is noisy
            ps_wall, ps_cpu = min(ps_wall, ps_wall2), min(ps_cpu, ps_cpu2)
            row = dict(extra=extra, host=count_procs(), ps_wall=ps_wall, ps_cpu=ps_cpu, **b,
                       ratio_refresh=ps_wall / b["refresh_wall_s"], ratio_full=ps_wall / b["full_wall_s"])
            rows.append(row)
            print(f"{extra:>6} {row['host']:>6} | {ps_wall*1e3:>7.2f}ms {ps_cpu*1e3:>7.2f}ms | "
                  f"{b['full_wall_s']*1e3:>7.2f}ms {b['full_cpu_s']*1e3:>7.2f}ms {b['full_examined']:>5} | "
                  f"{b['refresh_wall_s']*1e3:>7.2f}ms {b['refresh_cpu_s']*1e3:>7.2f}ms {b['refresh_examined']:>5} | "
                  f"{row['ratio_refresh']:>9.1f}x {row['ratio_full']:>7.2f}x", flush=True)
        first, last = rows[0], rows[-1]
        print(f"refresh cost growth from {first['host']} to {last['host']} host processes: "
              f"{last['refresh_wall_s'] / first['refresh_wall_s']:.2f}x "
              f"(host grew {last['host'] / first['host']:.1f}x)")
        print("goal: ps/refresh >= 10x at 4000 extra; ps/full >= 1x")
    finally:
        for p in extra_procs:
            p.terminate()
        for p in extra_procs:
            p.wait()
