"""A student's requests waiting for a decision: the set PENDING_PER_STUDENT bounds, kept exact across crashes.

Intake adds a request id as it claims the request's key (atomically, in the student's caller slot); the worker
removes it once the request is decided or set aside (queue.settle, queue.dead_letter). A crash between a decision's
COMMIT and that removal, or between claiming and queueing on a cluster, leaves an id behind: the student's next
request at the bound forgets every id no longer pending, so a stale one never takes a place for good.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, cast

from courseflow.platform.redis_clients import AsyncRedis


class PendingIndex(Protocol):
    async def pending_positions(self, request_ids: list[str]) -> Iterable[str]: ...


async def forget_decided(client: AsyncRedis, key: str, index: PendingIndex) -> bool:
    """Remove from the set at `key` the ids no longer pending; True if any went.

    (On a cluster an id claimed a moment ago and not yet queued looks decided too: at worst the student gets one
    place more for a moment, never one less.)"""
    members = cast(set[bytes], await client.smembers(key))
    ids = [m.decode() for m in members]
    still = set(await index.pending_positions(ids))
    gone = [request_id for request_id in ids if request_id not in still]
    if gone:
        await client.srem(key, *gone)
    return bool(gone)
