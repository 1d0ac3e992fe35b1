"""The write model as the API reads it: a decided request, its live waitlist place, the courses.

Read-your-writes: these answer before the read models catch up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.rows import dict_row

from courseflow import fairness
from courseflow.eventstore.store import Conn, readable

# A waitlisted request's live place: those of its course ranking ahead of it, by priority then arrival.
_WAITLIST_PLACE = (
    "(SELECT count(*) + 1 FROM enrollment_requests o WHERE o.course_id = r.course_id AND o.status = 'waitlisted'"
    f" AND {fairness.ahead('o', 'r')})"
)


def waitlist_places(conn: Conn, request_ids: Sequence[str]) -> dict[str, int]:
    """The live places of those of these requests still waitlisted, in one query."""
    rows = conn.execute(
        f"SELECT request_id::text, {_WAITLIST_PLACE} FROM enrollment_requests r"
        " WHERE request_id = ANY(%s::uuid[]) AND status = 'waitlisted'",
        (list(request_ids),),
    ).fetchall()
    return {request_id: int(place) for request_id, place in rows}


def request(conn: Conn, request_id: str) -> dict[str, Any] | None:
    """A decided request as the write model has it, with its waitlist position when waitlisted."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT request_id::text, course_id, student_id, priority, status, reason, requested_at, decided_at,"
            f" CASE WHEN status = 'waitlisted' THEN {_WAITLIST_PLACE} END"
            " AS waitlist_position FROM enrollment_requests r WHERE request_id = %s",
            (request_id,),
        )
        return cur.fetchone()


def course_ids(conn: Conn) -> list[int]:
    return [row[0] for row in conn.execute("SELECT course_id FROM courses")]


def course(conn: Conn, course_id: int) -> dict[str, Any] | None:
    """A course as the write model has it: read-your-writes before the read model catches up."""
    found = courses(conn, [course_id])
    return found[0] if found else None


def courses(conn: Conn, course_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Those of these courses that exist, as the write model has them, in one query, by id."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT course_id, title, capacity, seats_taken, waitlist_length,"
            f" {readable('opens_at')}, {readable('closes_at')} FROM courses WHERE course_id = ANY(%s)"
            " ORDER BY course_id",
            (list(course_ids),),
        )
        return cur.fetchall()
