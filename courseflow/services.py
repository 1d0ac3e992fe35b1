"""Local PostgreSQL and Redis for development and tests, started from the Debian packages.

Everything lives under one data dir; servers listen on 127.0.0.1 only and keep running between
commands: `up` is idempotent, `down` stops both, data survives a down/up cycle.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import msgspec
import psycopg
import redis

from courseflow import config

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# A clone under a 0700 directory is not reachable by the postgres user; its cluster goes here instead.
FALLBACK_ROOT = Path("/var/tmp")
_ADMIN_URL = "postgresql://courseflow@127.0.0.1:{}/postgres"


class ServicesError(RuntimeError):
    pass


class LocalServers(msgspec.Struct, frozen=True):
    data_dir: Path
    postgres_port: int
    redis_port: int

    @property
    def database_url(self) -> str:
        return config.local_database_url(self.postgres_port)

    @property
    def redis_url(self) -> str:
        return config.local_redis_url(self.redis_port)


def up(data_dir: Path, postgres_port: int, redis_port: int) -> LocalServers:
    """Start what is not already running for `data_dir`. A running server keeps its port, which is returned."""
    data_dir = data_dir.resolve()
    redis_bin, pg_bin = shutil.which("redis-server"), _postgres_bindir()  # fail before starting anything
    if redis_bin is None:
        raise ServicesError("redis-server not found on PATH; install it: apt-get install -y redis-server")
    data_dir.mkdir(parents=True, exist_ok=True)
    with _lock(data_dir):
        actual_redis = _redis_up(data_dir, redis_bin, redis_port)
        actual_pg = _postgres_up(data_dir, pg_bin, postgres_port)
    return LocalServers(data_dir=data_dir, postgres_port=actual_pg, redis_port=actual_redis)


def down(data_dir: Path, only: Literal["postgres", "redis"] | None = None) -> None:
    """Stop both servers, or `only` one of them (fault tests stop one and bring it back with `up`)."""
    data_dir = data_dir.resolve()
    if data_dir.is_dir():
        with _lock(data_dir):
            if only in (None, "redis"):
                _redis_down(data_dir)
            if only in (None, "postgres"):
                _postgres_down(data_dir)


def redis_pid(data_dir: Path) -> int | None:
    return _read_int(data_dir.resolve() / "redis" / "redis.pid")


def status(data_dir: Path) -> dict[str, str]:
    data_dir = data_dir.resolve()
    result: dict[str, str] = {}
    for name, port, answers in (
        ("postgres", _postgres_running_port(data_dir), _postgres_answers),
        ("redis", _redis_running_port(data_dir), _redis_answers),
    ):
        note = "" if port is None or answers(port) else " (not answering)"
        result[name] = "stopped" if port is None else f"running on 127.0.0.1:{port}{note}"
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_running_port(data_dir: Path) -> int | None:
    pid, port = _read_int(data_dir / "redis" / "redis.pid"), _read_int(data_dir / "redis.port")
    return port if pid is not None and _alive(pid, "redis-server") else None


def _redis_up(data_dir: Path, binary: str, port: int) -> int:
    workdir = data_dir / "redis"
    log, pidfile = workdir / "redis.log", workdir / "redis.pid"
    running = _redis_running_port(data_dir)
    if running is not None:
        _wait_until(lambda: _redis_answers(running), START_TIMEOUT_S, "Redis to answer", log)
        return running
    _check_port_free(port, "Redis")
    workdir.mkdir(exist_ok=True)
    pidfile.unlink(missing_ok=True)
    (data_dir / "redis.port").write_text(f"{port}\n")
    # appendfsync always: an accepted request (202) must survive kill -9 of Redis.
    args = [binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes"]
    args += ["--dir", str(workdir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    _run([*args, "--pidfile", str(pidfile), "--logfile", str(log)], "redis-server", log)

    def ready() -> bool:
        # The pidfile appears once Redis listens; a dead pid after that is a fatal error such as a bad AOF.
        pid = _read_int(pidfile)
        if pid is not None and not _alive(pid, "redis-server"):
            raise ServicesError(f"redis-server exited during startup{_tail(log)}")
        return _redis_answers(port)

    _wait_until(ready, START_TIMEOUT_S, "Redis to answer", log)
    return port


def _redis_answers(port: int) -> bool:
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _redis_down(data_dir: Path) -> None:
    pid = _read_int(data_dir / "redis" / "redis.pid")
    if pid is not None and _alive(pid, "redis-server"):
        os.kill(pid, signal.SIGTERM)  # Redis fsyncs the AOF and exits on SIGTERM
        _wait_until(lambda: not _alive(pid, "redis-server"), STOP_TIMEOUT_S, "Redis to stop", None)


def _postgres_bindir() -> Path:
    installed = Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
    versions = sorted(installed, key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    found = str(versions[-1]) if versions else shutil.which("pg_ctl")
    if found is None:
        raise ServicesError("PostgreSQL binaries (pg_ctl) not found; install them: apt-get install -y postgresql")
    return Path(found).parent


def _postgres_running_port(data_dir: Path) -> int | None:
    try:
        lines = ((data_dir / "postgres").resolve() / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return port if _alive(pid, "postgres") else None


def _postgres_up(data_dir: Path, bindir: Path, port: int) -> int:
    user = _server_user()
    pgdata = _prepare_pgdata(data_dir, user)
    log = pgdata.parent / "postgres.log"
    running = _postgres_running_port(data_dir)
    if running is not None:
        _wait_until(lambda: _postgres_answers(running), START_TIMEOUT_S, "PostgreSQL to answer", log)
        return running
    _check_port_free(port, "PostgreSQL")
    if not (pgdata / "PG_VERSION").exists():
        initdb = [str(bindir / "initdb"), "-D", str(pgdata), "--auth=trust", "-U", "courseflow", "-E", "UTF8"]
        _run(_as_user(user, [*initdb, "--locale=C"]), "initdb", None)
    log.touch()
    if user is not None:
        shutil.chown(log, user, user)
    # No unix socket: its path is limited to 107 bytes, which deep clones exceed.
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=on"
    options += " -c synchronous_commit=on -c max_connections=200"
    pg_ctl = [str(bindir / "pg_ctl"), "start", "-w", "-t", str(int(START_TIMEOUT_S)), "-D", str(pgdata)]
    _run(_as_user(user, [*pg_ctl, "-l", str(log), "-o", options]), "pg_ctl start", log)
    _wait_until(lambda: _postgres_answers(port), START_TIMEOUT_S, "PostgreSQL to answer", log)
    with psycopg.connect(_ADMIN_URL.format(port), autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = 'courseflow'").fetchone() is None:
            conn.execute("create database courseflow")
    return port


def _postgres_answers(port: int) -> bool:
    try:
        with psycopg.connect(_ADMIN_URL.format(port), connect_timeout=2) as conn:
            conn.execute("select 1")
        return True
    except psycopg.Error:
        return False


def _postgres_down(data_dir: Path) -> None:
    if _postgres_running_port(data_dir) is not None:
        pgdata = str((data_dir / "postgres").resolve())
        pg_ctl = [str(_postgres_bindir() / "pg_ctl"), "stop", "-w", "-t", str(int(STOP_TIMEOUT_S)), "-m", "fast"]
        _run(_as_user(_server_user(), [*pg_ctl, "-D", pgdata]), "pg_ctl stop", None)


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: then use `postgres`, else a `courseflow` system user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "courseflow"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    _run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "courseflow"], "useradd", None)
    return "courseflow"


def _prepare_pgdata(data_dir: Path, user: str | None) -> Path:
    link = data_dir / "postgres"
    if link.is_symlink() and not link.exists():
        link.unlink()  # the fallback dir was removed (e.g. /var/tmp cleaned): start a fresh cluster
    if link.exists() or user is None:
        link.mkdir(mode=0o700, exist_ok=True)
        return link.resolve()
    pgdata = link
    if subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(data_dir)], check=False).returncode != 0:
        # Some parent is not traversable by `user` (e.g. mktemp -d): keep the cluster outside, linked from here.
        home = FALLBACK_ROOT / f"courseflow-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]}"
        home.mkdir(mode=0o700, exist_ok=True)
        # /var/tmp is world-writable: do not follow a planted symlink or use someone else's directory.
        if home.is_symlink() or home.stat().st_uid not in (0, pwd.getpwnam(user).pw_uid):
            raise ServicesError(f"refusing to use {home}: not a directory owned by root or {user}")
        shutil.chown(home, user, user)
        pgdata = home / "postgres"
    pgdata.mkdir(mode=0o700, exist_ok=True)
    shutil.chown(pgdata, user, user)
    if pgdata != link:
        link.symlink_to(pgdata)
    return pgdata


def _as_user(user: str | None, args: list[str]) -> list[str]:
    return args if user is None else ["runuser", "-u", user, "--", *args]


@contextmanager
def _lock(data_dir: Path) -> Iterator[None]:
    """Serialise concurrent up/down on one data dir (e.g. two test sessions)."""
    with open(data_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _check_port_free(port: int, what: str) -> None:
    # SO_REUSEADDR as the servers set it: TIME_WAIT leftovers are fine, another listener is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ServicesError(f"cannot start {what}: 127.0.0.1:{port} is in use ({exc.strerror})") from None


def _run(args: list[str], what: str, log: Path | None) -> None:
    # cwd="/": the server user may not be allowed into the caller's working directory.
    proc = subprocess.run(args, cwd="/", capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise ServicesError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}{_tail(log)}")


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise ServicesError(f"timed out after {timeout_s:.0f}s waiting for {what}{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    return f"\n--- end of {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, name: str) -> bool:
    """True if `pid` runs `name`. Zombies (empty cmdline) and recycled pids of stale pidfiles are not alive."""
    try:
        return name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
