"""Domain errors: what the rules refuse, in the domain's words. `http.problems` maps each to problem details."""

from __future__ import annotations


class DomainError(Exception):
    """A rule refused an action; `field` names the input it is about, when there is one."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class UnknownCourse(DomainError):
    """No course with this id."""

    def __init__(self, course_id: int) -> None:
        super().__init__(f"no course {course_id}", "course_id")
        self.course_id = course_id


class IdempotencyKeyReused(DomainError):
    """The idempotency key names an earlier request with another body."""

    def __init__(self, request_id: str) -> None:
        super().__init__(
            "this idempotency_key was already used by this student with a different body", "idempotency_key"
        )
        self.request_id = request_id


class TooManyPending(DomainError):
    """The student has `limit` requests waiting for a decision already (PENDING_PER_STUDENT)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"at most {limit} requests per student may wait for a decision at once (PENDING_PER_STUDENT); ask again"
            " once one of yours is decided",
            "course_id",
        )
        self.limit = limit


class RateLimitReached(DomainError):
    """The caller reached one of the rate limits it was given: the `index`-th (0-based), for `retry_after_ms`."""

    def __init__(self, index: int, retry_after_ms: int) -> None:
        super().__init__(f"rate limit {index + 1} reached; retry in {retry_after_ms} ms")
        self.index = index
        self.retry_after_ms = retry_after_ms


class UnknownRequest(DomainError):
    """No decided request with this id (it may still be pending)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no request {request_id}", "request_id")
        self.request_id = request_id


class NothingToRelease(DomainError):
    """The request holds neither a seat nor a waitlist place (it was rejected)."""


class InvalidWindow(DomainError):
    """A registration window that closes before it opens; `field` is the bound to change."""
