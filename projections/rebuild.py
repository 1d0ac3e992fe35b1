"""Rebuild read models from position 0 into fresh tables while the live ones serve, then switch over."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import psycopg
from psycopg import sql

from projections import PROJECTIONS
from projections.projector import apply_batch, lock_checkpoints, save_checkpoints

log = logging.getLogger("courseflow.rebuild")

SHADOW = "{}__rebuild"


def rebuild(database_url: str, names: Iterable[str] | None = None) -> int:
    """Replay every event into copies of the named projections' tables and swap them in.

    Returns the position the rebuilt read models are at. The live projector pauses only for the
    switch-over, which also applies whatever was appended during the replay.
    """
    projections = [PROJECTIONS[n] for n in (names or PROJECTIONS)]
    tables = [t for p in projections for t in p.tables]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in tables:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SHADOW.format(table))))
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(SHADOW.format(table)), sql.Identifier(table)
                )
            )
        checkpoints = dict.fromkeys((p.name for p in projections), 0)
        while True:  # the bulk of the replay: one transaction per batch, no lock on the live tables
            with conn.transaction(), conn.cursor() as cur:
                if not apply_batch(cur, projections, checkpoints, shadow=True):
                    break
        with conn.transaction(), conn.cursor() as cur:
            lock_checkpoints(cur, checkpoints)  # the live projector waits here for these projections
            while apply_batch(cur, projections, checkpoints, shadow=True):
                pass
            for table in tables:
                live, shadow, old = (sql.Identifier(n) for n in (table, SHADOW.format(table), f"{table}__old"))
                cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(live, old))
                cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(shadow, live))
                cur.execute(sql.SQL("DROP TABLE {}").format(old))
            save_checkpoints(cur, checkpoints)
    position = max(checkpoints.values(), default=0)
    log.info("rebuilt %s up to position %d", ", ".join(checkpoints), position)
    return position
