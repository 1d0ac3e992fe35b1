"""Schema migrations: the `sql/NNN_name.sql` files, applied in order and recorded."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

import psycopg

from courseflow.eventstore import partition_count, privileges
from courseflow.eventstore.store import Conn
from courseflow.platform.config import DEFAULT_PARTITIONS

# The top-level sql/ folder, shipped in the wheel as package data: an installed copy migrates like a checkout.
SQL_DIR: Traversable = files("courseflow.sql")
# Serialises concurrent `courseflow migrate` runs.
_MIGRATION_LOCK = 0x636F7572


class SchemaOwnedByAnother(RuntimeError):
    """The tables belong to another role than the one migrating: only a superuser can hand them over."""


def migrate(
    database_url: str,
    sql_dir: Traversable = SQL_DIR,
    partitions: int = DEFAULT_PARTITIONS,
    application_url: str | None = None,
) -> list[str]:
    """Apply the `NNN_name.sql` files not yet recorded, in order, as the schema's owner (`database_url`); returns
    the names applied. The role of `application_url`, when another, is then granted exactly its privileges.

    The first migrate also records the queue's partition count; a later one with another count is refused
    (PartitionCountMismatch).
    """
    scripts = migration_files(sql_dir)
    if not scripts:
        raise FileNotFoundError(f"no migrations found in {sql_dir}")
    applied: list[str] = []
    application = _role(application_url) if application_url and application_url != database_url else None
    with psycopg.connect(database_url, autocommit=True) as conn:
        _refuse_foreign_schema(conn)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for path in scripts:
            version = int(path.name[:3])
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone():
                    continue
                conn.execute(path.read_text())  # trusted files shipped with the code
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, _stem(path)))
            applied.append(_stem(path))
        # (From the migration that made the table on: an older set of files has no partitions to record.)
        if conn.execute("SELECT to_regclass('queue_partitions') IS NOT NULL").fetchone() == (True,):
            partition_count.record(conn, partitions)
        if application is not None and application != _current_user(conn):
            privileges.grant(conn, application)
    return applied


def _role(url: str) -> str:
    """The role a URL logs in as (asked, not parsed: libpq may take the user from the environment)."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        return _current_user(conn)


def _current_user(conn: Conn) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def _refuse_foreign_schema(conn: Conn) -> None:
    """Say what to do when the tables belong to the application's role (as before the schema had an owner)."""
    row = conn.execute(
        "SELECT pg_get_userbyid(c.relowner), current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        " FROM pg_class c WHERE c.oid = to_regclass('events')"
    ).fetchone()
    if row is None or row[0] == row[1] or row[2]:
        return
    raise SchemaOwnedByAnother(
        f"the tables belong to the role {row[0]!r}, not to {row[1]!r} who migrates: set MIGRATION_DATABASE_URL to"
        f" {row[0]!r}'s URL; or, if {row[0]!r} is the application's role (a schema from before it had an owner of"
        f' its own), hand them over as a superuser, in this database: REASSIGN OWNED BY "{row[0]}" TO "{row[1]}"'
    )


def pending_migrations(conn: Conn, sql_dir: Traversable = SQL_DIR) -> list[str]:
    known = {int(p.name[:3]): _stem(p) for p in migration_files(sql_dir)}
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")} if exists and exists[0] else set()
    return [name for version, name in sorted(known.items()) if version not in done]


def migration_files(sql_dir: Traversable = SQL_DIR) -> list[Traversable]:
    """The `NNN_name.sql` files, in the order they apply."""
    names = (p for p in sql_dir.iterdir() if p.name.endswith(".sql") and p.name[:3].isdigit() and p.name[3] == "_")
    return sorted(names, key=lambda p: p.name)


def _stem(path: Traversable) -> str:
    return path.name.removesuffix(".sql")
