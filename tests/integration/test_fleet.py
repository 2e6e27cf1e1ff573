"""The fleet path end to end with the real programs: pgtreed writes its metrics_file, the real
prometheus-node-exporter serves it through its textfile collector, a real prometheus scrapes
that on 127.0.0.1 with the shipped rules (shorter `for:` and intervals in this test's own copy),
and an orphan made on this test's own cluster makes PgtreeOrphanBackend fire."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.request

import pytest
from conftest import ROOT
from pgharness import Cluster, free_port, pid_alive, wait_for

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
PROMETHEUS = "/usr/bin/prometheus"
RULES = os.path.join(ROOT, "contrib", "prometheus", "pgtree-alerts.yml")


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def stop(p):
    if p and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()  # not PostgreSQL: our own exporter/prometheus
            p.wait()


@pytest.mark.skipif(not (os.access(NODE_EXPORTER, os.X_OK) and os.access(PROMETHEUS, os.X_OK)),
                    reason="prometheus and prometheus-node-exporter not installed (scripts/install-deps)")
def test_orphan_alert_fires_in_prometheus(pgtreed):
    d = tempfile.mkdtemp(prefix="pgtree-fleet-", dir=os.environ.get("PGTREE_TEST_TMP"))
    textfile = os.path.join(d, "textfile")
    os.mkdir(textfile)
    c = Cluster(name=f"pgtree_fleet_{os.getpid()}")
    daemon = exporter = prom = None
    c.start()
    try:
        with open(os.path.join(d, "pgtree.ini"), "w") as f:
            f.write(f"[daemon]\ninterval = 300ms\nsocket = {d}/pgtree.sock\n"
                    f"metrics_file = {textfile}/pgtree.prom\n")
        daemon = subprocess.Popen([pgtreed, "--config", f"{d}/pgtree.ini", "--log-target", "stderr"],
                                  stdout=subprocess.DEVNULL, stderr=open(f"{d}/pgtreed.log", "w"))
        wait_for(lambda: os.path.exists(f"{textfile}/pgtree.prom"), 60, what="metrics file")

        ne_port, prom_port = free_port(), free_port()
        exporter = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{ne_port}",
                                     "--collector.disable-defaults", "--collector.textfile",
                                     f"--collector.textfile.directory={textfile}"],
                                    stdout=subprocess.DEVNULL, stderr=open(f"{d}/node-exporter.log", "w"))
        # the shipped rules, with short `for:` so the test does not wait minutes
        with open(RULES) as f:
            rules = re.sub(r"for: \S+", "for: 2s", f.read())
        with open(f"{d}/rules.yml", "w") as f:
            f.write(rules)
        with open(f"{d}/prometheus.yml", "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{d}/rules.yml"]
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:{ne_port}"]
""")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/tsdb",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=open(f"{d}/prometheus.log", "w"))
        api = f"http://127.0.0.1:{prom_port}/api/v1"

        def scraped():
            try:
                r = get_json(f"{api}/query?query=pgtree_build_info")["data"]["result"]
            except OSError:
                return None
            return r or None
        info = wait_for(scraped, 90, interval=0.5, what="pgtree metrics in prometheus")
        assert info[0]["metric"]["job"] == "node"
        assert get_json(f"{api}/rules")["data"]["groups"][0]["name"] == "pgtree"

        # an orphan: a CPU-bound backend of this test's own cluster outlives its postmaster
        _, pid, _ = c.run_async("DO $$ BEGIN LOOP PERFORM 1; END LOOP; END $$", tcp=True)
        wait_for(lambda: c.sql("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)) == [("active",)],
                 10, what="busy backend")
        assert os.readlink(f"/proc/{c.pm_pid}/cwd") == c.data
        c.crash_postmaster()  # abruptly, never by SIGKILL
        wait_for(lambda: not pid_alive(c.pm_pid), 10, what="postmaster exit")
        assert pid_alive(pid)

        def firing():
            alerts = get_json(f"{api}/alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "PgtreeOrphanBackend"
                    and a["state"] == "firing"] or None
        alerts = wait_for(firing, 120, interval=0.5, what="PgtreeOrphanBackend firing")
        print(json.dumps(alerts, indent=2))
        a = alerts[0]
        assert a["labels"]["severity"] == "critical" and a["labels"]["kind"] == "orphan_backend"
        assert a["labels"]["instance"] == f"127.0.0.1:{ne_port}"
        assert a["annotations"]["runbook_url"] == "man:pgtreed(8)#ALERTS"
        assert float(a["value"]) >= 1

        # end the orphan the way pgtree does: SIGTERM to that very process
        assert os.readlink(f"/proc/{pid}/cwd") == c.data
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 15, what="orphan exit on SIGTERM")
    finally:
        stop(prom)
        stop(exporter)
        stop(daemon)
        c.stop()
        shutil.rmtree(d, ignore_errors=True)
