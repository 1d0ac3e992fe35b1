"""Rate limits per principal, counted in Redis (a sliding-window counter, the library's `take_rate_limit`) so
every API process shares them. Every request is counted at the gate, except enrollments: their limits go to
the intake, which takes them in the same call as the idempotency key (see `limits` and `refuse`).

A student's writes and reads are limited apart (a student polling status does not lose the right to
enroll); registrars and services have their own, higher limits. Each principal has its own counters,
so a student who is limited never slows another.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Literal, NoReturn

import msgspec
import redis.asyncio as aioredis
from limits import RateLimitItem, parse_many

from courseflow.errors import RateLimitReached
from courseflow.http.auth import Principal, Role
from courseflow.http.problems import RateLimited
from courseflow.platform.config import Settings
from courseflow.platform.functions import AsyncFunctions
from courseflow.platform.keys import Keys
from courseflow.platform.library import Limit, Refusal, TakeRateLimit
from courseflow.platform.memo import Memo
from courseflow.platform.metrics import RATE_LIMITED
from courseflow.platform.redis_clients import AsyncRedis

log = logging.getLogger("courseflow.limits")

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

    @property
    def caller(self) -> str:
        """The name of the caller's keys (Keys.caller)."""
        return f"{self.role}:{self.name}"


def subject(principal: Principal, anonymous_client: str | None = None) -> Subject:
    return Subject(principal.role, principal.sub if anonymous_client is None else f"address:{anonymous_client}")


def anonymous(client_address: str) -> Subject:
    return Subject("anonymous", f"address:{client_address}")


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
        self._keys = Keys(settings.queue.prefix)
        # Every request hits the limiter: concurrent hits share round trips.
        self._functions = AsyncFunctions(client)
        self._storage_down_logged = 0.0
        self._calls: Memo[tuple[Subject, bool], TakeRateLimit] = Memo(20_000)

    def _policy(self, who: Subject, method: str) -> Policy:
        return self._student[method in WRITE_METHODS] if who.role == "student" else self._others[who.role]

    async def hit(self, who: Subject, method: str) -> None:
        """Count one request against every limit of `who`'s policy; raises RateLimited (429) when one is reached
        (and then counts it on none)."""
        policy = self._policy(who, method)
        if not policy.items:
            return
        try:
            refusal = await self._functions(self._take(who, method, policy))
        except aioredis.RedisError as exc:
            # Fail open: with Redis down, writes fail at intake anyway and reads are answered from PostgreSQL.
            self._log_storage_down(exc)
            return
        if refusal is not None:
            _refuse(who, policy, refusal)

    def limits(self, who: Subject, method: str) -> Sequence[Limit]:
        """The counters one request of `who` takes, for a caller that takes them itself (the intake)."""
        policy = self._policy(who, method)
        return self._take(who, method, policy).limits if policy.items else ()

    def refuse(self, who: Subject, method: str, reached: RateLimitReached) -> NoReturn:
        """Raise the 429 for a limit of `limits(who, method)` that was reached."""
        _refuse(who, self._policy(who, method), Refusal(reached.index, reached.retry_after_ms))

    def _take(self, who: Subject, method: str, policy: Policy) -> TakeRateLimit:
        writes = method in WRITE_METHODS
        found = self._calls.get((who, writes))
        if found is None:
            caller = self._keys.caller(who.caller)
            limits = [
                Limit(
                    counter=caller.rate_limit(f"{policy.name}:{item.amount}/{item.get_expiry()}s"),
                    amount=item.amount,
                    window_ms=item.get_expiry() * 1000,
                )
                for item in policy.items
            ]
            found = self._calls.put((who, writes), TakeRateLimit(limits))
        return found

    def _log_storage_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._storage_down_logged > 10:
            self._storage_down_logged = now
            log.warning("rate limits not enforced: Redis is unreachable (%s)", type(exc).__name__)

    async def aclose(self) -> None:
        await self._functions.aclose()


def _refuse(who: Subject, policy: Policy, refusal: Refusal) -> NoReturn:
    """Raise the 429 for `who` being over the policy's limit number `refusal.index`, with when to retry."""
    RATE_LIMITED.labels(who.role).inc()
    item = policy.items[refusal.index]
    wait = max(1, math.ceil(refusal.retry_after_ms / 1000))
    raise RateLimited(
        f"too many requests: the {policy.name} limit is {item.amount} per {item.get_expiry()} s; retry in {wait} s",
        headers={
            "Retry-After": str(wait),
            "RateLimit-Policy": policy.header,
            "RateLimit": f'"{policy.names[refusal.index]}";r=0;t={wait}',
        },
    )
