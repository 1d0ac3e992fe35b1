"""The functions of lua/courseflow.lua, one typed wrapper each: named fields in, keys and arguments out.

Each wrapper is the only place that knows its function's positional keys and arguments; callers name
fields. Run them with courseflow.platform.functions (`Functions` or `AsyncFunctions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.typing import EncodableT, KeyT

from courseflow.platform.functions import Function

# Fields of a stream entry besides the request (the trace context), as name, value pairs.
EntryFields = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Claim:
    """What claiming an idempotency key found: nothing (claimed now), or the request it already names."""

    claimed: bool
    request_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class ClaimIdempotencyKey(Function[Claim]):
    """Claim an idempotency key for a new request id, unless it names a request already."""

    name = "claim_idempotency_key"
    key: str
    request_id: str
    fingerprint: str
    ttl_s: int  # 0 = kept for good

    def keys(self) -> Sequence[KeyT]:
        return (self.key,)

    def args(self) -> Sequence[EncodableT]:
        return (self.request_id, self.fingerprint, self.ttl_s)

    def reply(self, raw: Any) -> Claim:
        if raw[0] == b"claimed":
            return Claim(True, self.request_id, self.fingerprint)
        return Claim(False, raw[1].decode(), raw[2].decode())


@dataclass(frozen=True, slots=True)
class ReleaseIdempotencyKey(Function[None]):
    """Let go of a key claimed for a request that could not be queued, if it still names that request."""

    name = "release_idempotency_key"
    key: str
    request_id: str

    def keys(self) -> Sequence[KeyT]:
        return (self.key,)

    def args(self) -> Sequence[EncodableT]:
        return (self.request_id,)

    def reply(self, raw: Any) -> None:
        return None


@dataclass(frozen=True, slots=True)
class QueueReply:
    outcome: Literal["queued", "replayed", "unknown_course"]
    # 1-based place in the course's fairness order while pending; None once decided.
    queue_position: int | None


@dataclass(frozen=True, slots=True)
class QueueRequest(Function[QueueReply]):
    """Queue a request once in its course's partition: stream, priority set, pending index; a request id queued
    before is only reported. Every key is of the course's partition."""

    name = "queue_request"
    courses: str
    queued_marker: str
    requests: str
    priority_set: str
    pending_index: str
    granted_priorities: str
    accepted_counter: str
    request_id: str
    # The request's json is `before_priority + priority + after_priority`.
    before_priority: bytes
    after_priority: bytes
    priority: int | None  # None: the one the registrar granted the student
    course_id: int
    marker_ttl_s: int  # 0 = kept for good
    student_id: int
    entry_fields: EntryFields = ()

    def keys(self) -> Sequence[KeyT]:
        return (
            self.courses,
            self.queued_marker,
            self.requests,
            self.priority_set,
            self.pending_index,
            self.granted_priorities,
            self.accepted_counter,
        )

    def args(self) -> Sequence[EncodableT]:
        given = "" if self.priority is None else self.priority
        fixed: tuple[EncodableT, ...] = (self.request_id, self.before_priority, self.after_priority, given)
        fixed += (self.course_id, self.marker_ttl_s, self.student_id)
        return fixed + tuple(value for pair in self.entry_fields for value in pair)

    def reply(self, raw: Any) -> QueueReply:
        position = int(raw[1]) if len(raw) > 1 else None
        return QueueReply(raw[0].decode(), position)


@dataclass(frozen=True, slots=True)
class Grant:
    student_id: int
    priority: int
    version: int


@dataclass(frozen=True, slots=True)
class GrantPriorities(Function[None]):
    """Apply registrars' grants to one partition's copy, each only if newer than the one it has."""

    name = "grant_priorities"
    priorities: str
    versions: str
    grants: Sequence[Grant]

    def keys(self) -> Sequence[KeyT]:
        return (self.priorities, self.versions)

    def args(self) -> Sequence[EncodableT]:
        return tuple(value for g in self.grants for value in (g.student_id, g.priority, g.version))

    def reply(self, raw: Any) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Prefix:
    members: list[bytes]
    # Whether the members reach the worst-ranked of those asked about (or none of them is pending any more).
    reaches_all: bool


@dataclass(frozen=True, slots=True)
class PendingThrough(Function[Prefix]):
    """The best-ranked members of a priority set, at most `limit`, and whether they reach every given member."""

    name = "pending_through"
    read_only = True
    priority_set: str
    limit: int
    members: Sequence[bytes]

    def keys(self) -> Sequence[KeyT]:
        return (self.priority_set,)

    def args(self) -> Sequence[EncodableT]:
        return (self.limit, *self.members)

    def reply(self, raw: Any) -> Prefix:
        return Prefix(list(raw[1:]), raw[0] == 1)


@dataclass(frozen=True, slots=True)
class TrimRequests(Function[int]):
    """Drop a request stream's entries that are acknowledged by `group`; the reply is how many went."""

    name = "trim_requests"
    requests: str
    group: str

    def keys(self) -> Sequence[KeyT]:
        return (self.requests,)

    def args(self) -> Sequence[EncodableT]:
        return (self.group,)

    def reply(self, raw: Any) -> int:
        return int(raw)


@dataclass(frozen=True, slots=True)
class RetryDeadLetter(Function[str | None]):
    """Move a dead letter's request back to the end of its queue; the reply is its new stream id (None: no such
    dead letter any more)."""

    name = "retry_dead_letter"
    dead_letters: str
    requests: str
    priority_set: str
    pending_index: str
    entry_id: str
    payload: bytes
    priority: int
    request_id: str

    def keys(self) -> Sequence[KeyT]:
        return (self.dead_letters, self.requests, self.priority_set, self.pending_index)

    def args(self) -> Sequence[EncodableT]:
        return (self.entry_id, self.payload, self.priority, self.request_id)

    def reply(self, raw: Any) -> str | None:
        return None if raw is None else bytes(raw).decode()


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit's counter: at most `amount` hits in any `window_ms`."""

    counter: str
    amount: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class Refusal:
    index: int  # 0-based, in the order given
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class TakeRateLimit(Function[Refusal | None]):
    """Count one hit on every limit, or on none when one of them is reached (then: which, and for how long).
    The counters must share a hash slot."""

    name = "take_rate_limit"
    limits: Sequence[Limit]

    def keys(self) -> Sequence[KeyT]:
        return tuple(limit.counter for limit in self.limits)

    def args(self) -> Sequence[EncodableT]:
        return tuple(value for limit in self.limits for value in (limit.amount, limit.window_ms))

    def reply(self, raw: Any) -> Refusal | None:
        return None if raw[0] == 0 else Refusal(int(raw[0]) - 1, int(raw[1]))


@dataclass(frozen=True, slots=True)
class AdmitEnrollment(Function[Claim | Refusal]):
    """Count one hit on every limit (as TakeRateLimit), then claim the idempotency key (as ClaimIdempotencyKey):
    one atomic call, and nothing claimed when a limit refuses. The counters and the key must share a hash slot
    (their caller's)."""

    name = "admit_enrollment"
    limits: Sequence[Limit]
    claim: ClaimIdempotencyKey

    def keys(self) -> Sequence[KeyT]:
        return (*(limit.counter for limit in self.limits), self.claim.key)

    def args(self) -> Sequence[EncodableT]:
        limits = (value for limit in self.limits for value in (limit.amount, limit.window_ms))
        return (*limits, *self.claim.args())

    def reply(self, raw: Any) -> Claim | Refusal:
        if raw[0] == b"limited":
            return Refusal(int(raw[1]) - 1, int(raw[2]))
        return self.claim.reply(raw)


@dataclass(frozen=True, slots=True)
class AcceptEnrollment(Function[Claim | Refusal | QueueReply]):
    """AdmitEnrollment, then QueueRequest for the request id it claimed: one atomic call and one round trip, for
    a server that holds both calls' keys (a single Redis; on a cluster they are two slots). When a limit refuses or
    the key names a request already, the reply is admit's and nothing is queued; for a course the partition does not
    know, the claim is let go."""

    name = "accept_enrollment"
    admit: AdmitEnrollment
    queue: QueueRequest

    def keys(self) -> Sequence[KeyT]:
        return (*self.admit.keys(), *self.queue.keys())

    def args(self) -> Sequence[EncodableT]:
        admitting = self.admit.args()
        return (len(self.admit.keys()), len(admitting), *admitting, *self.queue.args())

    def reply(self, raw: Any) -> Claim | Refusal | QueueReply:
        if raw[0] in (b"limited", b"known"):
            return self.admit.reply(raw)
        return self.queue.reply(raw)


@dataclass(frozen=True, slots=True)
class RaiseHorizon(Function[None]):
    """Raise a shared position to `position`, never lower it."""

    name = "raise_horizon"
    key: str
    position: int

    def keys(self) -> Sequence[KeyT]:
        return (self.key,)

    def args(self) -> Sequence[EncodableT]:
        return (self.position,)

    def reply(self, raw: Any) -> None:
        return None
