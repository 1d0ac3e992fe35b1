"""Replay read models from the start of the log into fresh tables: to rebuild them, or to check the live ones."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import psycopg
from psycopg import sql

from courseflow.eventstore import privileges, store
from courseflow.eventstore.eventlog import START, Checkpoint
from projections import PROJECTIONS
from projections.base import Projection
from projections.projector import apply_batch, read_checkpoints, save_checkpoints

log = logging.getLogger("courseflow.rebuild")


def _shadow(table: str) -> str:
    return f"{table}__replay"


def _selected(names: Iterable[str] | None) -> list[Projection]:
    return [PROJECTIONS[n] for n in (names or PROJECTIONS)]


def _replay(
    conn: store.Conn, projections: list[Projection], until: dict[str, Checkpoint] | None = None, temporary: bool = False
) -> dict[str, Checkpoint]:
    """Fresh copies of the tables, filled from the start of the log up to `until` or its readable end as it is now.

    Temporary copies (a comparison's) need no more than the application's role may do: its own session's tables."""
    shadows = _shadow_tables(projections, temporary)
    for table, shadow in ((t, shadows[p.name][t]) for p in projections for t in p.tables):
        create = sql.SQL("CREATE TEMPORARY TABLE" if temporary else "CREATE TABLE")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(shadow))
        conn.execute(sql.SQL("{} {} (LIKE {} INCLUDING ALL)").format(create, shadow, sql.Identifier(table)))
    checkpoints = dict.fromkeys((p.name for p in projections), START)
    while True:  # one transaction per batch, no lock on anything live
        with conn.transaction(), conn.cursor() as cur:
            if not apply_batch(cur, projections, checkpoints, shadows, until):
                return checkpoints


def _shadow_tables(projections: list[Projection], temporary: bool = False) -> dict[str, dict[str, sql.Identifier]]:
    def shadow(table: str) -> sql.Identifier:
        return sql.Identifier("pg_temp", _shadow(table)) if temporary else sql.Identifier(_shadow(table))

    return {p.name: {t: shadow(t) for t in p.tables} for p in projections}


def rebuild(database_url: str, names: Iterable[str] | None = None) -> Checkpoint:
    """Rebuild the named read models while the live ones serve, then swap them in: as the schema's owner.

    Returns the place in the log the rebuilt read models are at. The live projector pauses only for the
    switch-over, which also applies whatever became readable during the replay.
    """
    projections = _selected(names)
    with psycopg.connect(database_url, autocommit=True) as conn:
        checkpoints = _replay(conn, projections)
        with conn.transaction(), conn.cursor() as cur:
            read_checkpoints(cur, checkpoints)
            while apply_batch(cur, projections, checkpoints, _shadow_tables(projections)):
                pass
            for table in (t for p in projections for t in p.tables):
                privileges.copy_grants(conn, table, _shadow(table))  # the application's, on the table it replaces
                live, shadow, old = (sql.Identifier(n) for n in (table, _shadow(table), f"{table}__old"))
                cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(live, old))
                cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(shadow, live))
                cur.execute(sql.SQL("DROP TABLE {}").format(old))
            save_checkpoints(cur, checkpoints)
    at = max(checkpoints.values(), default=START)
    log.info("rebuilt %s up to position %d (transaction %d)", ", ".join(checkpoints), at.position, at.txid)
    return at


def differences(database_url: str, names: Iterable[str] | None = None) -> dict[str, int]:
    """Rows that differ between each live read-model table and a replay up to the same position.

    The live projector pauses for the comparison only; nothing live is changed.
    """
    projections = _selected(names)
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.cursor() as cur:
            # Checkpoints only move forward: replaying up to where they stand now never overtakes them.
            checkpoints = _replay(
                conn, projections, read_checkpoints(cur, (p.name for p in projections), lock=False), temporary=True
            )
        result: dict[str, int] = {}
        with conn.transaction(), conn.cursor() as cur:
            live = read_checkpoints(cur, checkpoints)
            shadows = _shadow_tables(projections, temporary=True)
            while apply_batch(cur, projections, checkpoints, shadows, until=live):
                pass
            for table in (t for p in projections for t in p.tables):
                a, b = sql.Identifier(table), sql.Identifier("pg_temp", _shadow(table))
                cur.execute(
                    sql.SQL(
                        "SELECT count(*) FROM ((TABLE {a} EXCEPT ALL TABLE {b})"
                        " UNION ALL (TABLE {b} EXCEPT ALL TABLE {a})) AS differing"
                    ).format(a=a, b=b)
                )
                row = cur.fetchone()
                result[table] = int(row[0]) if row else 0
                cur.execute(sql.SQL("DROP TABLE {}").format(b))
    return result
