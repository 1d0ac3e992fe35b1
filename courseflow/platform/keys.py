"""Every Redis key name, in one place.

Requests are partitioned by course: a course's requests, its priority set, its pending index and
everything the queueing function reads share their partition's hash tag, so every function call and MULTI
stays inside one slot and runs unchanged on Redis Cluster, while different partitions spread over
its masters. A caller's rate-limit counters and idempotency keys share the caller's hash tag instead, so one
call takes an enrollment's limits and claims its key.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec


def _scoped(owner: str, key: str) -> str:
    """An idempotency key with its owner, one way only: the owner's length first, as both may hold any character
    (a `sub` "x:1" for student 902 with key "k" must not meet `sub` "x" for student 1 with key "902:k")."""
    return f"{len(owner)}:{owner}:{key}"


def student_caller(student_id: int) -> str:
    """A student's caller name (http.limits.Subject.caller of a student's token): whose keys their own requests take."""
    return f"student:{student_id}"


def student_pending(prefix: str, student_id: int) -> str:
    """A student's own requests not decided yet (CallerKeys.pending_requests of their caller name)."""
    return CallerKeys(prefix, student_caller(student_id)).pending_requests


def partition_of(course_id: int, partitions: int) -> int:
    """The partition a course's requests go to: stable for the life of a deployment (see `partitions` in the
    database), and spreading consecutive course ids evenly."""
    return course_id % partitions


class PartitionKeys(msgspec.Struct, frozen=True):
    """The keys of one partition, all in one hash slot."""

    prefix: str
    partition: int

    @property
    def tag(self) -> str:
        return f"{{{self.prefix}:{self.partition}}}"

    @property
    def requests(self) -> str:
        return f"{self.tag}:requests"

    @property
    def dead_letters(self) -> str:
        return f"{self.tag}:dead-letters"

    @property
    def courses(self) -> str:
        """The ids of this partition's courses: intake accepts requests for these only."""
        return f"{self.tag}:courses"

    @property
    def pending_index(self) -> str:
        """request id -> priority-set member, for status look-ups while pending."""
        return f"{self.tag}:pending"

    @property
    def priorities(self) -> str:
        """student id -> the priority a registrar granted (absent = 0); a copy in every partition, for its
        queueing function."""
        return f"{self.tag}:priorities"

    @property
    def priority_versions(self) -> str:
        """student id -> version of the grant in `priorities`, so an older one never overwrites a newer one."""
        return f"{self.tag}:priority-versions"

    @property
    def accepted(self) -> str:
        """How many requests intake ever queued here: `courseflow check` accounts for each, whatever keys expired."""
        return f"{self.tag}:accepted"

    def priority_set(self, course_id: int) -> str:
        return f"{self.tag}:course:{course_id}:pending"

    def queued(self, request_id: str) -> str:
        """Present once a request is in this partition's stream: queueing it again is a no-op."""
        return f"{self.tag}:queued:{request_id}"


class Keys(msgspec.Struct, frozen=True):
    """The key space of one deployment: `partitions` partitions under `prefix`."""

    prefix: str = "courseflow"
    partitions: int = 1

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("partitions must be at least 1")

    def partition(self, partition: int) -> PartitionKeys:
        return PartitionKeys(self.prefix, partition)

    def of_course(self, course_id: int) -> PartitionKeys:
        return PartitionKeys(self.prefix, partition_of(course_id, self.partitions))

    def all(self) -> Iterator[PartitionKeys]:
        return (PartitionKeys(self.prefix, p) for p in range(self.partitions))

    def priority_set(self, course_id: int) -> str:
        return self.of_course(course_id).priority_set(course_id)

    @property
    def replica_horizon(self) -> str:
        """The newest PostgreSQL WAL position the API has written or shown: replica reads wait for it."""
        return f"{{{self.prefix}}}:replica-horizon"

    def caller(self, caller: str) -> CallerKeys:
        return CallerKeys(self.prefix, caller)

    def rate_limit(self, caller: str, limit: str) -> str:
        return self.caller(caller).rate_limit(limit)

    def student_pending(self, student_id: int) -> str:
        return student_pending(self.prefix, student_id)


class CallerKeys(msgspec.Struct, frozen=True):
    """The keys of one caller (whose rate limits a request takes, `role:name`), all in one hash slot: an
    enrollment's limits and its idempotency key are taken in one call. Different callers spread over a cluster's
    masters."""

    prefix: str
    caller: str

    @property
    def tag(self) -> str:
        # The caller's length first: a name may hold any character, `}` and `:` included.
        return f"{{{self.prefix}:caller:{len(self.caller)}:{self.caller}}}"

    def rate_limit(self, limit: str) -> str:
        """The caller's counter for one limit."""
        return f"{self.tag}:ratelimit:{limit}"

    @property
    def pending_requests(self) -> str:
        """A student caller's own requests not decided yet (a set of ids): added as each is claimed, removed as it is
        decided or set aside. Its size is what PENDING_PER_STUDENT bounds."""
        return f"{self.tag}:pending"

    def idempotency(self, owner: str, key: str) -> str:
        """The request an idempotency key names; `owner` scopes the key to whom it enrolls (see intake.key_owner),
        whatever course it asks for."""
        return f"{self.tag}:idem:{_scoped(owner, key)}"
