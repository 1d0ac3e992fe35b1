"""Reads from a streaming replica that never go back in time.

The horizon is the newest primary WAL position whose state the API has written or shown: a change it
committed there, or an answer it read there. Each API process raises it after every primary call and
shares it through Redis with the other API processes; each also raises its own to the primary's current
position every half REPLICA_MAX_LAG_MS. The replica answers a read only once it has replayed past the
horizon (waiting up to REPLICA_WAIT_MS for that), and otherwise the primary does. So an answer is never
older than one any API process already gave, a change shows in every read after its own answer, and no
replica read is more than about REPLICA_MAX_LAG_MS behind the primary. A replica that is unreachable, is
not a standby or does not catch up is skipped, never a reason to fail a read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec
import psycopg
import redis
from psycopg_pool import ConnectionPool, PoolTimeout

from courseflow.eventstore.store import Conn
from courseflow.platform.functions import AsyncFunctions
from courseflow.platform.library import RaiseHorizon
from courseflow.platform.redis_clients import AsyncRedis

log = logging.getLogger("courseflow.api")

T = TypeVar("T")

# WAL positions as byte offsets (pg_lsn minus 0/0): plain integers, in Python, SQL and Redis alike.
PRIMARY_POSITION = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
_REPLAYED = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
# An unreachable replica is tried again after this long, and one that did not catch up in time is not
# waited for again before: reads go straight to the primary meanwhile.
_RETRY_S = 2.0
_CONNECTION_WAIT_S = 0.5
_POLL_S = 0.005


class Answered(msgspec.Struct, Generic[T]):
    """What the replica answered (which may itself be None: nothing found)."""

    value: T


def primary_position(conn: Conn) -> int:
    row = conn.execute(PRIMARY_POSITION).fetchone()
    assert row is not None
    return int(row[0])


class ReadReplica:
    """The replica's pool and the horizon of one API process."""

    def __init__(self, url: str, redis_client: AsyncRedis, horizon_key: str, wait_ms: int) -> None:
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True, "application_name": "courseflow-api-replica"},
            check=ConnectionPool.check_connection,
            timeout=_CONNECTION_WAIT_S,
            open=False,
        )
        self._functions = AsyncFunctions(redis_client)
        self._redis = redis_client
        self._key = horizon_key
        self._wait_s = wait_ms / 1000
        # Newest position this process knows was shown: by itself (either server) or, through Redis, by others.
        self._known = 0
        self._lock = threading.Lock()
        # Newest position every process knows of: the shared horizon as last raised or read.
        self._shared = 0
        self._skip_until = 0.0
        # A wait ran out: until then reads do not wait for the replica (one that has caught up is waited for again).
        self._no_wait_until = 0.0

    async def shown(self, position: int) -> None:
        """The primary's state at `position` was written or shown: no later read may show less."""
        self._raise_known(position)
        if position <= self._shared:
            return
        try:
            # Only ever forward, whichever API process raises it.
            await self._functions(RaiseHorizon(self._key, position))
            self._shared = max(self._shared, position)
        except redis.RedisError as exc:
            # Readers elsewhere cannot see the horizon either, and read from the primary meanwhile.
            log.debug("replica horizon not shared: %s", exc)

    def caught_up_to(self, position: int) -> None:
        """The primary had reached `position` a moment ago: the replica must have too (the lag bound)."""
        self._raise_known(position)

    def _raise_known(self, position: int) -> None:
        with self._lock:  # raised from the event loop and from reads in the thread pool
            self._known = max(self._known, position)

    async def horizon(self) -> int | None:
        """The horizon a replica read must reach, or None when it cannot be known (Redis unreachable)."""
        try:
            shared = await self._redis.get(self._key)
        except redis.RedisError:
            return None
        self._shared = max(self._shared, int(shared or 0))
        return max(self._known, self._shared)

    def read(self, horizon: int, fn: Callable[[Conn], T]) -> Answered[T] | None:
        """`fn`'s answer from the replica once it has replayed up to `horizon`; None: ask the primary."""
        if time.monotonic() < self._skip_until:
            return None
        try:
            with self.pool.connection() as conn:
                try:
                    if not self._replayed(conn, horizon):
                        return None
                    return Answered(fn(conn))
                except psycopg.Error as exc:
                    # A query cancelled by a conflict with recovery is the replica's business: the primary answers.
                    if conn.broken:
                        self.skip(exc)
                    else:
                        log.info("the replica did not answer a read (%s); the primary does", exc)
                    return None
        except (PoolTimeout, psycopg.OperationalError) as exc:
            self.skip(exc)
            return None

    def _replayed(self, conn: Conn, horizon: int) -> bool:
        waits = time.monotonic() >= self._no_wait_until
        deadline = time.monotonic() + (self._wait_s if waits else 0.0)
        while True:
            row = conn.execute(_REPLAYED).fetchone()
            replayed = None if row is None or row[0] is None else int(row[0])
            if replayed is None:
                self.skip(RuntimeError("DATABASE_REPLICA_URL names a server that is not a standby"))
                return False
            if replayed >= horizon:
                self._no_wait_until = 0.0
                # What this answer shows: a replica restarted behind it must not be read until it catches up.
                self._raise_known(replayed)
                return True
            if time.monotonic() >= deadline:
                if waits:
                    log.info("the replica is %d bytes of WAL behind; reads go to the primary", horizon - replayed)
                    self._no_wait_until = time.monotonic() + _RETRY_S
                return False
            time.sleep(_POLL_S)

    def skip(self, exc: Exception) -> None:
        if time.monotonic() >= self._skip_until:
            log.warning("the replica is unusable (%s); reads go to the primary for %.0fs", exc, _RETRY_S)
        self._skip_until = time.monotonic() + _RETRY_S

    def state(self, primary: int | None) -> str:
        """For /ready: how far the replica has replayed, against the primary's position if known."""
        try:
            with self.pool.connection(timeout=_CONNECTION_WAIT_S) as conn:
                row = conn.execute(_REPLAYED).fetchone()
        except (PoolTimeout, psycopg.Error) as exc:
            return f"unreachable: {type(exc).__name__}; reads go to the primary"
        if row is None or row[0] is None:
            return "not a standby; reads go to the primary"
        behind = 0 if primary is None else max(0, primary - int(row[0]))
        return "ok" if behind == 0 else f"ok, {behind} bytes of WAL behind the primary"

    def close(self) -> None:
        self.pool.close()
