"""Accepting a request: durable in Redis, and queued once per idempotency key, before the client hears 202."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, cast

import msgspec
from opentelemetry.trace import SpanKind
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.typing import EncodableT, KeyT

from courseflow import events
from courseflow.events import QueuedRequest
from courseflow.http.auth import Principal
from courseflow.http.limits import ACQUIRE_WINDOW_LUA, Window
from courseflow.intake.queue import ENQUEUE_LUA, parse_member
from courseflow.platform import tracing
from courseflow.platform.coalesce import NO_REPLICAS, CoalescedScript, Replicas
from courseflow.platform.keys import Keys, PartitionKeys
from courseflow.platform.memo import Memo
from courseflow.platform.redis_clients import AsyncRedis

# Claim an idempotency key for a new request id. Reply: {'claimed'} for a new key, else {'known', request id,
# fingerprint} of the request it already names.
_CLAIM_LUA = """
local function claim(key, request_id, fingerprint, ttl)
  local prior = redis.call('GET', key)
  if prior then
    -- Written again, unchanged: a WAIT after this script then also covers the first write of the key.
    redis.call('SET', key, prior, 'KEEPTTL')
    local sep = string.find(prior, ' ', 1, true)
    return {'known', string.sub(prior, 1, sep - 1), string.sub(prior, sep + 1)}
  end
  if tonumber(ttl) > 0 then
    redis.call('SET', key, request_id .. ' ' .. fingerprint, 'EX', ttl)
  else
    redis.call('SET', key, request_id .. ' ' .. fingerprint)
  end
  return {'claimed'}
end
"""

# Queue a request once, in its course's partition: a request id queued before is only reported.
# k: courses set, request stream, course priority set, pending index, granted priorities, accepted counter.
# The request's json is `head .. priority .. tail`; `given` '' = the priority the registrar granted the student.
# Reply: {outcome, 1-based queue place while pending}.
_QUEUE_LUA = (
    ENQUEUE_LUA
    + """
local function queue_request(k, marker_key, request_id, head, tail, given, course_id, ttl, student_id, traced)
  if redis.call('SISMEMBER', k[1], course_id) == 0 then
    return {'unknown_course'}
  end
  local marker = redis.call('GET', marker_key)
  if marker then
    -- Written again, unchanged: a WAIT after this script then also covers the request queued before.
    redis.call('SET', marker_key, marker, 'KEEPTTL')
    local existing = redis.call('HGET', k[4], request_id)
    if existing then
      return {'replayed', redis.call('ZRANK', k[3], existing) + 1}
    end
    return {'replayed'}
  end
  local priority = given
  if priority == '' then
    priority = redis.call('HGET', k[5], student_id) or '0'
  end
  local _, member = enqueue(k[2], k[3], k[4], request_id, head .. priority .. tail, priority, traced)
  redis.call('INCR', k[6])
  if tonumber(ttl) > 0 then
    redis.call('SET', marker_key, course_id, 'EX', ttl)
  else
    redis.call('SET', marker_key, course_id)
  end
  return {'queued', redis.call('ZRANK', k[3], member) + 1}
end
"""
)

# Step one of two: the idempotency key, in its own partition. KEYS: the key. ARGV: request id, fingerprint, ttl
# (0 = keep).
_CLAIM = _CLAIM_LUA + "return claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3])"

# Let go of a key claimed for a request that could not be queued (no such course). KEYS: the key. ARGV: request id.
_RELEASE = """
local prior = redis.call('GET', KEYS[1])
if prior and string.sub(prior, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('DEL', KEYS[1])
end
"""

# Step two: queue the request in its course's partition.
# KEYS: courses set, queued marker, request stream, course priority set, pending index, granted priorities,
#       accepted counter.
# ARGV: request id, request json before and after its priority, priority ('' = the one the registrar granted
#       the student), course id, marker ttl (0 = keep), student id, then the entry's trace fields, if any.
_QUEUE = (
    _QUEUE_LUA
    + """
return queue_request({KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}, KEYS[2], ARGV[1], ARGV[2], ARGV[3],
  ARGV[4], ARGV[5], ARGV[6], ARGV[7], {unpack(ARGV, 8)})
"""
)

# Both steps in one script, one round trip, where one script may touch both partitions: a single Redis (on a
# cluster they are in different slots). The request id is the key's when it names one already, so it is put
# into the request's json here, and its queued marker is named here (after ARGV[10]), both from what the
# claim found. The caller's rate limits are taken first, in the same round trip: every attempt counts.
# KEYS: the idempotency key, courses set, request stream, course priority set, pending index, granted
#       priorities, accepted counter, then each limit's previous and current window counters.
# ARGV: new request id, fingerprint, ttl (0 = keep), request json before its request id, between it and the
#       priority, after the priority, priority ('' = granted), course id, student id, queued-marker prefix, the
#       number of limits, each limit's amount and window (s), then the entry's trace fields, if any.
# Reply: {outcome, request id, 1-based queue place while pending}, {'unknown_course'}, or {'rate_limited', the
# 1-based number of the limit that refused}.
_ACCEPT = (
    ACQUIRE_WINDOW_LUA
    + _CLAIM_LUA
    + _QUEUE_LUA
    + """
local limits = tonumber(ARGV[11])
for i = 1, limits do
  if not acquire_window({KEYS[6 + 2 * i], KEYS[7 + 2 * i]}, {ARGV[10 + 2 * i], ARGV[11 + 2 * i], 1}) then
    return {'rate_limited', i}
  end
end
local claimed = claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
local request_id = ARGV[1]
if claimed[1] == 'known' then
  request_id = claimed[2]
  if claimed[3] ~= ARGV[2] then
    return {'conflict', request_id}
  end
end
local reply = queue_request({KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}, ARGV[10] .. request_id,
  request_id, ARGV[4] .. request_id .. ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[3], ARGV[9],
  {unpack(ARGV, 12 + 2 * limits)})
if reply[1] == 'unknown_course' then
  if claimed[1] == 'claimed' then  -- the key names no request after all
    redis.call('DEL', KEYS[1])
  end
  return reply
end
return {reply[1], request_id, reply[2]}
"""
)

_PRIORITY = b'"priority":'


def around_priority(payload: bytes) -> tuple[bytes, bytes]:
    """Split an encoded request (priority 0) around its priority, so the intake script can put in the granted one.

    The last match is the field: a key inside a string value would have its quotes escaped.
    """
    at = payload.rindex(_PRIORITY + b"0,") + len(_PRIORITY)
    return payload[:at], payload[at + 1 :]


def around_request_id(payload: bytes, request_id: str) -> tuple[bytes, bytes, bytes]:
    """Split an encoded request (priority 0) around its request id and its priority, for the one-step script.

    The first match of the id is the field: only the type and the course id come before it."""
    head, tail = around_priority(payload)
    rid = request_id.encode()
    at = head.index(rid)
    return head[:at], head[at + len(rid) :], tail


def new_request_id() -> str:
    """A random UUID (version 4, RFC 9562 variant) as text, at half the cost of `str(uuid.uuid4())`."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


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
    # Which of the caller's limits (0-based, in the policy's order) refused a rate-limited request.
    refused_by: int | None = None


class _CourseKeys(msgspec.Struct, frozen=True):
    """The keys the queueing step of one course touches, named once per course rather than per request."""

    partition: PartitionKeys
    # courses set, request stream, the course's priority set, pending index, granted priorities, accepted counter
    queue: tuple[str, str, str, str, str, str]
    marker_prefix: str
    # The PRODUCER span's name, of the messaging conventions: the operation and its destination.
    span_name: str


class Intake:
    def __init__(
        self,
        client: AsyncRedis,
        keys: Keys,
        idempotency_ttl_s: int = 0,
        replicas: Replicas = NO_REPLICAS,
        one_step: bool | None = None,
    ) -> None:
        """`one_step`: claim and queue in one script (default: on a single Redis, not on a cluster)."""
        self._client = client
        self.keys = keys
        self._ttl = idempotency_ttl_s
        self._one_step = not isinstance(client, AsyncRedisCluster) if one_step is None else one_step
        # Every step's writes must survive a failover: a lost claim would let a retry queue the request twice.
        self._accept = CoalescedScript(client, _ACCEPT, replicas)
        self._claim = CoalescedScript(client, _CLAIM, replicas)
        self._queue = CoalescedScript(client, _QUEUE, replicas)
        self._release = CoalescedScript(client, _RELEASE)
        self._courses: Memo[int, _CourseKeys] = Memo(10_000)

    @property
    def takes_rate_limits(self) -> bool:
        """Whether `accept` takes the caller's rate limits in its own round trip (one-step intake)."""
        return self._one_step

    async def aclose(self) -> None:
        for script in (self._accept, self._claim, self._queue, self._release):
            await script.aclose()

    def _of_course(self, course_id: int) -> _CourseKeys:
        found = self._courses.get(course_id)
        if found is None:
            k = self.keys.of_course(course_id)
            queue = (k.courses, k.requests, k.priority_set(course_id), k.pending_index, k.priorities, k.accepted)
            found = self._courses.put(course_id, _CourseKeys(k, queue, k.queued(""), f"send {k.requests}"))
        return found

    async def accept(
        self,
        caller: Principal,
        student_id: int,
        course_id: int,
        idempotency_key: str,
        priority: int | None,
        limits: Sequence[Window] = (),
    ) -> Accepted:
        """Queue a request once per (caller, student, idempotency key). `priority` None: the one the registrar
        granted the student. `limits`: the caller's rate limits, taken in the same round trip, before anything
        else (one-step intake only, see `takes_rate_limits`); the first that refuses makes it "rate_limited".

        Two steps, each atomic: claim the idempotency key for a new request id (in the key's partition), then
        queue that request (in its course's partition), which does nothing for a request id queued before. A
        retry after a failure between them queues the request the key names, never a second one. On a single
        Redis both steps run in one script: one round trip, and no failure between them.

        Raises NotReplicated when REDIS_WAIT_REPLICAS replicas did not confirm it in time: it may be queued, but
        a failover could still lose it, so the caller hears 503 and retries with the same idempotency key.
        """
        if limits and not self._one_step:
            raise ValueError("two-step intake takes no rate limits: take them before")
        given = "" if priority is None else str(priority)
        fingerprint = f"{course_id}:{given}"
        owner = key_owner(caller, student_id)
        claim_key = self.keys.of_idempotency(owner, idempotency_key).idempotency(owner, idempotency_key)
        request_id = new_request_id()
        claimed: list[bytes] | None = None
        if not self._one_step:
            claimed = await self._claim([claim_key], [request_id, fingerprint, self._ttl])
            if claimed[0] == b"known":
                request_id = claimed[1].decode()
                if claimed[2].decode() != fingerprint:
                    return Accepted("conflict", request_id)
        request = QueuedRequest(
            course_id=course_id,
            request_id=request_id,
            student_id=student_id,
            idempotency_key=idempotency_key,
            priority=0,
            requested_at=datetime.now(UTC),
        )
        payload = events.encode_request(request)
        k = self._of_course(course_id)
        # The PRODUCER span: its context goes into the entry for the worker.
        with tracing.span(k.span_name, SpanKind.PRODUCER) as span:
            if span is not None:
                span.set_attributes(
                    {
                        "messaging.system": "redis",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": k.partition.requests,
                        "courseflow.request_id": request_id,
                        "courseflow.course_id": course_id,
                    }
                )
            if claimed is None:
                before_id, before_priority, after_priority = around_request_id(payload, request_id)
                keys: list[KeyT] = [claim_key, *k.queue]
                args: list[EncodableT] = [request_id, fingerprint, self._ttl, before_id, before_priority]
                args += [after_priority, given, course_id, student_id, k.marker_prefix, len(limits)]
                for window in limits:
                    keys += (window.previous, window.current)
                    args += (window.amount, window.expiry_s)
                reply = await self._accept(keys, [*args, *tracing.inject()])
                outcome, rest = reply[0], reply[2:]
                if outcome == b"rate_limited":
                    return Accepted("rate_limited", refused_by=int(reply[1]) - 1)
                if len(reply) > 1:  # the request id the key names: this one, or an earlier attempt's
                    request_id = reply[1].decode()
            else:
                head, tail = around_priority(payload)
                courses, requests, priority_set, pending, priorities, accepted = k.queue
                reply = await self._queue(
                    [courses, k.marker_prefix + request_id, requests, priority_set, pending, priorities, accepted],
                    [request_id, head, tail, given, course_id, self._ttl, student_id, *tracing.inject()],
                )
                outcome, *rest = reply
            if span is not None:
                span.set_attribute("courseflow.intake.outcome", outcome.decode())
                span.set_attribute("courseflow.request_id", request_id)
        if outcome == b"conflict":
            return Accepted("conflict", request_id)
        if outcome == b"unknown_course":
            if claimed is not None and claimed[0] == b"claimed":  # the key names no request after all
                await self._release([claim_key], [request_id])
            return Accepted("unknown_course")
        # A known key whose request was never queued (its first attempt failed in between) is queued now.
        return Accepted(outcome.decode(), request_id, int(rest[0]) if rest else None)

    async def pending_position(self, request_id: str) -> tuple[QueuedRequest, int] | None:
        """The pending request and its 1-based queue position, or None if it is not pending."""
        found = await self.pending_positions([request_id])
        return found.get(request_id)

    async def pending_positions(self, request_ids: list[str]) -> dict[str, tuple[QueuedRequest, int]]:
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
