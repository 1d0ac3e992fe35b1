"""Old event shapes, as the log holds them, decode to the current shape once, in `events.decode_log`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from courseflow import events
from courseflow.events import EnrollmentGranted, EnrollmentRejected, Waitlisted

ASKED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
REQUEST_ID = "00000000-0000-4000-8000-000000000001"
# A request's own event, appended just before its decision until sql/007.
OLD_REQUEST = msgspec.json.encode(
    {
        "type": "EnrollmentRequested",
        "course_id": 1,
        "request_id": REQUEST_ID,
        "student_id": 7,
        "idempotency_key": "k1",
        "priority": 5,
        "requested_at": ASKED.isoformat(),
    }
)


def old(kind: str, **fields: object) -> bytes:
    """A decision as recorded before sql/007: no key, no requested_at, and no priority when rejected."""
    return msgspec.json.encode({"type": kind, "course_id": 1, "request_id": REQUEST_ID, "student_id": 7, **fields})


CARRIED: dict[str, Any] = {
    "course_id": 1,
    "request_id": REQUEST_ID,
    "student_id": 7,
    "idempotency_key": "k1",
    "requested_at": ASKED,
}


@pytest.mark.parametrize(
    ("recorded", "current"),
    [
        (old("EnrollmentGranted", priority=5), EnrollmentGranted(**CARRIED, priority=5)),
        (old("Waitlisted", priority=5, arrival="8-0"), Waitlisted(**CARRIED, priority=5, arrival="8-0")),
        (old("EnrollmentRejected", reason="duplicate"), EnrollmentRejected(**CARRIED, priority=5, reason="duplicate")),
    ],
)
def test_a_decision_and_its_request_decode_as_the_decision_carrying_it(recorded: bytes, current: object) -> None:
    assert events.decode_log([OLD_REQUEST, recorded]) == [None, current]


def test_current_decisions_decode_as_they_are() -> None:
    current = EnrollmentGranted(**CARRIED, priority=5, arrival="9-0")
    assert events.decode_log([events.encode(current)]) == [current]


def test_a_request_without_its_decision_is_kept_for_the_next_read() -> None:
    (request,) = events.decode_log([OLD_REQUEST])
    assert isinstance(request, events.EnrollmentRequested) and request.request_id == REQUEST_ID


def test_an_old_decision_without_its_request_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        events.decode_log([old("EnrollmentGranted", priority=5)])
