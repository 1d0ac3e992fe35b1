"""Following one request or one course: the messages, and what sends them as events commit.

Every message is a Struct tagged by `type` and carries `id`, the log position it is current to: a
client that resumes after an id gets exactly what it missed, read from the log after that event's place
in it (eventlog: positions are ids, not the order of the log), then continues live.
`streams` carries these messages over SSE and WebSocket alike.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal

import msgspec
import psycopg
import redis
from psycopg_pool import PoolTimeout

from courseflow.domain import PENDING, RequestState, evolve
from courseflow.errors import UnknownCourse
from courseflow.events import (
    Decision,
    EnrollmentDropped,
    EnrollmentGranted,
    EnrollmentRejected,
    Event,
    RequestDeadLettered,
    Waitlisted,
    WaitlistLeft,
    WaitlistPromoted,
)
from courseflow.eventstore import reads
from courseflow.eventstore.eventlog import START, Checkpoint, Recorded, Tail
from projections import status, timeline
from projections.feed import BATCH, Ended, Feed, Refresh, Subscription
from projections.messages import (
    CourseCounts,
    LeftWaitlist,
    LoggedEvent,
    Message,
    PlacedOnWaitlist,
    PromotedFromWaitlist,
    Reconnect,
    RequestRejected,
    RequestSetAside,
    SeatDropped,
    SeatGranted,
    StatusMessage,
    StatusSnapshot,
    StillPending,
)
from projections.serving import Sources, Viewer
from projections.status import EnrollmentStatus

PLACES_EVERY_S = 1.0
COUNTS_EVERY_S = 2.0

# The message that tells of each event of a request (its status after it: domain.evolve).
_MESSAGE: dict[type[Event], type[StatusMessage]] = {
    EnrollmentGranted: SeatGranted,
    Waitlisted: PlacedOnWaitlist,
    WaitlistPromoted: PromotedFromWaitlist,
    EnrollmentDropped: SeatDropped,
    WaitlistLeft: LeftWaitlist,
    EnrollmentRejected: RequestRejected,
    RequestDeadLettered: RequestSetAside,
}
# Outages of what live status reads: the stream ends asking the client to resume.
OUTAGES = (psycopg.Error, PoolTimeout, redis.RedisError)


@dataclass(frozen=True)
class Following:
    """A subscription that passed its checks, and the messages its stream sends."""

    sub: Subscription
    messages: AsyncGenerator[Message, None]


def _subscribe(
    svc: Sources, feed: Feed, viewer: Viewer, request_id: str | None = None, course_id: int | None = None
) -> Subscription:
    """A subscription held to the viewer's share of streams, ending when the viewer's token does."""
    settings = svc.settings
    most = (
        settings.limits.live_streams_per_student
        if viewer.role == "student"
        else settings.limits.live_streams_per_privileged
    )
    owner = f"{viewer.role}:{viewer.sub}"
    return feed.subscribe(request_id, course_id, owner=owner, most=most, until=viewer.valid_until)


async def _resumable(svc: Sources, feed: Feed, after: int | None) -> Checkpoint | None:
    """Where to resume after an event id. An id past the end of the log (restored from a backup) or past what this
    process has dispatched (another process a moment ahead) starts afresh from the current state instead: a
    resumed stream must never wait silently."""
    dispatched = await feed.started()
    if after is None:
        return None
    resume = await svc.db(timeline.checkpoint_after, after)
    return None if resume is None or resume > dispatched else resume


async def open_request(svc: Sources, feed: Feed, viewer: Viewer, request_id: str, after: int | None) -> Following:
    """Subscribe first, then check the viewer may follow the request (another student's is UnknownRequest)."""
    resume = await _resumable(svc, feed, after)
    sub = _subscribe(svc, feed, viewer, request_id=request_id)
    try:
        found = await status.owned(svc, viewer, request_id)
    except BaseException:
        sub.leave()
        raise
    return Following(sub, _request_messages(svc, sub, found, resume))


async def _request_messages(
    svc: Sources, sub: Subscription, now: EnrollmentStatus, after: Checkpoint | None
) -> AsyncGenerator[Message, None]:
    try:
        start = START if after is None else after
        logged = await svc.db(timeline.read, start, BATCH, student_id=now.student_id, request_id=now.request_id)
        changes = [r for r in logged if type(r.event) in _MESSAGE]
        sub.position = max(start, logged[-1].checkpoint if logged else START)
        if after is None:
            if changes and evolve(PENDING, changes[-1].event).status != now.status:
                now = await _after(svc, now, changes[-1])  # the read model has not caught up with the log yet
            yield StatusSnapshot(id=sub.position.position, **msgspec.structs.asdict(now))
        for recorded in changes if after is not None else ():
            now = await _after(svc, now, recorded)
            yield _MESSAGE[type(recorded.event)](id=recorded.position, **msgspec.structs.asdict(now))
        while True:
            _watch_place(sub, now)
            item = await sub.next()
            if isinstance(item, Ended):
                yield Reconnect(id=sub.position.position, reason=item.reason)
                return
            if isinstance(item, Refresh):
                if isinstance(item.value, int) and sub.place == "queue":
                    now = msgspec.structs.replace(now, queue_position=item.value)
                    yield StillPending(id=sub.position.position, **msgspec.structs.asdict(now))
                elif isinstance(item.value, int) and sub.place == "waitlist":
                    now = msgspec.structs.replace(now, waitlist_position=item.value)
                    yield PlacedOnWaitlist(id=sub.position.position, **msgspec.structs.asdict(now))
            elif item.checkpoint > sub.position:
                sub.position = item.checkpoint
                if type(item.event) in _MESSAGE:
                    now = await _after(svc, now, item)
                    yield _MESSAGE[type(item.event)](id=item.position, **msgspec.structs.asdict(now))
    except OUTAGES:
        yield Reconnect(id=sub.position.position, reason="unavailable")


def _watch_place(sub: Subscription, now: EnrollmentStatus) -> None:
    """Tell the timer which place of this request to refresh, and the one its follower last heard."""
    place: Literal["queue", "waitlist"] | None = (
        "queue" if now.status == "pending" else "waitlist" if now.status == "waitlisted" else None
    )
    sub.place = place
    sub.refreshed = now.queue_position if place == "queue" else now.waitlist_position


async def _after(svc: Sources, now: EnrollmentStatus, recorded: Recorded) -> EnrollmentStatus:
    """The request after one of its events; a waitlist place is the live one, from the write model."""
    event = recorded.event
    new = evolve(RequestState(status=now.status, reason=now.reason), event)
    place = None
    if new.status == "waitlisted":
        row = await svc.db(reads.request, now.request_id)
        place = row["waitlist_position"] if row is not None and row["status"] == "waitlisted" else None
    return msgspec.structs.replace(
        now,
        status=new.status,
        queue_position=None,
        waitlist_position=place,
        reason=new.reason,
        decided_at=recorded.recorded_at if isinstance(event, Decision) else now.decided_at,
    )


async def open_course(svc: Sources, feed: Feed, viewer: Viewer, course_id: int, after: int | None) -> Following:
    """For registrars and services (the caller checks the role); subscribed before the counts and any backfill
    are read."""
    resume = await _resumable(svc, feed, after)
    sub = _subscribe(svc, feed, viewer, course_id=course_id)
    # Everything up to here was dispatched before the subscription; everything after reaches it.
    start = feed.position or START
    try:
        counts = (await _counts(svc, [course_id])).get(course_id)
        if counts is None:
            raise UnknownCourse(course_id)
    except BaseException:
        sub.leave()
        raise
    return Following(sub, _course_messages(svc, sub, viewer, counts, start if resume is None else resume, resume))


async def _course_messages(
    svc: Sources,
    sub: Subscription,
    viewer: Viewer,
    counts: CourseCounts,
    start: Checkpoint,
    after: Checkpoint | None,
) -> AsyncGenerator[Message, None]:
    sub.position = start
    try:
        while after is not None:
            logged = await svc.db(timeline.read, sub.position, BATCH, stream=sub.stream)
            for recorded in logged:
                sub.position = recorded.checkpoint
                yield LoggedEvent(id=recorded.position, event=timeline.present(recorded, viewer))
            if len(logged) < BATCH:
                break
        yield msgspec.structs.replace(counts, id=sub.position.position)
        while True:
            item = await sub.next()
            if isinstance(item, Ended):
                yield Reconnect(id=sub.position.position, reason=item.reason)
                return
            if isinstance(item, Refresh):
                if isinstance(item.value, CourseCounts):
                    yield msgspec.structs.replace(item.value, id=sub.position.position)
            elif item.checkpoint > sub.position:
                sub.position = item.checkpoint
                yield LoggedEvent(id=item.position, event=timeline.present(item, viewer))
    except OUTAGES:
        yield Reconnect(id=sub.position.position, reason="unavailable")


async def _counts(svc: Sources, course_ids: list[int]) -> dict[int, CourseCounts]:
    # The write model: current the moment a decision commits, where the read model trails it.
    rows = await svc.db(reads.courses, course_ids)
    depths = await svc.intake.queue_depths([row["course_id"] for row in rows])
    return {
        row["course_id"]: CourseCounts(
            id=0,
            course_id=row["course_id"],
            capacity=row["capacity"],
            seats_taken=row["seats_taken"],
            waitlist_length=row["waitlist_length"],
            queue_depth=depth,
        )
        for row, depth in zip(rows, depths, strict=True)
    }


async def _refresh_places(feed: Feed, svc: Sources) -> None:
    """Every follower's queue or waitlist place, in one Redis and one PostgreSQL round trip or two, however many
    there are; a message only where a place changed."""
    watched = [sub for sub in feed.subscriptions() if sub.place is not None and sub.request_id is not None]
    queued = sorted({sub.request_id for sub in watched if sub.place == "queue" and sub.request_id is not None})
    waiting = sorted({sub.request_id for sub in watched if sub.place == "waitlist" and sub.request_id is not None})
    places = await _queue_places(svc, queued) if queued else {}
    places |= await svc.db(reads.waitlist_places, waiting) if waiting else {}
    for sub in watched:
        place = places.get(sub.request_id or "")
        if place is not None and place != sub.refreshed:
            sub.refreshed = place
            sub.offer(Refresh(place))


async def _queue_places(svc: Sources, request_ids: list[str]) -> dict[str, int]:
    return {rid: place for rid, (_, place) in (await svc.intake.pending_positions(request_ids)).items()}


async def _refresh_counts(feed: Feed, svc: Sources) -> None:
    """Every followed course's counts, for all its followers at once, on every beat: a board draws its rates
    from the series, so a beat with nothing new is news too."""
    following = [sub for sub in feed.subscriptions() if sub.course_id is not None]
    if not following:
        return
    counts = await _counts(svc, sorted({sub.course_id for sub in following if sub.course_id is not None}))
    for sub in following:
        now = counts.get(sub.course_id or 0)
        if now is not None:
            sub.offer(Refresh(now))


def log_feed(svc: Sources, database_url: str) -> Feed:
    """This process's feed with its two timers; the app starts it in its lifespan and stops it on shutdown."""

    async def read_log(after: Checkpoint, limit: int) -> Tail:
        # Most reads (every few seconds, idle) find nothing: only events shown move the replica horizon.
        tail = await svc.upkeep(timeline.follow, after, limit)
        if tail.events:
            await svc.shown_now()
        return tail

    async def places(feed: Feed) -> None:
        await _refresh_places(feed, svc)

    async def counts(feed: Feed) -> None:
        await _refresh_counts(feed, svc)

    live = Feed(database_url, read_log)
    live.every(PLACES_EVERY_S, places)
    live.every(COUNTS_EVERY_S, counts)
    return live
