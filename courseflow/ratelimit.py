"""Rate limits per principal, kept in Redis by the `limits` library so every API process shares them.

A student's writes and reads are limited apart (a student polling status does not lose the right to
enroll); registrars and services have their own, higher limits. Each principal has its own counters,
so a student who is limited never slows another.
"""

from __future__ import annotations

import logging
import math
import time

import redis.asyncio as aioredis
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from courseflow.auth import Principal
from courseflow.config import Settings
from courseflow.problems import RateLimited

log = logging.getLogger("courseflow.ratelimit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Policy:
    """One named set of limits, e.g. `student-writes` = 20 per 2 seconds."""

    def __init__(self, name: str, notation: str) -> None:
        self.name = name
        self.items: list[RateLimitItem] = [] if notation.strip().lower() == "off" else _parse(name, notation)
        # draft-ietf-httpapi-ratelimit-headers: quota `q` per window `w` seconds.
        self.header = ", ".join(f'"{name}";q={i.amount};w={i.get_expiry()}' for i in self.items)


def _parse(name: str, notation: str) -> list[RateLimitItem]:
    try:
        return parse_many(notation)
    except ValueError:
        env = f"RATE_LIMIT_{name.upper().replace('-', '_')}"
        raise SystemExit(
            f"configuration error: {env} must look like '20 per 2 seconds' or 'off', got {notation!r}"
        ) from None


class Limiter:
    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        self._policies = {
            ("student", False): Policy("student-reads", settings.rate_limit_student_reads),
            ("student", True): Policy("student-writes", settings.rate_limit_student_writes),
            ("registrar", False): Policy("registrar", settings.rate_limit_registrar),
            ("service", False): Policy("service", settings.rate_limit_service),
        }
        self._policies[("registrar", True)] = self._policies[("registrar", False)]
        self._policies[("service", True)] = self._policies[("service", False)]
        # Shares the API's connection pool: no extra connections, and the same credentials.
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=f"{settings.stream_prefix}:ratelimit",
            connection_pool=client.connection_pool,  # type: ignore[arg-type]  # typed as scalars, passed through
        )
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._storage_down_logged = 0.0

    async def hit(self, principal: Principal, method: str, anonymous_client: str | None = None) -> None:
        """Count one request; raises RateLimited (429) when the principal is over a limit.

        `anonymous_client` is the client address in development mode, where every caller is the same registrar.
        """
        policy = self._policies[(principal.role, method in WRITE_METHODS)]
        who = (principal.role, principal.sub if anonymous_client is None else f"address:{anonymous_client}")
        for item in policy.items:
            try:
                allowed = await self._limiter.hit(item, policy.name, *who)
            except aioredis.RedisError as exc:
                # Fail open: with Redis down, writes fail at intake anyway and reads are answered from PostgreSQL.
                self._log_storage_down(exc)
                return
            if not allowed:
                stats = await self._limiter.get_window_stats(item, policy.name, *who)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(
                    f"too many requests: the {policy.name} limit is {item.amount} per {item.get_expiry()} s;"
                    f" retry in {wait} s",
                    headers={
                        "Retry-After": str(wait),
                        "RateLimit-Policy": policy.header,
                        "RateLimit": f'"{policy.name}";r=0;t={wait}',
                    },
                )

    def _log_storage_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._storage_down_logged > 10:
            self._storage_down_logged = now
            log.warning("rate limits not enforced: Redis is unreachable (%s)", type(exc).__name__)
