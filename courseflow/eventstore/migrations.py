"""Schema migrations: the `sql/NNN_name.sql` files, applied in order and recorded."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

import psycopg

from courseflow.eventstore import partition_count
from courseflow.eventstore.store import Conn
from courseflow.platform.config import DEFAULT_PARTITIONS

# The top-level sql/ folder, shipped in the wheel as package data: an installed copy migrates like a checkout.
SQL_DIR: Traversable = files("courseflow.sql")
# Serialises concurrent `courseflow migrate` runs.
_MIGRATION_LOCK = 0x636F7572


def migrate(database_url: str, sql_dir: Traversable = SQL_DIR, partitions: int = DEFAULT_PARTITIONS) -> list[str]:
    """Apply the `NNN_name.sql` files not yet recorded, in order; returns the names applied.

    The first migrate also records the queue's partition count; a later one with another count is refused
    (PartitionCountMismatch).
    """
    scripts = migration_files(sql_dir)
    if not scripts:
        raise FileNotFoundError(f"no migrations found in {sql_dir}")
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
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
    return applied


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
