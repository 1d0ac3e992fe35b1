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


class UnknownRequest(DomainError):
    """No decided request with this id (it may still be pending)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no request {request_id}", "request_id")
        self.request_id = request_id


class NothingToRelease(DomainError):
    """The request holds neither a seat nor a waitlist place (it was rejected)."""


class InvalidWindow(DomainError):
    """A registration window that closes before it opens; `field` is the bound to change."""
