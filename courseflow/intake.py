"""Accepting a request: one atomic Redis step, durable before the client hears 202."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal, cast

import msgspec
import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind

from courseflow import events, tracing
from courseflow.auth import Principal
from courseflow.coalesce import CoalescedScript
from courseflow.events import EnrollmentRequested
from courseflow.queue import ENQUEUE_LUA, Keys, parse_member
from courseflow.ratelimit import ACQUIRE_LUA, Quota

NO_QUOTA = Quota(keys=[], args=[])

# KEYS: courses set, idempotency key, request stream, course priority set, pending index, granted priorities,
#       accepted counter, then the caller's rate-limit window keys (previous, current) per limit.
# ARGV: request id, request json before and after its priority, fingerprint, priority ('' = the one the
#       registrar granted the student), course id, idempotency ttl (0 = keep), student id, number of limits,
#       then (limit, expiry, amount) per limit, then the entry's trace fields (name, value, ...), if any.
# Every attempt counts against the caller's limits first, whatever its outcome.
_ACCEPT = (
    ENQUEUE_LUA
    + ACQUIRE_LUA
    + """
for i = 1, tonumber(ARGV[9]) do
  local at = 10 + (i - 1) * 3
  if not acquire_sliding_window({KEYS[6 + 2 * i], KEYS[7 + 2 * i]}, {ARGV[at], ARGV[at + 1], ARGV[at + 2]}) then
    return {'rate_limited', tostring(i - 1)}
  end
end
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
local traced = {unpack(ARGV, 10 + 3 * tonumber(ARGV[9]))}
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
    outcome: Literal["queued", "replayed", "conflict", "unknown_course", "rate_limited"]
    request_id: str | None = None
    # 1-based place in the course's priority order while pending; None once decided.
    queue_position: int | None = None
    # For "rate_limited": which of the caller's limits refused it.
    limit_index: int = 0


class Intake:
    def __init__(self, client: aioredis.Redis, keys: Keys, idempotency_ttl_s: int = 0) -> None:
        self._client = client
        self.keys = keys
        self._ttl = idempotency_ttl_s
        self._accept = CoalescedScript(client, _ACCEPT)
        self._send_span = f"send {keys.requests}"  # the messaging conventions' name: operation, destination

    async def accept(
        self,
        caller: Principal,
        student_id: int,
        course_id: int,
        idempotency_key: str,
        priority: int | None,
        quota: Quota = NO_QUOTA,
    ) -> Accepted:
        """Queue a request once per (caller, student, idempotency key), within the caller's rate limits (`quota`).

        `priority` None: the one the registrar granted the student.
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
        k = self.keys
        # The PRODUCER span of the messaging conventions: its context goes into the entry for the worker.
        with tracing.span(self._send_span, SpanKind.PRODUCER) as span:
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
                    *quota.keys,
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
                    len(quota.keys) // 2,
                    *quota.args,
                    *tracing.inject(),
                ],
            )
            if span is not None:
                span.set_attribute("courseflow.intake.outcome", reply[0].decode())
        outcome, *rest = reply
        if outcome == b"rate_limited":
            return Accepted("rate_limited", limit_index=int(rest[0]))
        return Accepted(
            outcome.decode(),
            rest[0].decode() if rest else None,
            int(rest[1]) if len(rest) > 1 else None,
        )

    async def pending_position(self, request_id: str) -> tuple[EnrollmentRequested, int] | None:
        """The pending request and its 1-based queue position, or None if it is not pending."""
        raw = await self._client.hget(self.keys.pending_index, request_id)
        if raw is None:
            return None
        item = parse_member(cast(bytes, raw))
        rank = cast(int | None, await self._client.zrank(self.keys.priority_set(item.request.course_id), raw))
        return None if rank is None else (item.request, rank + 1)

    async def queue_depth(self, course_id: int) -> int:
        return int(await self._client.zcard(self.keys.priority_set(course_id)))

    async def queue_depths(self, course_ids: list[int]) -> list[int]:
        """Pending requests per course, in one round trip however many courses there are."""
        async with self._client.pipeline(transaction=False) as pipe:
            for course_id in course_ids:
                pipe.zcard(self.keys.priority_set(course_id))
            return [int(depth) for depth in await pipe.execute()]

    async def dead_letter_count(self) -> int:
        return int(await self._client.xlen(self.keys.dead_letters))
