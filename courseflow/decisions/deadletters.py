"""Dead letters, the entries set aside as undecidable: how a worker sets one aside, how one reads (for
`GET /api/v1/dead-letters` and `courseflow dlq list`), and `courseflow dlq` to look at, retry or drop them.

A dead letter's id names its partition: `<partition>:<stream entry id>`, as `courseflow dlq list` shows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import cast

import msgspec
import psycopg
import redis
import structlog

from courseflow import events
from courseflow.decisions.decider import Delivered, Undecodable
from courseflow.domain import MAX_ID, StreamId
from courseflow.eventstore import partition_count, store
from courseflow.intake import queue
from courseflow.platform import redis_clients
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys, PartitionKeys
from courseflow.platform.metrics import DEAD_LETTERS
from courseflow.platform.redis_clients import AsyncRedis, SyncRedis

log = logging.getLogger("courseflow.worker")


def set_aside(
    pg: store.Conn,
    client: SyncRedis,
    keys: PartitionKeys,
    entry_id: bytes,
    fields: dict[bytes, bytes],
    reason: str,
    worker: str,
) -> None:
    """Record the entry as dead-lettered (an event), then move it to its partition's dead-letter stream: what
    keeps failing stops blocking the queue."""
    try:
        item: Delivered | None = Delivered.decode(keys.partition, entry_id, fields)
    except Undecodable:
        item = None
    request = None if item is None else item.request
    event = events.RequestDeadLettered(
        entry_id=queue.qualified(keys.partition, entry_id),
        reason=reason,
        course_id=None if request is None else request.course_id,
        request_id=None if request is None else request.request_id,
        student_id=None if request is None else request.student_id,
        priority=None if request is None else request.priority,
        requested_at=None if request is None else request.requested_at,
    )
    store.record_dead_letter(pg, event)
    pending = None if item is None else (item.request.course_id, item.member, item.request.request_id)
    queue.dead_letter(client, keys, entry_id, fields, reason, pending)
    DEAD_LETTERS.inc()
    ids = (
        {}
        if request is None
        else {"request_id": request.request_id, "course_id": request.course_id, "student_id": request.student_id}
    )
    with structlog.contextvars.bound_contextvars(**ids):
        log.warning("%s: dead-lettered %s: %s", worker, event.entry_id, reason)


class DeadLetterEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter as read. It may hold anything (that is why it is here): what it does not say is None."""

    id: str
    reason: str
    request_id: str | None = None
    course_id: int | None = None
    student_id: int | None = None
    # When it was set aside: the entry id's milliseconds.
    dead_lettered_at: datetime | None = None
    # The request field as queued, for a person to read (bytes that are not UTF-8 replaced).
    request: str = ""


def read(partition: int, entry_id: bytes, fields: Mapping[bytes, bytes]) -> DeadLetterEntry:
    raw = fields.get(queue.REQUEST_FIELD, b"")
    letter = DeadLetterEntry(
        id=queue.qualified(partition, entry_id),
        reason=fields.get(b"reason", b"").decode(errors="replace"),
        dead_lettered_at=_at(StreamId.parse(entry_id)),
        request=raw.decode(errors="replace"),
    )
    try:
        request = events.decode_request(raw)
    except msgspec.DecodeError:
        return letter
    return msgspec.structs.replace(
        letter, request_id=request.request_id, course_id=_id(request.course_id), student_id=_id(request.student_id)
    )


def _id(raw: int) -> int | None:
    """An id as a client may be shown it; one out of range (a hand-made entry) stays in `request` only."""
    return raw if 1 <= raw <= MAX_ID else None


def _at(entry: StreamId) -> datetime | None:
    try:
        return datetime.fromtimestamp(entry.ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):  # an id added by hand, far beyond year 9999
        return None


async def newest(client: AsyncRedis, keys: Keys, limit: int | None = None) -> list[DeadLetterEntry]:
    """The newest `limit` dead letters (all without one) across every partition, newest first.

    One XREVRANGE per partition, all in one pipeline: a cluster sends each to the node of its partition's slot."""
    every = list(keys.all())
    async with client.pipeline(transaction=False) as pipe:
        for partition in every:
            pipe.xrevrange(partition.dead_letters, count=limit)
        replies = cast(list[list[tuple[bytes, dict[bytes, bytes]]]], await pipe.execute())
    found = [
        (StreamId.parse(entry_id), partition.partition, entry_id, fields)
        for partition, entries in zip(every, replies, strict=True)
        for entry_id, fields in entries
    ]
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [read(partition, entry_id, fields) for _, partition, entry_id, fields in found[:limit]]


def command(settings: Settings, action: str, entry_ids: list[str]) -> int:
    keys = Keys(settings.queue.prefix, settings.queue.partitions)
    with psycopg.connect(settings.postgres.url, autocommit=True) as conn:
        partition_count.verify(conn, keys.partitions)  # another count would look in the wrong streams
    if action == "list":
        letters = asyncio.run(_every(settings, keys))
        for letter in letters:
            print(f"{letter.id}  reason={letter.reason}  request={letter.request}")
        print(f"{len(letters)} dead letter(s)")
        return 0
    with redis_clients.connect(settings) as client:
        if not entry_ids:
            print(f"courseflow dlq {action}: name the PARTITION:ENTRY_ID(s) shown by `courseflow dlq list`")
            return 2
        failed = 0
        for qualified in entry_ids:
            found = _parse(keys, qualified)
            if found is None:
                print(f"{qualified}: not a dead-letter id (PARTITION:ENTRY_ID, as `courseflow dlq list` shows)")
                failed += 1
                continue
            partition, entry_id = found
            try:
                failed += _act(client, action, qualified, partition, entry_id)
            except redis.ResponseError as exc:  # e.g. not a stream id at all
                print(f"{qualified}: {exc}")
                failed += 1
        return 1 if failed else 0


async def _every(settings: Settings, keys: Keys) -> list[DeadLetterEntry]:
    client = redis_clients.connect_async(settings, max_connections=2)
    try:
        return await newest(client, keys)
    finally:
        await redis_clients.aclose(client)


def _act(client: SyncRedis, action: str, qualified: str, partition: PartitionKeys, entry_id: str) -> int:
    """Drop or retry one dead letter; returns 1 when it failed."""
    if action == "drop":
        dropped = int(client.xdel(partition.dead_letters, entry_id))
        print(f"{qualified}: {'dropped' if dropped else 'no such dead letter'}")
        return 0 if dropped else 1
    try:
        print(f"{qualified}: queued again as {queue.retry_dead_letter(client, partition, entry_id)}")
    except LookupError as exc:
        print(f"{qualified}: {exc}")
        return 1
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"{qualified}: cannot be retried, it holds no valid request ({exc})")
        return 1
    return 0


def _parse(keys: Keys, qualified: str) -> tuple[PartitionKeys, str] | None:
    partition, _, entry_id = qualified.partition(":")
    if not partition.isdigit() or int(partition) >= keys.partitions or not entry_id:
        return None
    return keys.partition(int(partition)), entry_id
