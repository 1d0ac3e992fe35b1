"""What both local servers share: running their commands, waiting with a deadline, pid files, ports, the lock."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class ServicesError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def lock(data_dir: Path) -> Iterator[None]:
    """Serialise concurrent up/down on one data dir (e.g. two test sessions)."""
    with open(data_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def check_port_free(port: int, what: str) -> None:
    # SO_REUSEADDR as the servers set it: TIME_WAIT leftovers are fine, another listener is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ServicesError(f"cannot start {what}: 127.0.0.1:{port} is in use ({exc.strerror})") from None


def run(args: list[str], what: str, log: Path | None, env: Mapping[str, str] | None = None) -> None:
    """`env`: variables added to ours, for what must not be on a command line (`ps` shows it to everyone)."""
    # cwd="/": the server user may not be allowed into the caller's working directory.
    environment = None if env is None else {**os.environ, **env}
    proc = subprocess.run(
        args, cwd="/", capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, env=environment
    )
    if proc.returncode != 0:
        raise ServicesError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}{tail(log)}")


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise ServicesError(f"timed out after {timeout_s:.0f}s waiting for {what}{tail(log)}")
        time.sleep(0.05)


def tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    return f"\n--- end of {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int, name: str) -> bool:
    """True if `pid` runs `name`. Zombies (empty cmdline) and recycled pids of stale pidfiles are not alive."""
    try:
        return name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
