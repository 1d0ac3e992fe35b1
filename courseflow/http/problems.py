"""Every error answer is RFC 9457 problem details, made in one place from one family of exceptions.

A handler raises the exception that says what went wrong; `respond` turns it into
`application/problem+json` with `type`, `title`, `status`, `detail` and, where one input is at
fault, the `field` it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta
from starlette.responses import Response

from courseflow import errors
from courseflow.errors import DomainError
from projections.refusals import FeedClosing, FeedNotReady, TooManyStreams

TYPE_PREFIX = "urn:courseflow:problem:"
Location = Literal["body", "query", "path", "header"]


class FieldError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One input at fault: its name, where it was, and for body fields a JSON pointer (RFC 6901) to it."""

    field: str
    location: Location = msgspec.field(name="in")
    detail: str
    pointer: str | None = None


class ProblemDetails(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details: the body of every error answer."""

    type: Annotated[str, Meta(examples=[TYPE_PREFIX + "invalid_input"])]
    title: str
    status: Annotated[int, Meta(ge=400, le=599)]
    detail: str
    # The one input at fault, when there is one; `errors` says where it was.
    field: str | None = None
    errors: list[FieldError] | None = None
    # The earlier request an idempotency key belongs to.
    request_id: str | None = None


class Problem(Exception):
    """A failure the client is told about. Subclasses fix the status and the problem type."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        field: str | None = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        errors: list[FieldError] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.status_code = status or self.status
        self.headers = dict(headers or {})
        self.errors = errors
        self.request_id = request_id


class InvalidInput(Problem):
    """The request cannot be read (400), is too large (413), of the wrong media type (415) or fails a rule (422)."""

    status = 422
    code = "invalid_input"
    title = "Invalid input"

    def __init__(self, field: str, detail: str, status: int = 422, location: Location = "body") -> None:
        pointer = "/" + field.replace("~", "~0").replace("/", "~1") if location == "body" and field != "body" else None
        error = FieldError(field=field, location=location, detail=detail, pointer=pointer)
        super().__init__(f"{field} {detail}", field, status=status, errors=[error])


class Unauthorized(Problem):
    status = 401
    code = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str, token_given: bool) -> None:
        # RFC 6750: name the scheme; say `invalid_token` only when a token was presented.
        challenge = 'Bearer realm="courseflow"'
        if token_given:
            # A header carries printable ASCII only; the detail may quote what the token said.
            described = "".join(c if c.isascii() and c.isprintable() else "?" for c in detail).replace('"', "'")
            challenge += f', error="invalid_token", error_description="{described}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(Problem):
    status = 403
    code = "forbidden"
    title = "Not allowed for this caller"


class NotFound(Problem):
    status = 404
    code = "not_found"
    title = "Not found"


class MethodNotAllowed(Problem):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class NotAcceptable(Problem):
    status = 406
    code = "not_acceptable"
    title = "No answer in an accepted media type"


class Conflict(Problem):
    status = 409
    code = "conflict"
    title = "Conflict with the current state"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    title = "Idempotency key reused with a different body"


class NotDecided(Conflict):
    code = "not_decided"
    title = "Not decided yet"


class ReleaseRefused(Conflict):
    code = "nothing_to_release"
    title = "Nothing to release"


class CourseExists(Conflict):
    code = "course_exists"
    title = "Course exists"


class RateLimited(Problem):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class PendingLimit(RateLimited):
    """No Retry-After: a place frees when a decision comes, not after a known time."""

    code = "pending_limit"
    title = "Too many requests waiting for a decision"


class Unavailable(Problem):
    """A dependency is down or the server is draining: retry after a moment."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class ShuttingDown(Unavailable):
    code = "shutting_down"
    title = "Shutting down"


MEDIA_TYPE = "application/problem+json"
# On every error answer, also those given before routing (an unknown path, a refused token): an error is never
# rendered as a page, framed or sniffed into one, and sends no Referer onwards.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


class ProblemResponse(Response):
    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def details(problem: Problem) -> ProblemDetails:
    return ProblemDetails(
        type=TYPE_PREFIX + problem.code,
        title=problem.title,
        status=problem.status_code,
        detail=problem.detail,
        field=problem.field,
        errors=problem.errors,
        request_id=problem.request_id,
    )


def from_domain(error: DomainError) -> Problem:
    """The one mapping of the rules' refusals to what the client is told."""
    match error:
        case errors.UnknownCourse() | errors.UnknownRequest():
            return NotFound(error.detail, error.field)
        case errors.IdempotencyKeyReused():
            return IdempotencyConflict(error.detail, error.field, request_id=error.request_id)
        case errors.NothingToRelease():
            return ReleaseRefused(error.detail, error.field)
        case errors.InvalidWindow():
            return InvalidInput(error.field or "body", error.detail)
        case TooManyStreams():
            return RateLimited(error.detail, headers={"Retry-After": "5"})
        case errors.TooManyPending():
            return PendingLimit(error.detail, error.field)
        case FeedClosing():
            return ShuttingDown(error.detail)
        case FeedNotReady():
            return Unavailable(error.detail)
    return Conflict(error.detail, error.field)


def respond(problem: Problem) -> Response:
    return ProblemResponse(
        details(problem), status_code=problem.status_code, headers=SECURITY_HEADERS | problem.headers
    )
