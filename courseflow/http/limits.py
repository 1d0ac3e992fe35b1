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

from courseflow.http.auth import Principal, Role
from courseflow.http.problems import RateLimited
from courseflow.platform.coalesce import CoalescedClient
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from courseflow.platform.memo import Memo
from courseflow.platform.metrics import RATE_LIMITED
from courseflow.platform.redis_clients import AsyncRedis

log = logging.getLogger("courseflow.ratelimit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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


class Window(msgspec.Struct, frozen=True):
    """One limit's counters, named as the `limits` library names them, for a script that takes a hit in its own
    round trip (`ACQUIRE_WINDOW_LUA`)."""

    previous: str
    current: str
    amount: int
    expiry_s: int


# The library's own sliding-window script, as a Lua function `acquire_window({previous, current}, {amount,
# expiry, cost})` returning whether the hit was taken: the same counters and the same rule, in another script.
ACQUIRE_WINDOW_LUA = (
    "local function acquire_window(KEYS, ARGV)\n" + RedispyBridge.SCRIPT_ACQUIRE_SLIDING_WINDOW.decode() + "\nend\n"
)


class Limiter:
    def __init__(self, settings: Settings, client: AsyncRedis) -> None:
        # A student's reads and writes are limited apart; every other caller has one policy for both.
        self._student = {
            False: Policy("student-reads", settings.limits.student_reads),
            True: Policy("student-writes", settings.limits.student_writes),
        }
        self._others = {
            "registrar": Policy("registrar", settings.limits.registrar),
            "service": Policy("service", settings.limits.service),
            "anonymous": Policy("anonymous", settings.limits.anonymous),
        }
        # The library's storage, with the API's client in place of its own: no extra connections, the same
        # credentials, and the cluster client when there is one (see Keys.rate_limits).
        self._storage = RedisStorage(
            "async+redis://", implementation="redispy", key_prefix=Keys(settings.queue.prefix).rate_limits
        )
        self._bridge = self._storage.bridge
        assert isinstance(self._bridge, RedispyBridge)
        # Every request hits the limiter: concurrent hits share one pipeline instead of a round trip each.
        self._bridge.storage = CoalescedClient(client.connection_pool) if isinstance(client, aioredis.Redis) else client
        self._bridge.register_scripts()
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._storage_down_logged = 0.0
        self._windows: Memo[tuple[Subject, bool], tuple[Window, ...]] = Memo(20_000)

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

    def windows(self, who: Subject, method: str) -> tuple[Window, ...]:
        """The counters a hit by `who` takes, in the policy's order, for a script to take it (see `Window`)."""
        writes = method in WRITE_METHODS
        found = self._windows.get((who, writes))
        if found is None:
            policy = self._policy(who, method)
            keys = [item.key_for(policy.name, who.role, who.name) for item in policy.items]
            named = self._bridge.prefixed_key
            found = self._windows.put(
                (who, writes),
                tuple(
                    # The storage's own names for a sliding window's two counters, under its prefix.
                    Window(
                        named(self._storage._previous_window_key(key)),
                        named(self._storage._current_window_key(key)),
                        item.amount,
                        item.get_expiry(),
                    )
                    for key, item in zip(keys, policy.items, strict=True)
                ),
            )
        return found

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
