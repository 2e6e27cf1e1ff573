"""The Debian package: built once per run (scripts/build-deb, lintian included), then checked
for its contents and put through install / upgrade / remove / purge in a throwaway overlay of /."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pgharness import stop_on_signals  # noqa: E402

stop_on_signals()


def sh(*argv, check=True, **kw):
    p = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def meson_version():
    build = os.environ.get("PGTREE_BUILD_DIR", os.path.join(ROOT, "build"))
    import json
    info = json.loads(sh("meson", "introspect", "--projectinfo", build).stdout)
    return info["version"]


@pytest.fixture(scope="session")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    p = sh(os.path.join(ROOT, "scripts", "build-deb"), str(out), check=False, timeout=1200)
    assert p.returncode == 0, f"build-deb failed:\n{p.stdout}\n{p.stderr}"
    path = p.stdout.strip().splitlines()[-1]
    assert os.path.basename(path) == f"pgtree_{meson_version()}_amd64.deb", path
    return path
