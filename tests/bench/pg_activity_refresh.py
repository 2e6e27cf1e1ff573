#!/usr/bin/python3
"""Time pg_activity refresh cycles without a TTY.

Runs pg_activity's own UI loop (pgactivity.ui.main, the same code path as the
pg_activity command) with a blessed Terminal that writes to an in-memory
buffer, and replaces Terminal.inkey() (the wait between refreshes) with a hook
that records wall and CPU time at the end of each refresh cycle. A refresh
cycle = pg_get_server_information + pg_get_activities + psutil per backend
(ps_complete) + rendering of the screen (LINES x COLUMNS from the environment).

usage: pga_refresh.py REFRESHES SLEEP_S [pg_activity options ...]
  REFRESHES  number of refresh cycles, then the hook sends 'q'
  SLEEP_S    pause between cycles (pg_activity's --refresh minimum is 0.5 s;
             psutil's cpu_percent() measures over this interval)
Prints one line of key=value: first refresh (includes psutil object creation
for every backend), then median/min wall and CPU of the following refreshes,
and the CPU time the pg_activity connection's backend used per refresh.
"""
import contextlib
import io
import os
import socket
import statistics
import sys
import time

from blessed import Terminal
from blessed.keyboard import Keystroke

from pgactivity import cli, data, types, ui

n_refresh = int(sys.argv[1])
pause = float(sys.argv[2])
sys.argv = ["pg_activity"] + sys.argv[3:]

t_start = time.perf_counter()
args = cli.get_parser().parse_args()
filters = types.Filters.from_options(args.filters)
dataobj = data.pg_connect(args, args.connection_string,
                          min_duration=args.minduration, filters=filters)
ci = dataobj.pg_conn.info
host = types.Host(socket.gethostname(), ci.user, ci.host, int(ci.port), ci.dbname)
backend_pid = ci.backend_pid


def backend_cpu_ns():
    try:
        with open(f"/proc/{backend_pid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


marks = []  # (wall s, process CPU s, backend on-CPU ns): end1, start2, end2, ...


class BenchTerminal(Terminal):
    def inkey(self, timeout=None, esc_delay=0.35):
        marks.append((time.perf_counter(), time.process_time(), backend_cpu_ns()))
        if len(marks) >= 2 * n_refresh - 1:
            return Keystroke("q")
        if pause > 0:
            time.sleep(pause)
        marks.append((time.perf_counter(), time.process_time(), backend_cpu_ns()))
        return Keystroke("")


out = io.StringIO()
term = BenchTerminal(kind="xterm-256color", stream=out, force_styling=True)
m0 = (time.perf_counter(), time.process_time(), backend_cpu_ns())
with contextlib.redirect_stdout(out):  # views print() to sys.stdout
    ui.main(term, dataobj, host, args)

# marks: end1, start2, end2, start3, end3, ...
first_wall = (marks[0][0] - m0[0]) * 1e3
first_cpu = (marks[0][1] - m0[1]) * 1e3
walls, cpus, srv = [], [], []
for i in range(1, len(marks) - 1, 2):
    s, e = marks[i], marks[i + 1]
    walls.append((e[0] - s[0]) * 1e3)
    cpus.append((e[1] - s[1]) * 1e3)
    srv.append((e[2] - s[2]) / 1e6)
print(
    f"tool=pg_activity refreshes={n_refresh} startup_to_first_screen_ms="
    f"{(marks[0][0] - t_start) * 1e3:.1f} first_refresh_wall_ms={first_wall:.1f} "
    f"first_refresh_cpu_ms={first_cpu:.1f} "
    f"steady_wall_med_ms={statistics.median(walls):.1f} steady_wall_min_ms={min(walls):.1f} "
    f"steady_cpu_med_ms={statistics.median(cpus):.1f} steady_cpu_mean_ms={statistics.mean(cpus):.1f} "
    f"backend_cpu_per_refresh_ms={statistics.median(srv):.2f} backend_cpu_mean_ms={statistics.mean(srv):.3f}"
    if walls else
    f"tool=pg_activity refreshes={n_refresh} startup_to_first_screen_ms="
    f"{(marks[0][0] - t_start) * 1e3:.1f} first_refresh_wall_ms={first_wall:.1f} "
    f"first_refresh_cpu_ms={first_cpu:.1f}"
)
