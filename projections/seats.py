"""Per-course seats: capacity, seats taken, waitlist length and registration window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql

from courseflow.domain import CourseState, created, evolve
from courseflow.events import CourseCreated, CourseEvent, RegistrationWindowChanged
from courseflow.eventstore.store import Cursor
from projections.base import Projection, Recorded, recordset

_ROW = (
    "course_id bigint, capacity integer, seats_taken integer, waitlist_length integer,"
    " opens_at timestamptz, closes_at timestamptz, window_changed boolean"
)
_INSERT = (
    "INSERT INTO {table} (course_id, title, capacity, seats_taken, waitlist_length, opens_at, closes_at)"
    " SELECT course_id, title, capacity, seats_taken, waitlist_length, opens_at, closes_at"
    f" FROM json_to_recordset(%s::json) AS u({_ROW}, title text)"
)
_UPDATE = (
    "UPDATE {table} t SET capacity = u.capacity, seats_taken = u.seats_taken, waitlist_length = u.waitlist_length,"
    " opens_at = CASE WHEN u.window_changed THEN u.opens_at ELSE t.opens_at END,"
    " closes_at = CASE WHEN u.window_changed THEN u.closes_at ELSE t.closes_at END"
    f" FROM json_to_recordset(%s::json) AS u({_ROW})"
    " WHERE t.course_id = u.course_id"
)


class CourseSeats(Projection):
    name = "course_seats"
    tables = ("course_seats",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        self.apply_all(cur, [recorded], table)

    def apply_all(self, cur: Cursor, batch: Sequence[Recorded], table: Mapping[str, sql.Identifier]) -> None:
        """The batch's courses as they stand, `domain.evolve`d through the batch in Python, then written back:
        one SELECT, one INSERT (new courses) and one UPDATE per batch."""
        t = table["course_seats"]
        touched = {r.event.course_id for r in batch if isinstance(r.event, CourseEvent)}
        if not touched:
            return
        before = self._read(cur, t, touched)
        states = dict(before)
        titles: dict[int, str] = {}
        windowed: set[int] = set()
        for recorded in batch:
            e = recorded.event
            if isinstance(e, CourseCreated):
                states[e.course_id], titles[e.course_id] = created(e), e.title
            elif isinstance(e, CourseEvent) and (state := states.get(e.course_id)) is not None:
                states[e.course_id] = evolve(state, e)
                if isinstance(e, RegistrationWindowChanged):
                    windowed.add(e.course_id)
        new = [_row(s, True) | {"title": titles[c]} for c, s in states.items() if c in titles and c not in before]
        changed = [_row(s, c in windowed) for c, s in states.items() if c in before and s != before[c]]
        if changed:
            cur.execute(sql.SQL(_UPDATE).format(table=t), [recordset(changed)])
        if new:
            cur.execute(sql.SQL(_INSERT).format(table=t), [recordset(new)])

    @staticmethod
    def _read(cur: Cursor, table: sql.Identifier, course_ids: set[int]) -> dict[int, CourseState]:
        # The window is not read back: only an event of the batch changes it, and a stored bound outside
        # Python's datetime range (a row older than the range check) must not stop the projection.
        cur.execute(
            sql.SQL(
                "SELECT course_id, capacity, seats_taken, waitlist_length FROM {table} WHERE course_id = ANY(%s)"
            ).format(table=table),
            [list(course_ids)],
        )
        return {
            c: CourseState(course_id=c, capacity=cap, seats_taken=s, waitlist_length=w)
            for c, cap, s, w in cur.fetchall()
        }


def _row(state: CourseState, window_changed: bool) -> dict[str, Any]:
    return {
        "course_id": state.course_id,
        "capacity": state.capacity,
        "seats_taken": state.seats_taken,
        "waitlist_length": state.waitlist_length,
        "opens_at": state.opens_at,
        "closes_at": state.closes_at,
        "window_changed": window_changed,
    }
