"""The local PostgreSQL: a password-only cluster under the data dir (or /var/tmp), its roles, started and stopped."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from courseflow_local import credentials
from courseflow_local.credentials import APP_USER, POSTGRES_ADMIN_USER, REPLICATION_USER, Credentials
from courseflow_local.processes import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ServicesError,
    alive,
    check_port_free,
    run,
    wait_until,
)

# A clone under a 0700 directory is not reachable by the postgres user; its cluster goes here instead.
FALLBACK_ROOT = Path("/var/tmp")
# The only way in: a SCRAM password over 127.0.0.1 (there is no unix socket).
_HBA = "host all all 127.0.0.1/32 scram-sha-256\n"
# Added once a replica is made (see services.replica): the replication role, by password, from 127.0.0.1 only.
_HBA_REPLICATION = f"host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256\n"
# Where each cluster lives under the data dir (or under its /var/tmp fallback home).
PRIMARY = "postgres"


def find_bindir() -> Path:
    installed = Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
    versions = sorted(installed, key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    found = str(versions[-1]) if versions else shutil.which("pg_ctl")
    if found is None:
        raise ServicesError("PostgreSQL binaries (pg_ctl) not found; install them: apt-get install -y postgresql")
    return Path(found).parent


def running_port(data_dir: Path, name: str = PRIMARY) -> int | None:
    try:
        lines = ((data_dir / name).resolve() / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return port if alive(pid, "postgres") else None


def up(data_dir: Path, bindir: Path, port: int, saved: Credentials) -> int:
    user = server_user()
    pgdata = prepare_pgdata(data_dir, user)
    log = pgdata.parent / "postgres.log"
    if (pgdata / "PG_VERSION").exists() and _trusts(pgdata):
        raise ServicesError(passwordless(data_dir))  # e.g. a /var/tmp fallback cluster left by an older CourseFlow
    running = running_port(data_dir)
    if running is not None:
        wait_until(lambda: answers(running, saved), START_TIMEOUT_S, "PostgreSQL to answer", log)
        _provision(running, saved)
        return running
    check_port_free(port, "PostgreSQL")
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bindir, pgdata, user, saved.postgres_admin_password)
    # A replica's slot keeps WAL for it while it is stopped, but never more than this.
    start(bindir, pgdata, user, port, log, "-c max_slot_wal_keep_size=1GB")
    wait_until(lambda: answers(port, saved), START_TIMEOUT_S, "PostgreSQL to answer", log)
    _provision(port, saved)
    return port


def start(bindir: Path, pgdata: Path, user: str | None, port: int, log: Path, options: str) -> None:
    """Start the cluster in `pgdata` on 127.0.0.1:`port` with the settings every local cluster shares."""
    log.touch()
    if user is not None:
        shutil.chown(log, user, user)
    # No unix socket: its path is limited to 107 bytes, which deep clones exceed. A standby needs
    # max_connections at least the primary's: both have the same.
    common = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=on"
    common += " -c synchronous_commit=on -c max_connections=200"
    # Each request writes ~3 KB of WAL (events, the request row, read models): at 5,000 req/s the default 1GB
    # starts a checkpoint every ~35 s, each followed by a burst of full-page images that slows every commit.
    # One per 15 minutes or ~2 GB of WAL instead, its writes spread over 90% of the interval.
    common += " -c max_wal_size=4GB -c checkpoint_timeout=15min -c checkpoint_completion_target=0.9"
    # The data sits on local flash and in the page cache: a random page costs little more than a sequential one.
    # At the default 4 the planner prefers scanning a table that has grown to tens of thousands of rows since its
    # last analyze over probing its index once per request of a round, and each round's scan grows with it.
    common += " -c random_page_cost=1.1"
    pg_ctl = [str(bindir / "pg_ctl"), "start", "-w", "-t", str(int(START_TIMEOUT_S)), "-D", str(pgdata)]
    run(as_user(user, [*pg_ctl, "-l", str(log), "-o", f"{common} {options}"]), "pg_ctl start", log)


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
        run(as_user(user, initdb), "initdb", None)
    finally:
        os.unlink(pwfile)
    hba = pgdata / "pg_hba.conf"
    credentials.write_private(hba, _HBA.encode())
    if user is not None:
        shutil.chown(hba, user, user)


def _provision(port: int, saved: Credentials) -> None:
    """The application's role owns its database (and so, in PostgreSQL 15, its public schema) and nothing more."""
    with admin_connection(port, saved) as conn:
        _ensure_role(conn, APP_USER, saved.postgres_app_password, "noreplication")
        if conn.execute("select 1 from pg_database where datname = %s", (APP_USER,)).fetchone() is None:
            conn.execute(
                sql.SQL("create database {} owner {}").format(sql.Identifier(APP_USER), sql.Identifier(APP_USER))
            )


def _ensure_role(conn: psycopg.Connection[tuple[object, ...]], user: str, password: str, replication: str) -> None:
    """Create or update a login role with this password, no superuser or other powers; `replication` is
    "replication" or "noreplication"."""
    # Sent as a SCRAM verifier: the password itself never reaches the server or its logs.
    verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256").decode()
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (user,)).fetchone()
    conn.execute(
        sql.SQL("{} role {} login {} password {} nosuperuser nocreatedb nocreaterole nobypassrls").format(
            sql.SQL("alter" if exists else "create"), sql.Identifier(user), sql.SQL(replication), sql.Literal(verifier)
        )
    )


def allow_replication(data_dir: Path, port: int, saved: Credentials) -> None:
    """The replication role (login and replication, nothing else) and its pg_hba line, in force at once."""
    assert saved.postgres_replication_password is not None
    with admin_connection(port, saved) as conn:
        _ensure_role(conn, REPLICATION_USER, saved.postgres_replication_password, "replication")
        hba = (data_dir / PRIMARY).resolve() / "pg_hba.conf"
        lines = hba.read_text()
        if _HBA_REPLICATION not in lines:
            owner = hba.stat()
            credentials.write_private(hba, (lines + _HBA_REPLICATION).encode())
            os.chown(hba, owner.st_uid, owner.st_gid)
            conn.execute("select pg_reload_conf()")


def admin_connection(
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


def answers(port: int, saved: Credentials | None) -> bool:
    """True once PostgreSQL answers the superuser; a refused password is an error, not a reason to wait."""
    try:
        with admin_connection(port, saved, timeout_s=2) as conn:
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


def passwordless(data_dir: Path) -> str:
    if data_dir == Path(".courseflow").resolve():
        remove = "remove it with `make clean`"
    else:
        remove = f"stop it with `courseflow services down --data-dir {data_dir}`, delete it"
    return (
        f"{data_dir} holds servers created by an older CourseFlow without passwords (or its {credentials.FILE_NAME}"
        f" was deleted); {remove} (this deletes its data) and run again"
    )


def down(data_dir: Path, name: str = PRIMARY) -> None:
    if running_port(data_dir, name) is not None:
        pgdata = str((data_dir / name).resolve())
        pg_ctl = [str(find_bindir() / "pg_ctl"), "stop", "-w", "-t", str(int(STOP_TIMEOUT_S)), "-m", "fast"]
        run(as_user(server_user(), [*pg_ctl, "-D", pgdata]), "pg_ctl stop", None)


def server_user() -> str | None:
    """PostgreSQL refuses to run as root: then use `postgres`, else a `courseflow` system user."""
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


def prepare_pgdata(data_dir: Path, user: str | None, name: str = PRIMARY) -> Path:
    link = data_dir / name
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
        pgdata = home / name
    pgdata.mkdir(mode=0o700, exist_ok=True)
    shutil.chown(pgdata, user, user)
    if pgdata != link:
        link.symlink_to(pgdata)
    return pgdata


def as_user(user: str | None, args: list[str]) -> list[str]:
    return args if user is None else ["runuser", "-u", user, "--", *args]
