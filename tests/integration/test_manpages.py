"""Every option that --help lists is in the man page, and every option of the man page is in
--help (issue 11: pgtreed(8) lacked --log-target, --version and --help)."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# words that --help names only to say they are refused
NOT_OPTIONS = {"--signal"}


def help_options(program):
    out = subprocess.run([program, "--help"], capture_output=True, text=True, timeout=30).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", out)) - NOT_OPTIONS - {"-9"}


def man_options(page):
    with open(os.path.join(ROOT, "man", page)) as f:
        text = f.read().replace("\\-", "-")
    # options in the roff source, outside of commands quoted as examples (journalctl -x)
    found = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", text))
    return found - NOT_OPTIONS - {"-x", "-u", "-9"}


@pytest.mark.parametrize("env,page", [("PGTREED", "pgtreed.8"), ("PGTREE", "pgtree.1")])
def test_help_and_man_page_list_the_same_options(env, page):
    from conftest import built
    program = built(env, "daemon" if env == "PGTREED" else "client", "pgtreed" if env == "PGTREED" else "pgtree")
    h, m = help_options(program), man_options(page)
    assert h - m == set(), f"in --help but not in {page}: {sorted(h - m)}"
    assert m - h == set(), f"in {page} but not in --help: {sorted(m - h)}"
