"""Accepting a request: durable in Redis, and queued once per idempotency key, before the client hears 202."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal, cast

import msgspec
from opentelemetry.trace import SpanKind

from courseflow import events, tracing
from courseflow.auth import Principal
from courseflow.coalesce import NO_REPLICAS, CoalescedScript, Replicas
from courseflow.events import EnrollmentRequested
from courseflow.keys import Keys
from courseflow.queue import ENQUEUE_LUA, parse_member
from courseflow.redis_clients import AsyncRedis

# The idempotency key, in its own partition. KEYS: the key. ARGV: request id, fingerprint, ttl (0 = keep).
# Reply: {'claimed'} for a new key, else {'known', request id, fingerprint} of the request it already names.
_CLAIM = """
local prior = redis.call('GET', KEYS[1])
if prior then
  -- Written again, unchanged: a WAIT after this script then also covers the first write of the key.
  redis.call('SET', KEYS[1], prior, 'KEEPTTL')
  local sep = string.find(prior, ' ', 1, true)
  return {'known', string.sub(prior, 1, sep - 1), string.sub(prior, sep + 1)}
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
end
return {'claimed'}
"""

# Let go of a key claimed for a request that could not be queued (no such course). KEYS: the key. ARGV: request id.
_RELEASE = """
local prior = redis.call('GET', KEYS[1])
if prior and string.sub(prior, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('DEL', KEYS[1])
end
"""

# Queue a request once, in its course's partition: a request id queued before is only reported.
# KEYS: courses set, queued marker, request stream, course priority set, pending index, granted priorities,
#       accepted counter.
# ARGV: request id, request json before and after its priority, priority ('' = the one the registrar granted
#       the student), course id, marker ttl (0 = keep), student id, then the entry's trace fields, if any.
# Reply: {outcome, 1-based queue place while pending}.
_QUEUE = (
    ENQUEUE_LUA
    + """
if redis.call('SISMEMBER', KEYS[1], ARGV[5]) == 0 then
  return {'unknown_course'}
end
local marker = redis.call('GET', KEYS[2])
if marker then
  -- Written again, unchanged: a WAIT after this script then also covers the request queued before.
  redis.call('SET', KEYS[2], marker, 'KEEPTTL')
  local existing = redis.call('HGET', KEYS[5], ARGV[1])
  if existing then
    return {'replayed', redis.call('ZRANK', KEYS[4], existing) + 1}
  end
  return {'replayed'}
end
local priority = ARGV[4]
if priority == '' then
  priority = redis.call('HGET', KEYS[6], ARGV[7]) or '0'
end
local traced = {unpack(ARGV, 8)}
local _, member = enqueue(KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2] .. priority .. ARGV[3], priority, traced)
redis.call('INCR', KEYS[7])
if tonumber(ARGV[6]) > 0 then
  redis.call('SET', KEYS[2], ARGV[5], 'EX', ARGV[6])
else
  redis.call('SET', KEYS[2], ARGV[5])
end
return {'queued', redis.call('ZRANK', KEYS[4], member) + 1}
"""
)

_PRIORITY = b'"priority":'


def around_priority(payload: bytes) -> tuple[bytes, bytes]:
    """Split an encoded request (priority 0) around its priority, so the intake script can put in the granted one.

    The last match is the field: a key inside a string value would have its quotes escaped.
    """
    at = payload.rindex(_PRIORITY + b"0,") + len(_PRIORITY)
    return payload[:at], payload[at + 1 :]


def key_owner(caller: Principal, student_id: int) -> str:
    """Whose idempotency keys these are: a student's own, or a registrar's or service's for one student.

    So a student and the integration acting for them never collide on a key, nor two integrations.
    """
    return str(student_id) if caller.student_id == student_id else f"{caller.role}:{caller.sub}:{student_id}"


class Accepted(msgspec.Struct, frozen=True):
    outcome: Literal["queued", "replayed", "conflict", "unknown_course"]
    request_id: str | None = None
    # 1-based place in the course's priority order while pending; None once decided.
    queue_position: int | None = None


class Intake:
    def __init__(
        self, client: AsyncRedis, keys: Keys, idempotency_ttl_s: int = 0, replicas: Replicas = NO_REPLICAS
    ) -> None:
        self._client = client
        self.keys = keys
        self._ttl = idempotency_ttl_s
        # Both steps' writes must survive a failover: a lost claim would let a retry queue the request twice.
        self._claim = CoalescedScript(client, _CLAIM, replicas)
        self._queue = CoalescedScript(client, _QUEUE, replicas)
        self._release = CoalescedScript(client, _RELEASE)

    async def aclose(self) -> None:
        for script in (self._claim, self._queue, self._release):
            await script.aclose()

    async def accept(
        self,
        caller: Principal,
        student_id: int,
        course_id: int,
        idempotency_key: str,
        priority: int | None,
    ) -> Accepted:
        """Queue a request once per (caller, student, idempotency key). `priority` None: the one the registrar
        granted the student.

        Two steps, each atomic: claim the idempotency key for a new request id (in the key's partition), then
        queue that request (in its course's partition), which does nothing for a request id queued before. A
        retry after a failure between them queues the request the key names, never a second one.

        Raises NotReplicated when REDIS_WAIT_REPLICAS replicas did not confirm it in time: it may be queued, but
        a failover could still lose it, so the caller hears 503 and retries with the same idempotency key.
        """
        given = "" if priority is None else str(priority)
        fingerprint = f"{course_id}:{given}"
        owner = key_owner(caller, student_id)
        claim_key = self.keys.of_idempotency(owner, idempotency_key).idempotency(owner, idempotency_key)
        request_id = str(uuid.uuid4())
        claimed = await self._claim([claim_key], [request_id, fingerprint, self._ttl])
        if claimed[0] == b"known":
            request_id = claimed[1].decode()
            if claimed[2].decode() != fingerprint:
                return Accepted("conflict", request_id)
        request = EnrollmentRequested(
            course_id=course_id,
            request_id=request_id,
            student_id=student_id,
            idempotency_key=idempotency_key,
            priority=0,
            requested_at=datetime.now(UTC),
        )
        head, tail = around_priority(events.encode(request))
        k = self.keys.of_course(course_id)
        # The PRODUCER span of the messaging conventions (named operation, destination): its context goes into
        # the entry for the worker.
        with tracing.span(f"send {k.requests}", SpanKind.PRODUCER) as span:
            if span is not None:
                span.set_attributes(
                    {
                        "messaging.system": "redis",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": k.requests,
                        "courseflow.request_id": request_id,
                        "courseflow.course_id": course_id,
                    }
                )
            reply = await self._queue(
                [
                    k.courses,
                    k.queued(request_id),
                    k.requests,
                    k.priority_set(course_id),
                    k.pending_index,
                    k.priorities,
                    k.accepted,
                ],
                [request_id, head, tail, given, course_id, self._ttl, student_id, *tracing.inject()],
            )
            if span is not None:
                span.set_attribute("courseflow.intake.outcome", reply[0].decode())
        outcome, *rest = reply
        if outcome == b"unknown_course":
            if claimed[0] == b"claimed":  # the key names no request after all
                await self._release([claim_key], [request_id])
            return Accepted("unknown_course")
        # A known key whose request was never queued (its first attempt failed in between) is queued now.
        return Accepted(outcome.decode(), request_id, int(rest[0]) if rest else None)

    async def pending_position(self, request_id: str) -> tuple[EnrollmentRequested, int] | None:
        """The pending request and its 1-based queue position, or None if it is not pending."""
        found = await self.pending_positions([request_id])
        return found.get(request_id)

    async def pending_positions(self, request_ids: list[str]) -> dict[str, tuple[EnrollmentRequested, int]]:
        """Those of these requests still pending, with their queue positions: two round trips however many
        requests and partitions (a request id does not say its partition: every partition's index is asked)."""
        if not request_ids:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in self.keys.all():
                pipe.hmget(partition.pending_index, request_ids)
            found = {
                request_id: raw
                for replies in await pipe.execute()
                for request_id, raw in zip(request_ids, cast(list[bytes | None], replies), strict=True)
                if raw is not None
            }
        if not found:
            return {}
        items = {request_id: parse_member(raw) for request_id, raw in found.items()}
        async with self._client.pipeline(transaction=False) as pipe:
            for request_id, item in items.items():
                pipe.zrank(self.keys.priority_set(item.request.course_id), found[request_id])
            ranks = cast(list[int | None], await pipe.execute())
        return {
            request_id: (item.request, rank + 1)
            for (request_id, item), rank in zip(items.items(), ranks, strict=True)
            if rank is not None
        }

    async def queue_depth(self, course_id: int) -> int:
        return int(await self._client.zcard(self.keys.priority_set(course_id)))

    async def queue_depths(self, course_ids: list[int]) -> list[int]:
        """Pending requests per course, in one round trip however many courses there are."""
        async with self._client.pipeline(transaction=False) as pipe:
            for course_id in course_ids:
                pipe.zcard(self.keys.priority_set(course_id))
            return [int(depth) for depth in await pipe.execute()]

    async def dead_letter_count(self) -> int:
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in self.keys.all():
                pipe.xlen(partition.dead_letters)
            return sum(int(n) for n in await pipe.execute())
