"""The Redis side of the pipeline: key names, the request stream and each course's priority set.

Every key shares one hash tag, so the intake script and the worker's MULTI run unchanged on Redis Cluster.
A priority-set member is `<zero-padded stream id>|<request json>` with score `-priority`: ZRANGE then
yields priority (higher first), then arrival, and carries everything a decision needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import msgspec
import redis
from redis.typing import EncodableT, FieldT

from courseflow import events
from courseflow.domain import Pending, StreamId

GROUP = "deciders"
REQUEST_FIELD = b"request"


class Keys(msgspec.Struct, frozen=True):
    prefix: str = "courseflow"

    @property
    def requests(self) -> str:
        return f"{{{self.prefix}}}:requests"

    @property
    def dead_letters(self) -> str:
        return f"{{{self.prefix}}}:dead-letters"

    @property
    def courses(self) -> str:
        return f"{{{self.prefix}}}:courses"

    @property
    def pending_index(self) -> str:
        """request id -> priority-set member, for status look-ups while pending."""
        return f"{{{self.prefix}}}:pending"

    def priority_set(self, course_id: int) -> str:
        return f"{{{self.prefix}}}:course:{course_id}:pending"

    def idempotency(self, student_id: int, key: str) -> str:
        return f"{{{self.prefix}}}:idem:{student_id}:{key}"


def member(arrival: StreamId, payload: bytes) -> bytes:
    """The priority-set member for a request; must match the intake script's construction."""
    return f"{arrival.ms:015d}-{arrival.seq:010d}|".encode() + payload


def parse_member(raw: bytes) -> Pending:
    head, _, payload = raw.partition(b"|")
    return Pending(events.decode_request(payload), StreamId.parse(head))


def ensure_group(client: redis.Redis, keys: Keys) -> None:
    """Create the consumer group from the start of the stream; a no-op when it exists."""
    try:
        client.xgroup_create(keys.requests, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def pending_through(client: redis.Redis, keys: Keys, course_id: int, priority: int, last: bytes) -> list[bytes]:
    """Everything pending for the course that ranks at or ahead of member `last` (of `priority`), best first.

    Deciding this whole prefix, not just the batch this worker read, keeps the order strict when
    several workers hold interleaved batches of the same course. One command, so a request that
    arrives meanwhile cannot shift the cut.
    """
    bound = (-float(priority), last)
    rows = cast(
        list[tuple[bytes, float]],
        client.zrange(keys.priority_set(course_id), "-inf", bound[0], byscore=True, withscores=True),
    )
    return [m for m, score in rows if (score, m) <= bound]


def top(client: redis.Redis, keys: Keys, course_id: int, count: int) -> list[bytes]:
    """The `count` best-ranked pending requests of a course."""
    return cast(list[bytes], client.zrange(keys.priority_set(course_id), 0, count - 1))


def settle(
    client: redis.Redis,
    keys: Keys,
    settled: dict[int, list[bytes]],
    request_ids: Sequence[str],
    entry_ids: Sequence[bytes | str],
) -> None:
    """After COMMIT: drop decided members from the priority sets and the pending index, acknowledge the entries."""
    with client.pipeline(transaction=True) as pipe:
        for course_id, members in settled.items():
            if members:
                pipe.zrem(keys.priority_set(course_id), *members)
        if request_ids:
            pipe.hdel(keys.pending_index, *request_ids)
        if entry_ids:
            pipe.xack(keys.requests, GROUP, *entry_ids)
        pipe.execute()


def dead_letter(client: redis.Redis, keys: Keys, entry_id: bytes, fields: Mapping[bytes, bytes], reason: str) -> None:
    """Move an entry that cannot be decided aside, with the reason, so it never blocks the ones behind it."""
    with client.pipeline(transaction=True) as pipe:
        entry = {**cast(dict[FieldT, EncodableT], fields), b"entry_id": entry_id, b"reason": reason}
        pipe.xadd(keys.dead_letters, entry)
        pipe.xack(keys.requests, GROUP, entry_id)
        pipe.execute()
