"""Local servers never run as root: started by root, they run as an unprivileged user, in directories it owns."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from courseflow_local.processes import ServicesError, run

# A clone under a 0700 directory is not reachable by the server user; its servers' data goes here instead.
FALLBACK_ROOT = Path("/var/tmp")


def server_user() -> str | None:
    """The user servers run as when we are root (PostgreSQL refuses root; Redis must not have it): `postgres`,
    else a `courseflow` system user. None: we are not root, they run as we do."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "courseflow"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "courseflow"], "useradd", None)
    return "courseflow"


def server_dir(data_dir: Path, user: str | None, name: str) -> Path:
    """`data_dir/name` as a 0700 directory of `user` that `user` can reach: a link to a fallback home under
    /var/tmp when a parent of the data dir is closed to it. Returns the real directory."""
    link = data_dir / name
    if link.is_symlink() and not link.exists():
        link.unlink()  # the fallback dir was removed (e.g. /var/tmp cleaned): start afresh
    if user is None:
        link.mkdir(mode=0o700, exist_ok=True)
        return link.resolve()
    reachable = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(data_dir)], check=False).returncode == 0
    if link.is_symlink() or (link.exists() and reachable):
        target = link.resolve()
        give(target, user)
        return target
    target = link
    if not reachable:
        # Some parent is not traversable by `user` (e.g. mktemp -d): keep the data outside, linked from here.
        home = FALLBACK_ROOT / f"courseflow-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]}"
        home.mkdir(mode=0o700, exist_ok=True)
        # /var/tmp is world-writable: do not follow a planted symlink or use someone else's directory.
        if home.is_symlink() or home.stat().st_uid not in (0, pwd.getpwnam(user).pw_uid):
            raise ServicesError(f"refusing to use {home}: not a directory owned by root or {user}")
        shutil.chown(home, user, user)
        target = home / name
        if link.exists():  # made by a version that ran this server as root, inside the data dir
            shutil.move(link, target)
    target.mkdir(mode=0o700, exist_ok=True)
    give(target, user)
    if target != link:
        link.symlink_to(target)
    return target


def give(directory: Path, user: str | None) -> None:
    """Make `directory` and everything in it `user`'s (they were root's when servers ran as root)."""
    if user is None:
        return
    account = pwd.getpwnam(user)
    entries = [directory, *(p for p in directory.iterdir() if not p.is_symlink())]
    if all(p.stat().st_uid == account.pw_uid for p in entries):
        return
    for parent, dirs, files in os.walk(directory):
        for entry in (parent, *(os.path.join(parent, name) for name in (*dirs, *files))):
            os.chown(entry, account.pw_uid, account.pw_gid, follow_symlinks=False)


def as_user(user: str | None, args: list[str]) -> list[str]:
    return args if user is None else ["runuser", "-u", user, "--", *args]
