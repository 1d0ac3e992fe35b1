"""The messages of live status, over SSE and WebSocket alike: Structs tagged by `type`, each with its `id`.

`id` is the event-log position the message is current to; a client resumes after the last one it got.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from courseflow.domain import Id
from projections.status import EnrollmentStatus
from projections.timeline import MAX_POSITION, RecordedEvent

LogPosition = Annotated[
    int, Meta(ge=0, le=MAX_POSITION, description="The log position this is current to; resume after it")
]


class StatusMessage(EnrollmentStatus, frozen=True, kw_only=True, tag_field="type"):
    id: LogPosition


class StatusSnapshot(StatusMessage, frozen=True, kw_only=True, tag="status"):
    """The first message: the request as it stands; `id` is the last position of its history (0: none yet)."""


class StillPending(StatusMessage, frozen=True, kw_only=True, tag="pending"):
    """Its place in the queue changed."""


class SeatGranted(StatusMessage, frozen=True, kw_only=True, tag="granted"):
    pass


class PlacedOnWaitlist(StatusMessage, frozen=True, kw_only=True, tag="waitlisted"):
    pass


class PromotedFromWaitlist(StatusMessage, frozen=True, kw_only=True, tag="promoted"):
    pass


class SeatDropped(StatusMessage, frozen=True, kw_only=True, tag="dropped"):
    pass


class LeftWaitlist(StatusMessage, frozen=True, kw_only=True, tag="left"):
    pass


class RequestRejected(StatusMessage, frozen=True, kw_only=True, tag="rejected"):
    pass


class RequestSetAside(StatusMessage, frozen=True, kw_only=True, tag="dead_lettered"):
    pass


class LogMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    id: LogPosition


class LoggedEvent(LogMessage, frozen=True, kw_only=True, tag="event"):
    """One event of the course, as the caller may see it."""

    event: RecordedEvent


class CourseCounts(LogMessage, frozen=True, kw_only=True, tag="counts"):
    """Sent first, then whenever the figures change."""

    course_id: Id
    capacity: int
    seats_taken: int
    waitlist_length: int
    queue_depth: int


class Reconnect(LogMessage, frozen=True, kw_only=True, tag="reconnect"):
    """The last message of a stream: resume after `id` (SSE `Last-Event-ID`, WebSocket `after`)."""

    reason: Literal["overflow", "shutdown", "rewound", "expired", "unavailable"]


class StreamRefused(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="error", tag_field="type"):
    """WebSocket only: why the stream was refused, as problem details say it, before the socket closes."""

    status: int
    title: str
    detail: str
    field: str | None = None


RequestMessage = (
    StatusSnapshot
    | StillPending
    | SeatGranted
    | PlacedOnWaitlist
    | PromotedFromWaitlist
    | SeatDropped
    | LeftWaitlist
    | RequestRejected
    | RequestSetAside
    | Reconnect
)
CourseMessage = LoggedEvent | CourseCounts | Reconnect
Message = StatusMessage | LogMessage
