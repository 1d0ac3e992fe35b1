"""The local PostgreSQL: a password-only cluster under the data dir (or /var/tmp), its roles, started and stopped."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from courseflow.eventstore import privileges
from courseflow_local import credentials
from courseflow_local.credentials import APP_USER, OWNER_USER, POSTGRES_ADMIN_USER, REPLICATION_USER, Credentials
from courseflow_local.processes import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ServicesError,
    alive,
    check_port_free,
    run,
    wait_until,
)
from courseflow_local.unprivileged import as_user, server_dir, server_user

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
    pgdata = server_dir(data_dir, user, PRIMARY)
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
    """The owner role owns the application's database (so, in PostgreSQL 15, its public schema) and the tables
    migrations make; the application's role logs in and holds only what `courseflow migrate` grants it."""
    assert saved.postgres_owner_password is not None  # added by load_or_create
    with admin_connection(port, saved) as conn:
        _ensure_role(conn, APP_USER, saved.postgres_app_password, "noreplication")
        _ensure_role(conn, OWNER_USER, saved.postgres_owner_password, "noreplication")
        found = conn.execute("select pg_get_userbyid(datdba) from pg_database where datname = %s", (APP_USER,))
        row = found.fetchone()
        if row is None:
            conn.execute(
                sql.SQL("create database {} owner {}").format(sql.Identifier(APP_USER), sql.Identifier(OWNER_USER))
            )
        elif row[0] == APP_USER:
            _hand_over(port, saved)


def _hand_over(port: int, saved: Credentials) -> None:
    """A database made when the application's role owned everything: the owner takes the database and its tables
    over, and the application keeps only its grants."""
    with admin_connection(port, saved, dbname=APP_USER) as conn, conn.transaction():
        conn.execute(sql.SQL("reassign owned by {} to {}").format(sql.Identifier(APP_USER), sql.Identifier(OWNER_USER)))
        privileges.grant(conn, APP_USER)


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
    port: int, saved: Credentials | None, timeout_s: int = 10, dbname: str = "postgres"
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=POSTGRES_ADMIN_USER,
        password=saved.postgres_admin_password if saved else "",
        dbname=dbname,
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
