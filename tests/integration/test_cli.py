"""The client behaves like the Linux tools around it (issue 11, part E): per-command help,
options before or after the command, --cluster on every command, -o/--no-headings/--raw tables,
JSON without float noise and [] for empty results, pgtreed's own connections out of session
listings, and bash completion that asks pgtreed for pids, clusters and application tags."""
import json
import os
import re
import subprocess
import tempfile

import pytest

from conftest import ROOT, Daemon
from pgharness import wait_for

TAG = f"cli{os.getpid() % 100000}"
COMPLETION = os.path.join(ROOT, "completion", "pgtree")


@pytest.fixture(scope="module")
def daemon(pgtreed, pgtree_client, cluster):
    d = Daemon(pgtreed, pgtree_client, f"""[daemon]
interval = 250ms
[cluster {TAG}]
data_directory = {cluster.data}
""")
    d.start()
    wait_for(lambda: d.client_json("status")["cycles"] >= 2, 30, what="two cycles")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def session(daemon, cluster):
    pid = cluster.run_async("SELECT pg_sleep(600)", application_name=f"{TAG}-app")[1]
    wait_for(lambda: any(s["pid"] == pid for s in daemon.client_json("sessions", "--cluster", TAG)["sessions"]), 30,
             what="the session listed")
    yield pid
    cluster.sql("SELECT pg_terminate_backend(%s)", (pid,))


def run(d, *args):
    return subprocess.run([d.client_path, *args], capture_output=True, text=True, timeout=60)


def test_per_command_help(pgtree_client):
    for argv in (["sessions", "--help"], ["help", "sessions"], ["--help", "sessions"], ["sessions", "-h"]):
        p = subprocess.run([pgtree_client, *argv], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, (argv, p.stderr)
        assert p.stdout.startswith("Usage: pgtree [OPTIONS] sessions "), (argv, p.stdout)
        assert "--all" in p.stdout and "--no-headings" in p.stdout and "--cluster NAME" in p.stdout
        assert "terminate" not in p.stdout.split("Options of every command")[0]
    p = subprocess.run([pgtree_client, "help", "terminate"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("Usage: pgtree [OPTIONS] terminate PID | --app NAME")
    assert "--dry-run" in p.stdout
    p = subprocess.run([pgtree_client, "help", "nosuch"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "no command 'nosuch'" in p.stderr
    p = subprocess.run([pgtree_client, "sessions", "--bogus"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "see pgtree sessions --help" in p.stderr


def test_options_before_or_after_the_command(daemon):
    before = run(daemon, "--socket", daemon.socket, "--json", "tree")
    after = run(daemon, "tree", "--json", "--socket", daemon.socket)
    assert before.returncode == 0 and after.returncode == 0, after.stderr
    assert json.loads(after.stdout).keys() == json.loads(before.stdout).keys()
    assert json.loads(run(daemon, "status", "--socket", daemon.socket, "--json").stdout)["cycles"] >= 2


def test_cluster_on_every_command(daemon, cluster, session):
    tree = daemon.client("tree", "--cluster", TAG).stdout
    assert [l for l in tree.splitlines() if l.startswith("cluster ")] == \
        [l for l in tree.splitlines() if l.startswith("cluster ") and cluster.data in l], tree
    j = daemon.client_json("tree", "--cluster", cluster.data)  # the data directory names it too
    assert len(j["clusters"]) == 1 and j["clusters"][0]["postmaster"]["data_directory"] == cluster.data
    assert "no cluster named nosuch" in daemon.client("tree", "--cluster", "nosuch").stdout
    assert daemon.client_json("sessions", "--cluster", "nosuch")["sessions"] == []
    assert {s["cluster"] for s in daemon.client_json("sessions", "--cluster", TAG)["sessions"]} == {j["clusters"][0]["name"]}
    assert daemon.client_json("long", "--cluster", "nosuch")["findings"] == []
    assert daemon.client_json("locks", "--cluster", TAG)["clusters"][0]["chains"] == []
    st = daemon.client("status", "--cluster", TAG).stdout.splitlines()
    assert st[0].split()[:3] == ["NAME", "PID", "PORT"] and cluster.data in st[1], st
    # acting is limited to the cluster: a pid of this cluster under another name is not found
    p = daemon.client("terminate", str(session), "--cluster", "nosuch", check=False)
    assert p.returncode == 6, p.stderr
    p = daemon.client("show", str(session), "--cluster", "nosuch", check=False)
    assert p.returncode == 6 and f"not a process of cluster nosuch" in p.stderr
    assert daemon.client("show", str(session), "--cluster", TAG).returncode == 0
    p = daemon.client("reload", "--cluster", TAG, check=False)
    assert p.returncode == 2 and "whole configuration" in p.stderr


def test_columns_headings_raw(daemon, session):
    out = daemon.client("sessions", "--cluster", TAG, "-o", "pid,user,state,query").stdout.splitlines()
    assert out[0].split("\t") == ["PID", "USER", "STATE", "QUERY"]
    row = next(l.split("\t") for l in out if l.startswith(f"{session}\t"))
    assert row == [str(session), "postgres", "active", "SELECT pg_sleep(600)"]
    out = daemon.client("sessions", "--cluster", TAG, "-o", "pid", "--no-headings").stdout.split()
    assert str(session) in out and "PID" not in out
    out = daemon.client("sessions", "--cluster", TAG, "--raw", "-o", "pid,query", "--no-headings").stdout
    assert f"{session} SELECT\\x20pg_sleep(600)\n" in out, out
    out = daemon.client("sessions", "--cluster", TAG, "-o", "+blocked_by").stdout.splitlines()[0].split("\t")
    assert out[0] == "PID" and out[-1] == "BLOCKED_BY" and "QUERY" in out
    p = daemon.client("sessions", "-o", "pid,nosuch", check=False)
    assert p.returncode == 2 and "unknown column 'nosuch'" in p.stderr and "blocked_by" in p.stderr
    p = daemon.client("tree", "-o", "pid", check=False)
    assert p.returncode == 2
    out = daemon.client("clusters", "--cluster", TAG, "-o", "name,sessions", "--no-headings").stdout.split("\t")
    assert out[0] == TAG or out[0].strip() and int(out[1]) >= 1, out


def test_json_numbers_and_empty_results(daemon):
    text = run(daemon, "--socket", daemon.socket, "--json", "status").stdout
    floats = re.findall(r'"(?:last_cycle_s|interval_s)": ?([0-9.eE+-]+)', text)
    assert len(floats) == 2, text
    for f in floats:
        assert f == repr(float(f)), f"float noise: {f}"   # the shortest text that reads back the same
    assert json.loads(text)["interval_s"] == 0.25
    with tempfile.TemporaryDirectory() as empty:
        p = run(daemon, "events", "--json", "--directory", empty)
        assert p.returncode == 0 and json.loads(p.stdout) == [], (p.stdout, p.stderr)


def test_own_connections_are_not_sessions(pgtreed, pgtree_client, cluster, daemon, session):
    """Only the daemon's own connection (known by its backend pid) is left out of sessions; a
    session calling itself "pgtreed" — another pgtreed's, or anyone's — is listed like any other:
    application_name is the client's to choose and must not hide a session from the operator."""
    other = Daemon(pgtreed, pgtree_client, f"[daemon]\ninterval = 250ms\n[cluster x]\ndata_directory = {cluster.data}\n")
    _, disguised, holder = cluster.run_async("SELECT pg_sleep(300)", application_name="pgtreed")
    try:
        with other:
            wait_for(lambda: len(cluster.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'pgtreed'")) >= 3,
                     30, what="both pgtreeds and the disguised session connected")

            def named():
                return [s for s in daemon.client_json("sessions", "--cluster", TAG)["sessions"]
                        if s.get("application_name") == "pgtreed"]
            # the other pgtreed's connection and the disguised session, not this daemon's own
            listed = wait_for(lambda: len(named()) >= 2 and named(), 20, what="both listed without --all")
            assert disguised in [s["pid"] for s in listed]
            assert not [s for s in listed if s.get("pgtree_connection")], listed
            assert str(disguised) in daemon.client("sessions", "--cluster", TAG).stdout
            everything = [s for s in daemon.client_json("sessions", "--all", "--cluster", TAG)["sessions"]
                          if s.get("application_name") == "pgtreed"]
            assert len(everything) == len(named()) + 1, everything   # + this daemon's own
    finally:
        cluster.sql("SELECT pg_cancel_backend(%s)", (disguised,))
        holder["conn"].close()

    def own():
        return [s for s in daemon.client_json("sessions", "--all", "--cluster", TAG)["sessions"]
                if s.get("pgtree_connection")]
    mine = wait_for(own, 20, what="pgtreed's own connection listed with --all")
    assert all(s.get("application_name") == "pgtreed" for s in mine)
    listed = daemon.client_json("sessions", "--cluster", TAG)["sessions"]
    assert session in [s["pid"] for s in listed]
    assert not [s for s in listed if s.get("pgtree_connection")], listed
    assert not [s for s in listed if s["pid"] in [m["pid"] for m in mine]], listed


def complete(d, line):
    """What bash completion offers for line (the cursor at its end)."""
    script = f"""
[ -r /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion
. {COMPLETION}
line={json.dumps(line)}
read -ra COMP_WORDS <<< "$line"
[[ $line == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
COMP_LINE=$line COMP_POINT=${{#line}}
_pgtree
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.split("\n")[:-1]


def test_bash_completion(daemon, session):
    c = daemon.client_path
    s = f"{c} --socket {daemon.socket}"
    assert complete(daemon, f"{c} ter") == ["terminate"]
    assert set(complete(daemon, f"{c} ")) >= {"status", "tree", "sessions", "locks", "clusters", "top", "help"}
    assert "--no-headings" in complete(daemon, f"{c} sessions --no")
    assert complete(daemon, f"{c} sessions -o pid,us") == ["pid,user"]
    pids = complete(daemon, f"{s} terminate ")
    assert str(session) in pids
    own = [str(x["pid"]) for x in daemon.client_json("sessions", "--all")["sessions"] if x.get("pgtree_connection")]
    assert own and not set(own) & set(pids), (own, pids)   # pgtreed's connections are not offered
    name = daemon.client_json("tree", "--cluster", TAG)["clusters"][0]["name"]
    assert name in complete(daemon, f"{s} tree --cluster ")
    assert f"{TAG}-app" in complete(daemon, f"{s} terminate --app {TAG}")
    assert complete(daemon, f"{c} help ses") == ["sessions"]
    assert "--dry-run" in complete(daemon, f"{c} terminate --d")
