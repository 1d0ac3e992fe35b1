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
    position: int


RejectionReason = Literal["duplicate", "unknown_course"]


class EnrollmentRejected(_Event, frozen=True, kw_only=True, tag=True):
    request_id: str
    student_id: int
    reason: RejectionReason


Event = CourseCreated | EnrollmentRequested | EnrollmentGranted | Waitlisted | EnrollmentRejected
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
