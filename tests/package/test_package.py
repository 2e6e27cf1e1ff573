import json
import os
import re
import stat
import subprocess
import tempfile
import time

import pytest
from conftest import ROOT, meson_version, sh

OVERLAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "overlay-run")
MSGID_OPENED = "6d1ac0a3b3e04bcb9f1c2d62f7a9e010"


def test_lintian_clean(deb):
    # build-deb already failed on any error or warning; this shows the check is real
    p = sh("lintian", "--display-level", ">=warning", deb, check=False)
    bad = [l for l in p.stdout.splitlines() if re.match(r"^[EW]: ", l)]
    assert not bad, p.stdout


def test_contents_and_scripts(deb):
    listing = sh("dpkg-deb", "-c", deb).stdout
    files = {l.split()[-1].lstrip(".") for l in listing.splitlines() if not l.startswith("d")}
    for path in ("/usr/sbin/pgtreed", "/usr/bin/pgtree", "/etc/pgtree/pgtree.ini",
                 "/lib/systemd/system/pgtreed.service", "/usr/lib/sysusers.d/pgtree.conf",
                 "/usr/lib/tmpfiles.d/pgtree.conf", "/usr/lib/systemd/catalog/pgtree.catalog",
                 "/usr/share/man/man8/pgtreed.8.gz", "/usr/share/man/man1/pgtree.1.gz",
                 "/usr/share/man/man5/pgtree.ini.5.gz", "/usr/share/doc/pgtree/copyright",
                 "/usr/share/doc/pgtree/NEWS.gz", "/usr/share/doc/pgtree/changelog.gz",
                 "/usr/share/bash-completion/completions/pgtree"):
        assert path in files, (path, listing)
    assert not any("/test" in f or f.endswith(".a") for f in files), files
    with tempfile.TemporaryDirectory() as d:
        sh("dpkg-deb", "-e", deb, d)
        assert open(os.path.join(d, "conffiles")).read().split() == ["/etc/pgtree/pgtree.ini"]
        control = open(os.path.join(d, "control")).read()
        assert f"Version: {meson_version()}\n" in control
        postinst = open(os.path.join(d, "postinst")).read()
        # accounts (and which ones are new) before /run/pgtree, before the unit starts
        order = [postinst.index(s) for s in ("    remember_created_accounts\n", "systemd-sysusers ${DPKG_ROOT",
                                             "systemd-tmpfiles", "deb-systemd-helper", "deb-systemd-invoke")]
        assert order == sorted(order), postinst
        assert "pgtree.conf" in postinst and "pgtreed.service" in postinst
        assert re.search(r"deb-systemd-invoke \$_dh_action .*pgtreed.service", postinst), postinst
        postrm = open(os.path.join(d, "postrm")).read()
        assert "userdel pgtree" in postrm and "deb-systemd-helper purge" in postrm
        prerm = open(os.path.join(d, "prerm")).read()
        assert "deb-systemd-invoke stop" in prerm and "pgtreed.service" in prerm
    # the shipped configuration observes only
    with tempfile.TemporaryDirectory() as d:
        sh("dpkg-deb", "-x", deb, d)
        ini = open(os.path.join(d, "etc/pgtree/pgtree.ini")).read()
        assert re.search(r"^enforce = no$", ini, re.M) and not re.search(r"^enforce = yes", ini, re.M)


def test_one_version_everywhere(deb, tmp_path):
    """meson's project version is the one of both programs, the metric, and debian/changelog."""
    v = meson_version()
    changelog = sh("dpkg-parsechangelog", "-l", os.path.join(ROOT, "debian", "changelog"), "-S", "Version").stdout.strip()
    assert changelog == v
    sh("dpkg-deb", "-x", deb, str(tmp_path / "x"))
    assert sh(str(tmp_path / "x/usr/sbin/pgtreed"), "--version").stdout.strip() == f"pgtreed {v}"
    assert sh(str(tmp_path / "x/usr/bin/pgtree"), "--version").stdout.strip() == f"pgtree {v}"
    # the metric, from the packaged daemon's metrics file
    prom = tmp_path / "pgtree.prom"
    (tmp_path / "p.ini").write_text(f"[daemon]\ninterval = 200ms\nsocket = {tmp_path}/s.sock\nmetrics_file = {prom}\n")
    d = subprocess.Popen([str(tmp_path / "x/usr/sbin/pgtreed"), "--config", str(tmp_path / "p.ini"),
                          "--log-target", "stderr"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not prom.exists() and time.time() < deadline and d.poll() is None:
            time.sleep(0.1)
        assert prom.exists(), d.stderr.read().decode() if d.poll() is not None else "no metrics file"
        text = prom.read_text()
    finally:
        d.terminate()
        d.wait(timeout=30)
    assert f'pgtree_build_info{{version="{v}"}} 1\n' in text
    assert sh("promtool", "check", "metrics", input=text).returncode == 0


class Overlay:
    def __init__(self, state):
        self.state = state
        sh(OVERLAY, "setup", state)

    def run(self, *argv, check=True):
        return sh(OVERLAY, "run", self.state, *argv, check=check)

    def sh(self, script, check=True):
        return self.run("/bin/sh", "-c", script, check=check)

    def host(self, *argv, check=True):
        return sh(OVERLAY, "host", self.state, *argv, check=check)

    def close(self):
        sh(OVERLAY, "teardown", self.state, check=False)


def repack(deb, workdir, version):
    """The same package as a later version whose conffile also changed (an upgrade that asks)."""
    tree = os.path.join(workdir, "tree")
    sh("dpkg-deb", "-R", deb, tree)
    ctl = os.path.join(tree, "DEBIAN", "control")
    text = re.sub(r"^Version: .*$", f"Version: {version}", open(ctl).read(), flags=re.M)
    open(ctl, "w").write(text)
    with open(os.path.join(tree, "etc/pgtree/pgtree.ini"), "a") as f:
        f.write("; shipped in the upgrade\n")
    out = os.path.join(workdir, f"pgtree_{version}_amd64.deb")
    sh("dpkg-deb", "--root-owner-group", "-b", tree, out)
    return out


ACCOUNT_FILES = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow",
                 "/var/lib/systemd/catalog/database"]
# what dpkg, its logs and the account tools' backups may change for good
ALLOWED = ("/var/lib/dpkg/", "/var/log/", "/var/cache/debconf/", "/var/cache/ldconfig/", "/etc/ld.so.cache",
           "/var/cache/man/",                                   # man-db trigger: its cache
           "/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-", "/etc/subuid-", "/etc/subgid-")


def leftovers(ov, before):
    """Every path of the overlay's upper layer that differs from the machine as it was."""
    upper = os.path.join(ov.state, "mnt", "upper")
    listing = ov.host("find", upper, "-mindepth", "1", "-printf", r"%P\t%y\t%m\t%u\t%g\n").stdout
    problems = []
    for line in listing.splitlines():
        rel, kind, mode, user, group = line.split("\t")
        path = "/" + rel
        if path.startswith(ALLOWED) or path in ALLOWED:
            continue
        if path in before:
            now = ov.run("sha256sum", path, check=False)
            if now.returncode != 0 or now.stdout != before[path]:
                problems.append(f"{path}: changed")
            continue
        if kind == "c":                               # a whiteout: a file of / was deleted
            problems.append(f"{path}: deleted")
            continue
        try:
            st = os.lstat(path)                        # the lower layer is the real /
        except FileNotFoundError:
            problems.append(f"{path}: left behind ({kind})")
            continue
        if kind == "d":
            if f"{stat.S_IMODE(st.st_mode):o}" != mode:
                problems.append(f"{path}: mode {mode}, was {stat.S_IMODE(st.st_mode):o}")
            continue
        if kind == "f":
            mine = ov.run("sha256sum", path).stdout.split()[0]
            theirs = sh("sha256sum", path).stdout.split()[0]
            if mine != theirs:
                problems.append(f"{path}: content changed")
        elif kind == "l":
            if ov.run("readlink", path).stdout.strip() != os.readlink(path):
                problems.append(f"{path}: link changed")
    return problems


def test_install_upgrade_remove_purge(deb, tmp_path):
    v = meson_version()
    later = repack(deb, str(tmp_path), f"{v}+test1")
    ov = Overlay(str(tmp_path / "ov"))
    try:
        # the files the cycle rewrites: copied up first, so the host's own changes (other tests
        # add users) do not show, and remembered as they were
        ov.sh("for f in " + " ".join(ACCOUNT_FILES) + "; do [ -e $f ] && touch -c $f; done; exit 0")
        before = {f: ov.run("sha256sum", f, check=False).stdout for f in ACCOUNT_FILES}
        for name in ("pgtree", "pgtree-admin"):
            assert ov.run("getent", "group", name, check=False).returncode == 2, f"group {name} exists already"
        assert ov.run("getent", "passwd", "pgtree", check=False).returncode == 2
        ov.host("cp", deb, later, os.path.join(ov.state, "mnt", "root", "tmp") + "/")
        inside = "/tmp/" + os.path.basename(deb)
        inside_later = "/tmp/" + os.path.basename(later)

        # install
        ov.run("dpkg", "-i", inside)
        user = ov.run("getent", "passwd", "pgtree").stdout.split(":")
        assert user[5:] == ["/nonexistent", "/usr/sbin/nologin\n"], user
        assert ov.run("id", "-nG", "pgtree").stdout.split() == ["pgtree"]
        assert ov.run("getent", "group", "pgtree-admin").returncode == 0
        assert ov.run("stat", "-c", "%U %G %a", "/run/pgtree").stdout.split() == ["pgtree", "pgtree", "750"]
        assert ov.run("test", "-f", "/lib/systemd/system/pgtreed.service").returncode == 0
        assert ov.run("readlink", "/etc/systemd/system/multi-user.target.wants/pgtreed.service").stdout.strip() \
            == "/lib/systemd/system/pgtreed.service"
        assert ov.run("systemctl", "is-enabled", "pgtreed.service", check=False).stdout.strip() == "enabled"
        conffiles = ov.run("dpkg-query", "-W", "-f", "${Conffiles}", "pgtree").stdout
        assert "/etc/pgtree/pgtree.ini" in conffiles
        assert MSGID_OPENED in ov.run("journalctl", "--list-catalog").stdout, "catalog not updated"
        assert ov.run("pgtreed", "--version").stdout.strip() == f"pgtreed {v}"
        assert ov.run("pgtreed", "--check-config", "/etc/pgtree/pgtree.ini").returncode == 0
        assert ov.run("cat", "/var/lib/pgtree/created-accounts").stdout.split("\n")[:3] == \
            ["passwd pgtree", "group pgtree", "group pgtree-admin"]

        # upgrade, with the administrator's change to the conffile kept (apt's --force-confold)
        ov.sh("echo '; changed by the administrator' >> /etc/pgtree/pgtree.ini")
        ov.run("dpkg", "-i", "--force-confold", inside_later)
        assert ov.run("dpkg-query", "-W", "-f", "${Version}", "pgtree").stdout == f"{v}+test1"
        ini = ov.run("cat", "/etc/pgtree/pgtree.ini").stdout
        assert ini.endswith("; changed by the administrator\n") and "shipped in the upgrade" not in ini
        assert "shipped in the upgrade" in ov.run("cat", "/etc/pgtree/pgtree.ini.dpkg-dist").stdout
        assert ov.run("getent", "passwd", "pgtree").returncode == 0
        assert len(ov.run("cat", "/var/lib/pgtree/created-accounts").stdout.split("\n")) == 4  # not written twice

        # remove: programs and unit go, configuration and accounts stay
        ov.run("dpkg", "-r", "pgtree")
        assert ov.run("test", "-e", "/usr/sbin/pgtreed", check=False).returncode != 0
        assert ov.run("test", "-e", "/lib/systemd/system/pgtreed.service", check=False).returncode != 0
        assert ov.run("test", "-f", "/etc/pgtree/pgtree.ini").returncode == 0
        assert ov.run("getent", "passwd", "pgtree").returncode == 0
        assert ov.run("dpkg-query", "-W", "-f", "${Status}", "pgtree").stdout == "deinstall ok config-files"

        # purge: what the package created is gone, and nothing else changed
        ov.run("dpkg", "-P", "pgtree")
        assert ov.run("getent", "passwd", "pgtree", check=False).returncode == 2
        for name in ("pgtree", "pgtree-admin"):
            assert ov.run("getent", "group", name, check=False).returncode == 2
        for path in ("/etc/pgtree", "/var/lib/pgtree", "/run/pgtree",
                     "/etc/systemd/system/multi-user.target.wants/pgtreed.service"):
            assert ov.run("test", "-e", path, check=False).returncode != 0, path
        assert MSGID_OPENED not in ov.run("journalctl", "--list-catalog").stdout
        ov.run("rm", "-f", inside, inside_later)
        problems = leftovers(ov, before)
        assert not problems, problems
    finally:
        ov.close()
