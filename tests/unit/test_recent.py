"""The once-a-period value behind /metrics: shared by every caller, computed again only when it is old."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine

import pytest

from courseflow.platform.recent import Recent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_callers_within_the_period_share_one_computation_and_a_later_one_computes_again() -> None:
    clock = Clock()
    recent: Recent[str, int] = Recent(max_age_s=1.0, size=8, clock=clock)
    computed: list[int] = []

    async def compute() -> int:
        computed.append(len(computed) + 1)
        return len(computed)

    async def scenario() -> list[int]:
        first = await recent.get("totals", compute)
        clock.now += 0.999
        second = await recent.get("totals", compute)
        clock.now += 0.001
        third = await recent.get("totals", compute)
        return [first, second, third]

    assert asyncio.run(scenario()) == [1, 1, 2]
    assert computed == [1, 2]


def test_concurrent_callers_wait_for_the_one_computation_in_flight() -> None:
    recent: Recent[str, str] = Recent(max_age_s=1.0, size=8, clock=Clock())
    calls = 0

    async def scenario() -> list[str]:
        release = asyncio.Event()

        async def compute() -> str:
            nonlocal calls
            calls += 1
            await release.wait()
            return "figures"

        waiting = [asyncio.create_task(recent.get("totals", compute)) for _ in range(200)]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*waiting)

    assert asyncio.run(scenario()) == ["figures"] * 200
    assert calls == 1


def test_a_caller_that_goes_away_leaves_the_computation_to_the_others() -> None:
    recent: Recent[str, str] = Recent(max_age_s=1.0, size=8, clock=Clock())

    async def scenario() -> str:
        release = asyncio.Event()

        async def compute() -> str:
            await release.wait()
            return "figures"

        gone = asyncio.create_task(recent.get("totals", compute))
        staying = asyncio.create_task(recent.get("totals", compute))
        await asyncio.sleep(0)
        gone.cancel()
        release.set()
        return await staying

    assert asyncio.run(scenario()) == "figures"


def test_a_failed_computation_is_not_kept() -> None:
    recent: Recent[str, str] = Recent(max_age_s=1.0, size=8, clock=Clock())
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("Redis is down")
        return "figures"

    async def scenario() -> str:
        with pytest.raises(RuntimeError):
            await recent.get("totals", compute)
        return await recent.get("totals", compute)

    assert asyncio.run(scenario()) == "figures"


def test_keys_past_its_size_start_a_new_generation() -> None:
    recent: Recent[int, int] = Recent(max_age_s=60.0, size=2, clock=Clock())
    computed: list[int] = []

    def computing(key: int) -> Callable[[], Coroutine[object, object, int]]:
        async def compute() -> int:
            computed.append(key)
            return key

        return compute

    async def scenario() -> None:
        for key in (1, 2, 1, 3, 1):
            await recent.get(key, computing(key))

    asyncio.run(scenario())
    assert computed == [1, 2, 3, 1]  # the third key started afresh, so the first was computed again
