"""Per-course seats: capacity, seats taken, waitlist length and registration window."""

from __future__ import annotations

from collections.abc import Mapping

from psycopg import sql

from courseflow.events import (
    CapacityChanged,
    CourseCreated,
    EnrollmentDropped,
    EnrollmentGranted,
    RegistrationWindowChanged,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)
from courseflow.store import Cursor
from projections.base import Projection, Recorded

# (seats taken, waitlist length) changes per event type.
_DELTAS: dict[type, tuple[int, int]] = {
    EnrollmentGranted: (1, 0),
    Waitlisted: (0, 1),
    WaitlistPromoted: (1, -1),
    EnrollmentDropped: (-1, 0),
    WaitlistLeft: (0, -1),
}


class CourseSeats(Projection):
    name = "course_seats"
    tables = ("course_seats",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        t, e = table["course_seats"], recorded.event
        match e:
            case CourseCreated():
                self.run(
                    cur,
                    "INSERT INTO {table} (course_id, title, capacity, opens_at, closes_at)"
                    " VALUES (%(c)s, %(title)s, %(cap)s, %(o)s, %(x)s)",
                    t,
                    {"c": e.course_id, "title": e.title, "cap": e.capacity, "o": e.opens_at, "x": e.closes_at},
                )
            case CapacityChanged():
                self.run(
                    cur,
                    "UPDATE {table} SET capacity = %(cap)s WHERE course_id = %(c)s",
                    t,
                    {"c": e.course_id, "cap": e.capacity},
                )
            case RegistrationWindowChanged():
                self.run(
                    cur,
                    "UPDATE {table} SET opens_at = %(o)s, closes_at = %(x)s WHERE course_id = %(c)s",
                    t,
                    {"c": e.course_id, "o": e.opens_at, "x": e.closes_at},
                )
            case _ if type(e) in _DELTAS:
                seats, waitlist = _DELTAS[type(e)]
                self.run(
                    cur,
                    "UPDATE {table} SET seats_taken = seats_taken + %(s)s, waitlist_length = waitlist_length + %(w)s"
                    " WHERE course_id = %(c)s",
                    t,
                    {"c": e.course_id, "s": seats, "w": waitlist},
                )
