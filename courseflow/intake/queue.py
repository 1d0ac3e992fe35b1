"""The Redis side of the pipeline: each partition's request stream and its courses' priority sets.

Key names are in courseflow.platform.keys: each function call and MULTI here touches one partition's keys, so
it runs unchanged on Redis Cluster. A priority set is in the fairness order (courseflow.fairness): ZRANGE
yields priority (higher first), then arrival, and each member carries everything a decision needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import redis
from redis.typing import EncodableT, FieldT

from courseflow import events, fairness
from courseflow.domain import Pending, StreamId
from courseflow.platform import functions
from courseflow.platform.functions import Functions
from courseflow.platform.keys import Keys, PartitionKeys, student_pending
from courseflow.platform.library import (
    Grant,
    GrantPriorities,
    PendingThrough,
    Prefix,
    RetryDeadLetter,
    SettleRequests,
    TrimRequests,
)
from courseflow.platform.redis_clients import SyncRedis

GROUP = "deciders"
REQUEST_FIELD = b"request"


def qualified(partition: int, entry_id: bytes | str) -> str:
    """A stream entry's id across partitions (each stream numbers its own): `<partition>:<entry id>`."""
    return f"{partition}:{entry_id.decode() if isinstance(entry_id, bytes) else entry_id}"


def member(arrival: StreamId, payload: bytes) -> bytes:
    """The priority-set member for a request, in the fairness order's encoding (as the library's `enqueue`)."""
    return fairness.member_prefix(arrival.ms, arrival.seq) + payload


def parse_member(raw: bytes) -> Pending:
    head, _, payload = raw.partition(b"|")
    return Pending(events.decode_request(payload), StreamId(*fairness.parse_member_prefix(head)))


def ensure_group(client: SyncRedis, keys: PartitionKeys) -> None:
    """Create a partition's consumer group from the start of its stream; a no-op when it exists."""
    try:
        client.xgroup_create(keys.requests, GROUP, id="0", mkstream=True)
    except redis.exceptions.OutOfMemoryError:
        # Full Redis refuses the create even of a group that exists: only a missing one is an error then.
        if not _has_group(client, keys):
            raise
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _has_group(client: SyncRedis, keys: PartitionKeys) -> bool:
    try:
        groups = client.xinfo_groups(keys.requests)
    except redis.ResponseError:  # no stream
        return False
    return any(group["name"] in (GROUP, GROUP.encode()) for group in groups)


def ensure_groups(client: SyncRedis, keys: Keys) -> None:
    """Every partition's consumer group, and this version's library of functions, are there."""
    functions.ensure_loaded(client)
    for partition in keys.all():
        ensure_group(client, partition)


def register_courses(client: SyncRedis, keys: Keys, course_ids: Sequence[int]) -> None:
    """Let intake accept requests for these courses (PostgreSQL has them), each in its partition."""
    by_partition: dict[str, list[int]] = {}
    for course_id in course_ids:
        by_partition.setdefault(keys.of_course(course_id).courses, []).append(course_id)
    with client.pipeline(transaction=False) as pipe:
        for key, ids in by_partition.items():
            pipe.sadd(key, *ids)
        pipe.execute()


def grant_priorities(client: SyncRedis, keys: Keys, granted: Sequence[Grant]) -> None:
    """Make these grants from PostgreSQL the ones intake applies, unless newer ones are: in every partition, as a
    student's requests may go to any."""
    for start in range(0, len(granted), 1000):
        grants = granted[start : start + 1000]
        Functions(client).each([GrantPriorities(p.priorities, p.priority_versions, grants) for p in keys.all()])


def pending_through(
    client: SyncRedis, keys: Keys, batches: dict[int, Sequence[bytes]], limit: int
) -> dict[int, Prefix]:
    """Per course, the pending requests ranked at or ahead of its batch, best first, `limit` shared by the courses.

    Deciding this whole prefix, not only the batch a worker read, keeps the order strict when workers hold
    interleaved batches of one course; the shared limit bounds a round's memory whatever the backlog."""
    share = max(1, limit // max(1, len(batches)))
    calls = [PendingThrough(keys.priority_set(course_id), share, batch) for course_id, batch in batches.items()]
    return dict(zip(batches, Functions(client).each(calls), strict=True))


def top(client: SyncRedis, keys: Keys, course_id: int, count: int) -> list[bytes]:
    """The `count` best-ranked pending requests of a course."""
    return cast(list[bytes], client.zrange(keys.priority_set(course_id), 0, count - 1))


def settle(client: SyncRedis, keys: Keys, members: dict[int, list[bytes]], request_ids: dict[int, list[str]]) -> None:
    """After COMMIT: drop decided requests (per course) from the priority sets and the pending index.

    Atomically per partition (SettleRequests), so a status look-up never finds a request in neither its priority
    set nor PostgreSQL; every partition's call in one round trip per server. It runs when Redis is full too.
    """
    by_partition: dict[int, list[int]] = {}
    for course_id in members.keys() | request_ids.keys():
        by_partition.setdefault(keys.of_course(course_id).partition, []).append(course_id)
    calls = [
        SettleRequests(
            keys.partition(partition).pending_index,
            [(keys.priority_set(c), members[c]) for c in course_ids if members.get(c)],
            [request_id for c in course_ids for request_id in request_ids.get(c, ())],
        )
        for partition, course_ids in by_partition.items()
    ]
    if calls:
        Functions(client).each(calls)
    # Then each student's place: in the student's own slot, so apart from those MULTIs (intake.pending repairs
    # what a crash here leaves behind).
    decided = [parse_member(raw).request for raws in members.values() for raw in raws]
    if decided:
        with client.pipeline(transaction=False) as pipe:
            for request in decided:
                pipe.srem(keys.student_pending(request.student_id), request.request_id)
            pipe.execute()


def acknowledge(client: SyncRedis, keys: Keys, entry_ids: dict[int, list[bytes]]) -> None:
    """After COMMIT: these entries of each partition are done with; one round trip per Redis server."""
    with client.pipeline(transaction=False) as pipe:
        for partition, ids in entry_ids.items():
            if ids:
                pipe.xack(keys.partition(partition).requests, GROUP, *ids)
        pipe.execute()


def dead_letter(
    client: SyncRedis,
    keys: PartitionKeys,
    entry_id: bytes,
    fields: Mapping[bytes, bytes],
    reason: str,
    pending: tuple[int, bytes, str] | None = None,
    student_id: int | None = None,
) -> None:
    """Move an entry aside with the reason, so it never blocks the ones behind it.

    `pending` is (course id, priority-set member, request id) of a decodable request, which leaves
    the queue too, and its student's pending set (`student_id`).
    """
    entry = {
        **cast(dict[FieldT, EncodableT], fields),
        b"entry_id": qualified(keys.partition, entry_id),
        b"reason": reason,
    }
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(keys.dead_letters, entry)
        pipe.xack(keys.requests, GROUP, entry_id)
        if pending is not None:
            course_id, raw, request_id = pending
            pipe.zrem(keys.priority_set(course_id), raw)
            pipe.hdel(keys.pending_index, request_id)
        pipe.execute()
    if pending is not None and student_id is not None:
        client.srem(student_pending(keys.prefix, student_id), pending[2])


def trim(client: SyncRedis, keys: PartitionKeys) -> int:
    """Drop stream entries that are decided and acknowledged; returns how many went."""
    return Functions(client)(TrimRequests(keys.requests, GROUP))


def retry_dead_letter(client: SyncRedis, keys: PartitionKeys, entry_id: str) -> str:
    """Re-queue a dead letter's request at the back; returns its new stream id.

    Raises LookupError when there is no such dead letter, ValueError when it holds no decodable request.
    """
    found = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(keys.dead_letters, entry_id, entry_id))
    if not found:
        raise LookupError(f"no dead letter {entry_id}")
    payload = found[0][1].get(REQUEST_FIELD, b"")
    request = events.decode_request(payload)  # raises for an undecodable entry: retrying cannot help it
    new_id = Functions(client)(
        RetryDeadLetter(
            dead_letters=keys.dead_letters,
            requests=keys.requests,
            priority_set=keys.priority_set(request.course_id),
            pending_index=keys.pending_index,
            entry_id=entry_id,
            payload=payload,
            priority=request.priority,
            request_id=request.request_id,
        )
    )
    if new_id is None:
        raise LookupError(f"no dead letter {entry_id}")
    return new_id
