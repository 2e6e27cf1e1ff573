#!/usr/bin/python3
"""Benchmark (issue 5): requests per second and latency of io.pgtree.Tree with 500 backends, 1 and
50 concurrent clients, against one `psql -c 'SELECT * FROM pg_stat_activity'` measured in the
same run.

usage: tests/bench/control_socket.py [BUILD_DIR] [--connections 500]"""
import argparse
import json
import os
import statistics
import subprocess
import time

from benchlib import ROOT, busy_cluster, daemon
ap = argparse.ArgumentParser()
ap.add_argument("build", nargs="?", default=os.path.join(ROOT, "build"))
ap.add_argument("--connections", type=int, default=500)
args = ap.parse_args()

with busy_cluster("benchsock", args.connections) as c, daemon(args.build, "interval = 1s\n") as (proc, sock):
    time.sleep(2)
    psql = []
    for _ in range(20):
        t0 = time.perf_counter()
        subprocess.run(["psql", "-X", "-q", "-h", c.base, "-p", str(c.port), "-U", "postgres", "-d", "postgres",
                        "-c", "SELECT * FROM pg_stat_activity"], stdout=subprocess.DEVNULL, check=True)
        psql.append(time.perf_counter() - t0)
    psql_ms = statistics.median(psql) * 1e3
    bench = os.path.join(args.build, "tests", "bench", "bench-socket")
    rows = []
    for clients, reqs in ((1, 2000), (50, 200)):
        out = subprocess.run([bench, sock, str(clients), str(reqs)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout))
    print(f"{args.connections} backends; Tree reply {rows[0]['reply_bytes'] / 1024:.0f} KiB")
    print(f"psql -c 'SELECT * FROM pg_stat_activity': median {psql_ms:.1f} ms per run")
    for r in rows:
        print(f"Tree, {r['clients']:>2} client(s): {r['rps']:8.0f} req/s, p50 {r['p50_ms']:.3f} ms, "
              f"p99 {r['p99_ms']:.3f} ms; one psql run costs {psql_ms / r['p50_ms']:.0f}x a Tree request (p50)")
