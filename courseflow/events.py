"""The event vocabulary: one tagged union, one codec for Redis and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    course_id: int


class CourseCreated(_Event, frozen=True, kw_only=True, tag=True):
    title: str
    capacity: int
    opens_at: datetime | None = None
    closes_at: datetime | None = None


class EnrollmentRequested(_Event, frozen=True, kw_only=True, tag=True):
    request_id: str
    student_id: int
    idempotency_key: str
    priority: int
    requested_at: datetime


class EnrollmentGranted(_Event, frozen=True, kw_only=True, tag=True):
    request_id: str
    student_id: int
    priority: int


class Waitlisted(_Event, frozen=True, kw_only=True, tag=True):
    request_id: str
    student_id: int
    priority: int
    # The request's stream id: the waitlist is ordered by priority, then this arrival.
    arrival: str


# duplicate: the student already holds a seat or a waitlist place; closed: asked after registration closed.
RejectionReason = Literal["duplicate", "closed"]


class EnrollmentRejected(_Event, frozen=True, kw_only=True, tag=True):
    request_id: str
    student_id: int
    reason: RejectionReason


class EnrollmentDropped(_Event, frozen=True, kw_only=True, tag=True):
    """A granted seat given back."""

    request_id: str
    student_id: int


class WaitlistLeft(_Event, frozen=True, kw_only=True, tag=True):
    request_id: str
    student_id: int


class WaitlistPromoted(_Event, frozen=True, kw_only=True, tag=True):
    """The head of the waitlist takes a freed seat."""

    request_id: str
    student_id: int


class CapacityChanged(_Event, frozen=True, kw_only=True, tag=True):
    capacity: int
    previous: int


class RegistrationWindowChanged(_Event, frozen=True, kw_only=True, tag=True):
    opens_at: datetime | None = None
    closes_at: datetime | None = None


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
