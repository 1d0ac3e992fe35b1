"""Registrar actions on decided enrollments and on courses, each one locked transaction."""

from __future__ import annotations

from msgspec import UNSET, UnsetType

from courseflow import domain
from courseflow.domain import CourseState, RequestStatus
from courseflow.events import EnrollmentDropped, Event, WaitlistPromoted
from courseflow.eventstore import store
from courseflow.http.payloads import Window
from courseflow.http.problems import InvalidInput, NothingToRelease


class NotFound(Exception):
    """No such course, or no decided request with this id (it may still be pending)."""


def release(conn: store.Conn, request_id: str) -> tuple[RequestStatus, list[str]]:
    """Drop a granted seat (promoting the waitlist head) or leave the waitlist.

    Returns the request's status afterwards and the promoted request ids. Asking again once released
    is answered with the same status and no change.
    """
    with conn.transaction(), conn.cursor() as cur:
        found = store.holding(cur, request_id)
        if found is None:
            raise NotFound(request_id)
        course = store.lock_courses(cur, [found[0]])[found[0]]
        _, status, held = store.holding(cur, request_id) or found  # again, now under the course lock
        if held is None:
            if status == "rejected":
                raise NothingToRelease(f"request {request_id} was rejected: it holds nothing to release", "request_id")
            return status, []
        head = store.waitlist_head(cur, course.state.course_id, course.state.seats_free + 1)
        changes, after = domain.release(course.state, held, head)
        new_status: RequestStatus = "dropped" if isinstance(changes[0], EnrollmentDropped) else "left"
        _commit(cur, course, after, changes, {request_id: new_status})
        return new_status, _promoted(changes)


def update_course(
    conn: store.Conn, course_id: int, capacity: int | UnsetType, window: Window
) -> tuple[CourseState, list[str]]:
    """Change capacity and/or the registration window; returns the new state and the promoted request ids."""
    with conn.transaction(), conn.cursor() as cur:
        course = store.lock_courses(cur, [course_id]).get(course_id)
        if course is None:
            raise NotFound(str(course_id))
        state, changes = course.state, list[Event]()
        if window.opens_at is not UNSET or window.closes_at is not UNSET:
            opens_at = state.opens_at if isinstance(window.opens_at, UnsetType) else window.opens_at
            closes_at = state.closes_at if isinstance(window.closes_at, UnsetType) else window.closes_at
            try:
                changed, state = domain.change_window(state, opens_at, closes_at)
            except ValueError as exc:
                # Name the bound the caller sent: with both sent, the closing one.
                if isinstance(window.closes_at, UnsetType):
                    raise InvalidInput("opens_at", "must be before closes_at") from exc
                raise InvalidInput("closes_at", "must be after opens_at") from exc
            changes += changed
        if not isinstance(capacity, UnsetType):
            head = store.waitlist_head(cur, course_id, capacity - state.seats_taken)
            changed, state = domain.change_capacity(state, capacity, head)
            changes += changed
        if changes:
            _commit(cur, course, state, changes, {})
        return state, _promoted(changes)


def _commit(
    cur: store.Cursor, course: store.LockedCourse, after: CourseState, changes: list[Event], status: dict[str, str]
) -> None:
    status |= {request_id: "granted" for request_id in _promoted(changes)}
    version = store.record_changes(cur, course, changes, status)
    store.save_course(cur, after, version)


def _promoted(changes: list[Event]) -> list[str]:
    return [e.request_id for e in changes if isinstance(e, WaitlistPromoted)]
