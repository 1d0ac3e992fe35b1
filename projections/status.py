"""The status of one request, the one way HTTP, SSE and WebSocket all compute it.

The recorded status answers first, read where reads go (the replica, when it has caught up): the write
model's row where it has one, else the read model's (which alone knows a request set aside undecided).
The write model changes in the same transaction as the events, so it is never behind the read model: a
drop answered a moment ago never reads back as the seat the projector has not taken away yet. A request
not recorded as decided there is either still pending in Redis (with its queue position) or decided a
moment ago: the primary's write model has it, even when the replica has not replayed it yet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from courseflow.domain import MAX_ID, Id, RequestStatus
from courseflow.errors import UnknownRequest
from courseflow.eventstore import reads, store
from projections import queries
from projections.serving import Sources, Viewer

RequestId = Annotated[
    str, Meta(description="The request's id (a UUID)", examples=["0b7f0f0e-6a77-4c6b-9a43-1a2f3c4d5e6f"])
]
Position = Annotated[int, Meta(ge=1, le=MAX_ID, description="1-based place in line")]


class EnrollmentStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One request as it stands now: pending in the queue, or decided and what happened to it since."""

    request_id: RequestId
    course_id: Id
    student_id: Id
    priority: int
    status: RequestStatus
    requested_at: datetime
    # While pending: the place among the course's pending requests.
    queue_position: Position | None = None
    # While waitlisted: the live place on the waitlist.
    waitlist_position: Position | None = None
    # Why it was rejected ("duplicate", "closed") or dead-lettered.
    reason: str | None = None
    decided_at: datetime | None = None


async def current(svc: Sources, request_id: str) -> EnrollmentStatus | None:
    """The request as it stands, or None when no such request exists."""
    recorded = await svc.read(_recorded, request_id)
    if recorded is not None and recorded["status"] != "pending":
        return from_row(recorded)
    pending = await svc.intake.pending_position(request_id)
    if pending is not None:
        req = pending.request
        return EnrollmentStatus(
            request_id=request_id,
            course_id=req.course_id,
            student_id=req.student_id,
            priority=req.priority,
            status="pending",
            queue_position=pending.position,
            requested_at=req.requested_at,
        )
    decided = await svc.db(reads.request, request_id)
    return None if decided is None else from_row(decided)


async def owned(svc: Sources, viewer: Viewer, request_id: str) -> EnrollmentStatus:
    """The request if the viewer may follow it. Another student's is answered as if it did not exist."""
    found = await current(svc, request_id)
    if found is None or not viewer.may_act_for(found.student_id):
        raise UnknownRequest(request_id)
    return found


def _recorded(conn: store.Conn, request_id: str) -> dict[str, Any] | None:
    return reads.request(conn, request_id) or queries.enrollment(conn, request_id)


def from_row(row: dict[str, Any]) -> EnrollmentStatus:
    return msgspec.convert({k: v for k, v in row.items() if v is not None}, EnrollmentStatus, from_attributes=True)
