"""Rate limits per principal, kept in Redis by the `limits` library so every API process shares them.

A student's writes and reads are limited apart (a student polling status does not lose the right to
enroll); registrars and services have their own, higher limits. Each principal has its own counters,
so a student who is limited never slows another.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal, NoReturn

import msgspec
import redis.asyncio as aioredis
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from courseflow.auth import Principal, Role
from courseflow.coalesce import CoalescedClient
from courseflow.config import Settings
from courseflow.memo import Memo
from courseflow.metrics import RATE_LIMITED
from courseflow.problems import RateLimited

log = logging.getLogger("courseflow.ratelimit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_QUOTA_CACHE_SIZE = 20_000


class Policy:
    """One named set of limits, e.g. `student-writes` = 20 per 2 seconds."""

    def __init__(self, name: str, notation: str) -> None:
        self.name = name
        self.items: list[RateLimitItem] = [] if notation.strip().lower() == "off" else _parse(name, notation)
        # draft-ietf-httpapi-ratelimit-headers: each limit a unique name, its quota `q` per window `w` seconds.
        self.names = [name if len(self.items) == 1 else f"{name}-{n}" for n in range(1, len(self.items) + 1)]
        limits = zip(self.names, self.items, strict=True)
        self.header = ", ".join(f'"{n}";q={i.amount};w={i.get_expiry()}' for n, i in limits)


def _parse(name: str, notation: str) -> list[RateLimitItem]:
    try:
        return parse_many(notation)
    except ValueError:
        env = f"RATE_LIMIT_{name.upper().replace('-', '_')}"
        raise SystemExit(
            f"configuration error: {env} must look like '20 per 2 seconds' or 'off', got {notation!r}"
        ) from None


class Subject(msgspec.Struct, frozen=True):
    """Whose counters a request takes: the principal's, or a client address's (development mode, and
    callers without a valid token)."""

    role: Role | Literal["anonymous"]
    name: str


def subject(principal: Principal, anonymous_client: str | None = None) -> Subject:
    return Subject(principal.role, principal.sub if anonymous_client is None else f"address:{anonymous_client}")


def anonymous(client_address: str) -> Subject:
    return Subject("anonymous", f"address:{client_address}")


class Quota(msgspec.Struct, frozen=True):
    """One policy's sliding-window keys and (limit, expiry, amount) arguments, for a script that hits it itself."""

    keys: list[str]
    args: list[int]


# The library's own sliding-window script as a Lua function, so the intake script can take the limit in its
# own round trip: a write costs one trip to Redis, not two. Same keys, same algorithm as `Limiter.hit`.
ACQUIRE_LUA = (
    f"local function acquire_sliding_window(KEYS, ARGV)\n{RedispyBridge.SCRIPT_ACQUIRE_SLIDING_WINDOW.decode()}\nend\n"
)


def key_prefix(stream_prefix: str) -> str:
    # The hash tag first: the limits' keys share the intake script's slot, so it runs unchanged on Redis Cluster.
    return f"{{{stream_prefix}}}:ratelimit"


class Limiter:
    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        # A student's reads and writes are limited apart; every other caller has one policy for both.
        self._student = {
            False: Policy("student-reads", settings.rate_limit_student_reads),
            True: Policy("student-writes", settings.rate_limit_student_writes),
        }
        self._others = {
            "registrar": Policy("registrar", settings.rate_limit_registrar),
            "service": Policy("service", settings.rate_limit_service),
            "anonymous": Policy("anonymous", settings.rate_limit_anonymous),
        }
        # Shares the API's connection pool: no extra connections, and the same credentials.
        self._storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=key_prefix(settings.stream_prefix),
            connection_pool=client.connection_pool,  # type: ignore[arg-type]  # typed as scalars, passed through
        )
        # Every request hits the limiter: concurrent hits share one pipeline instead of a round trip each.
        self._bridge = self._storage.bridge
        assert isinstance(self._bridge, RedispyBridge)
        self._bridge.storage = CoalescedClient(client.connection_pool)
        self._bridge.register_scripts()
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._storage_down_logged = 0.0
        # A crowd's students write again and again: their key names are built once.
        self._quotas: Memo[tuple[Subject, bool], Quota] = Memo(_QUOTA_CACHE_SIZE)

    def _policy(self, who: Subject, method: str) -> Policy:
        return self._student[method in WRITE_METHODS] if who.role == "student" else self._others[who.role]

    async def hit(self, who: Subject, method: str) -> None:
        """Count one request; raises RateLimited (429) when `who` is over a limit."""
        policy = self._policy(who, method)
        for index, item in enumerate(policy.items):
            try:
                allowed = await self._limiter.hit(item, policy.name, who.role, who.name)
            except aioredis.RedisError as exc:
                # Fail open: with Redis down, writes fail at intake anyway and reads are answered from PostgreSQL.
                self._log_storage_down(exc)
                return
            if not allowed:
                await self.refuse(who, method, index)

    def quota(self, who: Subject, method: str) -> Quota:
        """The keys and arguments with which a script takes one request from `who`'s limits (see ACQUIRE_LUA)."""
        write = method in WRITE_METHODS
        known = self._quotas.get((who, write))
        return known if known is not None else self._quotas.put((who, write), self._build_quota(who, method))

    def _build_quota(self, who: Subject, method: str) -> Quota:
        policy = self._policy(who, method)
        keys: list[str] = []
        args: list[int] = []
        for item in policy.items:
            key = item.key_for(policy.name, who.role, who.name)  # as the strategy names it
            keys += [
                self._bridge.prefixed_key(self._storage._previous_window_key(key)),
                self._bridge.prefixed_key(self._storage._current_window_key(key)),
            ]
            args += [item.amount, item.get_expiry(), 1]
        return Quota(keys, args)

    async def refuse(self, who: Subject, method: str, index: int) -> NoReturn:
        """Raise the 429 for `who` being over the policy's limit number `index`, with when to retry."""
        RATE_LIMITED.labels(who.role).inc()
        policy = self._policy(who, method)
        item = policy.items[index]
        try:
            stats = await self._limiter.get_window_stats(item, policy.name, who.role, who.name)
            wait = max(1, math.ceil(stats.reset_time - time.time()))
        except aioredis.RedisError:
            wait = item.get_expiry()  # the whole window: never sooner than the limit allows
        raise RateLimited(
            f"too many requests: the {policy.name} limit is {item.amount} per {item.get_expiry()} s; retry in {wait} s",
            headers={
                "Retry-After": str(wait),
                "RateLimit-Policy": policy.header,
                "RateLimit": f'"{policy.names[index]}";r=0;t={wait}',
            },
        )

    def _log_storage_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._storage_down_logged > 10:
            self._storage_down_logged = now
            log.warning("rate limits not enforced: Redis is unreachable (%s)", type(exc).__name__)
