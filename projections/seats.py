"""Per-course seats: capacity, seats taken, waitlist length and registration window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from psycopg import sql

from courseflow.events import (
    CapacityChanged,
    CourseCreated,
    CourseEvent,
    EnrollmentDropped,
    EnrollmentGranted,
    RegistrationWindowChanged,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)
from courseflow.eventstore.store import Cursor
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
        self.apply_all(cur, [recorded], table)

    def _apply_one(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
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

    def apply_all(self, cur: Cursor, batch: Sequence[Recorded], table: Mapping[str, sql.Identifier]) -> None:
        """Seat and waitlist changes fold into one UPDATE per batch, after the other events, applied one by one:
        a course is created before its first decision, and its capacity and window are columns the counts
        never touch."""
        deltas: dict[int, tuple[int, int]] = {}
        for recorded in batch:
            e = recorded.event
            if (delta := _DELTAS.get(type(e))) is not None and isinstance(e, CourseEvent):
                s, w = deltas.get(e.course_id, (0, 0))
                deltas[e.course_id] = (s + delta[0], w + delta[1])
            elif isinstance(e, CourseCreated | CapacityChanged | RegistrationWindowChanged):
                self._apply_one(cur, recorded, table)
        self._add(cur, table["course_seats"], deltas)

    def _add(self, cur: Cursor, table: sql.Identifier, deltas: Mapping[int, tuple[int, int]]) -> None:
        if not deltas:
            return
        self.run(
            cur,
            "UPDATE {table} t SET seats_taken = t.seats_taken + u.s, waitlist_length = t.waitlist_length + u.w"
            " FROM unnest(%(c)s::bigint[], %(s)s::int[], %(w)s::int[]) AS u(course_id, s, w)"
            " WHERE t.course_id = u.course_id",
            table,
            {"c": list(deltas), "s": [d[0] for d in deltas.values()], "w": [d[1] for d in deltas.values()]},
        )
