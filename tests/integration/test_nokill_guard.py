"""The project sends SIGKILL to no PostgreSQL process, by any route, tests included: this guard
reads the Python and shell of tests/, scripts/ and contrib/ and fails naming FILE:LINE of each
way to send SIGKILL it finds:

- Python: any use of the name SIGKILL (signal.SIGKILL, Signals.SIGKILL, SIGKILL: in os.kill,
  send_signal, pidfd_send_signal, killpg, or kept in a variable first), signal 9 given to one
  of those, a Popen's .kill() (it sends SIGKILL), and a shell command in a string (below);
- shell (and shell commands in Python strings): kill/pkill/killall with -9, -KILL, -SIGKILL,
  -s KILL/9, --signal KILL, and timeout's -s KILL / -k (--kill-after) — at a command's start,
  so that a message or an assertion that mentions "kill -9" or "SIGKILL" (the tests check
  pgtree's refusals) is not taken for one.

A line that kills a program that is not PostgreSQL (a psql client, an exporter) says so with
the marker "# not PostgreSQL:" on a line of the statement, and is accepted.
"""
import ast
import os
import re

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TREES = ("tests", "scripts", "contrib")
SKIP = ("tests/fuzz/corpus",)          # fuzzer inputs, not programs
MARKER = "# not PostgreSQL:"

SIGNALLERS = {"kill", "killpg", "send_signal", "pidfd_send_signal", "pthread_kill"}

# kill / pkill / killall / timeout at a command's start (line start, after ; & | ( ` $( { or
# then/do/else/exec/sudo/runuser -u X --/xargs), asking for SIGKILL
_START = r"(?:^|[;&|(`{]|\$\(|\b(?:then|do|else|exec|xargs|sudo|nohup)\b)\s*(?:\S+=\S*\s+)*"
_KILLSIG = r"(?:-9|-KILL|-SIGKILL|-s\s*(?:9|KILL|SIGKILL)|--signal[= ](?:9|KILL|SIGKILL))\b"
SHELL_KILL = re.compile(
    _START + r"(?:\S*/)?(?:kill|pkill|killall)\b(?:\s+--?\w[\w-]*(?:[= ]\S+)?)*?\s+" + _KILLSIG
    + r"|" + _START + r"(?:\S*/)?timeout\b(?:\s+\S+)*?\s+(?:-s\s*(?:9|KILL|SIGKILL)|--signal[= ](?:9|KILL|SIGKILL)"
    r"|-k\b|--kill-after\b)",
    re.M)


def _is_sigkill(node):
    return (isinstance(node, ast.Attribute) and node.attr == "SIGKILL") or \
        (isinstance(node, ast.Name) and node.id == "SIGKILL") or \
        (isinstance(node, ast.Constant) and node.value in (9, "SIGKILL", "KILL", "9"))


def _python_findings(text):
    """(line, what) of each way to send SIGKILL in Python source text."""
    found = []
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and _is_sigkill(node):
            found.append((node.lineno, node.end_lineno, "uses SIGKILL"))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name in SIGNALLERS and any(isinstance(a, ast.Constant) and _is_sigkill(a) for a in node.args):
                found.append((node.lineno, node.end_lineno, f"{name}() with signal 9"))
            elif isinstance(f, ast.Attribute) and f.attr == "kill" and not node.args and not node.keywords:
                found.append((node.lineno, node.end_lineno, ".kill() (SIGKILL)"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for m in SHELL_KILL.finditer(node.value):
                found.append((node.lineno, node.end_lineno, f"shell command {m.group(0).strip()!r}"))
    return found


def _strip_shell_comment(line):
    """The line without its comment (a # at its start or after a blank, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _shell_findings(text):
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in SHELL_KILL.finditer(_strip_shell_comment(line)):
            found.append((n, n, f"shell command {m.group(0).strip()!r}"))
    return found


def findings(path, text):
    """'path:line: what' for each way to send SIGKILL in text (the file at path), but those of
    a statement marked as not killing PostgreSQL."""
    lines = text.splitlines()
    if path.endswith(".py") or lines[:1] and "python" in lines[0]:
        raw = _python_findings(text)
    else:
        raw = _shell_findings(text)
    out = []
    for first, last, what in raw:
        if any(MARKER in lines[i - 1] for i in range(first, (last or first) + 1) if 0 < i <= len(lines)):
            continue
        out.append(f"{path}:{first}: {what}")
    return sorted(set(out), key=lambda s: (s.split(":")[0], int(s.split(":")[1])))


def programs():
    """(path relative to the root, text) of each Python or shell program under TREES."""
    for tree in TREES:
        for d, dirs, files in os.walk(os.path.join(ROOT, tree)):
            rel_d = os.path.relpath(d, ROOT)
            if any(rel_d == s or rel_d.startswith(s + "/") for s in SKIP):
                dirs[:] = []
                continue
            dirs[:] = [x for x in dirs if not x.startswith(".") and x != "__pycache__"]
            for name in sorted(files):
                path = os.path.join(d, name)
                rel = os.path.relpath(path, ROOT)
                if rel == os.path.relpath(__file__, ROOT):
                    continue
                try:
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                except (UnicodeDecodeError, OSError):
                    continue
                first = text.split("\n", 1)[0]
                if name.endswith((".py", ".sh", ".bash")) or \
                        (first.startswith("#!") and re.search(r"\b(?:ba|da|z)?sh\b|python", first)):
                    yield rel, text


def test_no_sigkill_in_tests_scripts_contrib():
    seen = list(programs())
    # the walk finds the programs it is meant to read
    names = {p for p, _ in seen}
    assert {"tests/integration/pgharness.py", "tests/integration/sandbox", "scripts/test",
            "tests/bench/latency.py"} <= names, sorted(names)
    bad = [f for path, text in seen for f in findings(path, text)]
    assert not bad, "SIGKILL sent (the project never sends it to PostgreSQL, by any route):\n" + "\n".join(bad)


def test_guard_flags_each_route_and_spares_messages():
    """The guard itself: each way to send SIGKILL is flagged at its line; messages, assertions
    and other signals are not; the marker accepts a client's."""
    py = """import os, signal, subprocess
os.kill(c.pm_pid, signal.SIGKILL)
p.send_signal(signal.Signals.SIGKILL)
os.kill(pid, 9)
sig = SIGKILL
proc.kill()
subprocess.run(["sh", "-c", "sleep 1; kill -9 $PID"])
subprocess.run("timeout -s KILL 5 postgres", shell=True)
client.send_signal(signal.SIGKILL)  # not PostgreSQL: a psql client
client.kill()  # not PostgreSQL: a psql client
os.kill(c.pm_pid, signal.SIGTERM)
os.kill(pid, signal.SIGVTALRM)
assert "SIGKILL is refused" in p.stderr
banner("and asks for kill -9, which pgtree refuses")
d.wait_log(rf"test hook: kill\\({pid}, SIGKILL\\): Operation not permitted")
os.kill(pid, 0)
"""
    got = findings("x.py", py)
    assert [int(f.split(":")[1]) for f in got] == [2, 3, 4, 5, 6, 7, 8], got
    sh = """#!/bin/bash
kill -9 "$pid"
kill -s KILL $pid || true
[ -n "$p" ] && kill -KILL -- "-$p"
timeout --kill-after=5 60 pg_ctl start
/bin/kill --signal KILL 42
pkill -9 -x sleep
echo "stop it with kill -TERM $$; never kill -9"
kill -TERM "$p"
# kill -9 would be wrong
kill -0 "$pid" 2>/dev/null
"""
    got = findings("x", sh)
    assert [int(f.split(":")[1]) for f in got] == [2, 3, 4, 5, 6, 7], got
