"""Accepting a request: durable in Redis, and queued once per idempotency key, before the client hears 202."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Literal, NamedTuple, TypeVar, cast

import msgspec
from opentelemetry.trace import SpanKind

from courseflow import events
from courseflow.errors import IdempotencyKeyReused, RateLimitReached, TooManyPending, UnknownCourse
from courseflow.events import QueuedRequest
from courseflow.intake import pending
from courseflow.intake.queue import parse_member
from courseflow.platform import tracing
from courseflow.platform.coalesce import NO_REPLICAS, Replicas
from courseflow.platform.functions import AsyncFunctions, Function
from courseflow.platform.keys import Keys, PartitionKeys, student_caller
from courseflow.platform.library import (
    AcceptEnrollment,
    AdmitEnrollment,
    Claim,
    ClaimIdempotencyKey,
    Limit,
    PendingBound,
    PendingFull,
    QueueReply,
    QueueRequest,
    Refusal,
    ReleaseIdempotencyKey,
)
from courseflow.platform.memo import Memo
from courseflow.platform.redis_clients import AsyncRedis, is_cluster

_PRIORITY = b'"priority":'
R = TypeVar("R")


def around_priority(payload: bytes) -> tuple[bytes, bytes]:
    """Split an encoded request (priority 0) around its priority, so the queueing function can put in the granted one.

    The last match is the field: a key inside a string value would have its quotes escaped.
    """
    at = payload.rindex(_PRIORITY + b"0,") + len(_PRIORITY)
    return payload[:at], payload[at + 1 :]


def new_request_id() -> str:
    """A random UUID (version 4, RFC 9562 variant) as text, at half the cost of `str(uuid.uuid4())`."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def key_owner(role: str, sub: str, student_id: int) -> str:
    """Whose idempotency keys these are: a student's own, or a registrar's or service's (`role`, `sub`: the
    caller) for one student. So a student and the integration acting for them never collide on a key, nor two
    integrations."""
    return str(student_id) if role == "student" and sub == str(student_id) else f"{role}:{sub}:{student_id}"


class PendingPlace(msgspec.Struct, frozen=True):
    """A pending request and its 1-based place in its course's fairness order."""

    request: QueuedRequest
    position: int


class Accepted(msgspec.Struct, frozen=True):
    outcome: Literal["queued", "replayed"]
    request_id: str
    # 1-based place in the course's fairness order while pending; None once decided.
    queue_position: int | None = None


class _Request(NamedTuple):
    """What the client asked for, before it has a request id."""

    course_id: int
    student_id: int
    idempotency_key: str
    priority: int | None


def _alone(queueing: QueueRequest) -> QueueRequest:
    return queueing


def _outcome(reply: QueueReply | Claim | Refusal) -> str:
    if isinstance(reply, QueueReply):
        return reply.outcome
    return "limited" if isinstance(reply, Refusal) else "known"


def _accepted(queued: QueueReply, request_id: str, course_id: int) -> Accepted:
    if queued.outcome == "unknown_course":
        raise UnknownCourse(course_id)
    return Accepted(queued.outcome, request_id, queued.queue_position)


class _CourseKeys(msgspec.Struct, frozen=True):
    """The keys the queueing step of one course touches, named once per course rather than per request."""

    partition: PartitionKeys
    priority_set: str
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
        pending_per_student: int | None = None,
    ) -> None:
        self._client = client
        self.keys = keys
        self._ttl = idempotency_ttl_s
        self._pending_limit = pending_per_student
        # Every step's writes must survive a failover: a lost claim would let a retry queue the request twice.
        self._functions = AsyncFunctions(client, replicas)
        self._courses: Memo[int, _CourseKeys] = Memo(10_000)
        # Both steps' keys on one server: one call does both.
        self._one_server = not is_cluster(client)

    async def aclose(self) -> None:
        await self._functions.aclose()

    def _of_course(self, course_id: int) -> _CourseKeys:
        found = self._courses.get(course_id)
        if found is None:
            k = self.keys.of_course(course_id)
            found = self._courses.put(
                course_id, _CourseKeys(k, k.priority_set(course_id), k.queued(""), f"send {k.requests}")
            )
        return found

    async def accept(
        self,
        caller: str,
        owner: str,
        student_id: int,
        course_id: int,
        idempotency_key: str,
        priority: int | None,
        limits: Sequence[Limit] = (),
        *,
        recount: bool = True,
    ) -> Accepted:
        """Queue a request once per (owner, idempotency key) within `caller`'s limits; `priority` None: the granted one.

        Two atomic steps, claim the key then queue its request id, so a retry after a failure between them queues
        the request the key names, never a second one. Where one server holds both steps' keys (a single Redis)
        they go as one call, `AcceptEnrollment`: the same two functions, one round trip and one wait for the disk.

        A student's own new request is claimed only while fewer than PENDING_PER_STUDENT of theirs wait for a
        decision (TooManyPending); `recount`: once, at that bound, first forget the ones decided meanwhile."""
        fingerprint = f"{course_id}:{'' if priority is None else priority}"
        claim_key = self.keys.caller(caller).idempotency(owner, idempotency_key)
        bound = None
        if self._pending_limit is not None and caller == student_caller(student_id):
            bound = PendingBound(self.keys.student_pending(student_id), self._pending_limit)
        claiming = ClaimIdempotencyKey(claim_key, new_request_id(), fingerprint, self._ttl, bound)
        admitting = AdmitEnrollment(limits, claiming)
        request = _Request(course_id, student_id, idempotency_key, priority)
        if self._one_server:
            step = await self._send(request, admitting.claim.request_id, partial(AcceptEnrollment, admitting))
            if isinstance(step, QueueReply):
                return _accepted(step, admitting.claim.request_id, course_id)
        else:
            step = await self._functions(admitting)
        # Refused, or the key names a request already (queued then, unless its first attempt failed in between).
        if isinstance(step, Refusal):
            raise RateLimitReached(step.index, step.retry_after_ms)
        if isinstance(step, PendingFull):
            if recount and bound is not None and await pending.forget_decided(self._client, bound.key, self):
                # Its limits were taken by this attempt already.
                return await self.accept(caller, owner, student_id, course_id, idempotency_key, priority, recount=False)
            raise TooManyPending(step.limit)
        if step.fingerprint != fingerprint:
            raise IdempotencyKeyReused(step.request_id)
        queued = await self._send(request, step.request_id, _alone)
        if queued.outcome == "unknown_course" and step.claimed:  # the key names no request after all
            await self._functions(ReleaseIdempotencyKey(claim_key, step.request_id, bound.key if bound else None))
        return _accepted(queued, step.request_id, course_id)

    async def _send(self, request: _Request, request_id: str, call: Callable[[QueueRequest], Function[R]]) -> R:
        """Queue `request` as `request_id` by `call`, in a PRODUCER span whose context goes into the entry."""
        k = self._of_course(request.course_id)
        with tracing.span(k.span_name, SpanKind.PRODUCER) as span:
            if span is not None:
                span.set_attributes(
                    {
                        "messaging.system": "redis",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": k.partition.requests,
                        "courseflow.request_id": request_id,
                        "courseflow.course_id": request.course_id,
                    }
                )
            injected = tracing.inject()
            encoded = QueuedRequest(
                course_id=request.course_id,
                request_id=request_id,
                student_id=request.student_id,
                idempotency_key=request.idempotency_key,
                priority=0,
                requested_at=datetime.now(UTC),
            )
            head, tail = around_priority(events.encode_request(encoded))
            queueing = QueueRequest(
                courses=k.partition.courses,
                queued_marker=k.marker_prefix + request_id,
                requests=k.partition.requests,
                priority_set=k.priority_set,
                pending_index=k.partition.pending_index,
                granted_priorities=k.partition.priorities,
                accepted_counter=k.partition.accepted,
                request_id=request_id,
                before_priority=head,
                after_priority=tail,
                priority=request.priority,
                course_id=request.course_id,
                marker_ttl_s=self._ttl,
                student_id=request.student_id,
                entry_fields=list(zip(injected[::2], injected[1::2], strict=True)),
            )
            reply = await self._functions(call(queueing))
            if span is not None and isinstance(reply, QueueReply | Claim | Refusal):
                span.set_attribute("courseflow.intake.outcome", _outcome(reply))
            return reply

    async def pending_position(self, request_id: str) -> PendingPlace | None:
        """None if the request is not pending."""
        found = await self.pending_positions([request_id])
        return found.get(request_id)

    async def pending_positions(self, request_ids: list[str]) -> dict[str, PendingPlace]:
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
            request_id: PendingPlace(item.request, rank + 1)
            for (request_id, item), rank in zip(items.items(), ranks, strict=True)
            if rank is not None
        }

    async def queue_depths(self, course_ids: list[int]) -> list[int]:
        """Pending requests per course, in one round trip however many courses there are."""
        async with self._client.pipeline(transaction=False) as pipe:
            for course_id in course_ids:
                pipe.zcard(self.keys.priority_set(course_id))
            return [int(depth) for depth in await pipe.execute()]

    async def pending_total(self) -> int:
        """Requests accepted and not decided yet, over every course, in one round trip whatever their number: the
        pending indexes, which gain and lose each request together with its course's priority set."""
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in self.keys.all():
                pipe.hlen(partition.pending_index)
            return sum(int(n) for n in await pipe.execute())

    async def dead_letter_count(self) -> int:
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in self.keys.all():
                pipe.xlen(partition.dead_letters)
            return sum(int(n) for n in await pipe.execute())
