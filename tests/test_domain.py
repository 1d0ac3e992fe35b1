"""The allocation rule on its own: no servers, every branch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from courseflow.domain import CourseState, Pending, StreamId, decide
from courseflow.events import EnrollmentGranted, EnrollmentRejected, EnrollmentRequested, Waitlisted

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pending(student: int, priority: int = 0, arrival: int = 0, course: int = 1) -> Pending:
    request = EnrollmentRequested(
        course_id=course,
        request_id=f"r-{student}-{arrival}",
        student_id=student,
        idempotency_key=f"k{arrival}",
        priority=priority,
        requested_at=T0,
    )
    return Pending(request, StreamId(1_000 + arrival, 0))


def test_grants_until_capacity_then_waitlists_in_order() -> None:
    decisions, after = decide(CourseState(course_id=1, capacity=2), [pending(s, arrival=s) for s in (1, 2, 3, 4)])
    assert [type(d) for d in decisions] == [EnrollmentGranted, EnrollmentGranted, Waitlisted, Waitlisted]
    assert [d.position for d in decisions if isinstance(d, Waitlisted)] == [1, 2]
    assert (after.seats_taken, after.waitlist_length) == (2, 2)


def test_higher_priority_first_then_earlier_arrival() -> None:
    requests = [
        pending(1, priority=0, arrival=1),
        pending(2, priority=50, arrival=2),
        pending(3, priority=50, arrival=3),
    ]
    decisions, _ = decide(CourseState(course_id=1, capacity=2), requests)
    assert [d.student_id for d in decisions] == [2, 3, 1]
    assert isinstance(decisions[2], Waitlisted)


def test_arrival_compares_sequence_within_one_millisecond() -> None:
    late, early = pending(1), pending(2)
    late = Pending(late.request, StreamId(5, 2))
    early = Pending(early.request, StreamId(5, 1))
    decisions, _ = decide(CourseState(course_id=1, capacity=1), [late, early])
    assert [type(d) for d in decisions] == [EnrollmentGranted, Waitlisted]
    assert decisions[0].student_id == 2


def test_existing_seat_holder_is_rejected_as_duplicate() -> None:
    state = CourseState(course_id=1, capacity=5, seats_taken=1, holders=frozenset({7}))
    decisions, after = decide(state, [pending(7, arrival=1)])
    assert decisions == [EnrollmentRejected(course_id=1, request_id="r-7-1", student_id=7, reason="duplicate")]
    assert after.seats_taken == 1


def test_second_request_in_the_same_batch_takes_no_second_place() -> None:
    decisions, after = decide(CourseState(course_id=1, capacity=1), [pending(9, arrival=1), pending(9, arrival=2)])
    assert [type(d) for d in decisions] == [EnrollmentGranted, EnrollmentRejected]
    decisions, after = decide(CourseState(course_id=1, capacity=0), [pending(9, arrival=1), pending(9, arrival=2)])
    assert [type(d) for d in decisions] == [Waitlisted, EnrollmentRejected]
    assert after.waitlist_length == 1


def test_full_course_continues_the_existing_waitlist() -> None:
    state = CourseState(course_id=1, capacity=3, seats_taken=3, waitlist_length=4)
    decisions, _ = decide(state, [pending(1, arrival=1)])
    assert decisions == [Waitlisted(course_id=1, request_id="r-1-1", student_id=1, priority=0, position=5)]


def test_no_requests_no_decisions() -> None:
    state = CourseState(course_id=1, capacity=3)
    assert decide(state, []) == ([], state)


def test_request_for_another_course_is_refused() -> None:
    with pytest.raises(ValueError, match="course 2"):
        decide(CourseState(course_id=1, capacity=1), [pending(1, course=2)])


def test_stream_id_parses_and_orders() -> None:
    assert StreamId.parse(b"1700000000000-12") == StreamId(1_700_000_000_000, 12)
    assert str(StreamId.parse("5-0")) == "5-0"
    assert StreamId(5, 10) > StreamId(5, 9) and StreamId(6, 0) > StreamId(5, 99)
