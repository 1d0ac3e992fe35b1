"""The allocation rule: a pure function from course state and pending requests to decisions."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from courseflow.events import Decision, EnrollmentGranted, EnrollmentRejected, EnrollmentRequested, Waitlisted


class StreamId(msgspec.Struct, frozen=True, order=True, array_like=True):
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


class Pending(msgspec.Struct, frozen=True):
    """An accepted request waiting for a decision, with its place in arrival order."""

    request: EnrollmentRequested
    arrival: StreamId


class CourseState(msgspec.Struct, frozen=True, kw_only=True):
    course_id: int
    capacity: int
    seats_taken: int = 0
    waitlist_length: int = 0
    # Students holding a seat or a waitlist place; only those relevant to the requests at hand are needed.
    holders: frozenset[int] = frozenset()


def fairness_key(pending: Pending) -> tuple[int, StreamId]:
    """Higher priority first, then earlier arrival."""
    return (-pending.request.priority, pending.arrival)


def decide(course: CourseState, pending: Iterable[Pending]) -> tuple[list[Decision], CourseState]:
    """Decide every pending request of one course, strictly in priority-then-arrival order.

    Returns the decisions in the order they were made and the course state after them.
    """
    decisions: list[Decision] = []
    seats, waitlist, holders = course.seats_taken, course.waitlist_length, set(course.holders)
    for item in sorted(pending, key=fairness_key):
        req = item.request
        if req.course_id != course.course_id:
            raise ValueError(f"request {req.request_id} is for course {req.course_id}, not {course.course_id}")
        if req.student_id in holders:
            decisions.append(_reject(req))
            continue
        holders.add(req.student_id)
        if seats < course.capacity:
            seats += 1
            decisions.append(
                EnrollmentGranted(
                    course_id=req.course_id, request_id=req.request_id, student_id=req.student_id, priority=req.priority
                )
            )
        else:
            waitlist += 1
            decisions.append(
                Waitlisted(
                    course_id=req.course_id,
                    request_id=req.request_id,
                    student_id=req.student_id,
                    priority=req.priority,
                    position=waitlist,
                )
            )
    after = msgspec.structs.replace(course, seats_taken=seats, waitlist_length=waitlist, holders=frozenset(holders))
    return decisions, after


def _reject(req: EnrollmentRequested) -> EnrollmentRejected:
    return EnrollmentRejected(
        course_id=req.course_id, request_id=req.request_id, student_id=req.student_id, reason="duplicate"
    )
