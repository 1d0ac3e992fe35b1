"""A student's granted priority: set by a registrar, applied by intake to the student's later requests."""

from __future__ import annotations

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from courseflow import payloads, priorities, store
from courseflow.api.common import JSON, services, student_in_path
from courseflow.api.gate import principal
from courseflow.payloads import StudentPriority
from courseflow.problems import Unavailable


async def set_priority(request: Request) -> Response:
    caller = principal(request)
    caller.require("registrar")
    student_id = payloads.positive_id(request.path_params["student_id"], "student_id")
    body = await payloads.read(request, StudentPriority)
    svc = services(request)

    def grant(conn: store.Conn) -> priorities.Granted:
        with conn.transaction(), conn.cursor() as cur:
            return priorities.grant(cur, student_id, body.priority, actor=f"{caller.role}:{caller.sub}")

    granted = await svc.db(grant)
    # After COMMIT: intake never applies a priority the record does not hold. Should Redis fail here, every
    # API process re-applies recent grants every few seconds (api._keep_priorities_applied), newest version wins.
    try:
        await run_in_threadpool(svc.grant_priorities, [(student_id, granted.priority, granted.version)])
    except redis.RedisError:
        raise Unavailable(
            "the priority is recorded; intake applies it within seconds of Redis being reachable again"
        ) from None
    return JSON({"student_id": student_id, "priority": granted.priority, "previous": granted.previous})


async def show_priority(request: Request) -> Response:
    student_id = student_in_path(request, "priority")
    priority = await services(request).db(priorities.of, student_id)
    return JSON({"student_id": student_id, "priority": priority})
