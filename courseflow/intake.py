"""Accepting a request: one atomic Redis step, durable before the client hears 202."""

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

# KEYS (all of the course's partition): courses set, idempotency key, request stream, course priority set,
#       pending index, granted priorities, accepted counter.
# ARGV: request id, request json before and after its priority, fingerprint, priority ('' = the one the
#       registrar granted the student), course id, idempotency ttl (0 = keep), student id, then the entry's
#       trace fields (name, value, ...), if any.
_ACCEPT = (
    ENQUEUE_LUA
    + """
if redis.call('SISMEMBER', KEYS[1], ARGV[6]) == 0 then
  return {'unknown_course'}
end
local prior = redis.call('GET', KEYS[2])
if prior then
  local sep = string.find(prior, ' ', 1, true)
  local rid = string.sub(prior, 1, sep - 1)
  if string.sub(prior, sep + 1) ~= ARGV[4] then
    return {'conflict', rid}
  end
  local existing = redis.call('HGET', KEYS[5], rid)
  if existing then
    return {'replayed', rid, redis.call('ZRANK', KEYS[4], existing) + 1}
  end
  return {'replayed', rid}
end
local priority = ARGV[5]
if priority == '' then
  priority = redis.call('HGET', KEYS[6], ARGV[8]) or '0'
end
local traced = {unpack(ARGV, 9)}
local _, member = enqueue(KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2] .. priority .. ARGV[3], priority, traced)
redis.call('INCR', KEYS[7])
if tonumber(ARGV[7]) > 0 then
  redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[4], 'EX', ARGV[7])
else
  redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[4])
end
return {'queued', ARGV[1], redis.call('ZRANK', KEYS[4], member) + 1}
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
        self._accept = CoalescedScript(client, _ACCEPT, replicas)

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

        Raises NotReplicated when REDIS_WAIT_REPLICAS replicas did not confirm it in time: it is queued, but a
        failover could still lose it, so the caller hears 503 and retries with the same idempotency key.
        """
        request = EnrollmentRequested(
            course_id=course_id,
            request_id=str(uuid.uuid4()),
            student_id=student_id,
            idempotency_key=idempotency_key,
            priority=0,
            requested_at=datetime.now(UTC),
        )
        head, tail = around_priority(events.encode(request))
        given = "" if priority is None else str(priority)
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
                        "courseflow.request_id": request.request_id,
                        "courseflow.course_id": course_id,
                    }
                )
            reply = await self._accept(
                [
                    k.courses,
                    k.idempotency(key_owner(caller, student_id), idempotency_key),
                    k.requests,
                    k.priority_set(course_id),
                    k.pending_index,
                    k.priorities,
                    k.accepted,
                ],
                [
                    request.request_id,
                    head,
                    tail,
                    f"{course_id}:{given}",
                    given,
                    course_id,
                    self._ttl,
                    student_id,
                    *tracing.inject(),
                ],
            )
            if span is not None:
                span.set_attribute("courseflow.intake.outcome", reply[0].decode())
        outcome, *rest = reply
        return Accepted(
            outcome.decode(),
            rest[0].decode() if rest else None,
            int(rest[1]) if len(rest) > 1 else None,
        )

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
