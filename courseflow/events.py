"""The event vocabulary: one tagged union, one codec for Redis and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec


# gc=False: events hold only strings, numbers and datetimes, never a cycle; the collector need not track the
# thousands a worker or the projector holds at a time.
class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True, gc=False):
    pass


class CourseEvent(_Event, frozen=True, kw_only=True):
    course_id: int


class CourseCreated(CourseEvent, frozen=True, kw_only=True, tag=True):
    title: str
    capacity: int
    opens_at: datetime | None = None
    closes_at: datetime | None = None


class EnrollmentRequested(CourseEvent, frozen=True, kw_only=True, tag=True):
    request_id: str
    student_id: int
    idempotency_key: str
    priority: int
    requested_at: datetime


class RequestDecision(CourseEvent, frozen=True, kw_only=True):
    """A request's one decision. It carries the request itself (its key, when it was asked and its arrival):
    the decision is the request's first event in the log. Decisions recorded before sql/007 carry none of
    these: an EnrollmentRequested event of the same transaction holds them, and is read as it always was."""

    request_id: str
    student_id: int
    idempotency_key: str | None = None
    requested_at: datetime | None = None
    # The request's stream id: its arrival, which orders a waitlist after priority.
    arrival: str | None = None

    @property
    def carries_request(self) -> bool:
        return self.requested_at is not None


class EnrollmentGranted(RequestDecision, frozen=True, kw_only=True, tag=True):
    priority: int


class Waitlisted(RequestDecision, frozen=True, kw_only=True, tag=True):
    priority: int
    arrival: str


# duplicate: the student already holds a seat or a waitlist place; closed: asked after registration closed.
RejectionReason = Literal["duplicate", "closed"]


class EnrollmentRejected(RequestDecision, frozen=True, kw_only=True, tag=True):
    reason: RejectionReason
    # Known once the decision carries the request (see RequestDecision).
    priority: int | None = None


class EnrollmentDropped(CourseEvent, frozen=True, kw_only=True, tag=True):
    """A granted seat given back."""

    request_id: str
    student_id: int


class WaitlistLeft(CourseEvent, frozen=True, kw_only=True, tag=True):
    request_id: str
    student_id: int


class WaitlistPromoted(CourseEvent, frozen=True, kw_only=True, tag=True):
    """The head of the waitlist takes a freed seat."""

    request_id: str
    student_id: int


class CapacityChanged(CourseEvent, frozen=True, kw_only=True, tag=True):
    capacity: int
    previous: int


class RegistrationWindowChanged(CourseEvent, frozen=True, kw_only=True, tag=True):
    opens_at: datetime | None = None
    closes_at: datetime | None = None


class StudentPriorityChanged(_Event, frozen=True, kw_only=True, tag=True):
    """A registrar granted a student the priority their later requests take."""

    student_id: int
    priority: int
    previous: int


class RequestDeadLettered(_Event, frozen=True, kw_only=True, tag=True):
    """A stream entry set aside undecided: it could not be decoded, or failed too many deliveries."""

    entry_id: str
    reason: str
    # Known when the entry could be decoded.
    course_id: int | None = None
    request_id: str | None = None
    student_id: int | None = None
    priority: int | None = None
    requested_at: datetime | None = None


Event = (
    CourseCreated
    | EnrollmentRequested
    | EnrollmentGranted
    | Waitlisted
    | EnrollmentRejected
    | EnrollmentDropped
    | WaitlistLeft
    | WaitlistPromoted
    | CapacityChanged
    | RegistrationWindowChanged
    | RequestDeadLettered
    | StudentPriorityChanged
)
Decision = EnrollmentGranted | Waitlisted | EnrollmentRejected

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)
_request_decoder = msgspec.json.Decoder(EnrollmentRequested)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes | str) -> Event:
    return _decoder.decode(data)


def decode_request(data: bytes | str) -> EnrollmentRequested:
    """Decode a request stream entry; raises msgspec.ValidationError for anything else."""
    return _request_decoder.decode(data)


def type_name(event: Event) -> str:
    return type(event).__name__
