#!/usr/bin/python3
"""Benchmark (issue 5): requests per second and latency of io.pgtree.Tree with 500 backends, 1 and
50 concurrent clients, against one `psql -c 'SELECT * FROM pg_stat_activity'` measured in the
same run.

usage: tests/bench/control_socket.py [BUILD_DIR] [--connections 500]"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from pgharness import Cluster, stop_on_signals, wait_for  # noqa: E402

stop_on_signals()
ap = argparse.ArgumentParser()
ap.add_argument("build", nargs="?", default=os.path.join(ROOT, "build"))
ap.add_argument("--connections", type=int, default=500)
args = ap.parse_args()

with Cluster(name="benchsock", settings={"max_connections": args.connections + 20}) as c:
    conns = [c.connect(application_name=f"FakeParent:{i % 7}") for i in range(args.connections)]
    d = tempfile.mkdtemp(prefix="pgtree-bench-")
    sock = os.path.join(d, "pgtree.sock")
    with open(os.path.join(d, "pgtree.ini"), "w") as f:
        f.write(f"[daemon]\ninterval = 1s\nsocket = {sock}\n")
    daemon = subprocess.Popen([os.path.join(args.build, "daemon", "pgtreed"), "--config", os.path.join(d, "pgtree.ini")],
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock), 15, what="socket")
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
    finally:
        daemon.terminate()
        daemon.wait(10)
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        import shutil
        shutil.rmtree(d, ignore_errors=True)
