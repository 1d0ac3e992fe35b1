"""A student's granted priority: set by a registrar, applied by intake to the student's later requests."""

from __future__ import annotations

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from courseflow.eventstore import priorities, store
from courseflow.http import payloads, views
from courseflow.http.common import JSON, services, student_in_path
from courseflow.http.gate import principal
from courseflow.http.operations import operation, path_params
from courseflow.http.payloads import PriorityGrant, StudentPath
from courseflow.http.problems import Unavailable


@operation(
    summary="Grant a student a priority",
    tag="students",
    description="Registrars only. The student's later requests take it (0 to 100, higher first); recorded as an "
    "event in the student's history.",
    path=StudentPath,
    body=PriorityGrant,
    example=PriorityGrant(priority=10),
    answers={200: views.StudentPriority},
    problems=(403,),
)
async def set_priority(request: Request) -> Response:
    caller = principal(request)
    caller.require("registrar")
    student_id = path_params(request, StudentPath).student_id
    body = await payloads.read(request, PriorityGrant)
    svc = services(request)

    def grant(conn: store.Conn) -> priorities.Granted:
        with conn.transaction(), conn.cursor() as cur:
            return priorities.grant(cur, student_id, body.priority, actor=f"{caller.role}:{caller.sub}")

    granted = await svc.db(grant)
    # After COMMIT: intake never applies a priority the record does not hold. Should Redis fail here, every
    # API process re-applies recent grants every few seconds (`_keep_priorities_applied` in courseflow.http.app),
    # newest version wins.
    try:
        await run_in_threadpool(svc.grant_priorities, [(student_id, granted.priority, granted.version)])
    except redis.RedisError:
        raise Unavailable(
            "the priority is recorded; intake applies it within seconds of Redis being reachable again"
        ) from None
    return JSON(views.StudentPriority(student_id=student_id, priority=granted.priority, previous=granted.previous))


@operation(
    summary="A student's granted priority",
    tag="students",
    description="A student reads only their own.",
    path=StudentPath,
    answers={200: views.StudentPriority},
    problems=(403,),
)
async def show_priority(request: Request) -> Response:
    student_id = student_in_path(request, "priority")
    priority = await services(request).read(priorities.of, student_id)
    return JSON(views.StudentPriority(student_id=student_id, priority=priority))
