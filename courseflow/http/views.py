"""What the API answers: every response body is one of these Structs, so one definition encodes and documents it.

A field that only some answers have is left out when it does not apply (`omit_defaults`); a
field every answer has is always there, null when empty (a window bound, the next page). The
OpenAPI document is generated from these types. A request's status and a recorded event are defined
by the read side, which sends them over live streams too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from courseflow.domain import MAX_ID, Id, RequestStatus
from courseflow.http.auth import Role
from projections.status import EnrollmentStatus as EnrollmentStatus
from projections.status import Position, RequestId
from projections.timeline import RecordedEvent as RecordedEvent

Count = Annotated[int, Meta(ge=0)]


class _View(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    pass


class Queued(_View, frozen=True, kw_only=True):
    """A 202: the request is durably queued and will be decided in priority-then-arrival order."""

    request_id: RequestId
    status: Literal["queued"]
    queue_position: Position


class Released(_View, frozen=True, kw_only=True):
    request_id: RequestId
    status: RequestStatus
    # The waitlisted requests that took the freed seat: shown to registrars and services only.
    promoted: list[str] | None = None


class Counters(_View, frozen=True, kw_only=True):
    requested: Count
    granted: Count
    waitlisted: Count
    rejected: Count
    dropped: Count
    left_waitlist: Count
    promoted: Count


class Course(_View, frozen=True, kw_only=True):
    course_id: Id
    title: str
    capacity: Count
    seats_taken: Count
    waitlist_length: Count
    # Registration window; null = no bound on that side.
    opens_at: datetime | None
    closes_at: datetime | None
    # Requests waiting in the queue; left out while the queue is unreachable.
    pending: Count | None = None
    counters: Counters | None = None


class Courses(_View, frozen=True, kw_only=True):
    """A page of courses by id, each as `GET /api/v1/courses/{course_id}` shows it."""

    courses: list[Course]
    # Pass as `after` for the next page; null on the last page.
    next_after: Id | None


class CourseChanged(_View, frozen=True, kw_only=True):
    course_id: Id
    capacity: Count
    seats_taken: Count
    waitlist_length: Count
    # Registration window; null = no bound on that side.
    opens_at: datetime | None
    closes_at: datetime | None
    # Requests promoted from the waitlist by a larger capacity.
    promoted: list[str]


class WaitlistPlace(_View, frozen=True, kw_only=True):
    position: Position
    request_id: RequestId
    student_id: Id
    priority: int


class Waitlist(_View, frozen=True, kw_only=True):
    """Registrars see every place; a student sees the length and their own places only."""

    course_id: Id
    waitlist_length: Count
    waitlist: list[WaitlistPlace]


class EventPage(_View, frozen=True, kw_only=True):
    events: list[RecordedEvent]
    # Pass as `after` for the next page; null on the last page.
    next_after: Annotated[int, Meta(ge=1, le=MAX_ID)] | None


class StudentEnrollments(_View, frozen=True, kw_only=True):
    student_id: Id
    enrollments: list[EnrollmentStatus]


class StudentPriority(_View, frozen=True, kw_only=True):
    student_id: Id
    priority: int
    # The priority before this change.
    previous: int | None = None


class CourseMetrics(_View, frozen=True, kw_only=True):
    course_id: Id
    queue_depth: Count
    seats_taken: Count
    capacity: Count
    waitlist_length: Count
    status: Literal["open", "full"]


class Latency(_View, frozen=True, kw_only=True):
    """Accept-to-decision percentiles over the most recent decisions; null until something is decided."""

    p50_ms: Annotated[float, Meta(ge=0)] | None
    p95_ms: Annotated[float, Meta(ge=0)] | None
    p99_ms: Annotated[float, Meta(ge=0)] | None


class RedisMemoryView(_View, frozen=True, kw_only=True):
    """How full Redis is: at a `ratio` of 1 new requests are refused (503) and nothing accepted is evicted."""

    used_bytes: Count
    max_bytes: Annotated[int, Meta(ge=0, description="Redis's maxmemory; 0: unbounded")]
    ratio: Annotated[float, Meta(ge=0)] | None


class Metrics(_View, frozen=True, kw_only=True):
    """The seed's shape (`queue_depth`, `seats_taken`, `capacity`, `status`) summed over every course, and more;
    computed at most once a second per API process, so it may be a second old."""

    queue_depth: Count
    seats_taken: Count
    capacity: Count
    waitlist_length: Count
    status: Literal["open", "full"]
    dead_letters: Count
    projection_lag: Count
    latency: Latency
    redis_memory: RedisMemoryView | None
    # The courses the totals are over; `courses` lists a page of them.
    course_count: Count
    courses: Annotated[
        list[CourseMetrics], Meta(description="A page of courses by id: at most `limit`, those after `after`")
    ]
    # Pass as `after` for the next page; null on the last page.
    next_after: Id | None


class DeadLetter(_View, frozen=True, kw_only=True):
    """A stream entry set aside undecided. Possibly garbage: what its request does not say is null."""

    id: Annotated[str, Meta(description="`<partition>:<stream entry id>`, as `courseflow dlq list` shows it")]
    reason: str
    request_id: str | None
    course_id: Id | None
    student_id: Id | None
    # When it was set aside (from the entry id's milliseconds).
    dead_lettered_at: datetime | None


class DeadLetters(_View, frozen=True, kw_only=True):
    # Every dead letter, in every partition; the list holds the newest only.
    count: Count
    dead_letters: list[DeadLetter]


class Me(_View, frozen=True, kw_only=True):
    """The caller as the API sees them."""

    role: Role
    sub: str
    # Students only.
    student_id: Id | None = None
    auth: Literal["on", "off"]
    # The token's expiry (without the clock leeway); null in development mode.
    expires_at: datetime | None


class Health(_View, frozen=True, kw_only=True):
    status: Literal["ok"]


class Readiness(_View, frozen=True, kw_only=True):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
    failing: list[str]
    auth: Literal["on", "off"]
