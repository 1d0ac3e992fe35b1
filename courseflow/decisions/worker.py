"""The consumer-group worker: leases partitions of the request queue and commits their requests' decisions."""

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

from courseflow.decisions import deadletters, partitions
from courseflow.decisions.decider import Decider, Delivered, Outcome, Undecodable
from courseflow.eventstore import partition_count, store
from courseflow.intake import queue
from courseflow.intake.queue import GROUP
from courseflow.platform import redis_clients, tracing
from courseflow.platform.backoff import Backoff
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys, PartitionKeys
from courseflow.platform.metrics import WORKERS_ALIVE

log = logging.getLogger("courseflow.worker")

Entry = tuple[bytes, dict[bytes, bytes]]
APPLICATION_NAME = "courseflow worker"
# A decision round takes up to this many batches' worth of pending requests: a batch read decides the
# backlog ranked ahead of it too, in rounds this large.
ROUND_BATCHES = 2
# What a worker waits out, backing off: a server down, or a cluster failing over.
UNREACHABLE = (psycopg.OperationalError, redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError)
# Without a blocking read across partitions (Redis Cluster), an idle worker looks again this often.
_CLUSTER_POLL_S = 0.02


class Worker:
    def __init__(self, settings: Settings, name: str, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.name = name
        self.keys = Keys(settings.queue.prefix, settings.queue.partitions)
        self.stop = stop or threading.Event()
        # The blocking read's BLOCK stays well below the socket timeout (redis-py #2807).
        self.redis = redis_clients.connect(
            settings, max_connections=4, socket_timeout=settings.worker.block_ms / 1000 + 10
        )
        self._cluster = redis_clients.is_cluster(self.redis)
        self._pg: psycopg.Connection[psycopg.rows.TupleRow] | None = None
        # A large backlog is decided in rounds of at most this many requests per transaction (all its courses
        # together), so what a worker holds in memory does not grow with the backlog.
        self.decider = Decider(self.redis, self.keys, name, limit=settings.worker.batch_size * ROUND_BATCHES)
        self.leases = partitions.Leases(name, settings.worker.lease_ms / 1000)

    @property
    def held(self) -> tuple[int, ...]:
        """The partitions this worker leases."""
        return self.leases.held

    @held.setter
    def held(self, held: tuple[int, ...]) -> None:
        self.leases.held = held

    @property
    def pg(self) -> psycopg.Connection[psycopg.rows.TupleRow]:
        if self._pg is None or self._pg.closed:
            # Named, so that pg_stat_activity tells the workers (and what each waits for) apart.
            self._pg = psycopg.connect(
                self.settings.postgres.url, autocommit=True, application_name=f"{APPLICATION_NAME} {self.name}"
            )
        return self._pg

    def close(self) -> None:
        """Give the partitions back, so the other workers need not wait for the leases to expire, and disconnect."""
        if self.held:
            self.leases.give_back(self.pg)
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
                    partition_count.verify(self.pg, self.keys.partitions)
                    queue.ensure_groups(self.redis, self.keys)
                    self.leases.forget()  # lease again: every partition then recovers its own
                    recovered = True
                if time.monotonic() >= next_claim:
                    self.lease()
                    self.reclaim()
                    next_claim = time.monotonic() + self.settings.worker.claim_idle_ms / 2000
                self.step(block_ms=self.settings.worker.block_ms)
                backoff.reset()
            except redis.ResponseError as exc:
                if isinstance(exc, redis.exceptions.OutOfMemoryError):
                    # Full (noeviction): what would grow it is refused, and deciding is what frees it. Retry soon.
                    delay = backoff.next_delay()
                    log.warning("%s: Redis is full (%s); retrying in %.2fs", self.name, exc, delay)
                    self.stop.wait(delay)
                    continue
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("%s: a consumer group is gone (Redis data lost?); creating it again", self.name)
                recovered = False
            except UNREACHABLE as exc:
                delay = backoff.next_delay()
                log.warning("%s: %s; retrying in %.2fs", self.name, exc, delay)
                if isinstance(exc, psycopg.OperationalError) and self._pg is not None:
                    self._pg.close()  # broken: the next use connects afresh
                    self._pg = None
                recovered = False
                self.stop.wait(delay)
        self.close()

    def lease(self) -> tuple[int, ...]:
        """Renew this worker's leases and take or give up partitions so the live workers share them evenly.

        A partition taken over first gets its entries that this worker read before and never acknowledged
        (after a restart), and those idle longer than the claim timeout (their worker is presumed dead).
        """
        new = self.leases.renew(self.pg)
        for partition in new:
            self.recover_own(partition)
            self._reclaim(self.keys.partition(partition))
        return self.held

    def step(self, block_ms: int | None = None) -> int:
        """Open due backlogs, then read one batch of new entries from the leased partitions and decide it;
        returns the entries read."""
        self.lease()
        self.open_backlogs()
        if block_ms is not None:
            # Wake up in time to renew the leases, and the moment a registration opens, not up to BLOCK later.
            block_ms = max(1, min(block_ms, int((self.leases.renew_at - time.monotonic()) * 1000) + 1))
            opening = store.next_opening(self.pg, _now())
            if opening is not None:
                block_ms = max(1, min(block_ms, int((opening - _now()).total_seconds() * 1000) + 1))
        read = self._read(block_ms)
        self.process_all(read)
        return sum(len(entries) for entries in read.values())

    def _read(self, block_ms: int | None) -> dict[int, list[Entry]]:
        """New entries of the leased partitions: at most a batch in all (or one per partition, if more), however
        long their backlogs.

        XREADGROUP's COUNT applies to each stream: the first read shares the batch out among the streams (and
        waits up to `block_ms` for one); streams that filled their share are read again for what the others
        left, without waiting, so one busy partition still gets a whole batch.
        """
        if not self.held:
            if block_ms is not None:
                self.stop.wait(block_ms / 1000)
            return {}
        streams = {self.keys.partition(p).requests: p for p in self.held}
        read: dict[int, list[Entry]] = {}
        wanted, budget = list(streams), self.settings.worker.batch_size
        while wanted and budget > 0:
            if read:
                wanted = wanted[:budget]  # what is left of the batch, at least one entry from each stream read
            count = max(1, budget // len(wanted))
            got = self._read_streams(wanted, count, block_ms)
            block_ms = None
            for stream, entries in got.items():
                read.setdefault(streams[stream], []).extend(entries)
                budget -= len(entries)
            wanted = [stream for stream, entries in got.items() if len(entries) == count]
        return read

    def _read_streams(self, streams: list[str], count: int, block_ms: int | None) -> dict[str, list[Entry]]:
        """At most `count` new entries of each stream: one blocking read over all of them on a single Redis; on
        Redis Cluster, whose streams may live on different masters, one pipelined read, then a short wait."""
        if not self._cluster:
            reply = self.redis.xreadgroup(GROUP, self.name, dict.fromkeys(streams, ">"), count=count, block=block_ms)
            return {_name(stream): entries for stream, entries in _streams(reply) if entries}
        with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xreadgroup(GROUP, self.name, {stream: ">"}, count=count)
            replies = pipe.execute()
        got = {
            stream: entries for stream, reply in zip(streams, replies, strict=True) if (entries := entries_of(reply))
        }
        if not got and block_ms is not None:
            self.stop.wait(min(block_ms / 1000, _CLUSTER_POLL_S))
        return got

    def open_backlogs(self) -> int:
        """Decide the requests accepted before registration opened, best first, a round per transaction."""
        taken = 0
        while n := self.decider.open_backlog(self.pg):
            taken += n
        return taken

    def recover_own(self, partition: int | None = None) -> None:
        """Re-process the entries this consumer read before a restart but never acknowledged, in one partition
        or in every one it holds."""
        self.lease()
        for p in self.held if partition is None else (partition,):
            keys = self.keys.partition(p)
            cursor = "0"
            while entries := entries_of(
                self.redis.xreadgroup(GROUP, self.name, {keys.requests: cursor}, count=self.settings.worker.batch_size)
            ):
                self.process_redelivered(entries, p)
                cursor = entries[-1][0].decode()

    def reclaim(self) -> None:
        """Take over the leased partitions' entries idle longer than the claim timeout (their consumer is presumed
        dead), then trim."""
        self.lease()
        for partition in self.held:
            self._reclaim(self.keys.partition(partition))

    def _reclaim(self, keys: PartitionKeys) -> None:
        cursor: bytes | str = "0-0"
        while True:
            next_cursor, claimed, *_ = self.redis.xautoclaim(
                keys.requests,
                GROUP,
                self.name,
                min_idle_time=self.settings.worker.claim_idle_ms,
                start_id=cursor,
                count=self.settings.worker.batch_size,
            )
            if claimed:
                log.info("%s: reclaimed %d idle entries of partition %d", self.name, len(claimed), keys.partition)
                self.process_redelivered(claimed, keys.partition)
            if next_cursor in (b"0-0", "0-0"):
                break
            cursor = next_cursor
        queue.trim(self.redis, keys)

    def process_redelivered(self, entries: Sequence[Entry], partition: int) -> None:
        """Entries delivered before: one that keeps failing is dead-lettered instead of blocking the queue."""
        keys = self.keys.partition(partition)
        live = [(eid, fields) for eid, fields in entries if fields]
        deliveries = (
            {
                p["message_id"]: p["times_delivered"]
                for p in self.redis.xpending_range(
                    keys.requests, GROUP, min=live[0][0], max=live[-1][0], count=len(live), consumername=self.name
                )
            }
            if live
            else {}
        )
        fresh = []
        for entry_id, fields in entries:
            if int(deliveries.get(entry_id, 0)) > self.settings.worker.max_deliveries:
                reason = f"not decided after {self.settings.worker.max_deliveries} deliveries"
                self.dead_letter(entry_id, fields, reason, partition)
            else:
                fresh.append((entry_id, fields))
        self.process_all({partition: fresh})

    def dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str, partition: int) -> None:
        """Set the entry aside in its partition's dead-letter stream, recorded as an event first."""
        deadletters.set_aside(self.pg, self.redis, self.keys.partition(partition), entry_id, fields, reason, self.name)

    def process_all(self, read: dict[int, list[Entry]]) -> None:
        """Decide entries read from several partitions in one go: one transaction round for all their courses."""
        by_course: dict[int, list[Delivered]] = defaultdict(list)
        gone: dict[int, list[bytes]] = defaultdict(list)
        for partition, entries in read.items():
            for entry_id, fields in entries:
                if not fields:
                    gone[partition].append(entry_id)  # deleted from the stream: nothing left to decide
                    continue
                try:
                    item = Delivered.decode(partition, entry_id, fields)
                except Undecodable as exc:
                    self.dead_letter(entry_id, fields, str(exc), partition)
                    continue
                by_course[item.request.course_id].append(item)
        outcome = self._decide_traced(by_course, sorted(read)) if by_course else Outcome()
        for course_id in outcome.unknown:
            for item in by_course[course_id]:
                self.dead_letter(item.entry_id, item.fields, f"unknown course {course_id}", item.partition)
        done = outcome.decided | outcome.deferred
        acked = gone
        for item in (a for items in by_course.values() for a in items if a.request.request_id in done):
            acked[item.partition].append(item.entry_id)
        if acked:
            queue.acknowledge(self.redis, self.keys, acked)
        if log.isEnabledFor(logging.DEBUG):
            # One line per decided request with its ids as fields; skipped cheaply at INFO.
            for item in (a for items in by_course.values() for a in items if a.request.request_id in outcome.decided):
                r = item.request
                with structlog.contextvars.bound_contextvars(**_ids(r.request_id, r.course_id, r.student_id)):
                    log.debug("%s: decided %s", self.name, r.request_id)

    def _decide_traced(self, by_course: dict[int, list[Delivered]], partitions_read: list[int]) -> Outcome:
        """`_decide_each` inside the batch's CONSUMER span, linked to each entry's send span (see tracing)."""
        if tracing.tracer() is None:
            return self._decide_each(by_course)
        producers = [tracing.producer_context(a.fields) for items in by_course.values() for a in items]
        # The messaging conventions name the destination: the stream read, or several.
        streams = ",".join(self.keys.partition(p).requests for p in partitions_read)
        attributes = {
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": streams,
            "messaging.consumer.group.name": GROUP,
            "courseflow.worker": self.name,
        }
        with tracing.consuming(f"process {streams}", producers, attributes):
            return self._decide_each(by_course)

    def _decide_each(self, by_course: dict[int, list[Delivered]]) -> Outcome:
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


def entries_of(reply: Any) -> list[Entry]:
    """The entries of a one-stream XREADGROUP reply (RESP2 list or RESP3 map)."""
    streams = _streams(reply)
    return streams[0][1] if streams else []


def _streams(reply: Any) -> list[tuple[bytes | str, list[Entry]]]:
    """(stream, entries) of an XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(name, cast(list[Entry], value[0])) for name, value in reply.items()]
    return [(name, cast(list[Entry], entries)) for name, entries in reply]


def _name(stream: bytes | str) -> str:
    return stream.decode() if isinstance(stream, bytes) else stream
