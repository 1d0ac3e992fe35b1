"""The PostgreSQL side on its own: migrations, the append-only log, the guarantees in the schema."""

from __future__ import annotations

import psycopg
import pytest

from courseflow import migrations
from courseflow.config import Settings
from tests.helpers import Conn


def test_migrate_is_recorded_and_safe_to_run_twice(settings: Settings, db: Conn) -> None:
    assert migrations.migrate(settings.database_url) == []
    versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(int(p.name[:3]) for p in migrations.SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    assert migrations.pending_migrations(db) == []


def _append(db: Conn, stream: str, version: int, kind: str, data: str) -> None:
    db.execute(
        "INSERT INTO events (stream, stream_version, type, data) VALUES (%s, %s, %s, %s)", (stream, version, kind, data)
    )


def test_events_are_append_only(db: Conn) -> None:
    _append(db, "course-1", 1, "CourseCreated", '{"course_id": 1}')
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        db.execute("UPDATE events SET type = 'Other'")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        db.execute("DELETE FROM events")


def test_stream_version_is_unique_per_stream(db: Conn) -> None:
    _append(db, "course-1", 1, "CourseCreated", "{}")
    _append(db, "course-2", 1, "CourseCreated", "{}")
    with pytest.raises(psycopg.errors.UniqueViolation):
        _append(db, "course-1", 1, "CourseCreated", "{}")


def test_one_decision_per_request(db: Conn) -> None:
    _append(db, "course-1", 1, "EnrollmentGranted", '{"request_id": "r1"}')
    with pytest.raises(psycopg.errors.UniqueViolation):
        _append(db, "course-1", 2, "Waitlisted", '{"request_id": "r1"}')


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
