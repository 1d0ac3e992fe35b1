"""Enrollment requests: accept, follow, release."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from courseflow import lifecycle, payloads, store
from courseflow.api.common import JSON, Services, error, not_found, services
from courseflow.payloads import InvalidInput
from projections import queries


async def enroll(request: Request) -> Response:
    body = payloads.enrollment(await request.body(), request.headers.get("idempotency-key"))
    svc = services(request)
    accepted = await svc.intake.accept(body.student_id, body.course_id, body.idempotency_key, body.priority)
    if accepted.outcome == "unknown_course":
        return not_found("course", "course_id", body.course_id)
    if accepted.outcome == "conflict":
        return error(
            409,
            "idempotency_conflict",
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
    return await _status(svc, accepted.request_id)


def _request_id(request: Request) -> str:
    raw = request.path_params["request_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidInput("request_id", f"must be a UUID, got {raw!r}") from None


async def status(request: Request) -> Response:
    return await _status(services(request), _request_id(request))


async def _status(svc: Services, request_id: str) -> Response:
    projected = await svc.db(queries.enrollment, request_id)
    if projected is not None and projected["status"] != "pending":
        return JSON(_present(projected))
    pending = await svc.intake.pending_position(request_id)
    if pending is not None:
        req, position = pending
        return JSON(
            {
                "request_id": request_id,
                "course_id": req.course_id,
                "student_id": req.student_id,
                "priority": req.priority,
                "status": "pending",
                "queue_position": position,
                "requested_at": req.requested_at,
            }
        )
    # Decided a moment ago and not projected yet: the write model has it.
    decided = await svc.db(store.request, request_id)
    if decided is not None:
        return JSON(_present(decided))
    return not_found("request", "request_id", request_id)


def _present(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if v is not None}


async def release(request: Request) -> Response:
    """DELETE: drop a granted seat (its waitlist head is promoted at once) or leave the waitlist."""
    request_id = _request_id(request)
    svc = services(request)
    try:
        new_status, promoted = await svc.db(lifecycle.release, request_id)
    except lifecycle.NotFound:
        if await svc.intake.pending_position(request_id) is not None:
            return error(409, "not_decided", "the request is not decided yet; try again shortly", "request_id")
        return not_found("request", "request_id", request_id)
    except lifecycle.Conflict as exc:
        return error(409, "nothing_to_release", str(exc), "request_id")
    return JSON({"request_id": request_id, "status": new_status, "promoted": promoted})
