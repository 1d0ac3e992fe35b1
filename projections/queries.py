"""What the API reads: the read models, shaped as its answers."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from courseflow import fairness
from courseflow.domain import MAX_ID
from courseflow.eventstore.eventlog import EventLog
from courseflow.eventstore.store import Conn, readable
from projections.projector import slowest

# A course's seats, capacity and window as the write model has them, so a change answered a moment ago never
# reads back undone while the projector catches up; and the counters, which only the read model keeps.
_COURSE = (
    "SELECT c.course_id, c.title, c.capacity, c.seats_taken, c.waitlist_length,"
    f" {readable('c.opens_at')}, {readable('c.closes_at')},"
    " n.requested, n.granted, n.waitlisted, n.rejected, n.dropped, n.left_waitlist, n.promoted"
    " FROM courses c LEFT JOIN enrollment_counters n USING (course_id)"
)

# Live place in the waitlist: entries of the same course ranking ahead, by priority then arrival.
_WAITLIST_POSITION = (
    f"(SELECT count(*) + 1 FROM waitlist_entries o WHERE o.course_id = w.course_id AND {fairness.ahead('o', 'w')})"
)


def course(conn: Conn, course_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_COURSE + " WHERE c.course_id = %s", (course_id,))
        return cur.fetchone()


def courses(conn: Conn, after: int, limit: int) -> list[dict[str, Any]]:
    """A page of courses by id, each as `course` reads it, in one statement."""
    with conn.cursor(row_factory=dict_row) as cur:
        # A course made beyond the ids' bound, before it was enforced, is not listed: no client could hold its id.
        cur.execute(
            _COURSE + " WHERE c.course_id > %s AND c.course_id <= %s ORDER BY c.course_id LIMIT %s",
            (after, MAX_ID, limit),
        )
        return cur.fetchall()


def seats(conn: Conn, course_id: int | None = None) -> list[dict[str, Any]]:
    """Seats and waitlists only: what /metrics needs, and nothing a malformed row could break."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT course_id, capacity, seats_taken, waitlist_length FROM course_seats"
            " WHERE %(id)s::bigint IS NULL OR course_id = %(id)s ORDER BY course_id",
            {"id": course_id},
        )
        return cur.fetchall()


def seat_totals(conn: Conn) -> dict[str, Any]:
    """Seats and waitlists summed over every course, and how many courses there are: one row however many."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT count(*) AS courses, coalesce(sum(capacity), 0) AS capacity,"
            " coalesce(sum(seats_taken), 0) AS seats_taken, coalesce(sum(waitlist_length), 0) AS waitlist_length,"
            " coalesce(bool_or(seats_taken < capacity), false) AS open FROM course_seats"
        )
        found = cur.fetchone()
        assert found is not None
        return found


def seats_page(conn: Conn, after: int, limit: int) -> list[dict[str, Any]]:
    """`seats` for a page of courses by id."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT course_id, capacity, seats_taken, waitlist_length FROM course_seats"
            " WHERE course_id > %s ORDER BY course_id LIMIT %s",
            (after, limit),
        )
        return cur.fetchall()


def enrollment(conn: Conn, request_id: str) -> dict[str, Any] | None:
    """A request as projected, with its live waitlist position when waitlisted."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT e.request_id::text, e.course_id, e.student_id, e.priority, e.status, e.reason, e.requested_at,"
            f" e.decided_at, CASE WHEN w.request_id IS NOT NULL THEN {_WAITLIST_POSITION} END AS waitlist_position"
            " FROM enrollments e LEFT JOIN waitlist_entries w USING (request_id) WHERE e.request_id = %s",
            (request_id,),
        )
        return cur.fetchone()


def waitlist(conn: Conn, course_id: int, limit: int, offset: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT row_number() OVER (ORDER BY {fairness.order_by()}) AS position,"
            " request_id::text, student_id, priority FROM waitlist_entries WHERE course_id = %(c)s"
            f" ORDER BY {fairness.order_by()} LIMIT %(limit)s OFFSET %(offset)s",
            {"c": course_id, "limit": limit, "offset": offset},
        )
        return cur.fetchall()


def waitlist_places(conn: Conn, course_id: int, student_id: int) -> list[dict[str, Any]]:
    """One student's places on a course's waitlist, with their live positions."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_WAITLIST_POSITION} AS position, w.request_id::text, w.student_id, w.priority"
            " FROM waitlist_entries w WHERE w.course_id = %s AND w.student_id = %s",
            (course_id, student_id),
        )
        return cur.fetchall()


def student_enrollments(conn: Conn, student_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT request_id::text, course_id, priority, status, reason, requested_at, decided_at FROM enrollments"
            " WHERE student_id = %s ORDER BY requested_at",
            (student_id,),
        )
        return cur.fetchall()


def lag(conn: Conn) -> int:
    """How many events the slowest projection is behind."""
    with conn.cursor() as cur:
        return EventLog(cur).behind(slowest(cur))
