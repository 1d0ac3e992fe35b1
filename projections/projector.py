"""Follows the event log with a checkpoint per projection and keeps the read models current."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import psycopg

from courseflow import store
from projections import PROJECTIONS
from projections.base import Projection, live_tables

log = logging.getLogger("courseflow.projector")

BATCH = 1000


def apply_batch(
    cur: store.Cursor, projections: Iterable[Projection], checkpoints: dict[str, int], shadow: bool = False
) -> int:
    """Apply the next events after the lowest checkpoint; advances `checkpoints`; returns the last position or 0."""
    projections = list(projections)
    batch = store.read_events(cur, min(checkpoints.values()), BATCH)
    for projection in projections:
        tables = live_tables(projection) if not shadow else shadow_tables(projection)
        for recorded in batch:
            if recorded.position > checkpoints[projection.name]:
                projection.apply(cur, recorded, tables)
    if not batch:
        return 0
    for name in checkpoints:
        checkpoints[name] = max(checkpoints[name], batch[-1].position)
    return batch[-1].position


def shadow_tables(projection: Projection) -> dict[str, psycopg.sql.Identifier]:
    return {name: psycopg.sql.Identifier(f"{name}__rebuild") for name in projection.tables}


def lock_checkpoints(cur: store.Cursor, names: Iterable[str]) -> dict[str, int]:
    cur.execute(
        "SELECT name, position FROM projection_checkpoints WHERE name = ANY(%s) ORDER BY name FOR UPDATE",
        (sorted(names),),
    )
    return dict(cur.fetchall())


def save_checkpoints(cur: store.Cursor, checkpoints: dict[str, int]) -> None:
    for name, position in checkpoints.items():
        cur.execute("UPDATE projection_checkpoints SET position = %s WHERE name = %s", (position, name))


class Projector:
    def __init__(self, database_url: str, names: Iterable[str] | None = None, stop: threading.Event | None = None):
        self.database_url = database_url
        self.projections = [PROJECTIONS[n] for n in (names or PROJECTIONS)]
        self.stop = stop or threading.Event()

    def step(self, conn: store.Conn) -> int:
        """One transaction: the next batch of events into every read model; returns how many positions advanced."""
        with conn.transaction(), conn.cursor() as cur:
            checkpoints = lock_checkpoints(cur, (p.name for p in self.projections))
            before = min(checkpoints.values())
            last = apply_batch(cur, self.projections, checkpoints)
            if last:
                save_checkpoints(cur, checkpoints)
            return max(0, last - before)

    def catch_up(self, conn: store.Conn) -> None:
        while self.step(conn) and not self.stop.is_set():
            pass

    def run(self, idle_wait_s: float = 1.0) -> None:
        """Project until `stop` is set, woken by the NOTIFY every append sends (and by a timeout, as a fallback)."""
        with (
            psycopg.connect(self.database_url, autocommit=True) as conn,
            psycopg.connect(self.database_url, autocommit=True) as listener,
        ):
            listener.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
            while not self.stop.is_set():
                self.catch_up(conn)
                for _ in listener.notifies(timeout=idle_wait_s, stop_after=1):
                    pass
