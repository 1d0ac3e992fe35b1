"""Courses: create, read, change capacity and registration window, waitlist, metrics."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from courseflow import lifecycle, payloads, store
from courseflow.api.common import JSON, Services, error, not_found, services
from projections import queries


def _course_id(request: Request) -> int:
    return payloads.positive_id(request.path_params["course_id"], "course_id")


async def create(request: Request) -> Response:
    body = payloads.new_course(await request.body())
    svc = services(request)
    created = await svc.db(
        store.create_course, body.course_id, body.title, body.capacity, body.opens_at, body.closes_at
    )
    # Also on 409: the course exists in PostgreSQL, so intake must know it.
    await svc.intake.register_courses([body.course_id])
    if not created:
        return error(409, "course_exists", f"course {body.course_id} already exists", "course_id")
    view = msgspec.structs.asdict(body) | {"seats_taken": 0, "waitlist_length": 0, "pending": 0}
    return JSON(view, 201)


async def show(request: Request) -> Response:
    course_id = _course_id(request)
    svc = services(request)
    rows = await svc.db(queries.courses, course_id)
    if not rows:
        return not_found("course", "course_id", course_id)
    return JSON(await _view(svc, rows[0]))


async def _view(svc: Services, row: dict[str, Any]) -> dict[str, Any]:
    counters = ("requested", "granted", "waitlisted", "rejected", "dropped", "left_waitlist", "promoted")
    view = {k: v for k, v in row.items() if k not in counters}
    return view | {"pending": await svc.intake.queue_depth(row["course_id"]), "counters": {k: row[k] for k in counters}}


async def update(request: Request) -> Response:
    """PATCH capacity and/or the registration window."""
    course_id = _course_id(request)
    patch = payloads.course_patch(await request.body())
    svc = services(request)
    try:
        state, promoted = await svc.db(lifecycle.update_course, course_id, patch)
    except lifecycle.NotFound:
        return not_found("course", "course_id", course_id)
    except lifecycle.Conflict as exc:
        return error(422, "invalid_input", str(exc), "closes_at")
    view = {
        "course_id": course_id,
        "capacity": state.capacity,
        "seats_taken": state.seats_taken,
        "waitlist_length": state.waitlist_length,
        "opens_at": state.opens_at,
        "closes_at": state.closes_at,
    }
    return JSON(view | {"promoted": promoted})


async def waitlist(request: Request) -> Response:
    course_id = _course_id(request)
    page = payloads.page(request.query_params)
    svc = services(request)
    if not await svc.db(queries.courses, course_id):
        return not_found("course", "course_id", course_id)
    return JSON({"course_id": course_id, "waitlist": await svc.db(queries.waitlist, course_id, page.limit, page.after)})


async def metrics(request: Request) -> Response:
    svc = services(request)
    raw = request.query_params.get("course_id")
    course_id = None if raw is None else payloads.positive_id(raw, "course_id")
    rows = await svc.db(queries.courses, course_id)
    if course_id is not None and not rows:
        return not_found("course", "course_id", course_id)
    per_course: list[dict[str, Any]] = [
        {
            "course_id": row["course_id"],
            "queue_depth": await svc.intake.queue_depth(row["course_id"]),
            "seats_taken": row["seats_taken"],
            "capacity": row["capacity"],
            "waitlist_length": row["waitlist_length"],
            "status": "open" if row["seats_taken"] < row["capacity"] else "full",
        }
        for row in rows
    ]
    if course_id is not None:
        return JSON(per_course[0])
    totals = {k: sum(c[k] for c in per_course) for k in ("queue_depth", "seats_taken", "capacity", "waitlist_length")}
    status = "open" if any(c["status"] == "open" for c in per_course) else "full"
    pipeline = {"dead_letters": await svc.intake.dead_letter_count(), "projection_lag": await svc.db(queries.lag)}
    return JSON(totals | {"status": status} | pipeline | {"courses": per_course})
