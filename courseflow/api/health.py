"""Liveness and readiness, naming the dependency that fails."""

from __future__ import annotations

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from courseflow import migrations
from courseflow.api.common import JSON, services
from courseflow.queue import GROUP


async def alive(_: Request) -> Response:
    return JSON({"status": "ok"})


async def ready(request: Request) -> Response:
    """PostgreSQL reachable, migrations current, Redis reachable, consumer group present."""
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        pending = await svc.db(migrations.pending_migrations)
        checks["postgres"] = "ok"
        checks["migrations"] = "ok" if not pending else f"not applied: {', '.join(pending)}"
    except (psycopg.Error, PoolTimeout) as exc:
        checks["postgres"] = f"unreachable: {exc}"
    try:
        groups = await svc.redis.xinfo_groups(svc.intake.keys.requests)
        checks["redis"] = "ok"
        present = any(g["name"] in (GROUP, GROUP.encode()) for g in groups)
        checks["consumer_group"] = "ok" if present else f"missing: no group {GROUP!r} (no worker has started)"
    except aioredis.ResponseError:
        checks["redis"] = "ok"
        checks["consumer_group"] = f"missing: no stream {svc.intake.keys.requests!r} (no worker has started)"
    except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
        checks["redis"] = f"unreachable: {exc}"
    failing = sorted(name for name, state in checks.items() if state != "ok")
    body = {"status": "unavailable" if failing else "ready", "checks": checks, "failing": failing}
    return JSON(body, 503 if failing else 200)
