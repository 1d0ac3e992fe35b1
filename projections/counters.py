"""The counters behind /metrics: how many requests each course saw, and what became of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from psycopg import sql

from courseflow.events import (
    CourseCreated,
    CourseEvent,
    EnrollmentDropped,
    EnrollmentGranted,
    EnrollmentRejected,
    EnrollmentRequested,
    RequestDecision,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)
from courseflow.eventstore.store import Cursor
from projections.base import Projection, Recorded

_COUNTER: dict[type, str] = {
    EnrollmentRequested: "requested",
    EnrollmentGranted: "granted",
    Waitlisted: "waitlisted",
    EnrollmentRejected: "rejected",
    EnrollmentDropped: "dropped",
    WaitlistLeft: "left_waitlist",
    WaitlistPromoted: "promoted",
}
_COLUMNS = tuple(dict.fromkeys(_COUNTER.values()))


class Counters(Projection):
    name = "counters"
    tables = ("enrollment_counters",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        self.apply_all(cur, [recorded], table)

    def apply_all(self, cur: Cursor, batch: Sequence[Recorded], table: Mapping[str, sql.Identifier]) -> None:
        """Counts fold into one UPDATE per run of events; a new course's row is inserted in between."""
        t = table["enrollment_counters"]
        counts: dict[int, dict[str, int]] = {}
        for recorded in batch:
            e = recorded.event
            if isinstance(e, CourseCreated):
                self._add(cur, t, counts)
                counts = {}
                self.run(cur, "INSERT INTO {table} (course_id) VALUES (%(c)s)", t, {"c": e.course_id})
            elif (column := _COUNTER.get(type(e))) is not None and isinstance(e, CourseEvent):
                per_course = counts.setdefault(e.course_id, dict.fromkeys(_COLUMNS, 0))
                per_course[column] += 1
                if isinstance(e, RequestDecision) and e.carries_request:
                    per_course["requested"] += 1  # no EnrollmentRequested precedes it (sql/007)
        self._add(cur, t, counts)

    def _add(self, cur: Cursor, table: sql.Identifier, counts: Mapping[int, Mapping[str, int]]) -> None:
        if not counts:
            return
        columns = sql.SQL(", ").join(sql.SQL("{c} = t.{c} + u.{c}").format(c=sql.Identifier(c)) for c in _COLUMNS)
        names = sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS)
        arrays = sql.SQL(", ").join(sql.SQL("%s::int[]") for _ in _COLUMNS)
        cur.execute(
            sql.SQL(
                "UPDATE {table} t SET {columns} FROM unnest(%s::bigint[], {arrays}) AS u(course_id, {names})"
                " WHERE t.course_id = u.course_id"
            ).format(table=table, columns=columns, arrays=arrays, names=names),
            [list(counts), *([c[col] for c in counts.values()] for col in _COLUMNS)],
        )
