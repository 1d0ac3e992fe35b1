"""Every request of every student, with its current status."""

from __future__ import annotations

from collections.abc import Mapping

from psycopg import sql

from courseflow.events import (
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

_STATUS: dict[type, str] = {
    EnrollmentGranted: "granted",
    Waitlisted: "waitlisted",
    EnrollmentRejected: "rejected",
    WaitlistPromoted: "granted",
    EnrollmentDropped: "dropped",
    WaitlistLeft: "left",
}
_DECISIONS = (EnrollmentGranted, Waitlisted, EnrollmentRejected)
_CHANGES = (*_DECISIONS, WaitlistPromoted, EnrollmentDropped, WaitlistLeft)


class Enrollments(Projection):
    name = "enrollments"
    tables = ("enrollments",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        t, e = table["enrollments"], recorded.event
        if isinstance(e, EnrollmentRequested):
            self.run(
                cur,
                "INSERT INTO {table} (request_id, course_id, student_id, priority, status, requested_at, updated_at)"
                " VALUES (%(r)s, %(c)s, %(s)s, %(p)s, 'pending', %(at)s, %(now)s)",
                t,
                {
                    "r": e.request_id,
                    "c": e.course_id,
                    "s": e.student_id,
                    "p": e.priority,
                    "at": e.requested_at,
                    "now": recorded.recorded_at,
                },
            )
        elif isinstance(e, _CHANGES):
            self.run(
                cur,
                "UPDATE {table} SET status = %(status)s, reason = %(reason)s, updated_at = %(now)s,"
                " decided_at = CASE WHEN %(decision)s THEN %(now)s ELSE decided_at END WHERE request_id = %(r)s",
                t,
                {
                    "r": e.request_id,
                    "status": _STATUS[type(e)],
                    "now": recorded.recorded_at,
                    "reason": e.reason if isinstance(e, EnrollmentRejected) else None,
                    "decision": isinstance(e, _DECISIONS),
                },
            )
