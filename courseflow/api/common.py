"""What every endpoint shares: JSON answers, errors, the connections of one API process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec
import redis.asyncio as aioredis
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from courseflow.config import Settings
from courseflow.intake import Intake
from courseflow.queue import Keys
from courseflow.store import Conn

P = ParamSpec("P")
T = TypeVar("T")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def error(status: int, code: str, detail: str, field: str | None = None, **extra: Any) -> JSON:
    body = {"error": code, "detail": detail, **({"field": field} if field else {}), **extra}
    return JSON(body, status_code=status)


def not_found(what: str, field: str, value: object) -> JSON:
    return error(404, f"{what}_not_found", f"no {what.replace('_', ' ')} {value}", field)


class Services:
    """The connections one API process shares across requests."""

    def __init__(self, settings: Settings) -> None:
        self.redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=64, timeout=5)
        )
        # PostgreSQL work is short and synchronous, run in the thread pool: one store module serves API and workers.
        self.pool = ConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True},
            # A connection broken by a database restart is replaced, not handed out; waits are bounded.
            check=ConnectionPool.check_connection,
            timeout=5,
            open=False,
        )
        self.intake = Intake(self.redis, Keys(settings.stream_prefix), settings.idempotency_ttl_s)

    async def db(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        def call() -> T:
            with self.pool.connection() as conn:
                return fn(conn, *args, **kwargs)

        return await run_in_threadpool(call)


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]
