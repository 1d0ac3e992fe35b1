"""Enrollment requests: accept, follow, release — each caller only their own, unless privileged."""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import Response

from courseflow.decisions import lifecycle
from courseflow.errors import IdempotencyKeyReused, RateLimitReached, TooManyPending, UnknownCourse, UnknownRequest
from courseflow.eventstore import reads, store
from courseflow.http import payloads
from courseflow.http.auth import Principal
from courseflow.http.common import DATABASE_UNREACHABLE, JSON, QUEUE_UNREACHABLE, Services, services
from courseflow.http.gate import principal, rate_subject
from courseflow.http.limits import Subject
from courseflow.http.operations import operation, path_params
from courseflow.http.payloads import Enrollment, RequestPath
from courseflow.http.problems import (
    Forbidden,
    InvalidInput,
    NotDecided,
    NotFound,
    Problem,
    RateLimited,
)
from courseflow.http.views import EnrollmentStatus, Queued, Released
from courseflow.intake.accept import key_owner
from courseflow.platform.metrics import REQUESTS_ACCEPTED, REQUESTS_REFUSED, REQUESTS_REPLAYED
from projections import status


@operation(
    summary="Ask for a seat",
    tag="enrollments",
    description=(
        "Queued durably and decided in priority-then-arrival order: 202 with the request id and queue place. "
        "The same idempotency key again answers the same request (200 with its outcome once decided). "
        "A student enrolls only themselves and may leave `student_id` out; `priority` is honoured from "
        "registrars and services only. A student with PENDING_PER_STUDENT requests waiting for a decision gets a "
        "429 (`pending_limit`) until one is decided."
    ),
    body=Enrollment,
    example=Enrollment(course_id=101, student_id=42, idempotency_key="42-101-fall"),
    answers={202: Queued, 200: EnrollmentStatus},
    problems=(403, 404, 409),
)
async def enroll(request: Request) -> Response:
    svc = services(request)
    caller, counted = principal(request), rate_subject(request)
    try:
        student_id, body, key = await _enrollment(request, caller)
    except Problem as refused:  # counted by the answer it finally gets
        # Counted against the caller's rate limits like every request (a 429 then, when one is reached).
        await _count_refused(svc, counted, request.method)
        REQUESTS_REFUSED.labels("forbidden" if isinstance(refused, Forbidden) else "invalid").inc()
        raise
    # Every log line of this request from here on (the access log too) carries them.
    structlog.contextvars.bind_contextvars(course_id=body.course_id, student_id=student_id)
    owner = key_owner(caller.role, caller.sub, student_id)
    try:
        try:
            limits = svc.limiter.limits(counted, request.method)
            accepted = await svc.intake.accept(
                counted.caller, owner, student_id, body.course_id, key, body.priority, limits
            )
        except UnknownCourse:
            if not await svc.db(_known_course, svc, body.course_id):
                raise
            # Counted once already: the limits are not taken again.
            accepted = await svc.intake.accept(counted.caller, owner, student_id, body.course_id, key, body.priority)
    except RateLimitReached as reached:
        REQUESTS_REFUSED.labels("rate_limited").inc()
        svc.limiter.refuse(counted, request.method, reached)
    except QUEUE_UNREACHABLE + DATABASE_UNREACHABLE:  # answered 503 by the app's handlers; counted here
        REQUESTS_REFUSED.labels("unavailable").inc()
        raise
    except UnknownCourse:  # answered 404 by the app's mapping of domain errors; counted here
        REQUESTS_REFUSED.labels("unknown_course").inc()
        raise
    except IdempotencyKeyReused:  # answered 409
        REQUESTS_REFUSED.labels("idempotency_conflict").inc()
        raise
    except TooManyPending:  # answered 429, without Retry-After: a place frees when one is decided
        REQUESTS_REFUSED.labels("pending_limit").inc()
        raise
    structlog.contextvars.bind_contextvars(request_id=accepted.request_id)
    counted_as = REQUESTS_ACCEPTED if accepted.outcome == "queued" else REQUESTS_REPLAYED
    if accepted.queue_position is not None:
        counted_as.inc()
        return JSON(
            Queued(request_id=accepted.request_id, status="queued", queue_position=accepted.queue_position), 202
        )
    # A replay of a request that is already decided: answer with its outcome.
    answer = await status.owned(svc, caller, accepted.request_id)
    counted_as.inc()
    return JSON(answer)


async def _count_refused(svc: Services, counted: Subject, method: str) -> None:
    try:
        await svc.limiter.hit(counted, method)
    except RateLimited:
        REQUESTS_REFUSED.labels("rate_limited").inc()
        raise


async def _enrollment(request: Request, caller: Principal) -> tuple[int, Enrollment, str]:
    """The body, checked: whose request it is, and the idempotency key from the body or the header."""
    body = await payloads.read(request, Enrollment)
    student_id = body.student_id if body.student_id is not None else caller.student_id
    if student_id is None:
        raise InvalidInput("student_id", "is required")
    if not caller.may_act_for(student_id):
        raise Forbidden(f"a student enrolls only themselves (student {caller.sub})", "student_id")
    if body.priority is not None and not caller.privileged:
        raise Forbidden("priority is granted by the registrar; a student cannot choose it", "priority")
    headers = [value for name, value in request.scope["headers"] if name == b"idempotency-key"]
    if len(headers) > 1:
        raise InvalidInput("Idempotency-Key", "is given more than once", status=400, location="header")
    return student_id, body, _idempotency_key(body.idempotency_key, headers[0] if headers else None)


def _idempotency_key(in_body: str | None, in_header: bytes | None) -> str:
    if in_header is None:
        if in_body is None:
            raise InvalidInput("idempotency_key", "is required (in the body or the Idempotency-Key header)")
        return payloads.idempotency_key(in_body, "idempotency_key", typed=True)
    try:  # HTTP carries header bytes; ours are UTF-8 like the body's
        from_header = in_header.decode("utf-8")
    except UnicodeError:
        raise InvalidInput("Idempotency-Key", "is not UTF-8", status=400, location="header") from None
    if in_body is not None and from_header != in_body:
        raise InvalidInput("idempotency_key", "differs from the Idempotency-Key header")
    return payloads.idempotency_key(from_header, "idempotency_key", typed=in_body is not None)


def _known_course(conn: store.Conn, svc: Services, course_id: int) -> bool:
    """PostgreSQL has the course but Redis lost its registration (e.g. a Redis restored empty): register it again."""
    if reads.course(conn, course_id) is None:
        return False
    svc.register_courses([course_id])
    return True


def _request_id(request: Request) -> str:
    return str(path_params(request, RequestPath).request_id)


@operation(
    summary="Follow a request",
    tag="enrollments",
    description="Pending with its queue place, or decided: granted, waitlisted (with its live place), rejected, "
    "dropped, left. A student sees only their own requests; another's is 404.",
    path=RequestPath,
    answers={200: EnrollmentStatus},
    problems=(404,),
)
async def show(request: Request) -> Response:
    return JSON(await status.owned(services(request), principal(request), _request_id(request)))


@operation(
    summary="Drop a seat or leave the waitlist",
    tag="enrollments",
    description="A granted seat goes to the head of the waitlist at once. Asking again answers the same status. "
    "Registrars and services see which requests were promoted.",
    path=RequestPath,
    answers={200: Released},
    problems=(404, 409),
)
async def release(request: Request) -> Response:
    request_id = _request_id(request)
    svc = services(request)
    caller = principal(request)
    if not caller.privileged:
        # Ownership first, under the same answer as an unknown id.
        await status.owned(svc, caller, request_id)
    try:
        released = await svc.db(lifecycle.release, request_id)
    except UnknownRequest:
        if await svc.intake.pending_position(request_id) is not None:
            raise NotDecided(
                "the request is still pending: it can be released once decided (when its course opens, if it has not)",
                "request_id",
            ) from None
        raise NotFound(f"no request {request_id}", "request_id") from None
    # Who was promoted is another student's business: privileged callers only.
    return JSON(
        Released(
            request_id=request_id, status=released.status, promoted=released.promoted if caller.privileged else None
        )
    )
