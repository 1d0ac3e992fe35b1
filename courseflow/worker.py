"""The consumer-group worker: reads accepted requests and commits their decisions."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
import redis
import structlog

from courseflow import queue, store, tracing
from courseflow.backoff import Backoff
from courseflow.config import Settings
from courseflow.decider import Accepted, Decider, Outcome, Undecodable
from courseflow.events import RequestDeadLettered
from courseflow.metrics import DEAD_LETTERS, WORKERS_ALIVE
from courseflow.queue import GROUP, Keys

log = logging.getLogger("courseflow.worker")

Entry = tuple[bytes, dict[bytes, bytes]]


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
        # A large backlog is decided in rounds of this many requests per course and transaction.
        self.decider = Decider(self.redis, self.keys, name, limit=settings.batch_size * 4)

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
        WORKERS_ALIVE.inc()  # in multiprocess mode a process that died stops counting by itself (livesum)
        try:
            self._decide_until_stopped()
        finally:
            WORKERS_ALIVE.dec()

    def _decide_until_stopped(self) -> None:
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
        """Decide the requests accepted before registration opened, best first, a round per transaction."""
        taken = 0
        while n := self.decider.open_backlog(self.pg):
            taken += n
        return taken

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
            student_id=None if request is None else request.student_id,
            priority=None if request is None else request.priority,
            requested_at=None if request is None else request.requested_at,
        )
        store.record_dead_letter(self.pg, event)
        pending = None if item is None else (item.request.course_id, item.member, item.request.request_id)
        queue.dead_letter(self.redis, self.keys, entry_id, fields, reason, pending)
        DEAD_LETTERS.inc()
        ids = {} if request is None else _ids(request.request_id, request.course_id, request.student_id)
        with structlog.contextvars.bound_contextvars(**ids):
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
        outcome = self._decide_traced(by_course) if by_course else Outcome()
        for course_id in outcome.unknown:
            for item in by_course[course_id]:
                self.dead_letter(item.entry_id, item.fields, f"unknown course {course_id}")
        done = outcome.decided | outcome.deferred
        acked = [a.entry_id for items in by_course.values() for a in items if a.request.request_id in done]
        if acked or gone:
            queue.settle(self.redis, self.keys, {}, [], acked + gone)
        if log.isEnabledFor(logging.DEBUG):
            # One line per decided request with its ids as fields; skipped cheaply at INFO.
            for item in (a for items in by_course.values() for a in items if a.request.request_id in outcome.decided):
                r = item.request
                with structlog.contextvars.bound_contextvars(**_ids(r.request_id, r.course_id, r.student_id)):
                    log.debug("%s: decided %s", self.name, r.request_id)

    def _decide_traced(self, by_course: dict[int, list[Accepted]]) -> Outcome:
        """`_decide_each` inside the batch's CONSUMER span, linked to each entry's send span (see tracing)."""
        if tracing.tracer() is None:
            return self._decide_each(by_course)
        producers = [tracing.producer_context(a.fields) for items in by_course.values() for a in items]
        attributes = {
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": self.keys.requests,
            "messaging.consumer.group.name": GROUP,
            "courseflow.worker": self.name,
        }
        with tracing.consuming(f"process {self.keys.requests}", producers, attributes):
            return self._decide_each(by_course)

    def _decide_each(self, by_course: dict[int, list[Accepted]]) -> Outcome:
        """Decide the batch; if its data makes that fail, course by course, so one bad course does not
        hold up the others. Entries that still fail stay unacknowledged: redelivered, and dead-lettered
        after too many deliveries."""
        try:
            return self.decider.decide_batch(self.pg, by_course)
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            log.exception("%s: batch failed; deciding course by course", self.name)
        outcome = Outcome()
        for course_id, items in by_course.items():
            try:
                outcome.add(self.decider.decide_batch(self.pg, {course_id: items}))
            except psycopg.OperationalError:
                raise
            except psycopg.Error:
                log.exception("%s: course %d failed; its entries will be redelivered", self.name, course_id)
        return outcome


def _ids(request_id: str, course_id: int, student_id: int) -> dict[str, object]:
    return {"request_id": request_id, "course_id": course_id, "student_id": student_id}


def _now() -> datetime:
    return datetime.now(UTC)


def _entries(reply: Any) -> list[Entry]:
    """The entries of a one-stream XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return cast(list[Entry], next(iter(reply.values()))[0])
    return cast(list[Entry], reply[0][1])
