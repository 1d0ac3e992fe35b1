"""The event vocabulary: one tagged union, one codec for Redis and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

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
    """A request's own event, recorded beside its decision before sql/007; `decode_log` folds it into that."""

    request_id: str
    student_id: int
    idempotency_key: str
    priority: int
    requested_at: datetime


class RequestDecision(CourseEvent, frozen=True, kw_only=True):
    """A request's one decision. It carries the request itself (its key, priority, when it was asked and its
    arrival): the decision is the request's first event in the log. Decisions recorded before sql/007 are
    upcast to this shape as they are decoded (`decode_log`)."""

    request_id: str
    student_id: int
    idempotency_key: str
    priority: int
    requested_at: datetime
    # The request's stream id: its arrival, which orders a waitlist after priority. Unknown for grants and
    # rejections recorded before sql/007, whose request event did not hold it.
    arrival: str | None = None


class EnrollmentGranted(RequestDecision, frozen=True, kw_only=True, tag=True):
    pass


class Waitlisted(RequestDecision, frozen=True, kw_only=True, tag=True):
    arrival: str


# duplicate: the student already holds a seat or a waitlist place; closed: asked after registration closed.
RejectionReason = Literal["duplicate", "closed"]


class EnrollmentRejected(RequestDecision, frozen=True, kw_only=True, tag=True):
    reason: RejectionReason


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
_DECISION_TYPES = ("EnrollmentGranted", "Waitlisted", "EnrollmentRejected")

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


class QueuedRequest(msgspec.Struct, frozen=True, kw_only=True, tag="EnrollmentRequested", tag_field="type", gc=False):
    """An accepted request as the request stream and the priority sets hold it, until its decision records it.

    Its JSON is what intake's scripts splice the granted priority into (`"priority":0,` then `requested_at`):
    the field order is part of the format, and entries queued by earlier releases read the same.
    """

    course_id: int
    request_id: str
    student_id: int
    idempotency_key: str
    priority: int
    requested_at: datetime


_request_decoder = msgspec.json.Decoder(QueuedRequest)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes | str) -> Event:
    """One event in its current shape; `decode_log` for rows of the log, which may hold older shapes."""
    return _decoder.decode(data)


def decode_log(rows: Sequence[bytes | str]) -> list[Event | None]:
    """Rows of the log, read in log order, each in the current shape: the one place old shapes are upcast.

    Before sql/007 a decision did not carry its request: the request's own event came just before it, in the
    same transaction and stream. That pair decodes as the decision alone, carrying the request, with None in
    the request's place. A request whose decision is not among `rows` is returned as it is.
    """
    decoded: list[Event | None] = []
    for row in rows:
        try:
            decoded.append(_decoder.decode(row))
        except msgspec.ValidationError:
            before = decoded[-1] if decoded else None
            decoded.append(upcast(msgspec.json.decode(row), before))
            decoded[-2] = None
    return decoded


def upcast(data: dict[str, Any], request: Event | None) -> Event:
    """A decision recorded before sql/007 (`data`), given the request event recorded just before it."""
    if (
        data.get("type") not in _DECISION_TYPES
        or "requested_at" in data
        or not isinstance(request, EnrollmentRequested)
        or request.request_id != data.get("request_id")
    ):
        raise msgspec.ValidationError(f"not an event of any known shape: {data.get('type')!r}")
    carried = {
        "idempotency_key": request.idempotency_key,
        "priority": request.priority,
        "requested_at": request.requested_at,
    }
    upcast_event: Event = msgspec.convert(carried | data, Event)
    return upcast_event


def encode_request(request: QueuedRequest) -> bytes:
    return _encoder.encode(request)


def decode_request(data: bytes | str) -> QueuedRequest:
    """Decode a request stream entry; raises msgspec.ValidationError for anything else."""
    return _request_decoder.decode(data)


def type_name(event: Event) -> str:
    return type(event).__name__
