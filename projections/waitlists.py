"""The ordered waitlist of each course: priority, then arrival."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql

from courseflow.domain import PENDING, RequestState, StreamId, evolve
from courseflow.events import RequestDecision
from courseflow.eventstore.store import Cursor
from projections.base import Projection, Recorded, recordset

# What a waitlisted request is: an event that leaves this as it is does not move a request.
_WAITLISTED = RequestState(status="waitlisted")


class Waitlists(Projection):
    name = "waitlists"
    tables = ("waitlist_entries",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        self.apply_all(cur, [recorded], table)

    def apply_all(self, cur: Cursor, batch: Sequence[Recorded], table: Mapping[str, sql.Identifier]) -> None:
        """Entries that join and leave within the batch never touch the table; the rest in two statements."""
        joined: dict[str, dict[str, Any]] = {}
        left: list[str] = []
        for recorded in batch:
            e = recorded.event
            request_id: str | None = getattr(e, "request_id", None)
            if request_id is None or evolve(_WAITLISTED, e) is _WAITLISTED:
                continue  # moves no request
            if isinstance(e, RequestDecision):
                # A request's first event: it joins the waitlist when its decision puts it there.
                if evolve(PENDING, e).status != "waitlisted" or e.arrival is None:
                    continue
                arrival = StreamId.parse(e.arrival)
                joined[e.request_id] = {
                    "request_id": e.request_id,
                    "course_id": e.course_id,
                    "student_id": e.student_id,
                    "priority": e.priority,
                    "arrival_ms": arrival.ms,
                    "arrival_seq": arrival.seq,
                }
            elif joined.pop(request_id, None) is None:  # any later change of status takes it off the waitlist
                left.append(request_id)
        t = table["waitlist_entries"]
        if left:
            cur.execute(sql.SQL("DELETE FROM {table} WHERE request_id = ANY(%s::uuid[])").format(table=t), [left])
        if joined:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {table} (request_id, course_id, student_id, priority, arrival_ms, arrival_seq)"
                    " SELECT * FROM json_to_recordset(%s::json) AS u(request_id uuid, course_id bigint,"
                    " student_id bigint, priority smallint, arrival_ms bigint, arrival_seq bigint)"
                ).format(table=t),
                [recordset(list(joined.values()))],
            )
