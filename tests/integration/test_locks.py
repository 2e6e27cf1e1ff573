"""Lock chains (issue 11, part D) on a real three-level chain: A holds a row lock and sits idle in
transaction, B waits for A while holding another row lock, C waits for B. pgtree locks shows the
chain, the lock_wait findings name A as root blocker, and a target = blocker rule terminates A
(exactly A: B and C then proceed) when enforcing, and only says so in a dry run."""
import json
import os
import re
import threading

import psycopg2
import pytest

from conftest import Daemon
from pgharness import pid_alive, wait_for

TAG = f"lk{os.getpid() % 100000}"


def config(cluster, enforce):
    return f"""[daemon]
interval = 250ms
query_max_length = 1024
[cluster c]
data_directory = {cluster.data}
enforce = {enforce}
[rule waits]
kind = lock_wait
after = 1s
action = log
[rule blocker]
kind = lock_wait
after = 2s
target = blocker
state = idle in transaction
application_name = {TAG}-a
action = terminate
"""


class Chain:
    def __init__(self, cluster):
        self.cluster = cluster
        cluster.sql(f"DROP TABLE IF EXISTS {TAG}; CREATE TABLE {TAG} (id int PRIMARY KEY, v int); "
                    f"INSERT INTO {TAG} VALUES (1, 0), (2, 0)")
        self.conns = {}
        self.pids = {}
        self.done = {}
        for name in "abc":
            c = cluster.connect(application_name=f"{TAG}-{name}", autocommit=False)
            self.conns[name] = c
            with c.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                self.pids[name] = cur.fetchone()[0]
            c.commit()
        # A: a row lock, then idle in transaction
        self.execute("a", f"UPDATE {TAG} SET v = v + 1 WHERE id = 1 /* the root blocker's query */")
        # B: holds row 2, waits for row 1 (A)
        self.execute("b", f"UPDATE {TAG} SET v = v + 1 WHERE id = 2")
        self.start("b", f"UPDATE {TAG} SET v = v + 10 WHERE id = 1")
        self.wait_blocked("b")
        # C: waits for row 2 (B)
        self.start("c", f"UPDATE {TAG} SET v = v + 100 WHERE id = 2")
        self.wait_blocked("c")

    def execute(self, name, sql):
        with self.conns[name].cursor() as cur:
            cur.execute(sql)

    def start(self, name, sql):
        ev = threading.Event()
        self.done[name] = ev

        def work():
            try:
                self.execute(name, sql)
            except psycopg2.Error as e:
                self.done[name + "_error"] = e
            ev.set()
        threading.Thread(target=work, daemon=True).start()

    def wait_blocked(self, name):
        wait_for(lambda: self.cluster.sql("SELECT cardinality(pg_blocking_pids(%s)) > 0", (self.pids[name],))[0][0],
                 30, what=f"{name} to wait for a lock")

    def close(self):
        for name, c in self.conns.items():
            try:
                self.cluster.sql("SELECT pg_terminate_backend(%s)", (self.pids[name],))
            except psycopg2.Error:
                pass
            try:
                c.close()
            except psycopg2.Error:
                pass


@pytest.fixture
def chain(cluster):
    ch = Chain(cluster)
    yield ch
    ch.close()


def lock_findings(d, pids):
    return {f["pid"]: f for f in d.client_json("long")["findings"] if f["kind"] == "lock_wait" and f["pid"] in pids}


def test_locks_shows_the_chain_and_a_dry_run_spares_the_blocker(pgtreed, pgtree_client, cluster, chain):
    a, b, c = chain.pids["a"], chain.pids["b"], chain.pids["c"]
    with Daemon(pgtreed, pgtree_client, config(cluster, "no")) as d:
        # pgtree locks: A at the root, B under it, C under B
        def chain_lines():
            out = d.client("locks", "--cluster", "c").stdout
            lines = out.splitlines()
            idx = {p: next((i for i, l in enumerate(lines) if l.strip().lstrip("└─ ").startswith(f"{p} ")), None)
                   for p in (a, b, c)}
            return None not in idx.values() and (out, lines, idx)
        out, lines, idx = wait_for(chain_lines, 30, what="the chain in pgtree locks")
        print(out)
        assert idx[a] < idx[b] < idx[c], out
        assert "[root blocker]" in lines[idx[a]] and "idle in transaction" in lines[idx[a]], out
        assert lines[idx[a]].startswith("  ") and not lines[idx[a]].lstrip().startswith("└─")
        indent = [lines[idx[p]].index(f"{p} ") for p in (a, b, c)]
        assert indent[0] < indent[1] < indent[2], out
        assert "the root blocker's query" in lines[idx[a]], out     # admins see query text
        # the JSON: nested
        j = d.client_json("locks", "--cluster", "c")
        roots = j["clusters"][0]["chains"]
        root = next(r for r in roots if r["pid"] == a)
        assert root["blocks"][0]["pid"] == b and root["blocks"][0]["blocks"][0]["pid"] == c
        assert root["blocks"][0]["blocked_by"] == [a]
        # the tree shows the chain too, and the processes say who blocks them
        tree = d.client("tree", "--cluster", "c").stdout
        assert "LOCK CHAINS" in tree and f"[blocked by {a}]" in tree, tree
        procs = {p["pid"]: p for p in d.client_json("tree", "--cluster", "c")["clusters"][0]["processes"]}
        assert procs[c]["blocked_by"] == [b] and procs[c]["root_blocker"] == a and procs[a]["blocking"] == 1
        # show: the chain it is in
        show = d.client("show", str(b)).stdout
        assert "lock chains" in show and "← this one" in show, show
        # the findings of B and C name root blocker A, with its state, age and query
        f = wait_for(lambda: (f := lock_findings(d, {b, c})) and len(f) == 2 and
                     all(x.get("blocker") and x["blocker"].get("query") for x in f.values()) and f, 30,
                     what="lock_wait findings with their root blocker")
        for x in f.values():
            assert x["blocker"]["pid"] == a and x["blocker"]["state"] == "idle in transaction"
            assert "the root blocker's query" in x["blocker"]["query"] and x["blocker"]["state_s"] >= 0
            assert f"root blocker pid {a}" in x["detail"]
        assert f[c]["blocker"]["depth"] == 2 and f[b]["blocker"]["depth"] == 1
        # the blocker rule decides (dry run): nothing is signalled
        d.wait_log(rf"dry run: would send SIGTERM to pid {a} \(root blocker of lock-waiting pid", 30)
        long_text = d.client("long").stdout
        assert f"root blocker {a} runs:" in long_text, long_text
    assert pid_alive(a) and pid_alive(b) and pid_alive(c)
    assert not chain.done["b"].is_set() and not chain.done["c"].is_set()


def test_target_blocker_terminates_exactly_the_root(pgtreed, pgtree_client, cluster, chain):
    a, b, c = chain.pids["a"], chain.pids["b"], chain.pids["c"]
    with Daemon(pgtreed, pgtree_client, config(cluster, "yes")) as d:
        wait_for(lambda: not pid_alive(a), 60, what="the root blocker A to be terminated")
        d.wait_log(rf"sent SIGTERM to pid {a} \(root blocker of lock-waiting pid", 10)
        # B got its lock and finished its statement; C waits for B's transaction now
        assert chain.done["b"].wait(30), "B did not proceed"
        assert "b_error" not in chain.done
        chain.conns["b"].commit()
        assert chain.done["c"].wait(30), "C did not proceed"
        assert "c_error" not in chain.done
        chain.conns["c"].commit()
        assert pid_alive(b) and pid_alive(c)
        # SIGTERM went to A only, once (B and C are both its waiters)
        sent = [l for l in d.lines if "sent SIGTERM" in l]
        assert len(sent) == 1 and f"pid {a} " in sent[0], sent
    assert cluster.sql(f"SELECT v FROM {TAG} ORDER BY id") == [(10,), (101,)]


def test_top_shows_the_chain(pgtreed, pgtree_client, cluster, chain):
    from tmuxterm import Tmux
    a, b, c = chain.pids["a"], chain.pids["b"], chain.pids["c"]
    with Daemon(pgtreed, pgtree_client, config(cluster, "no")) as d:
        name = wait_for(lambda: d.client_json("tree", "--cluster", "c")["clusters"][0]["name"], 30, what="the cluster")
        t = Tmux([d.client_path, "--socket", d.socket, "top", "--cluster", name], width=200, height=60)
        try:
            s = t.wait(r"lock chains \(root blocker", 30)
            lines = s.splitlines()
            start = next(i for i, l in enumerate(lines) if "lock chains (root blocker" in l)
            chain_lines = lines[start + 1:]
            pos = {p: next((i for i, l in enumerate(chain_lines) if re.match(rf"\s*{p} ", l)), None) for p in (a, b, c)}
            assert None not in pos.values() and pos[a] < pos[b] < pos[c], s
            assert f"[blocked by {a}]" in chain_lines[pos[b]] and f"[blocked by {b}]" in chain_lines[pos[c]], s
            t.save("top-lock-chain")
        finally:
            t.close()


def test_readers_get_no_query_text_of_blockers(pgtreed, pgtree_client, cluster, chain):
    from osusers import os_users
    a, b, c = chain.pids["a"], chain.pids["b"], chain.pids["c"]
    group = f"{TAG}g"
    with os_users(TAG, [group], {"r": [group]}) as users:
        text = config(cluster, "no").replace("[daemon]\n", f"[daemon]\nsocket_group = {group}\n", 1)
        d = Daemon(pgtreed, pgtree_client, text)
        d.start()
        try:
            os.chmod(d.dir, 0o755)
            reader = users["r"]
            f = wait_for(lambda: (x := lock_findings(d, {c})) and x[c].get("blocker") and x, 30, what="C's finding")
            assert "the root blocker's query" in f[c]["blocker"]["query"]          # admin (root)
            rf = json.loads(d.client("--json", "long", user=reader).stdout)["findings"]
            mine = next(x for x in rf if x["pid"] == c and x["kind"] == "lock_wait")
            assert mine["blocker"]["pid"] == a and mine["blocker"].get("query") is None and mine["blocker"]["query_hidden"]
            locks = d.client("locks", "--cluster", "c", user=reader).stdout
            assert str(a) in locks and "the root blocker's query" not in locks and "UPDATE" not in locks, locks
            lj = json.dumps(json.loads(d.client("--json", "locks", user=reader).stdout))
            tj = json.dumps(json.loads(d.client("--json", "tree", user=reader).stdout))
            sj = json.dumps(json.loads(d.client("--json", "show", str(b), user=reader).stdout))
            for j in (lj, tj, sj):
                assert "the root blocker's query" not in j
        finally:
            d.stop()
