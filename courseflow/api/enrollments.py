"""Enrollment requests: accept, follow, release — each caller only their own, unless privileged."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from courseflow import lifecycle, payloads, store
from courseflow.api.common import JSON, Services, services
from courseflow.api.gate import principal, rate_subject
from courseflow.auth import Principal
from courseflow.payloads import Enrollment
from courseflow.problems import Forbidden, IdempotencyConflict, InvalidInput, NotDecided, NotFound, Problem
from projections import queries


async def enroll(request: Request) -> Response:
    svc = services(request)
    caller, counted = principal(request), rate_subject(request)
    try:
        student_id, body, key = await _enrollment(request, caller)
    except Problem:
        # A refused request counts against the caller's limits too (accepted ones count in the intake script).
        await svc.limiter.hit(counted, request.method)
        raise
    quota = svc.limiter.quota(counted, request.method)
    accepted = await svc.intake.accept(caller, student_id, body.course_id, key, body.priority, quota)
    if accepted.outcome == "rate_limited":
        await svc.limiter.refuse(counted, request.method, accepted.limit_index)
    if accepted.outcome == "unknown_course" and await svc.db(_known_course, svc, body.course_id):
        accepted = await svc.intake.accept(caller, student_id, body.course_id, key, body.priority)
    if accepted.outcome == "unknown_course":
        raise NotFound(f"no course {body.course_id}", "course_id")
    if accepted.outcome == "conflict":
        raise IdempotencyConflict(
            "this idempotency_key was already used by this student with a different body",
            "idempotency_key",
            request_id=accepted.request_id,
        )
    if accepted.queue_position is not None:
        return JSON(
            {"request_id": accepted.request_id, "status": "queued", "queue_position": accepted.queue_position}, 202
        )
    # A replay of a request that is already decided: answer with its outcome.
    assert accepted.request_id is not None
    return JSON(await _status(svc, accepted.request_id))


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
    headers = request.headers.getlist("idempotency-key")
    if len(headers) > 1:
        raise InvalidInput("Idempotency-Key", "is given more than once", status=400)
    return student_id, body, _idempotency_key(body.idempotency_key, headers[0] if headers else None)


def _idempotency_key(in_body: str | None, in_header: str | None) -> str:
    if in_header is not None:
        try:  # HTTP carries header bytes; ours are UTF-8 like the body's
            in_header = in_header.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise InvalidInput("Idempotency-Key", "is not UTF-8", status=400) from None
        if in_body is not None and in_header != in_body:
            raise InvalidInput("idempotency_key", "differs from the Idempotency-Key header")
    key = in_body if in_body is not None else in_header
    if key is None:
        raise InvalidInput("idempotency_key", "is required (in the body or the Idempotency-Key header)")
    return payloads.idempotency_key(key, "idempotency_key")


def _known_course(conn: store.Conn, svc: Services, course_id: int) -> bool:
    """PostgreSQL has the course but Redis lost its registration (e.g. a Redis restored empty): register it again."""
    if store.course(conn, course_id) is None:
        return False
    svc.register_courses([course_id])
    return True


def _request_id(request: Request) -> str:
    raw: str = request.path_params["request_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidInput("request_id", f"must be a UUID, got {raw[:40]!r}") from None


async def status(request: Request) -> Response:
    request_id = _request_id(request)
    found = await _status(services(request), request_id)
    _owned(principal(request), found["student_id"], request_id)
    return JSON(found)


def _owned(caller: Principal, student_id: int, request_id: str) -> None:
    # Another student's request is answered as if it did not exist: its id reveals nothing.
    if not caller.may_act_for(student_id):
        raise NotFound(f"no request {request_id}", "request_id")


async def _status(svc: Services, request_id: str) -> dict[str, Any]:
    projected = await svc.db(queries.enrollment, request_id)
    if projected is not None and projected["status"] != "pending":
        return _present(projected)
    pending = await svc.intake.pending_position(request_id)
    if pending is not None:
        req, position = pending
        return {
            "request_id": request_id,
            "course_id": req.course_id,
            "student_id": req.student_id,
            "priority": req.priority,
            "status": "pending",
            "queue_position": position,
            "requested_at": req.requested_at,
        }
    # Decided a moment ago and not projected yet: the write model has it.
    decided = await svc.db(store.request, request_id)
    if decided is not None:
        return _present(decided)
    raise NotFound(f"no request {request_id}", "request_id")


def _present(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}


async def release(request: Request) -> Response:
    """DELETE: drop a granted seat (its waitlist head is promoted at once) or leave the waitlist."""
    request_id = _request_id(request)
    svc = services(request)
    caller = principal(request)
    if not caller.privileged:
        # Ownership first, under the same answer as an unknown id.
        _owned(caller, (await _status(svc, request_id))["student_id"], request_id)
    try:
        new_status, promoted = await svc.db(lifecycle.release, request_id)
    except lifecycle.NotFound:
        if await svc.intake.pending_position(request_id) is not None:
            raise NotDecided("the request is not decided yet; try again shortly", "request_id") from None
        raise NotFound(f"no request {request_id}", "request_id") from None
    answer: dict[str, object] = {"request_id": request_id, "status": new_status}
    # Who was promoted is another student's business: privileged callers only.
    return JSON(answer | {"promoted": promoted} if caller.privileged else answer)
