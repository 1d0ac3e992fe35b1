"""PostgreSQL: migrations, the event log and the locked write model."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import msgspec
import psycopg
from psycopg.rows import TupleRow, dict_row

from courseflow import events
from courseflow.domain import CourseState, Pending
from courseflow.events import CourseCreated, Decision, EnrollmentRejected, Waitlisted

SQL_DIR = Path(os.environ.get("COURSEFLOW_SQL_DIR", Path(__file__).resolve().parent.parent / "sql"))
# Serialises concurrent `courseflow migrate` runs.
_MIGRATION_LOCK = 0x636F7572


def course_stream(course_id: int) -> str:
    return f"course-{course_id}"


def migrate(database_url: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the `NNN_name.sql` files not yet recorded, in order; returns the names applied."""
    files = sorted(sql_dir.glob("[0-9][0-9][0-9]_*.sql"))
    if not files:
        raise FileNotFoundError(f"no migrations found in {sql_dir}")
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for path in files:
            version = int(path.name[:3])
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone():
                    continue
                conn.execute(path.read_text())  # trusted files shipped with the code
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, path.stem))
            applied.append(path.stem)
    return applied


def pending_migrations(conn: psycopg.Connection[TupleRow], sql_dir: Path = SQL_DIR) -> list[str]:
    known = {int(p.name[:3]): p.stem for p in sql_dir.glob("[0-9][0-9][0-9]_*.sql")}
    try:
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        done = set()
    return [name for version, name in sorted(known.items()) if version not in done]


async def create_course(conn: psycopg.AsyncConnection[TupleRow], course_id: int, title: str, capacity: int) -> bool:
    """Create a course and its CourseCreated event; False when the course already exists."""
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO courses (course_id, title, capacity, version) VALUES (%s, %s, %s, 1)"
            " ON CONFLICT (course_id) DO NOTHING",
            (course_id, title, capacity),
        )
        if cur.rowcount == 0:
            return False
        event = CourseCreated(course_id=course_id, title=title, capacity=capacity)
        await conn.execute(
            "INSERT INTO events (stream, stream_version, type, data) VALUES (%s, 1, %s, %s)",
            (course_stream(course_id), events.type_name(event), events.encode(event).decode()),
        )
    return True


class LockedCourse(msgspec.Struct, frozen=True):
    state: CourseState
    version: int


def lock_courses(cur: psycopg.Cursor[TupleRow], course_ids: Iterable[int]) -> dict[int, LockedCourse]:
    """Lock the course rows in id order (a fixed order, so two workers never deadlock)."""
    cur.execute(
        "SELECT course_id, capacity, seats_taken, waitlist_length, version FROM courses"
        " WHERE course_id = ANY(%s) ORDER BY course_id FOR UPDATE",
        (sorted(set(course_ids)),),
    )
    return {
        cid: LockedCourse(CourseState(course_id=cid, capacity=cap, seats_taken=seats, waitlist_length=wl), version)
        for cid, cap, seats, wl, version in cur.fetchall()
    }


def decided_requests(cur: psycopg.Cursor[TupleRow], request_ids: Sequence[str]) -> set[str]:
    cur.execute("SELECT request_id::text FROM enrollment_requests WHERE request_id = ANY(%s::uuid[])", (request_ids,))
    return {row[0] for row in cur.fetchall()}


def holders(cur: psycopg.Cursor[TupleRow], course_id: int, student_ids: Iterable[int]) -> frozenset[int]:
    cur.execute(
        "SELECT student_id FROM enrollment_requests WHERE course_id = %s AND student_id = ANY(%s)"
        " AND status IN ('granted', 'waitlisted')",
        (course_id, list(set(student_ids))),
    )
    return frozenset(row[0] for row in cur.fetchall())


def record_decisions(
    cur: psycopg.Cursor[TupleRow],
    course: LockedCourse,
    after: CourseState,
    pending: Sequence[Pending],
    decisions: Sequence[Decision],
    worker: str,
) -> int:
    """Append each request and its decision to the course stream and update the locked rows.

    Returns the course's new stream version.
    """
    by_id = {p.request.request_id: p for p in pending}
    version = course.version
    stream = course_stream(course.state.course_id)
    with cur.copy("COPY events (stream, stream_version, type, data, metadata) FROM STDIN") as copy:
        for decision in decisions:
            item = by_id[decision.request_id]
            meta = msgspec.json.encode(
                {"stream_id": str(item.arrival), "idempotency_key": item.request.idempotency_key, "worker": worker}
            ).decode()
            for event in (item.request, decision):
                version += 1
                copy.write_row((stream, version, events.type_name(event), events.encode(event).decode(), meta))
    with cur.copy(
        "COPY enrollment_requests (request_id, course_id, student_id, idempotency_key, priority, stream_id,"
        " requested_at, status, reason, waitlist_position) FROM STDIN"
    ) as copy:
        for decision in decisions:
            req = by_id[decision.request_id].request
            copy.write_row(
                (
                    req.request_id,
                    req.course_id,
                    req.student_id,
                    req.idempotency_key,
                    req.priority,
                    str(by_id[decision.request_id].arrival),
                    req.requested_at,
                    _status(decision),
                    decision.reason if isinstance(decision, EnrollmentRejected) else None,
                    decision.position if isinstance(decision, Waitlisted) else None,
                )
            )
    cur.execute(
        "UPDATE courses SET seats_taken = %s, waitlist_length = %s, version = %s WHERE course_id = %s",
        (after.seats_taken, after.waitlist_length, version, after.course_id),
    )
    return version


def _status(decision: Decision) -> str:
    if isinstance(decision, Waitlisted):
        return "waitlisted"
    if isinstance(decision, EnrollmentRejected):
        return "rejected"
    return "granted"


class RequestStatus(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    course_id: int
    student_id: int
    priority: int
    status: str
    requested_at: datetime
    decided_at: datetime
    reason: str | None = None
    waitlist_position: int | None = None


async def request_status(conn: psycopg.AsyncConnection[TupleRow], request_id: str) -> RequestStatus | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT request_id::text, course_id, student_id, priority, status, requested_at, decided_at, reason,"
            " waitlist_position FROM enrollment_requests WHERE request_id = %s",
            (request_id,),
        )
        row = await cur.fetchone()
    return None if row is None else msgspec.convert(row, RequestStatus)


class CourseRow(msgspec.Struct, frozen=True, kw_only=True):
    course_id: int
    title: str
    capacity: int
    seats_taken: int
    waitlist_length: int


async def courses(conn: psycopg.AsyncConnection[TupleRow], course_id: int | None = None) -> list[CourseRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT course_id, title, capacity, seats_taken, waitlist_length FROM courses"
            " WHERE %(id)s::bigint IS NULL OR course_id = %(id)s ORDER BY course_id",
            {"id": course_id},
        )
        return [msgspec.convert(row, CourseRow) for row in await cur.fetchall()]


async def course_ids(conn: psycopg.AsyncConnection[TupleRow]) -> list[int]:
    cur = await conn.execute("SELECT course_id FROM courses")
    return [row[0] for row in await cur.fetchall()]
