"""The ordered waitlist of each course: priority, then arrival."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql

from courseflow.domain import StreamId
from courseflow.events import Waitlisted, WaitlistLeft, WaitlistPromoted
from courseflow.store import Cursor
from projections.base import Projection, Recorded


class Waitlists(Projection):
    name = "waitlists"
    tables = ("waitlist_entries",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        self.apply_all(cur, [recorded], table)

    def apply_all(self, cur: Cursor, batch: Sequence[Recorded], table: Mapping[str, sql.Identifier]) -> None:
        """Entries that join and leave within the batch never touch the table; the rest in two statements."""
        joined: dict[str, dict[str, Any]] = {}
        left: list[dict[str, Any]] = []
        for recorded in batch:
            e = recorded.event
            if isinstance(e, Waitlisted):
                arrival = StreamId.parse(e.arrival)
                joined[e.request_id] = {
                    "r": e.request_id,
                    "c": e.course_id,
                    "s": e.student_id,
                    "p": e.priority,
                    "ms": arrival.ms,
                    "seq": arrival.seq,
                }
            elif isinstance(e, WaitlistPromoted | WaitlistLeft) and joined.pop(e.request_id, None) is None:
                left.append({"r": e.request_id})
        t = table["waitlist_entries"]
        if left:
            cur.executemany(sql.SQL("DELETE FROM {table} WHERE request_id = %(r)s").format(table=t), left)
        if joined:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {table} (request_id, course_id, student_id, priority, arrival_ms, arrival_seq)"
                    " VALUES (%(r)s, %(c)s, %(s)s, %(p)s, %(ms)s, %(seq)s)"
                ).format(table=t),
                list(joined.values()),
            )
