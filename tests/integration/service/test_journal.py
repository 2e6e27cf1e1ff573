"""journald entries of pgtreed under the real journald of the sandbox: the call site of each
entry, a MESSAGE_ID on every one, the cluster on "postmaster exited", journalctl -x filling the
catalog's @PGTREE_…@ fields, and pgtree events reading copied journal files (a central log host)."""
import glob
import os
import shutil
import subprocess

from conftest import MSG, ROOT, UNIT, journal, sh, systemctl, wait_journal
from pgharness import Cluster


def test_fields_catalog_and_central_journal(service, tmp_path):
    c = Cluster(name="jfields")
    c.start()
    mounted = False
    try:
        service.configure(f"""[daemon]
interval = 300ms
[cluster jfields]
data_directory = {c.data}
""")
        systemctl("start", UNIT)
        wait_journal(MESSAGE_ID=MSG["STARTED"])
        pm = c.pm_pid
        c.stop()                                   # a clean stop: the postmaster exits
        exited = wait_journal(MESSAGE_ID=MSG["POSTMASTER_EXITED"], PGTREE_PID=pm)[0]
        assert exited["PGTREE_CLUSTER"] == "jfields" and exited["PGTREE_DATA_DIRECTORY"] == c.data
        assert exited["CODE_FUNC"] == "on_pm_exit" and exited["CODE_FILE"].endswith("daemon/manager.c")

        # every structured entry (stdout of --check-config in ExecStartPre is a plain stream line)
        entries = journal(SYSLOG_IDENTIFIER="pgtreed", _TRANSPORT="journal")
        assert len(entries) >= 2
        for e in entries:
            assert e.get("MESSAGE_ID"), e
            assert e["CODE_FUNC"] != "emit" and not e["CODE_FILE"].endswith("journal.c"), e
            assert int(e["CODE_LINE"]) > 0
        started = journal(MESSAGE_ID=MSG["STARTED"])[-1]
        assert started["CODE_FUNC"] == "finish_cycle"

        # journalctl -x with the catalog (its database in a tmpfs of this namespace only)
        root = tmp_path / "root"
        (root / "usr/lib/systemd/catalog").mkdir(parents=True)
        (root / "var/lib/systemd/catalog").mkdir(parents=True)
        shutil.copy(os.path.join(ROOT, "systemd", "pgtree.catalog"), root / "usr/lib/systemd/catalog")
        sh("journalctl", f"--root={root}", "--update-catalog")
        sh("mount", "--bind", str(root / "var/lib/systemd/catalog"), "/var/lib/systemd/catalog")
        mounted = True
        text = sh("journalctl", "-x", "--no-pager", f"MESSAGE_ID={MSG['POSTMASTER_EXITED']}",
                  f"PGTREE_PID={pm}").stdout
        assert f"The postmaster {pm} of the cluster jfields" in text, text
        assert f"({c.data})" in text

        # a central journal: the sandbox's journal files, copied elsewhere
        sh("journalctl", "--sync")
        central = tmp_path / "central"
        central.mkdir()
        files = glob.glob("/run/log/journal/*/*.journal")
        assert files
        for f in files:
            shutil.copy(f, central)
        out = service.client("events", "--directory", str(central), "-n", "500").stdout
        assert f"postmaster {pm} of cluster jfields exited" in out, out
        host = os.uname().nodename
        assert f" {host} postmaster {pm}" in out                 # the host is shown for a central journal
        one = str(central / os.path.basename(files[0]))
        out = service.client("events", "--file", one, "--host", host, "-n", "500").stdout
        assert f"postmaster {pm} of cluster jfields exited" in out, out
        out = service.client("events", "--directory", str(central), "--host", "no-such-host").stdout
        assert "no pgtree events" in out
        bad = service.client("events", "--directory", str(tmp_path / "missing"), check=False)
        assert bad.returncode == 2 and "--directory" in bad.stderr and "No such file" in bad.stderr
        bad = service.client("events", "--file", str(central), check=False)
        assert bad.returncode == 2 and "use --directory" in bad.stderr
    finally:
        if mounted:
            subprocess.run(["umount", "/var/lib/systemd/catalog"])
        systemctl("stop", UNIT, check=False)
        c.stop()
