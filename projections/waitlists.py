"""The ordered waitlist of each course: priority, then arrival."""

from __future__ import annotations

from collections.abc import Mapping

from psycopg import sql

from courseflow.domain import StreamId
from courseflow.events import Waitlisted, WaitlistLeft, WaitlistPromoted
from courseflow.store import Cursor
from projections.base import Projection, Recorded


class Waitlists(Projection):
    name = "waitlists"
    tables = ("waitlist_entries",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        t, e = table["waitlist_entries"], recorded.event
        match e:
            case Waitlisted():
                arrival = StreamId.parse(e.arrival)
                self.run(
                    cur,
                    "INSERT INTO {table} (request_id, course_id, student_id, priority, arrival_ms, arrival_seq)"
                    " VALUES (%(r)s, %(c)s, %(s)s, %(p)s, %(ms)s, %(seq)s)",
                    t,
                    {
                        "r": e.request_id,
                        "c": e.course_id,
                        "s": e.student_id,
                        "p": e.priority,
                        "ms": arrival.ms,
                        "seq": arrival.seq,
                    },
                )
            case WaitlistPromoted() | WaitlistLeft():
                self.run(cur, "DELETE FROM {table} WHERE request_id = %(r)s", t, {"r": e.request_id})
