"""Liveness and readiness, naming the dependency that fails."""

from __future__ import annotations

import psycopg
import redis
from psycopg_pool import PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from courseflow.eventstore import migrations
from courseflow.http.common import JSON, services
from courseflow.http.operations import operation
from courseflow.http.replica import primary_position
from courseflow.http.views import Health, Readiness
from courseflow.intake import queue


@operation(summary="Liveness: the process answers", tag="monitoring", answers={200: Health}, public=True)
async def alive(_: Request) -> Response:
    return JSON(Health(status="ok"))


@operation(
    summary="Readiness: PostgreSQL, migrations and Redis",
    tag="monitoring",
    description="503 names the failing dependency in `failing`; `auth` says whether tokens are required. "
    "With a read replica configured, `checks.replica` says how it is doing; it never fails readiness, as "
    "reads it cannot answer go to the primary.",
    answers={200: Readiness, 503: Readiness},
    public=True,
)
async def ready(request: Request) -> Response:
    """PostgreSQL reachable with migrations current, Redis reachable with every partition's consumer group in place.

    The API creates the group itself (idempotent), so it is ready with or without a worker running.
    """
    svc = services(request)
    checks: dict[str, str] = {}
    primary: int | None = None
    try:
        pending = await svc.upkeep(migrations.pending_migrations)
        checks["postgres"] = "ok"
        checks["migrations"] = "ok" if not pending else f"not applied: {', '.join(pending)}"
        if svc.replica is not None:
            primary = await svc.upkeep(primary_position)
    except (psycopg.Error, PoolTimeout) as exc:
        checks["postgres"] = f"unreachable: {type(exc).__name__}"
    try:
        await run_in_threadpool(queue.ensure_groups, svc.redis_sync, svc.keys)
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    failing = sorted(name for name, state in checks.items() if state != "ok")
    if svc.replica is not None:
        checks["replica"] = await run_in_threadpool(svc.replica.state, primary)
    body = Readiness(
        status="unavailable" if failing else "ready",
        checks=checks,
        failing=failing,
        auth="on" if svc.authenticator.enabled else "off",
    )
    return JSON(body, 503 if failing else 200)
