"""pgtreed --once reads the default configuration file when it exists (and says so in --help);
--no-config runs with the built-in defaults whatever file exists. The default file is put in
place inside a private mount namespace (a tmpfs over its directory), so the host's stays
untouched."""
import json
import os
import re
import shutil
import subprocess

import pytest


def default_path(pgtreed):
    out = subprocess.run([pgtreed, "--help"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"read (/\S+) when it exists", out)
    assert m, f"--help does not say which file --once reads:\n{out}"
    return m.group(1)


def in_namespace(pgtreed, path, content, *args):
    """Runs pgtreed with path holding content, in a private mount namespace."""
    etc = os.path.dirname(os.path.dirname(path))  # e.g. /usr/local/etc over …/pgtree/pgtree.ini
    script = ('set -e; mount -t tmpfs pgtree-test "$1"; mkdir -p "$(dirname "$2")"; '
              'printf "%s" "$3" > "$2"; shift 3; exec "$@"')
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                           etc, path, content, pgtreed, *args],
                          capture_output=True, text=True, timeout=60)


def test_once_reads_the_default_file_and_no_config_does_not(pgtreed):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private mount namespace")
    path = default_path(pgtreed)
    if not os.path.isdir(os.path.dirname(os.path.dirname(path))):
        pytest.skip(f"{os.path.dirname(os.path.dirname(path))} does not exist")
    bad = "[daemon]\ninterval = forever\n"
    p = in_namespace(pgtreed, path, bad, "--once", "--json")
    assert p.returncode == 1 and f"{path}:2:" in p.stderr, (p.returncode, p.stderr)
    p = in_namespace(pgtreed, path, bad, "--once", "--json", "--no-config")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["scan"]["config"] is None
    good = "[daemon]\ninterval = 5s\n"
    p = in_namespace(pgtreed, path, good, "--once", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["scan"]["config"] == path


def test_no_config_command_line(pgtreed):
    p = subprocess.run([pgtreed, "--once", "--no-config", "--config", "/dev/null"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and "exclude each other" in p.stderr
    p = subprocess.run([pgtreed, "--check-config", "/dev/null", "--no-config"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2
