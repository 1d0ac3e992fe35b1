"""Local PostgreSQL and Redis for development and tests, started from the Debian packages.

Everything lives under one data dir; servers listen on 127.0.0.1 only and keep running between
commands: `up` is idempotent, `down` stops both, data survives a down/up cycle.

Both servers require a password: the data dir's credentials file (see `credentials`) holds an
admin's, used here, and the application's, which may not reconfigure, flush or stop a server.
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
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import msgspec
import psycopg
import redis
from psycopg import sql

from courseflow import config, credentials
from courseflow.credentials import APP_USER, POSTGRES_ADMIN_USER, REDIS_ADMIN_USER, Credentials

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# A clone under a 0700 directory is not reachable by the postgres user; its cluster goes here instead.
FALLBACK_ROOT = Path("/var/tmp")
# The only way in: a SCRAM password over 127.0.0.1 (there is no unix socket).
_PG_HBA = "host all all 127.0.0.1/32 scram-sha-256\n"
# Everything but administration and commands that can wipe or stall the whole server (FLUSHDB, KEYS...).
_REDIS_APP_RIGHTS = "~* &* +@all -@admin -@dangerous"


class ServicesError(RuntimeError):
    pass


class LocalServers(msgspec.Struct, frozen=True):
    data_dir: Path
    postgres_port: int
    redis_port: int
    credentials: Credentials

    @property
    def credentials_file(self) -> Path:
        return credentials.path(self.data_dir)

    @property
    def database_url(self) -> str:
        return config.local_database_url(self.postgres_port, self.credentials.postgres_app_password)

    @property
    def redis_url(self) -> str:
        return config.local_redis_url(self.redis_port, self.credentials.redis_app_password)

    @property
    def admin_database_url(self) -> str:
        """The superuser, on the `postgres` database: for creating and dropping databases."""
        password = quote(self.credentials.postgres_admin_password, safe="")
        return f"postgresql://{POSTGRES_ADMIN_USER}:{password}@127.0.0.1:{self.postgres_port}/postgres"

    @property
    def admin_redis_url(self) -> str:
        """Redis's admin: for what the application may not do, such as FLUSHDB or CONFIG."""
        password = quote(self.credentials.redis_admin_password, safe="")
        return f"redis://{REDIS_ADMIN_USER}:{password}@127.0.0.1:{self.redis_port}/0"


def up(data_dir: Path, postgres_port: int, redis_port: int) -> LocalServers:
    """Start what is not already running for `data_dir`. A running server keeps its port, which is returned."""
    data_dir = data_dir.resolve()
    redis_bin, pg_bin = shutil.which("redis-server"), _postgres_bindir()  # fail before starting anything
    if redis_bin is None:
        raise ServicesError("redis-server not found on PATH; install it: apt-get install -y redis-server")
    data_dir.mkdir(parents=True, exist_ok=True)
    with _lock(data_dir):
        _refuse_passwordless(data_dir)
        try:
            saved = credentials.load_or_create(data_dir)
        except credentials.CredentialsError as exc:
            raise ServicesError(str(exc)) from None
        actual_redis = _redis_up(data_dir, redis_bin, redis_port, saved)
        actual_pg = _postgres_up(data_dir, pg_bin, postgres_port, saved)
    return LocalServers(data_dir=data_dir, postgres_port=actual_pg, redis_port=actual_redis, credentials=saved)


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
    try:
        saved = credentials.load(data_dir)
    except credentials.CredentialsError:
        saved = None
    result: dict[str, str] = {}
    for name, port, answers in (
        ("postgres", _postgres_running_port(data_dir), _postgres_answers),
        ("redis", _redis_running_port(data_dir), _redis_answers),
    ):
        try:
            note = "" if port is None or answers(port, saved) else " (not answering)"
        except ServicesError:
            note = f" (refuses the credentials in {credentials.path(data_dir)})"
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


def _redis_up(data_dir: Path, binary: str, port: int, saved: Credentials) -> int:
    workdir = data_dir / "redis"
    log, pidfile, conf = workdir / "redis.log", workdir / "redis.pid", workdir / "redis.conf"
    running = _redis_running_port(data_dir)
    if running is not None:
        _wait_until(lambda: _redis_answers(running, saved), START_TIMEOUT_S, "Redis to answer", log)
        return running
    _check_port_free(port, "Redis")
    workdir.mkdir(mode=0o700, exist_ok=True)
    workdir.chmod(0o700)  # the AOF holds every request: for this user's eyes only
    pidfile.unlink(missing_ok=True)
    (data_dir / "redis.port").write_text(f"{port}\n")
    # Passwords go in a 0600 file: on the command line every local user would see them in `ps`.
    credentials.write_private(conf, _redis_config(workdir, port, saved))
    _run([binary, str(conf)], "redis-server", log)

    def ready() -> bool:
        # The pidfile appears once Redis listens; a dead pid after that is a fatal error such as a bad AOF.
        pid = _read_int(pidfile)
        if pid is not None and not _alive(pid, "redis-server"):
            raise ServicesError(f"redis-server exited during startup{_tail(log)}")
        return _redis_answers(port, saved)

    _wait_until(ready, START_TIMEOUT_S, "Redis to answer", log)
    return port


def _redis_config(workdir: Path, port: int, saved: Credentials) -> bytes:
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        "protected-mode yes",
        "daemonize yes",
        f"dir {_quoted(workdir)}",
        f"pidfile {_quoted(workdir / 'redis.pid')}",
        f"logfile {_quoted(workdir / 'redis.log')}",
        # appendfsync always: an accepted request (202) must survive kill -9 of Redis.
        "appendonly yes",
        "appendfsync always",
        'save ""',
        f"user {REDIS_ADMIN_USER} reset on >{saved.redis_admin_password} ~* &* +@all",
        f"user {APP_USER} reset on >{saved.redis_app_password} {_REDIS_APP_RIGHTS}",
    ]
    return "".join(f"{line}\n" for line in lines).encode()


def _quoted(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _redis_answers(port: int, saved: Credentials | None) -> bool:
    """True once Redis answers the admin; a refused password is an error, not a reason to wait."""
    try:
        with redis.Redis(
            host="127.0.0.1",
            port=port,
            username=REDIS_ADMIN_USER if saved else None,
            password=saved.redis_admin_password if saved else None,
            socket_timeout=2,
            socket_connect_timeout=2,
        ) as client:
            return bool(client.ping())
    except redis.AuthenticationError:
        raise ServicesError(f"Redis on 127.0.0.1:{port} refuses the admin password of this data dir") from None
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


def _postgres_up(data_dir: Path, bindir: Path, port: int, saved: Credentials) -> int:
    user = _server_user()
    pgdata = _prepare_pgdata(data_dir, user)
    log = pgdata.parent / "postgres.log"
    if (pgdata / "PG_VERSION").exists() and _trusts(pgdata):
        raise ServicesError(_passwordless(data_dir))  # e.g. a /var/tmp fallback cluster left by an older CourseFlow
    running = _postgres_running_port(data_dir)
    if running is not None:
        _wait_until(lambda: _postgres_answers(running, saved), START_TIMEOUT_S, "PostgreSQL to answer", log)
        _provision(running, saved)
        return running
    _check_port_free(port, "PostgreSQL")
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bindir, pgdata, user, saved.postgres_admin_password)
    log.touch()
    if user is not None:
        shutil.chown(log, user, user)
    # No unix socket: its path is limited to 107 bytes, which deep clones exceed.
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=on"
    options += " -c synchronous_commit=on -c max_connections=200"
    pg_ctl = [str(bindir / "pg_ctl"), "start", "-w", "-t", str(int(START_TIMEOUT_S)), "-D", str(pgdata)]
    _run(_as_user(user, [*pg_ctl, "-l", str(log), "-o", options]), "pg_ctl start", log)
    _wait_until(lambda: _postgres_answers(port, saved), START_TIMEOUT_S, "PostgreSQL to answer", log)
    _provision(port, saved)
    return port


def _initdb(bindir: Path, pgdata: Path, user: str | None, password: str) -> None:
    # initdb reads the superuser's password from a file that only the server user can read, and only meanwhile.
    fd, pwfile = tempfile.mkstemp(prefix=".pwfile-", dir=pgdata.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{password}\n")
        if user is not None:
            shutil.chown(pwfile, user, user)
        initdb = [str(bindir / "initdb"), "-D", str(pgdata), "-U", POSTGRES_ADMIN_USER, f"--pwfile={pwfile}"]
        initdb += ["--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C"]
        _run(_as_user(user, initdb), "initdb", None)
    finally:
        os.unlink(pwfile)
    hba = pgdata / "pg_hba.conf"
    credentials.write_private(hba, _PG_HBA.encode())
    if user is not None:
        shutil.chown(hba, user, user)


def _provision(port: int, saved: Credentials) -> None:
    """The application's role owns its database (and so, in PostgreSQL 15, its public schema) and nothing more."""
    with _admin_connection(port, saved) as conn:
        # Sent as a SCRAM verifier: the password itself never reaches the server or its logs.
        verifier = conn.pgconn.encrypt_password(
            saved.postgres_app_password.encode(), APP_USER.encode(), b"scram-sha-256"
        ).decode()
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (APP_USER,)).fetchone()
        conn.execute(
            sql.SQL(
                "{} role {} login password {} nosuperuser nocreatedb nocreaterole noreplication nobypassrls"
            ).format(sql.SQL("alter" if exists else "create"), sql.Identifier(APP_USER), sql.Literal(verifier))
        )
        if conn.execute("select 1 from pg_database where datname = %s", (APP_USER,)).fetchone() is None:
            conn.execute(
                sql.SQL("create database {} owner {}").format(sql.Identifier(APP_USER), sql.Identifier(APP_USER))
            )


def _admin_connection(
    port: int, saved: Credentials | None, timeout_s: int = 10
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=POSTGRES_ADMIN_USER,
        password=saved.postgres_admin_password if saved else "",
        dbname="postgres",
        connect_timeout=timeout_s,
        autocommit=True,
    )


def _postgres_answers(port: int, saved: Credentials | None) -> bool:
    """True once PostgreSQL answers the superuser; a refused password is an error, not a reason to wait."""
    try:
        with _admin_connection(port, saved, timeout_s=2) as conn:
            conn.execute("select 1")
        return True
    except psycopg.OperationalError as exc:
        if "password authentication failed" in str(exc) or "no password supplied" in str(exc):
            raise ServicesError(
                f"PostgreSQL on 127.0.0.1:{port} refuses the admin password of this data dir: {exc}"
            ) from None
        return False
    except psycopg.Error:
        return False


def _trusts(pgdata: Path) -> bool:
    """True if pg_hba.conf lets anyone in without a password, as clusters of older CourseFlow versions did."""
    try:
        lines = (pgdata / "pg_hba.conf").read_text().splitlines()
    except OSError:
        return False
    return any("trust" in line.split("#", 1)[0].split() for line in lines)


def _refuse_passwordless(data_dir: Path) -> None:
    """Servers without a credentials file beside them trust every local client: they cannot be locked in place."""
    if credentials.path(data_dir).exists():
        return
    cluster = (data_dir / "postgres" / "PG_VERSION").exists()
    if cluster or _postgres_running_port(data_dir) is not None or _redis_running_port(data_dir) is not None:
        raise ServicesError(_passwordless(data_dir))


def _passwordless(data_dir: Path) -> str:
    if data_dir == Path(".courseflow").resolve():
        remove = "remove it with `make clean`"
    else:
        remove = f"stop it with `courseflow services down --data-dir {data_dir}`, delete it"
    return (
        f"{data_dir} holds servers created by an older CourseFlow without passwords (or its {credentials.FILE_NAME}"
        f" was deleted); {remove} (this deletes its data) and run again"
    )


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
