"""Follows the event log with a checkpoint per projection and keeps the read models current."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from courseflow.eventstore import store
from courseflow.eventstore.eventlog import START, Checkpoint, EventLog, Recorded
from courseflow.platform import tracing
from courseflow.platform.backoff import Backoff
from courseflow.platform.metrics import PROJECTED_EVENTS, PROJECTION_LAG
from projections import PROJECTIONS
from projections.base import Projection, live_tables

log = logging.getLogger("courseflow.projector")

BATCH = 1000


def apply_batch(
    cur: store.Cursor,
    projections: Iterable[Projection],
    checkpoints: dict[str, Checkpoint],
    tables: Mapping[str, Mapping[str, sql.Identifier]] | None = None,
    until: Mapping[str, Checkpoint] | None = None,
    read_into: list[Recorded] | None = None,
) -> int:
    """Apply the next batch of events after each projection's checkpoint, and up to `until` if given.

    Advances `checkpoints`; returns how many (event, projection) applications it made, 0 once caught up.
    `tables` maps each projection to the physical tables to write, the live ones by default. The events
    read are added to `read_into` if given.
    """
    active = [p for p in projections if until is None or checkpoints[p.name] < until[p.name]]
    if not active:
        return 0
    batch = EventLog(cur).read(min(checkpoints[p.name] for p in active), BATCH)
    if read_into is not None:
        read_into += batch
    applied = 0
    # Pipeline mode: the statements go out back to back instead of one round trip each.
    with cur.connection.pipeline():
        for projection in active:
            target = live_tables(projection) if tables is None else tables[projection.name]
            stop = None if until is None else until[projection.name]
            unapplied = [
                r
                for r in batch
                if r.checkpoint > checkpoints[projection.name] and (stop is None or r.checkpoint <= stop)
            ]
            if unapplied:
                projection.apply_all(cur, unapplied, target)
                checkpoints[projection.name] = unapplied[-1].checkpoint
                applied += len(unapplied)
    return applied


def _observe(projected: list[Recorded]) -> None:
    """After COMMIT: each event is in the read models now, this long after its own commit."""
    if not projected:
        return
    now = datetime.now(UTC)
    PROJECTED_EVENTS.inc(len(projected))
    for recorded in projected:
        PROJECTION_LAG.observe(max(0.0, (now - recorded.recorded_at).total_seconds()))


def read_checkpoints(cur: store.Cursor, names: Iterable[str], lock: bool = True) -> dict[str, Checkpoint]:
    """The named checkpoints; locked by default: whoever else projects into those read models waits until COMMIT."""
    cur.execute(
        "SELECT name, txid::text, position FROM projection_checkpoints WHERE name = ANY(%s) ORDER BY name"
        + (" FOR UPDATE" if lock else ""),
        (sorted(names),),
    )
    return {name: Checkpoint(int(txid), position) for name, txid, position in cur.fetchall()}


def save_checkpoints(cur: store.Cursor, checkpoints: Mapping[str, Checkpoint]) -> None:
    for name, at in checkpoints.items():
        cur.execute(
            "UPDATE projection_checkpoints SET txid = %s::xid8, position = %s WHERE name = %s",
            (str(at.txid), at.position, name),
        )


def slowest(cur: store.Cursor) -> Checkpoint:
    """The checkpoint of the read model furthest behind."""
    return min(read_checkpoints(cur, PROJECTIONS, lock=False).values(), default=START)


class Projector:
    def __init__(self, database_url: str, names: Iterable[str] | None = None, stop: threading.Event | None = None):
        self.database_url = database_url
        self.projections = [PROJECTIONS[n] for n in (names or PROJECTIONS)]
        self.stop = stop or threading.Event()

    def step(self, conn: store.Conn) -> int:
        """One transaction: the next batch of events into every read model; returns how many were read."""
        started = tracing.now_ns()
        projected: list[Recorded] = []
        with conn.transaction(), conn.cursor() as cur:
            checkpoints = read_checkpoints(cur, (p.name for p in self.projections))
            read = apply_batch(cur, self.projections, checkpoints, read_into=projected)
            if read:
                save_checkpoints(cur, checkpoints)
        _observe(projected)
        if read:
            # A span only for a batch that applied events, after its COMMIT: idle polls would be most of them.
            tracing.record("project events", started, {"db.system.name": "postgresql", "courseflow.applied": read})
        return read

    def _unread(self, conn: store.Conn) -> bool:
        with conn.cursor() as cur:
            checkpoints = read_checkpoints(cur, (p.name for p in self.projections), lock=False)
            return EventLog(cur).unread_after(min(checkpoints.values(), default=START))

    def catch_up(self, conn: store.Conn) -> None:
        while self.step(conn) and not self.stop.is_set():
            pass

    def run(self, idle_wait_s: float = 1.0) -> None:
        """Project until `stop` is set; waits out a database outage, backing off, and resumes."""
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                self._follow(idle_wait_s, backoff)
            except psycopg.OperationalError as exc:
                delay = backoff.next_delay()
                log.warning("projector: %s; retrying in %.2fs", exc, delay)
                self.stop.wait(delay)

    def _follow(self, idle_wait_s: float, backoff: Backoff) -> None:
        """Catch up, then sleep until the NOTIFY every append sends (or a timeout, as a fallback).

        Events still unread (held back by an older transaction still open) are looked for again soon: that
        transaction may end without a NOTIFY.
        """
        held = Backoff(base_s=0.005, cap_s=idle_wait_s)
        with (
            psycopg.connect(self.database_url, autocommit=True) as conn,
            psycopg.connect(self.database_url, autocommit=True) as listener,
        ):
            listener.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
            backoff.reset()
            while not self.stop.is_set():
                self.catch_up(conn)
                if not self._unread(conn):
                    held.reset()
                    wait = idle_wait_s
                else:
                    wait = held.next_delay()
                for _ in listener.notifies(timeout=wait, stop_after=1):
                    pass
