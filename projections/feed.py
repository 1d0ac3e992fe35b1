"""The live feed: one listener per API process follows the event log and fans each committed event out.

Every append runs pg_notify inside its transaction, so at each COMMIT the listener wakes, reads what follows
its checkpoint in the log (eventlog: in batches, never skipping an event committed late) and hands each event
to the subscriptions of its request and of its stream. Events held back by an older transaction still open
are looked for again soon, as that transaction may end without a NOTIFY. Each subscription buffers a bounded
number of items: one that falls that far behind is ended, its client resuming from the last id it got, and
nobody else waits for it. Timers (queue places, course counts) run once per process for everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import msgspec
import psycopg
from psycopg_pool import PoolTimeout

from courseflow.eventstore import store
from courseflow.eventstore.eventlog import START, Checkpoint, Recorded, Tail
from courseflow.platform.backoff import Backoff
from projections.refusals import FeedClosing, FeedNotReady, TooManyStreams

log = logging.getLogger("courseflow.feed")

BATCH = 500
# Items a subscriber may fall behind by before it is ended and told to resume.
BUFFER = 256
# Read even without a NOTIFY this often: a lost wake-up then costs seconds, never a stuck stream.
IDLE_S = 5.0
# How the listener's connection shows in pg_stat_activity.
APPLICATION_NAME = "courseflow-live-feed"
# Bounded connects, and keepalives so a silently lost connection is noticed in seconds rather than never.
_LISTENER: dict[str, Any] = {
    "autocommit": True,
    "application_name": APPLICATION_NAME,
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


class Ended(msgspec.Struct, frozen=True):
    """Why a subscription ended. `overflow`: it fell behind; `shutdown`: the server stops; `rewound`: the log did;
    `expired`: the follower's token did (a stream never outlives the right to read it)."""

    reason: Literal["overflow", "shutdown", "rewound", "expired"]


class Refresh(msgspec.Struct, frozen=True):
    """A timer's new value for one subscriber (a queue place, a course's counts): news that is not in the log."""

    value: int | msgspec.Struct


Item = Recorded | Refresh
# The log after a checkpoint, at most so many events (eventlog.EventLog.follow).
ReadLog = Callable[[Checkpoint, int], Awaitable[Tail]]
Beat = Callable[["Feed"], Awaitable[None]]


class Subscription:
    """One follower of a request or a course: its buffer, filled by the feed, drained by its stream."""

    def __init__(
        self,
        forget: Callable[[Subscription], None],
        buffer: int,
        request_id: str | None,
        course_id: int | None,
        owner: str,
    ):
        self.owner = owner
        self.request_id = request_id
        self.course_id = course_id
        self.stream = None if course_id is None else store.course_stream(course_id)
        # The place in the log its stream has sent up to: messages not from the log carry its position as their
        # id, and an event must come after it to be sent.
        self.position = START
        # Which place the timer refreshes for this request (its queue place while pending, its waitlist place while
        # waitlisted: others ahead leave), and the last place its follower heard.
        self.place: Literal["queue", "waitlist"] | None = None
        self.refreshed: int | None = None
        self.ended: Ended | None = None
        self._forget = forget
        self._buffer = buffer
        self._items: deque[Item] = deque()
        self._wake = asyncio.Event()
        # Ends it when its follower's token expires.
        self.expiry: asyncio.TimerHandle | None = None

    def offer(self, item: Item) -> None:
        """Buffer an item, never waiting: a full buffer ends the subscription instead."""
        if self.ended is not None:
            return
        if len(self._items) >= self._buffer:
            self.end(Ended("overflow"))
            return
        self._items.append(item)
        self._wake.set()

    def end(self, why: Ended) -> None:
        if self.ended is None:
            self.ended = why
            self._items.clear()
            self._wake.set()
        self._forget(self)

    def leave(self) -> None:
        """Its stream is over: the feed forgets it."""
        self._forget(self)

    async def next(self) -> Item | Ended:
        """The next buffered item; once ended, only why (what was buffered is dropped: the client resumes)."""
        while self.ended is None and not self._items:
            self._wake.clear()
            await self._wake.wait()
        return self.ended if self.ended is not None else self._items.popleft()


class Feed:
    """Follows the log from a LISTEN connection and dispatches each event once to every interested subscriber."""

    def __init__(self, database_url: str, read: ReadLog, buffer: int = BUFFER, idle_s: float = IDLE_S) -> None:
        self._url = database_url
        self._read = read
        self._buffer = buffer
        self._idle_s = idle_s
        self._by_request: dict[str, set[Subscription]] = {}
        self._by_stream: dict[str, set[Subscription]] = {}
        # Open subscriptions per owner (a caller), to hold each to its share.
        self._held: Counter[str] = Counter()
        self._beats: list[tuple[float, Beat]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = asyncio.Event()
        # Every event up to here has been dispatched; None until the listener first reached the log.
        self.position: Checkpoint | None = None
        self.closing = False

    def every(self, seconds: float, beat: Beat) -> None:
        """Run `beat` every `seconds` from start to stop: one timer for all subscribers."""
        self._beats.append((seconds, beat))

    def subscribe(
        self,
        request_id: str | None = None,
        course_id: int | None = None,
        *,
        owner: str = "",
        most: int | None = None,
        until: float | None = None,
    ) -> Subscription:
        """Register before reading any status or backfill, so an event committed meanwhile is buffered, not lost.

        `owner` holds at most `most` subscriptions at once (TooManyStreams beyond); each ends at `until` (epoch s).
        """
        if self.closing:
            raise FeedClosing("this server is shutting down; reconnect to another")
        if most is not None and self._held[owner] >= most:
            raise TooManyStreams(f"at most {most} live streams at once per caller: close one before opening another")
        self._loop = self._loop or asyncio.get_running_loop()
        sub = Subscription(self.unsubscribe, self._buffer, request_id, course_id, owner)
        self._held[owner] += 1
        if request_id is not None:
            self._by_request.setdefault(request_id, set()).add(sub)
        if sub.stream is not None:
            self._by_stream.setdefault(sub.stream, set()).add(sub)
        if until is not None:
            sub.expiry = self._loop.call_later(max(0.0, until - time.time()), sub.end, Ended("expired"))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription; the first call of several (it ended, then its stream left) counts."""
        known = self._by_request.get(sub.request_id or "", set()) | self._by_stream.get(sub.stream or "", set())
        if sub not in known:
            return
        for index, key in ((self._by_request, sub.request_id), (self._by_stream, sub.stream)):
            if key is not None and (subs := index.get(key)) is not None:
                subs.discard(sub)
                if not subs:
                    del index[key]
        self._held[sub.owner] -= 1
        if self._held[sub.owner] <= 0:
            del self._held[sub.owner]
        if sub.expiry is not None:
            sub.expiry.cancel()

    def subscriptions(self) -> list[Subscription]:
        return [sub for index in (self._by_request, self._by_stream) for subs in index.values() for sub in subs]

    def dispatch(self, batch: Sequence[Recorded]) -> None:
        """Hand each event to the subscribers of its request and of its stream; a full buffer ends only its owner."""
        for recorded in batch:
            request_id = getattr(recorded.event, "request_id", None)
            for sub in [*self._by_stream.get(recorded.stream, ()), *self._by_request.get(request_id or "", ())]:
                sub.offer(recorded)
        if batch:
            self.position = max(self.position or START, batch[-1].checkpoint)

    async def started(self, timeout_s: float = 5.0) -> Checkpoint:
        """The place in the log dispatched so far, once the listener has reached the log (FeedNotReady if it cannot)."""
        try:
            await asyncio.wait_for(self._started.wait(), timeout_s)
        except TimeoutError:
            raise FeedNotReady("live status is not connected to the database yet; retry shortly") from None
        assert self.position is not None
        return self.position

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._listen(), name="feed-listener")]
        self._tasks += [asyncio.create_task(self._tick(s, beat), name="feed-timer") for s, beat in self._beats]

    def close(self) -> None:
        """End every stream now and refuse new ones. Safe from a signal handler or another thread."""
        self.closing = True
        loop = self._loop
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing is streaming any more
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._end_all, Ended("shutdown"))

    async def stop(self) -> None:
        self.closing = True
        self._end_all(Ended("shutdown"))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def _end_all(self, why: Ended) -> None:
        for sub in self.subscriptions():
            sub.end(why)

    async def _listen(self) -> None:
        """LISTEN, catch up, sleep until NOTIFY; through a database restart, reconnect with backoff and catch up."""
        backoff = Backoff()
        held = Backoff(base_s=0.005, cap_s=self._idle_s)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, **_LISTENER) as conn:
                    await conn.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
                    backoff.reset()
                    if self.position is None:
                        # Start at the log's readable end: what came before is each subscriber's own read.
                        self.position = (await self._read(START, 0)).end
                        self._started.set()
                    while True:
                        if not await self._catch_up():
                            held.reset()
                            wait = self._idle_s
                        else:
                            wait = held.next_delay()
                        async for _ in conn.notifies(timeout=wait, stop_after=1):
                            pass
                        # A burst of commits is one read, not one per NOTIFY.
                        async for _ in conn.notifies(timeout=0):
                            pass
            except (psycopg.Error, PoolTimeout) as exc:
                delay = backoff.next_delay()
                log.warning("live feed: %s; reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)
            except Exception:
                # Anything else (an event that will not decode) must not silence every stream for good.
                delay = backoff.next_delay()
                log.exception("live feed failed; retrying in %.2fs", delay)
                await asyncio.sleep(delay)

    async def _catch_up(self) -> bool:
        """Dispatch everything readable; True when more is committed but unread (an older transaction holds it back).

        With nobody subscribed, the events are not read at all: the feed moves to the log's readable end.
        """
        while True:
            assert self.position is not None
            if not self._by_request and not self._by_stream:
                skipped = await self._read(self.position, 0)
                if self._by_request or self._by_stream:
                    continue  # subscribed meanwhile, from the place before: read the events for them
                self.position = skipped.end
                return skipped.unread
            tail = await self._read(self.position, BATCH)
            self.dispatch(tail.events)
            if len(tail.events) == BATCH:
                continue
            if not tail.events and (end := tail.end) < self.position:
                # Restored from a backup or emptied (tests do): follow what is there now from its start, and end
                # the streams that were already past its end (their ids belong to the log that was).
                log.warning(
                    "live feed: the event log went back from %s to %s; following it again",
                    self.position.position,
                    end.position,
                )
                for sub in self.subscriptions():
                    if sub.position > end:
                        sub.end(Ended("rewound"))
                self.position = START
                continue
            return tail.unread

    async def _tick(self, seconds: float, beat: Beat) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await beat(self)
            except Exception as exc:  # a timer outlives an outage of what it reads: the next beat retries
                log.debug("live feed timer: %s", exc)
