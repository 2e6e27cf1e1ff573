#!/usr/bin/python3
"""Benchmark (issue 4): pgtreed's own cost at a 1 s interval with 500 connections over 60 s — CPU
time (from /proc/PID/stat) as a share of one core, and peak RSS (VmHWM) — against running `ps -e`
once a second in the same run.

usage: tests/bench/daemon.py [BUILD_DIR] [--connections 500] [--seconds 60]"""
import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from pgharness import Cluster, stop_on_signals  # noqa: E402

stop_on_signals()
ap = argparse.ArgumentParser()
ap.add_argument("build", nargs="?", default=os.path.join(ROOT, "build"))
ap.add_argument("--connections", type=int, default=500)
ap.add_argument("--seconds", type=int, default=60)
args = ap.parse_args()
hz = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / hz


def hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


with Cluster(name="benchdaemon", settings={"max_connections": args.connections + 20}) as c:
    conns = [c.connect(application_name=f"FakeParent:{i % 7}") for i in range(args.connections)]
    d = tempfile.mkdtemp(prefix="pgtree-bench-")
    cfg = os.path.join(d, "pgtree.ini")
    with open(cfg, "w") as f:
        f.write(f"[daemon]\ninterval = 1s\nsocket = {d}/pgtree.sock\n")
    daemon = subprocess.Popen([os.path.join(args.build, "daemon", "pgtreed"), "--config", cfg],
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # startup, discovery, first connection
        c0 = cpu_seconds(daemon.pid)
        t0 = time.monotonic()
        ps_cpu = 0.0
        while time.monotonic() - t0 < args.seconds:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(["ps", "-e"], stdout=subprocess.DEVNULL)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            ps_cpu += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            time.sleep(max(0, 1 - (time.monotonic() - t0) % 1))
        elapsed = time.monotonic() - t0
        dcpu = cpu_seconds(daemon.pid) - c0
        hwm = hwm_kb(daemon.pid)
        print(f"{args.connections} connections, interval 1 s, {elapsed:.0f} s")
        print(f"pgtreed: CPU {dcpu:.3f} s = {100 * dcpu / elapsed:.3f} % of a core, peak RSS {hwm / 1024:.1f} MB "
              f"(goal < 0.5 %, < 20 MB)")
        print(f"ps -e every second: CPU {ps_cpu:.3f} s = {100 * ps_cpu / elapsed:.3f} % of a core")
        print(f"ratio ps -e / pgtreed: {ps_cpu / dcpu:.2f}x")
    finally:
        daemon.terminate()
        daemon.wait(10)
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        import shutil
        shutil.rmtree(d, ignore_errors=True)
