"""Callers whose WebSocket was closed for flooding are refused new ones for a while.

A flooder closed for its pace reconnects at once; each new socket would cost a handshake, a subscription and a
status read. Refused at the gate instead (a `429` before any Redis or database read), a reconnection costs about
what a probe does. Kept per API process, in memory, for a bounded number of callers.

The gate admits a socket with `admit`, which leaves in its scope whom to cool down; whatever closes it for
flooding (the endpoint for its pace, the wire for a frame's size or count) says so with `flooded(scope)`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping

from starlette.types import Scope

from courseflow.http.limits import Subject
from courseflow.http.problems import RateLimited
from courseflow.platform.metrics import RATE_LIMITED

_ON_FLOOD = "courseflow.on_flood"
# Callers cooling down at once, per process: past it the soonest to end their cool-down are let go first.
MOST_CALLERS = 10_000


class Cooldown:
    """Each caller's end of cool-down. Every cool-down is as long, so the map's order (a caller moved to the end
    when it starts again) is the order they end in: the expired and the overflow leave from the front."""

    def __init__(
        self, seconds: float, most_callers: int = MOST_CALLERS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self._most = most_callers
        self._clock = clock
        self._until: dict[Subject, float] = {}

    def start(self, who: Subject) -> None:
        """`who`'s socket was closed for flooding: refuse their new sockets for `seconds` from now."""
        if self.seconds <= 0:
            return
        now = self._clock()
        self._until.pop(who, None)
        self._until[who] = now + self.seconds
        self._forget(now)

    def admit(self, scope: Scope, who: Subject) -> None:
        """Refuse `who`'s new socket while they cool down (429); else leave in its scope whom a flood cools."""
        wait = self.remaining(who)
        if wait > 0:
            RATE_LIMITED.labels(who.role).inc()
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"a WebSocket of this caller was closed for flooding: open another in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        scope[_ON_FLOOD] = functools.partial(self.start, who)

    def remaining(self, who: Subject) -> float:
        """Seconds until `who` may open a socket again; 0 when they may now."""
        until = self._until.get(who)
        return 0.0 if until is None else max(0.0, until - self._clock())

    def __len__(self) -> int:
        return len(self._until)

    def _forget(self, now: float) -> None:
        while self._until:
            who, until = next(iter(self._until.items()))
            if until > now and len(self._until) <= self._most:
                return
            del self._until[who]


def flooded(scope: Mapping[str, object]) -> None:
    """The socket of `scope` is closed for flooding: its caller cools down (if the gate admitted it)."""
    on_flood = scope.get(_ON_FLOOD)
    if callable(on_flood):
        on_flood()
