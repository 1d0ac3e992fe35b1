"""One codec for every event, in Redis and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from courseflow import events
from courseflow.events import (
    CapacityChanged,
    CourseCreated,
    EnrollmentDropped,
    EnrollmentRejected,
    EnrollmentRequested,
    RegistrationWindowChanged,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)

ASKED = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
# What a decision carries of its request.
CARRIED: dict[str, Any] = {"idempotency_key": "k", "requested_at": ASKED}


@pytest.mark.parametrize(
    "event",
    [
        CourseCreated(course_id=1, title="Algebra", capacity=10),
        EnrollmentRequested(
            course_id=1,
            request_id="r",
            student_id=2,
            idempotency_key="k",
            priority=3,
            requested_at=datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        ),
        Waitlisted(**CARRIED, course_id=1, request_id="r", student_id=2, priority=0, arrival="1700000000000-3"),
        CourseCreated(course_id=2, title="T", capacity=1, opens_at=datetime(2026, 9, 1, tzinfo=UTC), closes_at=None),
        WaitlistPromoted(course_id=1, request_id="r", student_id=2),
        EnrollmentDropped(course_id=1, request_id="r", student_id=2),
        WaitlistLeft(course_id=1, request_id="r", student_id=2),
        CapacityChanged(course_id=1, capacity=5, previous=3),
        RegistrationWindowChanged(course_id=1, opens_at=None, closes_at=datetime(2026, 9, 2, tzinfo=UTC)),
        EnrollmentRejected(**CARRIED, course_id=1, request_id="r", student_id=2, priority=0, reason="duplicate"),
    ],
)
def test_round_trip_keeps_type_and_fields(event: events.Event) -> None:
    data = events.encode(event)
    assert msgspec.json.decode(data)["type"] == type(event).__name__
    assert events.decode(data) == event


def test_frozen() -> None:
    event = CourseCreated(course_id=1, title="", capacity=1)
    with pytest.raises(AttributeError):
        event.capacity = 2  # type: ignore[misc]


def test_request_decoder_refuses_other_events_and_garbage() -> None:
    with pytest.raises(msgspec.ValidationError):
        events.decode_request(events.encode(CourseCreated(course_id=1, title="", capacity=1)))
    with pytest.raises(msgspec.DecodeError):
        events.decode_request(b"\xff not json")
