"""`domain.evolve`: what each event does to a course, a request and a course's tally."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from courseflow.domain import PENDING, CourseState, RequestState, Tally, created, evolve, evolve_all
from courseflow.events import (
    CapacityChanged,
    CourseCreated,
    EnrollmentDropped,
    EnrollmentGranted,
    EnrollmentRejected,
    Event,
    RegistrationWindowChanged,
    RequestDeadLettered,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)

ASKED = datetime(2026, 1, 1, tzinfo=UTC)
REQ: dict[str, Any] = {"course_id": 1, "student_id": 2, "idempotency_key": "k", "priority": 0, "requested_at": ASKED}


def grant(n: int) -> EnrollmentGranted:
    return EnrollmentGranted(**REQ, request_id=f"g{n}")


def wait(n: int) -> Waitlisted:
    return Waitlisted(**REQ, request_id=f"w{n}", arrival=f"{n}-0")


@pytest.mark.parametrize(
    ("event", "seats", "waitlist"),
    [
        (grant(1), 3, 2),
        (wait(1), 2, 3),
        (WaitlistPromoted(course_id=1, request_id="w", student_id=2), 3, 1),
        (EnrollmentDropped(course_id=1, request_id="g", student_id=2), 1, 2),
        (WaitlistLeft(course_id=1, request_id="w", student_id=2), 2, 1),
        (EnrollmentRejected(**REQ, request_id="r", reason="duplicate"), 2, 2),
    ],
)
def test_seat_and_waitlist_counts(event: Event, seats: int, waitlist: int) -> None:
    after = evolve(CourseState(course_id=1, capacity=5, seats_taken=2, waitlist_length=2), event)
    assert (after.seats_taken, after.waitlist_length) == (seats, waitlist)


def test_capacity_and_window_are_set_and_other_courses_untouched() -> None:
    state = CourseState(course_id=1, capacity=5)
    closes = datetime(2026, 9, 1, tzinfo=UTC)
    after = evolve_all(
        state,
        [
            CapacityChanged(course_id=1, capacity=8, previous=5),
            RegistrationWindowChanged(course_id=1, opens_at=None, closes_at=closes),
            EnrollmentGranted(**(REQ | {"course_id": 2}), request_id="x"),
        ],
    )
    assert (after.capacity, after.closes_at, after.seats_taken) == (8, closes, 0)


def test_a_course_starts_as_created() -> None:
    opens = datetime(2026, 8, 1, tzinfo=UTC)
    state = created(CourseCreated(course_id=4, title="T", capacity=3, opens_at=opens))
    assert state == CourseState(course_id=4, capacity=3, opens_at=opens)


def test_request_status_and_reason() -> None:
    assert evolve(PENDING, grant(1)) == RequestState(status="granted")
    rejected = evolve(PENDING, EnrollmentRejected(**REQ, request_id="r", reason="closed"))
    assert rejected == RequestState(status="rejected", reason="closed")
    assert evolve(evolve(PENDING, wait(1)), WaitlistPromoted(course_id=1, request_id="w1", student_id=2)).status == (
        "granted"
    )
    lettered = evolve(PENDING, RequestDeadLettered(entry_id="1-0", reason="poison"))
    assert lettered == RequestState(status="dead_lettered", reason="poison")
    assert evolve(PENDING, CapacityChanged(course_id=1, capacity=1, previous=0)) is PENDING


def test_tally_counts_each_decision_as_a_request_too() -> None:
    tally = Tally()
    for event in (grant(1), wait(2), EnrollmentRejected(**REQ, request_id="r", reason="duplicate")):
        tally = evolve(tally, event)
    tally = evolve(tally, WaitlistPromoted(course_id=1, request_id="w2", student_id=2))
    assert tally == Tally(requested=3, granted=1, waitlisted=1, rejected=1, promoted=1)
