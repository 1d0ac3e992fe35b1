"""The PostgreSQL side on its own: migrations, the append-only log, the guarantees in the schema."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg
import pytest

from courseflow.domain import CourseState, Pending, StreamId, decide
from courseflow.events import QueuedRequest, RequestDeadLettered
from courseflow.eventstore import migrations, store
from courseflow.eventstore.eventlog import START, EventLog
from courseflow.platform.config import Settings
from tests.helpers import Conn, wait_until


def test_migrate_is_recorded_and_safe_to_run_twice(settings: Settings, db: Conn) -> None:
    assert migrations.migrate(settings.postgres.owner_url, application_url=settings.postgres.url) == []
    versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(int(p.name[:3]) for p in migrations.migration_files())
    assert migrations.pending_migrations(db) == []


def _append(db: Conn, stream: str, version: int, kind: str, data: str) -> None:
    db.execute(
        "INSERT INTO events (stream, stream_version, type, data) VALUES (%s, %s, %s, %s)", (stream, version, kind, data)
    )


def test_events_are_append_only_even_for_their_owner(settings: Settings) -> None:
    # The application's role may not even try (tests/integration/test_privileges.py); the trigger stops the owner.
    with psycopg.connect(settings.postgres.owner_url, autocommit=True) as owner:
        _append(owner, "course-1", 1, "CourseCreated", '{"course_id": 1}')
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            owner.execute("UPDATE events SET type = 'Other'")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            owner.execute("DELETE FROM events")


def test_stream_version_is_unique_per_stream(db: Conn) -> None:
    _append(db, "course-1", 1, "CourseCreated", "{}")
    _append(db, "course-2", 1, "CourseCreated", "{}")
    with pytest.raises(psycopg.errors.UniqueViolation):
        _append(db, "course-1", 1, "CourseCreated", "{}")


def test_one_decision_per_request(db: Conn) -> None:
    _append(db, "course-1", 1, "EnrollmentGranted", '{"request_id": "r1"}')
    with pytest.raises(psycopg.errors.UniqueViolation):
        _append(db, "course-1", 2, "Waitlisted", '{"request_id": "r1"}')


def test_decisions_keep_every_character_of_what_they_record(db: Conn) -> None:
    """COPY's text format gives backslash, tab and line breaks a meaning of their own: they arrive as sent."""
    awkward = 'a\\b\tc\nd\re "q" \\N'
    assert store.create_course(db, 1, awkward, 1, None, None)
    request = QueuedRequest(
        course_id=1,
        request_id="00000000-0000-4000-8000-000000000001",
        student_id=3,
        idempotency_key=awkward,
        priority=0,
        requested_at=datetime(2026, 3, 1, tzinfo=UTC),
    )
    pending = Pending(request, StreamId(5, 1))
    with db.transaction(), db.cursor() as cur:
        course = store.lock_courses(cur, [1])[1]
        decisions, after = decide(CourseState(course_id=1, capacity=1), [pending])
        store.record_decisions(cur, [store.Decided(course, after, [pending], decisions)], awkward)
    with db.cursor() as cur:
        logged = EventLog(cur).read(START, 10)
    assert [r.event for r in logged][1:] == decisions and logged[0].event.title == awkward  # type: ignore[union-attr]
    row = db.execute("SELECT idempotency_key, requested_at, arrival_seq, reason FROM enrollment_requests").fetchone()
    assert row == (awkward, request.requested_at, 1, None)
    assert db.execute("SELECT metadata ->> 'worker' FROM events WHERE position = 2").fetchone() == (awkward,)


def test_seats_can_never_grow_beyond_capacity(db: Conn) -> None:
    db.execute("INSERT INTO courses (course_id, capacity, seats_taken) VALUES (1, 2, 2)")
    with pytest.raises(psycopg.errors.CheckViolation, match="exceed capacity"):
        db.execute("UPDATE courses SET seats_taken = 3 WHERE course_id = 1")
    # Lowering capacity below the seats taken is allowed, and so is every drop after it.
    db.execute("UPDATE courses SET capacity = 0 WHERE course_id = 1")
    db.execute("UPDATE courses SET seats_taken = 1 WHERE course_id = 1")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE courses SET seats_taken = 2 WHERE course_id = 1")


def test_one_place_per_student_per_course(db: Conn) -> None:
    db.execute("INSERT INTO courses (course_id, capacity) VALUES (1, 2)")
    insert = (
        "INSERT INTO enrollment_requests (request_id, course_id, student_id, idempotency_key, priority, arrival_ms,"
        " arrival_seq, requested_at, status) VALUES (gen_random_uuid(), 1, 9, 'k', 0, 1, 0, now(), %s)"
    )
    db.execute(insert, ("granted",))
    db.execute(insert, ("rejected",))
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(insert, ("waitlisted",))


def test_entries_dead_lettered_at_the_same_time_are_each_recorded_once(settings: Settings, db: Conn) -> None:
    """Two transactions dead-letter different entries at once: each gets the dead-letter stream's next version."""
    failures: list[BaseException] = []

    def dead_letter(conn: Conn, entry_id: str) -> None:
        try:
            store.record_dead_letter(conn, RequestDeadLettered(entry_id=entry_id, reason="poison"))
        except BaseException as exc:
            failures.append(exc)

    with psycopg.connect(settings.postgres.url) as first, psycopg.connect(settings.postgres.url) as second:
        with first.transaction():  # held open around the first dead-lettering
            dead_letter(first, "1-0")
            other = threading.Thread(target=dead_letter, args=(second, "2-0"))
            other.start()
            wait_until(lambda: _waits_for_a_lock(db, second.info.backend_pid), what="the second to wait for the first")
        other.join(timeout=30)
        dead_letter(second, "1-0")  # again, as after a crash: nothing new
    assert failures == []
    rows = db.execute(
        "SELECT data ->> 'entry_id', stream_version FROM events WHERE stream = %s ORDER BY stream_version",
        (store.DEAD_LETTER_STREAM,),
    ).fetchall()
    assert rows == [("1-0", 1), ("2-0", 2)]


def _waits_for_a_lock(db: Conn, pid: int) -> bool:
    row = db.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"
