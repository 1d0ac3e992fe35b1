"""The consumer-group worker: reads accepted requests and commits their decisions."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import psycopg
import redis

from courseflow import queue, store
from courseflow.backoff import Backoff
from courseflow.config import Settings
from courseflow.domain import StreamId, decide
from courseflow.events import EnrollmentRequested, RequestDeadLettered, decode_request
from courseflow.queue import GROUP, REQUEST_FIELD, Keys

log = logging.getLogger("courseflow.worker")

Entry = tuple[bytes, dict[bytes, bytes]]


class Accepted(msgspec.Struct, frozen=True):
    """A stream entry read by this worker, decoded."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    request: EnrollmentRequested
    member: bytes

    @classmethod
    def decode(cls, entry_id: bytes, fields: dict[bytes, bytes]) -> Accepted:
        """Raises Undecodable with the reason when the entry is not a request this worker can decide."""
        payload = fields.get(REQUEST_FIELD)
        if payload is None:
            raise Undecodable("missing request field")
        try:
            return cls(entry_id, fields, decode_request(payload), queue.member(StreamId.parse(entry_id), payload))
        except (msgspec.DecodeError, ValueError) as exc:
            raise Undecodable(f"undecodable: {exc}") from None


class Undecodable(Exception):
    pass


class Outcome(msgspec.Struct):
    """What one transaction did with a batch, for the acknowledgements that follow its COMMIT."""

    # Priority-set members decided (now or before), per course.
    settled: dict[int, list[bytes]] = msgspec.field(default_factory=dict)
    decided: set[str] = msgspec.field(default_factory=set)
    # Accepted before registration opened: acknowledged, left in the priority set.
    deferred: set[str] = msgspec.field(default_factory=set)
    unknown: list[int] = msgspec.field(default_factory=list)


class Worker:
    def __init__(self, settings: Settings, name: str, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.name = name
        self.keys = Keys(settings.stream_prefix)
        self.stop = stop or threading.Event()
        # The blocking read's BLOCK stays well below the socket timeout (redis-py #2807).
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_timeout=settings.block_ms / 1000 + 10, health_check_interval=30
        )
        self._pg: psycopg.Connection[psycopg.rows.TupleRow] | None = None
        self.decided = 0

    @property
    def pg(self) -> psycopg.Connection[psycopg.rows.TupleRow]:
        if self._pg is None or self._pg.closed:
            self._pg = psycopg.connect(self.settings.database_url, autocommit=True)
        return self._pg

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        self.redis.close()

    def run(self) -> None:
        """Decide requests until `stop` is set; survives PostgreSQL and Redis outages by backing off."""
        backoff = Backoff()
        recovered = False
        next_claim = 0.0
        while not self.stop.is_set():
            try:
                if not recovered:
                    # PostgreSQL first: redelivering while it is down would only use up delivery counts.
                    self.pg.execute("SELECT 1")
                    queue.ensure_group(self.redis, self.keys)
                    self.recover_own()
                    recovered = True
                if time.monotonic() >= next_claim:
                    self.reclaim()
                    next_claim = time.monotonic() + self.settings.claim_idle_ms / 2000
                self.step(block_ms=self.settings.block_ms)
                backoff.reset()
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("%s: the consumer group is gone (Redis data lost?); creating it again", self.name)
                recovered = False
            except (psycopg.OperationalError, redis.ConnectionError, redis.TimeoutError) as exc:
                delay = backoff.next_delay()
                log.warning("%s: %s; retrying in %.2fs", self.name, exc, delay)
                self._pg = None
                recovered = False
                self.stop.wait(delay)
        self.close()

    def step(self, block_ms: int | None = None) -> int:
        """Open due backlogs, then read one batch of new entries and decide it; returns the entries read."""
        self.open_backlogs()
        if block_ms is not None:
            opening = store.next_opening(self.pg, _now())
            if opening is not None:
                # Wake up the moment a registration opens, not up to BLOCK later.
                block_ms = max(1, min(block_ms, int((opening - _now()).total_seconds() * 1000) + 1))
        reply = self.redis.xreadgroup(
            GROUP, self.name, {self.keys.requests: ">"}, count=self.settings.batch_size, block=block_ms
        )
        entries = _entries(reply)
        self.process(entries)
        return len(entries)

    def open_backlogs(self) -> int:
        """Decide the requests accepted before registration opened, best first, a batch per transaction."""
        decided = 0
        while True:
            settled: dict[int, list[bytes]] = {}
            with self.pg.transaction(), self.pg.cursor() as cur:
                course = store.lock_opened_backlog(cur, _now())
                if course is None:
                    return decided
                course_id = course.state.course_id
                raw = queue.top(self.redis, self.keys, course_id, self.settings.batch_size)
                if len(raw) < self.settings.batch_size:
                    store.set_backlog(cur, course_id, False)
                resolved, count = self._decide(cur, course, raw, ())
                settled[course_id] = raw
            queue.settle(self.redis, self.keys, settled, sorted(resolved), [])
            decided += count

    def recover_own(self) -> None:
        """Re-process the entries this consumer read before a restart but never acknowledged."""
        cursor = "0"
        while entries := _entries(
            self.redis.xreadgroup(GROUP, self.name, {self.keys.requests: cursor}, count=self.settings.batch_size)
        ):
            self.process_redelivered(entries)
            cursor = entries[-1][0].decode()

    def reclaim(self) -> None:
        """Take over entries idle longer than the claim timeout (their consumer is presumed dead), then trim."""
        cursor: bytes | str = "0-0"
        while True:
            next_cursor, claimed, *_ = self.redis.xautoclaim(
                self.keys.requests,
                GROUP,
                self.name,
                min_idle_time=self.settings.claim_idle_ms,
                start_id=cursor,
                count=self.settings.batch_size,
            )
            if claimed:
                log.info("%s: reclaimed %d idle entries", self.name, len(claimed))
                self.process_redelivered(claimed)
            if next_cursor in (b"0-0", "0-0"):
                break
            cursor = next_cursor
        queue.trim(self.redis, self.keys)

    def process_redelivered(self, entries: Sequence[Entry]) -> None:
        """Entries delivered before: one that keeps failing is dead-lettered instead of blocking the queue."""
        live = [(eid, fields) for eid, fields in entries if fields]
        deliveries = (
            {
                p["message_id"]: p["times_delivered"]
                for p in self.redis.xpending_range(
                    self.keys.requests, GROUP, min=live[0][0], max=live[-1][0], count=len(live), consumername=self.name
                )
            }
            if live
            else {}
        )
        fresh = []
        for entry_id, fields in entries:
            if int(deliveries.get(entry_id, 0)) > self.settings.max_deliveries:
                self.dead_letter(entry_id, fields, f"not decided after {self.settings.max_deliveries} deliveries")
            else:
                fresh.append((entry_id, fields))
        self.process(fresh)

    def dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        """Record the entry as dead-lettered (an event), then move it to the dead-letter stream."""
        try:
            item: Accepted | None = Accepted.decode(entry_id, fields)
        except Undecodable:
            item = None
        request = None if item is None else item.request
        event = RequestDeadLettered(
            entry_id=entry_id.decode(),
            reason=reason,
            course_id=None if request is None else request.course_id,
            request_id=None if request is None else request.request_id,
        )
        store.record_dead_letter(self.pg, event)
        pending = None if item is None else (item.request.course_id, item.member, item.request.request_id)
        queue.dead_letter(self.redis, self.keys, entry_id, fields, reason, pending)
        log.warning("%s: dead-lettered %s: %s", self.name, entry_id.decode(), reason)

    def process(self, entries: Sequence[Entry]) -> None:
        by_course: dict[int, list[Accepted]] = defaultdict(list)
        gone: list[bytes] = []
        for entry_id, fields in entries:
            if not fields:
                gone.append(entry_id)  # deleted from the stream: nothing left to decide
                continue
            try:
                item = Accepted.decode(entry_id, fields)
            except Undecodable as exc:
                self.dead_letter(entry_id, fields, str(exc))
                continue
            by_course[item.request.course_id].append(item)
        outcome = self._commit_each(by_course) if by_course else Outcome()
        for course_id in outcome.unknown:
            for item in by_course[course_id]:
                self.dead_letter(item.entry_id, item.fields, f"unknown course {course_id}")
        done = outcome.decided | outcome.deferred
        acked = [a.entry_id for items in by_course.values() for a in items if a.request.request_id in done]
        if outcome.settled or acked or gone:
            queue.settle(self.redis, self.keys, outcome.settled, sorted(outcome.decided), acked + gone)

    def _commit_each(self, by_course: dict[int, list[Accepted]]) -> Outcome:
        """Commit the batch in one transaction; if the data makes that fail, course by course, so one bad
        course does not hold up the others. Entries that still fail stay unacknowledged: redelivered,
        and dead-lettered after too many deliveries."""
        try:
            return self._commit(by_course)
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            log.exception("%s: batch failed; deciding course by course", self.name)
        outcome = Outcome()
        for course_id, items in by_course.items():
            try:
                one = self._commit({course_id: items})
            except psycopg.OperationalError:
                raise
            except psycopg.Error:
                log.exception("%s: course %d failed; its entries will be redelivered", self.name, course_id)
                continue
            outcome.settled |= one.settled
            outcome.decided |= one.decided
            outcome.deferred |= one.deferred
            outcome.unknown += one.unknown
        return outcome

    def _commit(self, by_course: dict[int, list[Accepted]]) -> Outcome:
        """One transaction: lock the batch's courses, decide everything pending up to the batch, append."""
        outcome = Outcome()
        now = _now()
        with self.pg.transaction(), self.pg.cursor() as cur:
            locked = store.lock_courses(cur, by_course)
            outcome.unknown = [cid for cid in by_course if cid not in locked]
            for course_id in sorted(set(by_course) & set(locked)):
                course, batch = locked[course_id], by_course[course_id]
                if not course.state.is_open(now):
                    # The priority set keeps them, durably, until the opening; the stream entries are done.
                    store.set_backlog(cur, course_id, True)
                    outcome.deferred |= {a.request.request_id for a in batch}
                    continue
                last = max(batch, key=lambda a: (-a.request.priority, a.member))
                # Read after taking the lock: everything a previous holder decided is committed by now.
                raw = queue.pending_through(self.redis, self.keys, course_id, last.request.priority, last.member)
                done, count = self._decide(cur, course, raw, [a.request.request_id for a in batch])
                self.decided += count
                outcome.settled[course_id] = raw
                outcome.decided |= done
        return outcome

    def _decide(
        self, cur: store.Cursor, course: store.LockedCourse, raw: Sequence[bytes], also: Sequence[str]
    ) -> tuple[set[str], int]:
        """Decide the members `raw` (best first) that are not decided yet; returns the ids now decided
        (including those of `also` found decided before) and how many decisions were made."""
        items = [queue.parse_member(m) for m in raw]
        done = store.decided_requests(cur, [p.request.request_id for p in items] + list(also))
        fresh = [p for p in items if p.request.request_id not in done]
        holders = store.holders(cur, course.state.course_id, {p.request.student_id for p in fresh})
        decisions, after = decide(msgspec.structs.replace(course.state, holders=holders), fresh)
        if decisions:
            version = store.record_decisions(cur, course, fresh, decisions, self.name)
            store.save_course(cur, after, version)
        return done | {p.request.request_id for p in fresh}, len(decisions)


def _now() -> datetime:
    return datetime.now(UTC)


def _entries(reply: Any) -> list[Entry]:
    """The entries of a one-stream XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return cast(list[Entry], next(iter(reply.values()))[0])
    return cast(list[Entry], reply[0][1])
