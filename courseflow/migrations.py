"""Schema migrations: the `sql/NNN_name.sql` files, applied in order and recorded."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from courseflow import partitions as queue_partitions
from courseflow.config import DEFAULT_PARTITIONS
from courseflow.store import Conn

SQL_DIR = Path(os.environ.get("COURSEFLOW_SQL_DIR", Path(__file__).resolve().parent.parent / "sql"))
# Serialises concurrent `courseflow migrate` runs.
_MIGRATION_LOCK = 0x636F7572


def migrate(database_url: str, sql_dir: Path = SQL_DIR, partitions: int = DEFAULT_PARTITIONS) -> list[str]:
    """Apply the `NNN_name.sql` files not yet recorded, in order; returns the names applied.

    The first migrate also records the queue's partition count; a later one with another count is refused
    (PartitionCountMismatch).
    """
    files = sorted(sql_dir.glob("[0-9][0-9][0-9]_*.sql"))
    if not files:
        raise FileNotFoundError(f"no migrations found in {sql_dir}")
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for path in files:
            version = int(path.name[:3])
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone():
                    continue
                conn.execute(path.read_text())  # trusted files shipped with the code
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.stem))
            applied.append(path.stem)
        # (From the migration that made the table on: an older set of files has no partitions to record.)
        if conn.execute("SELECT to_regclass('queue_partitions') IS NOT NULL").fetchone() == (True,):
            queue_partitions.record(conn, partitions)
    return applied


def pending_migrations(conn: Conn, sql_dir: Path = SQL_DIR) -> list[str]:
    known = {int(p.name[:3]): p.stem for p in sql_dir.glob("[0-9][0-9][0-9]_*.sql")}
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")} if exists and exists[0] else set()
    return [name for version, name in sorted(known.items()) if version not in done]
