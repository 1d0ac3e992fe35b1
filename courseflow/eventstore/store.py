"""PostgreSQL writes: appends to the event log and the locked write model (courses, decided requests)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import msgspec
import psycopg
from psycopg.rows import TupleRow

from courseflow import events, fairness
from courseflow.domain import PENDING, CourseState, Holding, Pending, RequestStatus, evolve
from courseflow.events import CourseCreated, Decision, Event, RequestDeadLettered

# Every append wakes the log's followers (the projector, each API process's live feed) at its COMMIT.
NOTIFY_CHANNEL = "courseflow_events"

Conn = psycopg.Connection[TupleRow]
Cursor = psycopg.Cursor[TupleRow]


# Decisions, as SQL: at most one per request (sql/001's events_one_decision_per_request).
DECISIONS = "('EnrollmentGranted', 'Waitlisted', 'EnrollmentRejected')"


def course_stream(course_id: int) -> str:
    return f"course-{course_id}"


class Appended(msgspec.Struct, frozen=True):
    """Events for one stream, to append after `version`, each with its metadata (JSON)."""

    stream: str
    version: int
    events: Sequence[Event]
    metadata: Sequence[bytes]


def append(cur: Cursor, batches: Sequence[Appended]) -> list[int]:
    """Append events to their streams in one COPY; returns each stream's new version.

    Appends from different transactions do not wait for each other: each event records its transaction
    (the `txid` column's default), which is how readers never skip one committed late (see eventlog).
    """
    _wake_followers(cur)
    versions = []
    lines = []
    for batch in batches:
        stream, version = copy_text(batch.stream), batch.version
        for event, meta in zip(batch.events, batch.metadata, strict=True):
            version += 1
            data = copy_text(events.encode(event).decode())
            lines.append(f"{stream}\t{version}\t{events.type_name(event)}\t{data}\t{copy_text(meta.decode())}\n")
        versions.append(version)
    with cur.copy("COPY events (stream, stream_version, type, data, metadata) FROM STDIN") as copy:
        copy.write("".join(lines))
    return versions


def copy_text(value: str) -> str:
    """A value as COPY's text format reads it: lines written by hand cost a fraction of `write_row`'s."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _wake_followers(cur: Cursor) -> None:
    cur.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))


DEAD_LETTER_STREAM = "dead-letters"
# The dead-letter stream has no row to lock for its next version: this lock stands in, for that stream only.
_DEAD_LETTER_LOCK = 0x646C7472


def record_dead_letter(conn: Conn, event: RequestDeadLettered) -> None:
    """Append the dead-lettering of a stream entry, once per entry (a repeat after a crash is a no-op).

    Entries dead-lettered at the same time each get the stream's next version: they take turns on a lock
    of this stream alone, and the version is read only once it is held.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DEAD_LETTER_LOCK,))
        _wake_followers(cur)
        cur.execute(
            "INSERT INTO events (stream, stream_version, type, data)"
            " SELECT %(s)s, coalesce(max(stream_version), 0) + 1, %(type)s, %(data)s FROM events WHERE stream = %(s)s"
            " ON CONFLICT ((data ->> 'entry_id')) WHERE type = 'RequestDeadLettered' DO NOTHING",
            {"s": DEAD_LETTER_STREAM, "type": events.type_name(event), "data": events.encode(event).decode()},
        )


def create_course(
    conn: Conn, course_id: int, title: str, capacity: int, opens_at: datetime | None, closes_at: datetime | None
) -> bool:
    """Create a course and its CourseCreated event; False when the course already exists."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "INSERT INTO courses (course_id, title, capacity, opens_at, closes_at, version)"
            " VALUES (%s, %s, %s, %s, %s, 1) ON CONFLICT (course_id) DO NOTHING",
            (course_id, title, capacity, opens_at, closes_at),
        )
        if cur.rowcount == 0:
            return False
        created = CourseCreated(
            course_id=course_id, title=title, capacity=capacity, opens_at=opens_at, closes_at=closes_at
        )
        append(cur, [Appended(course_stream(course_id), 0, [created], [b"{}"])])
    return True


class LockedCourse(msgspec.Struct, frozen=True):
    state: CourseState
    version: int


def readable(column: str, alias: bool = True) -> str:
    """A timestamptz column as SQL that Python can always load: rows from before the range check are clamped."""
    # greatest() and least() skip NULLs, so a missing bound must stay NULL explicitly.
    clamped = f"least(greatest({column}, '0001-01-02T00:00:00Z'), '9999-12-30T00:00:00Z')"
    expression = f"CASE WHEN {column} IS NOT NULL THEN {clamped} END"
    return f"{expression} AS {column.split('.')[-1]}" if alias else expression


_COURSE_COLUMNS = (
    f"course_id, capacity, seats_taken, waitlist_length, {readable('opens_at')}, {readable('closes_at')}, version"
)


def _locked(row: TupleRow) -> LockedCourse:
    cid, capacity, seats, waitlist, opens_at, closes_at, version = row
    state = CourseState(
        course_id=cid,
        capacity=capacity,
        seats_taken=seats,
        waitlist_length=waitlist,
        opens_at=opens_at,
        closes_at=closes_at,
    )
    return LockedCourse(state, version)


def lock_courses(cur: Cursor, course_ids: Iterable[int]) -> dict[int, LockedCourse]:
    """Lock the course rows in id order (a fixed order, so two transactions never deadlock)."""
    cur.execute(
        f"SELECT {_COURSE_COLUMNS} FROM courses WHERE course_id = ANY(%s) ORDER BY course_id FOR UPDATE",
        (sorted(set(course_ids)),),
    )
    return {row[0]: _locked(row) for row in cur.fetchall()}


def lock_opened_backlog(cur: Cursor, now: datetime) -> LockedCourse | None:
    """Lock one course whose registration has opened with requests still waiting, skipping any another worker holds."""
    cur.execute(
        f"SELECT {_COURSE_COLUMNS} FROM courses WHERE backlog AND (opens_at IS NULL OR opens_at <= %s)"
        " ORDER BY opens_at NULLS FIRST, course_id LIMIT 1 FOR UPDATE SKIP LOCKED",
        (now,),
    )
    row = cur.fetchone()
    return None if row is None else _locked(row)


def next_opening(conn: Conn, now: datetime) -> datetime | None:
    row = conn.execute(
        f"SELECT min({readable('opens_at', alias=False)}) FROM courses WHERE backlog AND opens_at > %s", (now,)
    ).fetchone()
    return None if row is None else row[0]


def set_backlog(cur: Cursor, course_id: int, backlog: bool) -> None:
    cur.execute("UPDATE courses SET backlog = %s WHERE course_id = %s", (backlog, course_id))


def decided_requests(cur: Cursor, request_ids: Sequence[str]) -> set[str]:
    cur.execute("SELECT request_id::text FROM enrollment_requests WHERE request_id = ANY(%s::uuid[])", (request_ids,))
    return {row[0] for row in cur.fetchall()}


class Holder(NamedTuple):
    """A student who holds a seat or a waitlist place in a course."""

    course_id: int
    student_id: int


def holders(cur: Cursor, pairs: Collection[tuple[int, int]]) -> set[Holder]:
    """Those of the (course, student) pairs where the student holds a seat or a waitlist place."""
    courses, students = zip(*pairs, strict=True) if pairs else ((), ())
    # One probe of the one-place index per pair: a semi-join may pick a scan of the whole table when its
    # statistics are older than its growth (a fresh table, before autovacuum's first analyze), in every round.
    cur.execute(
        "SELECT held.course_id, held.student_id FROM unnest(%s::bigint[], %s::bigint[]) AS pair(course_id, student_id)"
        " CROSS JOIN LATERAL (SELECT course_id, student_id FROM enrollment_requests r"
        " WHERE r.course_id = pair.course_id AND r.student_id = pair.student_id"
        " AND r.status IN ('granted', 'waitlisted') LIMIT 1) AS held",
        (list(courses), list(students)),
    )
    return {Holder(course_id, student_id) for course_id, student_id in cur.fetchall()}


def waitlist_head(cur: Cursor, course_id: int, limit: int) -> list[Holding]:
    cur.execute(
        "SELECT request_id::text, student_id FROM enrollment_requests WHERE course_id = %s AND status = 'waitlisted'"
        f" ORDER BY {fairness.order_by()} LIMIT %s",
        (course_id, max(0, limit)),
    )
    return [Holding(request_id=rid, student_id=sid, status="waitlisted") for rid, sid in cur.fetchall()]


class DecidedRequest(msgspec.Struct, frozen=True):
    """A decided request as the write model has it: `holding` is None unless it holds a seat or a place."""

    course_id: int
    status: RequestStatus
    holding: Holding | None


def holding(cur: Cursor, request_id: str) -> DecidedRequest | None:
    """A decided request's course, status and holding, or None when it is not decided (yet)."""
    cur.execute("SELECT course_id, status, student_id FROM enrollment_requests WHERE request_id = %s", (request_id,))
    row = cur.fetchone()
    if row is None:
        return None
    course_id, status, student_id = row
    held = (
        Holding(request_id=request_id, student_id=student_id, status=status)
        if status in ("granted", "waitlisted")
        else None
    )
    return DecidedRequest(course_id, status, held)


class Decided(msgspec.Struct, frozen=True):
    """One course's decisions in a transaction: the locked row, its state after, what was decided."""

    course: LockedCourse
    after: CourseState
    pending: Sequence[Pending]
    decisions: Sequence[Decision]


def record_decisions(cur: Cursor, decided: Sequence[Decided], worker: str) -> None:
    """Append each decision (which carries its request) to its course stream, record it in the write model,
    and update the locked course rows: one COPY, one COPY and one UPDATE for any number of courses."""
    meta = msgspec.json.encode({"worker": worker})
    batches = [
        Appended(course_stream(d.course.state.course_id), d.course.version, d.decisions, [meta] * len(d.decisions))
        for d in decided
    ]
    versions = append(cur, batches)
    lines = []
    for d in decided:
        by_id = {p.request.request_id: p for p in d.pending}
        for decision in d.decisions:
            item = by_id[decision.request_id]
            req = item.request
            outcome = evolve(PENDING, decision)
            reason = "\\N" if outcome.reason is None else outcome.reason
            lines.append(
                f"{copy_text(req.request_id)}\t{req.course_id}\t{req.student_id}\t{copy_text(req.idempotency_key)}"
                f"\t{req.priority}\t{item.arrival.ms}\t{item.arrival.seq}\t{req.requested_at.isoformat()}"
                f"\t{outcome.status}\t{reason}\n"
            )
    with cur.copy(
        "COPY enrollment_requests (request_id, course_id, student_id, idempotency_key, priority, arrival_ms,"
        " arrival_seq, requested_at, status, reason) FROM STDIN"
    ) as copy:
        copy.write("".join(lines))
    cur.execute(
        "UPDATE courses c SET seats_taken = u.seats, waitlist_length = u.waitlist, version = u.version"
        " FROM unnest(%s::bigint[], %s::int[], %s::int[], %s::int[]) AS u(course_id, seats, waitlist, version)"
        " WHERE c.course_id = u.course_id",
        (
            [d.after.course_id for d in decided],
            [d.after.seats_taken for d in decided],
            [d.after.waitlist_length for d in decided],
            versions,
        ),
    )


class DecisionLatency(msgspec.Struct, frozen=True):
    """Accept-to-decision percentiles, in milliseconds."""

    p50: float
    p95: float
    p99: float


def decision_latency_ms(conn: Conn, recent: int = 1000) -> DecisionLatency | None:
    """Accept-to-decision over the `recent` latest decisions that carry their request, None before the first.

    A decision carries its request's requested_at and is recorded at the decision's time (decisions from before
    sql/007 do not, and are left out). Walking the log backwards by position stays cheap however long it grows.
    """
    row = conn.execute(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY waited) FROM ("
        " SELECT greatest(0, extract(epoch FROM recorded_at - (data ->> 'requested_at')::timestamptz) * 1000)"
        f" AS waited FROM events WHERE type IN {DECISIONS} AND data ? 'requested_at'"
        " ORDER BY position DESC LIMIT %s) recent",
        (recent,),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    p50, p95, p99 = (float(v) for v in row[0])
    return DecisionLatency(p50, p95, p99)


def record_changes(
    cur: Cursor, course: LockedCourse, changes: Sequence[Event], status: Mapping[str, RequestStatus]
) -> int:
    """Append lifecycle events (drops, promotions, capacity and window changes) and apply their statuses."""
    stream = course_stream(course.state.course_id)
    (version,) = append(cur, [Appended(stream, course.version, changes, [b"{}"] * len(changes))])
    for request_id, new_status in status.items():
        cur.execute(
            "UPDATE enrollment_requests SET status = %s WHERE request_id = %s",
            (new_status, request_id),
        )
    return version


def save_course(cur: Cursor, after: CourseState, version: int) -> None:
    cur.execute(
        "UPDATE courses SET capacity = %s, seats_taken = %s, waitlist_length = %s, opens_at = %s, closes_at = %s,"
        " version = %s WHERE course_id = %s",
        (
            after.capacity,
            after.seats_taken,
            after.waitlist_length,
            after.opens_at,
            after.closes_at,
            version,
            after.course_id,
        ),
    )
