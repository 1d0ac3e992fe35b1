"""Values computed at most once a period and shared by every caller: what bounds the cost of /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class _Computing(Generic[V]):
    started: float
    task: asyncio.Task[V]


class Recent(Generic[K, V]):
    """Each key's value, computed again only once `max_age_s` has passed since the last computation began.

    Callers that ask meanwhile share it, also while it is still being computed (one computation however many
    wait). A failed computation is forgotten, so the next caller tries afresh. At most `size` keys are kept:
    when full it starts afresh, so a flood of new keys costs memory no longer than one generation.
    """

    def __init__(self, max_age_s: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self._size = size
        self._entries: dict[K, _Computing[V]] = {}

    async def get(self, key: K, compute: Callable[[], Coroutine[object, object, V]]) -> V:
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or now - entry.started >= self.max_age_s:
            if key not in self._entries and len(self._entries) >= self._size:
                self._entries.clear()
            entry = _Computing(now, asyncio.create_task(compute()))
            self._entries[key] = entry
            entry.task.add_done_callback(lambda task: self._settled(key, task))
        # A caller that goes away (a client hanging up) leaves the computation to those still waiting for it.
        return await asyncio.shield(entry.task)

    def _settled(self, key: K, task: asyncio.Task[V]) -> None:
        if task.cancelled() or task.exception() is not None:
            entry = self._entries.get(key)
            if entry is not None and entry.task is task:
                del self._entries[key]
