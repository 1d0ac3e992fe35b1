"""The allocation rule on its own: no servers, every branch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec
import pytest

from courseflow.domain import CourseState, Holding, Pending, StreamId, change_capacity, change_window, decide, release
from courseflow.errors import InvalidWindow
from courseflow.events import (
    CapacityChanged,
    EnrollmentDropped,
    EnrollmentGranted,
    EnrollmentRejected,
    QueuedRequest,
    RegistrationWindowChanged,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pending(student: int, priority: int = 0, arrival: int = 0, course: int = 1) -> Pending:
    request = QueuedRequest(
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
    assert [d.arrival for d in decisions if isinstance(d, Waitlisted)] == ["1003-0", "1004-0"]
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
    # A decision carries its request: it is the request's only event in the log.
    assert decisions == [
        EnrollmentRejected(
            course_id=1,
            request_id="r-7-1",
            student_id=7,
            idempotency_key="k1",
            requested_at=T0,
            arrival="1001-0",
            priority=0,
            reason="duplicate",
        )
    ]
    assert after.seats_taken == 1


def test_second_request_in_the_same_batch_takes_no_second_place() -> None:
    decisions, after = decide(CourseState(course_id=1, capacity=1), [pending(9, arrival=1), pending(9, arrival=2)])
    assert [type(d) for d in decisions] == [EnrollmentGranted, EnrollmentRejected]
    decisions, after = decide(CourseState(course_id=1, capacity=0), [pending(9, arrival=1), pending(9, arrival=2)])
    assert [type(d) for d in decisions] == [Waitlisted, EnrollmentRejected]
    assert after.waitlist_length == 1


def test_full_course_continues_the_existing_waitlist() -> None:
    state = CourseState(course_id=1, capacity=3, seats_taken=3, waitlist_length=4)
    decisions, after = decide(state, [pending(1, arrival=1)])
    assert decisions == [
        Waitlisted(
            course_id=1,
            request_id="r-1-1",
            student_id=1,
            idempotency_key="k1",
            requested_at=T0,
            priority=0,
            arrival="1001-0",
        )
    ]
    assert after.waitlist_length == 5


def test_capacity_lowered_below_seats_grants_nothing() -> None:
    state = CourseState(course_id=1, capacity=2, seats_taken=4)
    decisions, after = decide(state, [pending(1, priority=100, arrival=1)])
    assert [type(d) for d in decisions] == [Waitlisted]
    assert after.seats_taken == 4


def test_requests_after_closing_are_rejected_closed() -> None:
    closes = T0 + timedelta(hours=1)
    on_time = pending(1, arrival=1)
    late = Pending(msgspec.structs.replace(pending(2).request, requested_at=closes), StreamId(2_000, 0))
    decisions, after = decide(CourseState(course_id=1, capacity=5, closes_at=closes), [on_time, late])
    assert [type(d) for d in decisions] == [EnrollmentGranted, EnrollmentRejected]
    assert isinstance(decisions[1], EnrollmentRejected) and decisions[1].reason == "closed"
    assert after.holders == frozenset({1})


def test_open_only_from_opens_at() -> None:
    state = CourseState(course_id=1, capacity=1, opens_at=T0)
    assert not state.is_open(T0 - timedelta(microseconds=1))
    assert state.is_open(T0) and CourseState(course_id=1, capacity=1).is_open(T0)


def holding(student: int, status: Literal["granted", "waitlisted"] = "waitlisted") -> Holding:
    return Holding(request_id=f"h-{student}", student_id=student, status=status)


def test_drop_frees_the_seat_for_the_waitlist_head() -> None:
    state = CourseState(course_id=1, capacity=2, seats_taken=2, waitlist_length=2)
    events, after = release(state, holding(1, "granted"), [holding(7), holding(8)])
    assert events == [
        EnrollmentDropped(course_id=1, request_id="h-1", student_id=1),
        WaitlistPromoted(course_id=1, request_id="h-7", student_id=7),
    ]
    assert (after.seats_taken, after.waitlist_length) == (2, 1)


def test_drop_with_empty_waitlist_leaves_a_free_seat() -> None:
    events, after = release(CourseState(course_id=1, capacity=2, seats_taken=2), holding(1, "granted"), [])
    assert [type(e) for e in events] == [EnrollmentDropped]
    assert after.seats_taken == 1


def test_drop_below_a_lowered_capacity_promotes_nobody() -> None:
    state = CourseState(course_id=1, capacity=1, seats_taken=3, waitlist_length=1)
    events, after = release(state, holding(1, "granted"), [holding(7)])
    assert [type(e) for e in events] == [EnrollmentDropped]
    assert (after.seats_taken, after.waitlist_length) == (2, 1)


def test_leaving_the_waitlist() -> None:
    state = CourseState(course_id=1, capacity=1, seats_taken=1, waitlist_length=3)
    events, after = release(state, holding(5), [holding(6)])
    assert events == [WaitlistLeft(course_id=1, request_id="h-5", student_id=5)]
    assert (after.seats_taken, after.waitlist_length) == (1, 2)


def test_raising_capacity_promotes_at_once() -> None:
    state = CourseState(course_id=1, capacity=1, seats_taken=1, waitlist_length=3)
    events, after = change_capacity(state, 3, [holding(6), holding(7), holding(8)])
    assert events[0] == CapacityChanged(course_id=1, capacity=3, previous=1)
    assert [e.student_id for e in events[1:] if isinstance(e, WaitlistPromoted)] == [6, 7]
    assert (after.capacity, after.seats_taken, after.waitlist_length) == (3, 3, 1)


def test_lowering_capacity_revokes_nothing() -> None:
    state = CourseState(course_id=1, capacity=5, seats_taken=4, waitlist_length=0)
    events, after = change_capacity(state, 2, [])
    assert events == [CapacityChanged(course_id=1, capacity=2, previous=5)]
    assert (after.capacity, after.seats_taken, after.seats_free) == (2, 4, -2)
    assert change_capacity(after, 2, []) == ([], after)
    with pytest.raises(ValueError, match="negative"):
        change_capacity(state, -1, [])


def test_window_changes() -> None:
    state = CourseState(course_id=1, capacity=1)
    opens, closes = T0, T0 + timedelta(days=1)
    events, after = change_window(state, opens, closes)
    assert events == [RegistrationWindowChanged(course_id=1, opens_at=opens, closes_at=closes)]
    assert change_window(after, opens, closes) == ([], after)
    with pytest.raises(InvalidWindow, match="after opens_at"):
        change_window(state, closes, opens)


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
