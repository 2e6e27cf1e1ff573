#!/usr/bin/python3
"""Benchmark (issue 13): the cost of looking below the backends (foreign_process) per refresh and
per cycle, against a baseline build (0.1.0 / main before it) in the same run, on one cluster with
N connections (most idle, some active: those are read every refresh, and their children with
them). Runs each build's bench-scan and bench-cycle in turns and prints the medians and ratios.
Within this build's programs, refreshes and cycles with and without the descendant scan run in
turn in the same process (scanner_set_descendants): the "nodesc" figures, the cost of the scan
itself on the same cluster at the same moment. BASELINE_BUILD "-": no baseline build.

usage: tests/bench/foreign.py BASELINE_BUILD [BUILD] [--connections 500] [--active 20] [--turns 5]"""
import argparse
import json
import os
import statistics
import subprocess

from benchlib import HERE, busy_cluster

ap = argparse.ArgumentParser()
ap.add_argument("baseline")
ap.add_argument("build", nargs="?", default=os.path.join(HERE, "..", "..", "build"))
ap.add_argument("--connections", type=int, default=500)
ap.add_argument("--active", type=int, default=10)
ap.add_argument("--turns", type=int, default=5)
ap.add_argument("--rounds", type=int, default=40)
args = ap.parse_args()


def run(build, prog, *argv):
    """Retried: other clusters of a shared host that stop make a refresh a discovery (refused)."""
    for attempt in range(5):
        out = subprocess.run([os.path.join(build, "tests", "bench", prog), *argv], capture_output=True, text=True,
                             timeout=600)
        if out.returncode == 0:
            return json.loads(out.stdout)
    raise RuntimeError(f"{prog} failed 5 times: {out.stderr[-500:]}")


# --connections in all: the idle ones and the active ones (20 more of headroom)
with busy_cluster("benchforeign", args.connections - args.active, extra=args.active) as c:
    for _ in range(args.active):  # sessions pg_stat_activity shows active: read every refresh
        c.run_async("SELECT pg_sleep(3600)")
    conninfo = f"host={c.base} port={c.port} dbname=postgres user=pgtree"
    builds = ([("baseline", args.baseline)] if args.baseline != "-" else []) + [("this", args.build)]
    res = {key: {} for key, _ in builds}
    res["nodesc"] = {}
    for _ in range(args.turns):
        for key, build in builds:
            s = run(build, "bench-scan", str(args.rounds))
            cy = run(build, "bench-cycle", conninfo, str(c.pm_pid), str(args.rounds))
            for metric, v in (("refresh_cpu", s["refresh_cpu_s"]), ("refresh_wall", s["refresh_wall_s"]),
                              ("cycle_cpu", cy["cycle_cpu_s"]), ("cycle_wall", cy["cycle_wall_s"])):
                res[key].setdefault(metric, []).append(v)
            if key == "this":
                for metric, v in (("refresh_cpu", s["refresh_nodesc_cpu_s"]), ("refresh_wall", s["refresh_nodesc_wall_s"]),
                                  ("cycle_cpu", cy["cycle_nodesc_cpu_s"]), ("cycle_wall", cy["cycle_nodesc_wall_s"])):
                    res["nodesc"].setdefault(metric, []).append(v)
    print(f"cluster: {args.connections - args.active} idle + {args.active} active connections; {args.turns} turns of "
          f"{args.rounds} rounds; medians over turns")
    for base in (["baseline"] if "baseline" in res else []) + ["nodesc"]:
        print(f"this build against {'the baseline build' if base == 'baseline' else 'itself without the descendant scan (interleaved)'}:")
        for metric in ("refresh_cpu", "refresh_wall", "cycle_cpu", "cycle_wall"):
            b = statistics.median(res[base][metric])
            t = statistics.median(res["this"][metric])
            per_turn = statistics.median(x / y for x, y in zip(res["this"][metric], res[base][metric]) if y)
            print(f"  {metric:13} {base} {b:.6g}  this {t:.6g}  ratio of medians {t / b if b else float('nan'):.3f}"
                  f"  median of per-turn ratios {per_turn:.3f}")
    print(json.dumps(res))
