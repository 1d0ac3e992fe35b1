"""Registrar actions on decided enrollments and on courses, each one locked transaction."""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec import UNSET, UnsetType

from courseflow import domain
from courseflow.domain import PENDING, CourseState, RequestStatus
from courseflow.errors import InvalidWindow, NothingToRelease, UnknownCourse, UnknownRequest
from courseflow.events import EnrollmentDropped, Event, WaitlistLeft, WaitlistPromoted
from courseflow.eventstore import store

# A bound left as it is.
Bound = datetime | UnsetType | None


class ReleaseOutcome(msgspec.Struct, frozen=True):
    """A request after its release, and the waitlisted requests promoted into the seat it gave back."""

    status: RequestStatus
    promoted: list[str]


class CourseUpdate(msgspec.Struct, frozen=True):
    """A course after a change of capacity or window, and the waitlisted requests promoted by it."""

    state: CourseState
    promoted: list[str]


def release(conn: store.Conn, request_id: str) -> ReleaseOutcome:
    """Drop a granted seat (promoting the waitlist head) or leave the waitlist.

    Returns the request's status afterwards and the promoted request ids. Asking again once released
    is answered with the same status and no change. Raises UnknownRequest for a request not decided (yet).
    """
    with conn.transaction(), conn.cursor() as cur:
        found = store.holding(cur, request_id)
        if found is None:
            raise UnknownRequest(request_id)
        course = store.lock_courses(cur, [found.course_id])[found.course_id]
        found = store.holding(cur, request_id) or found  # again, now under the course lock
        held = found.holding
        if held is None:
            if found.status == "rejected":
                raise NothingToRelease(f"request {request_id} was rejected: it holds nothing to release", "request_id")
            return ReleaseOutcome(found.status, [])
        head = store.waitlist_head(cur, course.state.course_id, course.state.seats_free + 1)
        changes, after = domain.release(course.state, held, head)
        statuses = _commit(cur, course, after, changes)
        return ReleaseOutcome(statuses[request_id], _promoted(changes))


def update_course(
    conn: store.Conn, course_id: int, capacity: int | UnsetType, opens_at: Bound = UNSET, closes_at: Bound = UNSET
) -> CourseUpdate:
    """Change capacity and/or the registration window."""
    with conn.transaction(), conn.cursor() as cur:
        course = store.lock_courses(cur, [course_id]).get(course_id)
        if course is None:
            raise UnknownCourse(course_id)
        state, changes = course.state, list[Event]()
        if opens_at is not UNSET or closes_at is not UNSET:
            opens = state.opens_at if isinstance(opens_at, UnsetType) else opens_at
            closes = state.closes_at if isinstance(closes_at, UnsetType) else closes_at
            try:
                changed, state = domain.change_window(state, opens, closes)
            except InvalidWindow as exc:
                # Name the bound the caller sent: with both sent, the closing one.
                if isinstance(closes_at, UnsetType):
                    raise InvalidWindow("must be before closes_at", "opens_at") from exc
                raise
            changes += changed
        if not isinstance(capacity, UnsetType):
            head = store.waitlist_head(cur, course_id, capacity - state.seats_taken)
            changed, state = domain.change_capacity(state, capacity, head)
            changes += changed
        if changes:
            _commit(cur, course, state, changes)
        return CourseUpdate(state, _promoted(changes))


def _commit(
    cur: store.Cursor, course: store.LockedCourse, after: CourseState, changes: list[Event]
) -> dict[str, RequestStatus]:
    """Record the changes, with each changed request's status as `domain.evolve` gives it; returns those."""
    statuses = {
        e.request_id: domain.evolve(PENDING, e).status
        for e in changes
        if isinstance(e, EnrollmentDropped | WaitlistLeft | WaitlistPromoted)
    }
    version = store.record_changes(cur, course, changes, statuses)
    store.save_course(cur, after, version)
    return statuses


def _promoted(changes: list[Event]) -> list[str]:
    return [e.request_id for e in changes if isinstance(e, WaitlistPromoted)]
