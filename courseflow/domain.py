"""The allocation rules: pure functions from course state to events, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, overload

import msgspec
from msgspec import Meta

from courseflow import fairness
from courseflow.errors import InvalidWindow
from courseflow.events import (
    CapacityChanged,
    CourseCreated,
    CourseEvent,
    Decision,
    EnrollmentDropped,
    EnrollmentGranted,
    EnrollmentRejected,
    Event,
    QueuedRequest,
    RegistrationWindowChanged,
    RequestDeadLettered,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)

# The largest id (and log position) anyone is given or may name: the largest integer every JSON reader keeps
# exactly (RFC 7493 §2.2, JavaScript's Number.MAX_SAFE_INTEGER). Beyond it a browser rounds 2^53 + 1 to 2^53,
# and two courses read as one.
MAX_ID = 2**53 - 1
# A course or student id, wherever one is read or answered: the API's bodies, paths and queries, and its document.
Id = Annotated[int, Meta(ge=1, le=MAX_ID)]


class StreamId(msgspec.Struct, frozen=True, order=True, array_like=True, gc=False):
    """Arrival order: a Redis stream id `ms-seq`."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, raw: str | bytes) -> StreamId:
        text = raw.decode() if isinstance(raw, bytes) else raw
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


# Where a request stands: waiting, decided, or changed since (the read and write models hold the same words).
RequestStatus = Literal["pending", "granted", "waitlisted", "rejected", "dropped", "left", "dead_lettered"]
# The status a request has after each event that changes it: one rule for the write model, the read
# model and live status.
STATUS_AFTER: dict[type[Event], RequestStatus] = {
    EnrollmentGranted: "granted",
    Waitlisted: "waitlisted",
    EnrollmentRejected: "rejected",
    WaitlistPromoted: "granted",
    EnrollmentDropped: "dropped",
    WaitlistLeft: "left",
    RequestDeadLettered: "dead_lettered",
}


class Pending(msgspec.Struct, frozen=True, gc=False):
    """An accepted request waiting for a decision, with its place in arrival order (never in a cycle: untracked)."""

    request: QueuedRequest
    arrival: StreamId


class Holding(msgspec.Struct, frozen=True, kw_only=True):
    """A decided request that holds a seat or a waitlist place."""

    request_id: str
    student_id: int
    status: Literal["granted", "waitlisted"]


class CourseState(msgspec.Struct, frozen=True, kw_only=True):
    course_id: int
    capacity: int
    seats_taken: int = 0
    waitlist_length: int = 0
    opens_at: datetime | None = None
    closes_at: datetime | None = None
    # Students holding a seat or a waitlist place; only those relevant to the requests at hand are needed.
    holders: frozenset[int] = frozenset()

    @property
    def seats_free(self) -> int:
        # Negative after capacity was lowered below the seats taken: no grants until drops catch up.
        return self.capacity - self.seats_taken

    def is_open(self, now: datetime) -> bool:
        return self.opens_at is None or self.opens_at <= now


def fairness_key(pending: Pending) -> tuple[int, ...]:
    """The fairness order (courseflow.fairness): higher priority first, then earlier arrival."""
    return fairness.sort_key(fairness.Rank(pending.request.priority, pending.arrival.ms, pending.arrival.seq))


class RequestState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Where one request stands, and why when it was rejected or set aside."""

    status: RequestStatus = "pending"
    reason: str | None = None


PENDING = RequestState()


class Tally(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How many requests a course saw, and what became of them."""

    requested: int = 0
    granted: int = 0
    waitlisted: int = 0
    rejected: int = 0
    dropped: int = 0
    left_waitlist: int = 0
    promoted: int = 0


# The count each event adds to; a decision also counts its request, which it carries.
_TALLIED: dict[type[Event], tuple[str, ...]] = {
    EnrollmentGranted: ("requested", "granted"),
    Waitlisted: ("requested", "waitlisted"),
    EnrollmentRejected: ("requested", "rejected"),
    EnrollmentDropped: ("dropped",),
    WaitlistLeft: ("left_waitlist",),
    WaitlistPromoted: ("promoted",),
}


@overload
def evolve(state: CourseState, event: Event) -> CourseState: ...
@overload
def evolve(state: RequestState, event: Event) -> RequestState: ...
@overload
def evolve(state: Tally, event: Event) -> Tally: ...
def evolve(state: CourseState | RequestState | Tally, event: Event) -> CourseState | RequestState | Tally:
    """What an event does: the one rule the decisions, the write model, the read models and replay all apply.

    Events about another course, or that change nothing in `state`, return it as it is.
    """
    if isinstance(state, RequestState):
        return _evolve_request(state, event)
    if isinstance(state, Tally):
        counts = _TALLIED.get(type(event))
        return state if counts is None else msgspec.structs.replace(state, **{c: getattr(state, c) + 1 for c in counts})
    if not isinstance(event, CourseEvent) or event.course_id != state.course_id:
        return state
    replace = msgspec.structs.replace
    if (change := _SEAT_CHANGES.get(type(event))) is not None:  # the common case first: decisions
        return replace(
            state, seats_taken=state.seats_taken + change[0], waitlist_length=state.waitlist_length + change[1]
        )
    match event:
        case CapacityChanged():
            return replace(state, capacity=event.capacity)
        case RegistrationWindowChanged():
            return replace(state, opens_at=event.opens_at, closes_at=event.closes_at)
        case CourseCreated():
            return CourseState(
                course_id=event.course_id, capacity=event.capacity, opens_at=event.opens_at, closes_at=event.closes_at
            )
    return state


def evolve_all(state: CourseState, changes: Iterable[Event]) -> CourseState:
    for event in changes:
        state = evolve(state, event)
    return state


def created(event: CourseCreated) -> CourseState:
    """A course as its CourseCreated event starts it."""
    return evolve(CourseState(course_id=event.course_id, capacity=event.capacity), event)


# (seats taken, waitlist length) each event adds.
_SEAT_CHANGES: dict[type[Event], tuple[int, int]] = {
    EnrollmentGranted: (1, 0),
    Waitlisted: (0, 1),
    WaitlistPromoted: (1, -1),
    EnrollmentDropped: (-1, 0),
    WaitlistLeft: (0, -1),
}


def _evolve_request(state: RequestState, event: Event) -> RequestState:
    status = STATUS_AFTER.get(type(event))
    if status is None:
        return state
    reason = event.reason if isinstance(event, EnrollmentRejected | RequestDeadLettered) else None
    return RequestState(status=status, reason=reason)


def decide(course: CourseState, pending: Iterable[Pending]) -> tuple[list[Decision], CourseState]:
    """Decide every pending request of one open course, strictly in priority-then-arrival order.

    Returns the decisions in the order they were made and the course state after them. Whether the
    course is open yet is the caller's question (`CourseState.is_open`): before it opens nothing is decided.
    """
    decisions: list[Decision] = []
    state, holders = course, set(course.holders)
    for item in sorted(pending, key=fairness_key):
        req = item.request
        if req.course_id != course.course_id:
            raise ValueError(f"request {req.request_id} is for course {req.course_id}, not {course.course_id}")
        decision: Decision
        if course.closes_at is not None and req.requested_at >= course.closes_at:
            decision = _reject(item, "closed")
        elif req.student_id in holders:
            decision = _reject(item, "duplicate")
        elif state.seats_free > 0:
            holders.add(req.student_id)
            decision = EnrollmentGranted(**_request_fields(item), priority=req.priority)
        else:
            holders.add(req.student_id)
            decision = Waitlisted(**_request_fields(item), priority=req.priority)
        decisions.append(decision)
        state = evolve(state, decision)
    return decisions, msgspec.structs.replace(state, holders=frozenset(holders))


def promote(course: CourseState, waitlist_head: Sequence[Holding]) -> tuple[list[Event], CourseState]:
    """Give free seats to the head of the waitlist (already in priority-then-arrival order)."""
    count = max(0, min(course.seats_free, len(waitlist_head), course.waitlist_length))
    events: list[Event] = [
        WaitlistPromoted(course_id=course.course_id, request_id=h.request_id, student_id=h.student_id)
        for h in waitlist_head[:count]
    ]
    return events, evolve_all(course, events)


def release(course: CourseState, holding: Holding, waitlist_head: Sequence[Holding]) -> tuple[list[Event], CourseState]:
    """A student gives back a seat (the freed seat goes to the waitlist at once) or leaves the waitlist."""
    if holding.status == "granted":
        freed: Event = EnrollmentDropped(
            course_id=course.course_id, request_id=holding.request_id, student_id=holding.student_id
        )
        promoted, after = promote(evolve(course, freed), waitlist_head)
        return [freed, *promoted], after
    left = WaitlistLeft(course_id=course.course_id, request_id=holding.request_id, student_id=holding.student_id)
    return [left], evolve(course, left)


def change_capacity(
    course: CourseState, capacity: int, waitlist_head: Sequence[Holding]
) -> tuple[list[Event], CourseState]:
    """Raising capacity promotes from the waitlist at once; lowering it never revokes a seat."""
    if capacity < 0:
        raise ValueError("capacity cannot be negative")
    if capacity == course.capacity:
        return [], course
    changed = CapacityChanged(course_id=course.course_id, capacity=capacity, previous=course.capacity)
    promoted, after = promote(evolve(course, changed), waitlist_head)
    return [changed, *promoted], after


def change_window(
    course: CourseState, opens_at: datetime | None, closes_at: datetime | None
) -> tuple[list[Event], CourseState]:
    if opens_at is not None and closes_at is not None and closes_at <= opens_at:
        raise InvalidWindow("must be after opens_at", "closes_at")
    if (opens_at, closes_at) == (course.opens_at, course.closes_at):
        return [], course
    changed = RegistrationWindowChanged(course_id=course.course_id, opens_at=opens_at, closes_at=closes_at)
    return [changed], evolve(course, changed)


def _request_fields(item: Pending) -> dict[str, Any]:
    """What a decision carries of its request: it is the request's only event in the log."""
    req = item.request
    return {
        "course_id": req.course_id,
        "request_id": req.request_id,
        "student_id": req.student_id,
        "idempotency_key": req.idempotency_key,
        "requested_at": req.requested_at,
        "arrival": str(item.arrival),
    }


def _reject(item: Pending, reason: Literal["duplicate", "closed"]) -> EnrollmentRejected:
    return EnrollmentRejected(**_request_fields(item), priority=item.request.priority, reason=reason)
