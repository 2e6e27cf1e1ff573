"""Real OS users and groups for a test module, removed afterwards (as test_authz.py does)."""
import contextlib
import os
import subprocess


def _sh(*argv):
    subprocess.run(argv, check=True, capture_output=True)


@contextlib.contextmanager
def os_users(tag, groups, users):
    """groups: names to create; users: {key: [supplementary groups]} or {key: (primary group,
    [supplementary groups])}. Yields {key: user name}; a user without a primary group given has
    a group of its own (useradd -U)."""
    made_users, made_groups = [], []
    try:
        for g in groups:
            _sh("groupadd", g)
            made_groups.append(g)
        names = {}
        for key, spec in users.items():
            primary, supp = spec if isinstance(spec, tuple) else (None, spec)
            name = f"{tag}{key}"[:31]
            argv = ["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin"]
            argv += ["-g", primary] if primary else ["-U"]
            if supp:
                argv += ["-G", ",".join(supp)]
            _sh(*argv, name)
            made_users.append(name)
            names[key] = name
        yield names
    finally:
        for u in made_users:
            subprocess.run(["userdel", u], capture_output=True)
            subprocess.run(["groupdel", u], capture_output=True)
        for g in made_groups:
            subprocess.run(["groupdel", g], capture_output=True)


def connect_as(path, user):
    """A Unix socket connected to path whose peer credentials are user's (a child drops to
    that user, connects and hands the descriptor back)."""
    import pwd
    import socket
    if user is None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return s
    pw = pwd.getpwnam(user)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            parent.close()
            os.setgroups(os.getgrouplist(user, pw.pw_gid))
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            socket.send_fds(child, [b"x"], [s.fileno()])
            os._exit(0)
        except BaseException:
            os._exit(1)
    child.close()
    try:
        _, fds, _, _ = socket.recv_fds(parent, 1, 1)
    finally:
        parent.close()
        os.waitpid(pid, 0)
    assert fds, "could not connect"
    return socket.socket(fileno=fds[0])
