"""A terminal for tests: a tmux server of our own runs one program; keys in, screen out."""
import os
import re
import shlex
import subprocess

from pgharness import wait_for

CAPTURES = os.environ.get("PGTREE_TOP_CAPTURES")  # a directory: screens are saved there


class Tmux:
    """A tmux server of our own (its own socket), one window running argv."""

    def __init__(self, argv, width=180, height=40, env=None):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="pgtree-tmux-")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "tmux.sock")
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm-256color", "HOME": self.dir,
             "LANG": "C.UTF-8"}
        e.update(env or {})
        cmd = " ".join(shlex.quote(a) for a in argv)
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in e.items())
        self.tmux("-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height), "-s", "top",
                  f"env -i {envs} {cmd}; echo EXITED $?; sleep 600")

    def tmux(self, *args):
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True, text=True, timeout=30, check=True).stdout

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "top", *keys)

    def type(self, text):
        self.tmux("send-keys", "-t", "top", "-l", text)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait(self, pattern, timeout=30, absent=False):
        rx = re.compile(pattern, re.M)
        try:
            return wait_for(lambda: (rx.search(self.screen()) is None) == absent and self.screen(), timeout, 0.2,
                            what=f"screen {'without' if absent else 'with'} /{pattern}/")
        except TimeoutError:
            raise AssertionError(f"screen {'still has' if absent else 'lacks'} /{pattern}/:\n{self.screen()}")

    def resize(self, width, height):
        self.tmux("resize-window", "-t", "top", "-x", str(width), "-y", str(height))

    def save(self, name):
        if CAPTURES:
            os.makedirs(CAPTURES, exist_ok=True)
            with open(os.path.join(CAPTURES, name + ".txt"), "w") as f:
                f.write(self.screen())

    def close(self):
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=30)
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)
