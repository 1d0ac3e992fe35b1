"""The event log as the API's readers see it: histories, live streams and the live feed read it here alike.

Each event is shown as its viewer may see it: other students' ids and request ids reach registrars only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from courseflow.domain import MAX_ID
from courseflow.eventstore import store
from courseflow.eventstore.eventlog import Checkpoint, EventLog, Recorded, Tail
from projections.serving import Viewer

# The largest log position a client may name or be given: positions reach pages as JSON numbers, as ids do.
MAX_POSITION = MAX_ID

# What identifies another student's request, or says more about them than the course's counts: registrars only.
_PERSONAL = ("student_id", "request_id", "idempotency_key", "priority", "previous", "arrival", "requested_at")


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An event of the log. Other students' ids, request ids and priorities reach registrars only."""

    position: Annotated[
        int, Meta(ge=1, le=MAX_POSITION, description="Place in the event log; resume after it with `after`")
    ]
    stream: str
    version: Annotated[int, Meta(ge=1)]
    type: str
    recorded_at: datetime
    data: dict[str, Any]


def present(recorded: Recorded, viewer: Viewer, student_id: int | None = None) -> RecordedEvent:
    """An event as the viewer may see it; `student_id`: the student whose history it is, read on their behalf."""
    data: dict[str, Any] = msgspec.to_builtins(recorded.event)
    # Whose event it is must be known and be the viewer's (or theirs it is read for); anything else is stripped.
    owner = data.get("student_id")
    if not viewer.sees_everyone and (owner is None or owner not in (viewer.student_id, student_id)):
        data = {k: v for k, v in data.items() if k not in _PERSONAL}
    return RecordedEvent(
        position=recorded.position,
        stream=recorded.stream,
        version=recorded.stream_version,
        type=type(recorded.event).__name__,
        recorded_at=recorded.recorded_at,
        data=data,
    )


def read(
    conn: store.Conn,
    /,
    after: Checkpoint,
    limit: int,
    *,
    stream: str | None = None,
    student_id: int | None = None,
    request_id: str | None = None,
) -> list[Recorded]:
    """The one way the API reads the log: histories, live streams and the feed alike."""
    with conn.cursor() as cur:
        return EventLog(cur).read(after, limit, stream=stream, student_id=student_id, request_id=request_id)


def follow(conn: store.Conn, /, after: Checkpoint, limit: int) -> Tail:
    """The whole log after a checkpoint, for the live feed."""
    with conn.cursor() as cur:
        return EventLog(cur).follow(after, limit)


def checkpoint_after(conn: store.Conn, position: int) -> Checkpoint | None:
    """Where a client that asks for what follows an event id (a log position) resumes; None: past the log's end."""
    with conn.cursor() as cur:
        return EventLog(cur).checkpoint_after(position)


def read_after(
    conn: store.Conn,
    /,
    after: int,
    limit: int,
    *,
    stream: str | None = None,
    student_id: int | None = None,
    request_id: str | None = None,
) -> list[Recorded]:
    """Events after an event id, as `read`; none after an id past the end of the log."""
    with conn.cursor() as cur:
        log = EventLog(cur)
        resume = log.checkpoint_after(after)
        return (
            []
            if resume is None
            else log.read(resume, limit, stream=stream, student_id=student_id, request_id=request_id)
        )
