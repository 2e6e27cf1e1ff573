"""Several clusters: pgtreed keeps one event source per connection across a cycle (issue 10: it
rebuilt them all whenever one connection finished) — every connection must still be woken for
what it waits for next (writing the query, then reading the answer), so that every cycle gets
every cluster's answer, well within the interval."""
import contextlib

import pytest

from conftest import cluster_of
from pgharness import Cluster, wait_for

N = 3


@pytest.fixture(scope="module")
def clusters():
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(Cluster(name=f"pgtree_many{i}")) for i in range(N)]


def test_every_cluster_answers_every_cycle(daemon_factory, clusters):
    sections = "".join(f"[cluster many{i}]\ndata_directory = {c.data}\n" for i, c in enumerate(clusters))
    d = daemon_factory(f"[daemon]\ninterval = 500ms\nconnect_timeout = 20s\nquery_timeout = 20s\n{sections}")
    d.start()
    wait_for(lambda: all(cluster_of(d.client_json("tree"), c.pm_pid)["activity"] == "ok" for c in clusters), 60,
             what="every cluster's pg_stat_activity")
    seen = 0
    last = d.client_json("status")["cycles"]
    while seen < 10:
        wait_for(lambda: d.client_json("status")["cycles"] > last, 30, interval=0.05, what="the next cycle")
        tree = d.client_json("tree")
        status = d.client_json("status")
        last = status["cycles"]
        for c in clusters:
            assert cluster_of(tree, c.pm_pid)["activity"] == "ok", cluster_of(tree, c.pm_pid)["activity"]
        # an answer left waiting for a timeout (20 s) would make the cycle last that long
        assert status["last_cycle_s"] < 5, status
        seen += 1
