#!/usr/bin/python3
"""Benchmark (issue 4): pgtreed's own cost at a 1 s interval with 500 connections over 60 s — CPU
time (from /proc/PID/stat) as a share of one core, and peak RSS (VmHWM) — against running `ps -e`
once a second in the same run.

usage: tests/bench/daemon.py [BUILD_DIR] [--connections 500] [--seconds 60]"""
import argparse
import os
import resource
import subprocess
import time

from benchlib import ROOT, busy_cluster, daemon
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


with busy_cluster("benchdaemon", args.connections) as c, daemon(args.build, "interval = 1s\n") as (proc, sock):
    time.sleep(3)  # startup, discovery, first connection
    c0 = cpu_seconds(proc.pid)
    t0 = time.monotonic()
    ps_cpu = 0.0
    while time.monotonic() - t0 < args.seconds:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["ps", "-e"], stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        ps_cpu += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        time.sleep(max(0, 1 - (time.monotonic() - t0) % 1))
    elapsed = time.monotonic() - t0
    dcpu = cpu_seconds(proc.pid) - c0
    hwm = hwm_kb(proc.pid)
    print(f"{args.connections} connections, interval 1 s, {elapsed:.0f} s")
    print(f"pgtreed: CPU {dcpu:.3f} s = {100 * dcpu / elapsed:.3f} % of a core, peak RSS {hwm / 1024:.1f} MB "
          f"(goal < 0.5 %, < 20 MB)")
    print(f"ps -e every second: CPU {ps_cpu:.3f} s = {100 * ps_cpu / elapsed:.3f} % of a core")
    print(f"ratio ps -e / pgtreed: {ps_cpu / max(dcpu, 1 / hz):.2f}x")
