"""The counters behind /metrics: how many requests each course saw, and what became of them."""

from __future__ import annotations

from collections.abc import Mapping

from psycopg import sql

from courseflow.events import (
    CourseCreated,
    EnrollmentDropped,
    EnrollmentGranted,
    EnrollmentRejected,
    EnrollmentRequested,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)
from courseflow.store import Cursor
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


class Counters(Projection):
    name = "counters"
    tables = ("enrollment_counters",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        t, e = table["enrollment_counters"], recorded.event
        if isinstance(e, CourseCreated):
            self.run(cur, "INSERT INTO {table} (course_id) VALUES (%(c)s)", t, {"c": e.course_id})
        elif (column := _COUNTER.get(type(e))) is not None:
            cur.execute(
                sql.SQL("UPDATE {table} SET {col} = {col} + 1 WHERE course_id = %(c)s").format(
                    table=t, col=sql.Identifier(column)
                ),
                {"c": e.course_id},
            )
