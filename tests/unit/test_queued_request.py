"""The request stream's message: a Struct of its own, in the format queued entries already have."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from courseflow import events
from courseflow.events import CourseCreated, QueuedRequest

ASKED = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
QUEUED = QueuedRequest(course_id=1, request_id="r", student_id=2, idempotency_key="k", priority=0, requested_at=ASKED)


def test_the_format_intake_splices_the_priority_into() -> None:
    assert events.encode_request(QUEUED) == (
        b'{"type":"EnrollmentRequested","course_id":1,"request_id":"r","student_id":2,"idempotency_key":"k",'
        b'"priority":0,"requested_at":"2026-01-01T12:00:00.123456Z"}'
    )


def test_round_trip() -> None:
    assert events.decode_request(events.encode_request(QUEUED)) == QUEUED


def test_other_events_are_not_requests() -> None:
    with pytest.raises(msgspec.ValidationError):
        events.decode_request(events.encode(CourseCreated(course_id=1, title="", capacity=1)))
