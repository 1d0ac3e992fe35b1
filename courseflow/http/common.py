"""What every endpoint shares: JSON answers and the connections of one API process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Concatenate, ParamSpec, TypeVar

import msgspec
import psycopg
import redis
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from courseflow.eventstore.store import Conn
from courseflow.http.auth import Authenticator
from courseflow.http.gate import principal
from courseflow.http.limits import Limiter
from courseflow.http.operations import path_params
from courseflow.http.payloads import StudentPath
from courseflow.http.problems import Forbidden
from courseflow.http.replica import ReadReplica, primary_position
from courseflow.intake import queue
from courseflow.intake.accept import Intake
from courseflow.platform import redis_clients
from courseflow.platform.coalesce import NotReplicated, Replicas
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from courseflow.platform.library import Grant

# What says a server is unreachable (not that a request was wrong): answered 503, with Retry-After.
# NotReplicated: queued, but not yet on enough replicas to survive a failover; the client retries.
# OutOfMemoryError (maxmemory reached) and ReadOnlyError (a master demoted in a failover): Redis is up but
# refuses writes, which a script refuses before writing anything; a retry later succeeds.
QUEUE_UNREACHABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    NotReplicated,
)
DATABASE_UNREACHABLE: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)

log = logging.getLogger("courseflow.api")

P = ParamSpec("P")
T = TypeVar("T")


class JSON(Response):
    """An answer: always one of the Structs in `views`, never a dict assembled in a handler."""

    media_type = "application/json"

    def __init__(self, view: msgspec.Struct, status_code: int = 200) -> None:
        super().__init__(_encoder.encode(view), status_code)

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        if headers is not None:
            super().init_headers(headers)
            return
        # No other headers, and a body always: its length, and a content type made once per process.
        self.raw_headers = [(b"content-length", str(len(self.body)).encode()), _CONTENT_TYPE]


_encoder = msgspec.json.Encoder()
_CONTENT_TYPE = (b"content-type", JSON.media_type.encode())


class Services:
    """The connections one API process shares across requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.queue.prefix, settings.queue.partitions)
        self.redis = redis_clients.connect_async(settings, max_connections=64)
        # For the rare Redis work done in the thread pool (registering courses, applying grants, readiness).
        self.redis_sync = redis_clients.connect(settings, max_connections=8)
        # PostgreSQL work is short and synchronous, run in the thread pool: one store module serves API and workers.
        self.pool = ConnectionPool(
            settings.postgres.url,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True},
            # A connection broken by a database restart is replaced, not handed out; waits are bounded.
            check=ConnectionPool.check_connection,
            timeout=5,
            open=False,
        )
        # Reads that may come from a streaming replica go through `read`; see courseflow.http.replica.
        self.replica = (
            None
            if settings.postgres.replica_url is None
            else ReadReplica(
                settings.postgres.replica_url, self.redis, self.keys.replica_horizon, settings.postgres.replica_wait_ms
            )
        )
        replicas = Replicas(settings.redis.wait_replicas, settings.redis.wait_timeout_ms)
        self.intake = Intake(
            self.redis, self.keys, settings.queue.idempotency_ttl_s, replicas, settings.queue.pending_per_student
        )
        self.authenticator = Authenticator(settings)
        self.limiter = Limiter(settings, self.redis)

    async def db(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """On the primary: changes, and reads that must see the newest state. With a replica, what was
        written or shown here raises the horizon replica reads must reach."""
        replica = self.replica

        def call() -> tuple[T, int | None]:
            with self.pool.connection() as conn:
                result = fn(conn, *args, **kwargs)
                if replica is None:
                    return result, None
                try:
                    return result, primary_position(conn)
                except psycopg.Error as exc:  # the answer stands; the replica sits out until its horizon is known
                    replica.skip(exc)
                    return result, None

        result, position = await run_in_threadpool(call)
        if replica is not None and position is not None:
            await replica.shown(position)
        return result

    async def upkeep(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """On the primary, for what no client reads back (readiness, background syncs): the horizon stays."""

        def call() -> T:
            with self.pool.connection() as conn:
                return fn(conn, *args, **kwargs)

        return await run_in_threadpool(call)

    async def read(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A read the replica may answer: never older than what was written or shown (else the primary answers)."""

        def call(conn: Conn) -> T:
            return fn(conn, *args, **kwargs)

        if self.replica is not None and (horizon := await self.replica.horizon()) is not None:
            answered = await run_in_threadpool(self.replica.read, horizon, call)
            if answered is not None:
                return answered.value
        return await self.db(fn, *args, **kwargs)

    async def shown_now(self) -> None:
        """What was just read on the primary outside `db` is shown: replica reads must reach at least it."""
        if self.replica is not None:
            await self.replica.shown(await run_in_threadpool(self._primary_position))

    async def bound_replica_lag(self, every_s: float) -> None:
        """Raise the horizon to the primary's position every `every_s`: no replica read is older than that."""
        assert self.replica is not None
        while True:
            try:
                position = await run_in_threadpool(self._primary_position)
                self.replica.caught_up_to(position)
            except DATABASE_UNREACHABLE as exc:
                log.debug("the primary's position is not known: %s", exc)
            await asyncio.sleep(every_s)

    def _primary_position(self) -> int:
        with self.pool.connection() as conn:
            return primary_position(conn)

    def register_courses(self, course_ids: list[int]) -> None:
        queue.register_courses(self.redis_sync, self.keys, course_ids)

    def grant_priorities(self, granted: list[Grant]) -> None:
        queue.grant_priorities(self.redis_sync, self.keys, granted)

    async def close(self) -> None:
        self.pool.close()
        if self.replica is not None:
            self.replica.close()
        await self.intake.aclose()
        await self.limiter.aclose()
        await redis_clients.aclose(self.redis)
        self.redis_sync.close()


def services(request: HTTPConnection) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def student_in_path(request: Request, what: str) -> int:
    """The student named in the path, whose `what` the caller may read only as them or acting for them (403)."""
    student_id = path_params(request, StudentPath).student_id
    if not principal(request).may_act_for(student_id):
        raise Forbidden(f"a student reads only their own {what}", "student_id")
    return student_id
