"""Concurrent calls share round trips on a real Redis; each caller gets its own reply or its own error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from courseflow.platform import redis_clients
from courseflow.platform.coalesce import CoalescedCalls, NotReplicated, Replicas
from courseflow.platform.config import Settings
from tests.conftest import Servers


def add(calls: CoalescedCalls, key: str, amount: object) -> Any:
    """INCRBY through the coalescer: a non-number amount is refused by Redis for this call alone."""
    return calls(key, ("INCRBY", key, amount))  # type: ignore[arg-type]


def reads(admin: redis.Redis) -> int:
    """Socket reads the server has made: one per round trip of a small batch (INFO's own read included)."""
    return int(admin.info("stats")["total_reads_processed"])


def measured(
    servers: Servers, settings: Settings, calls: Callable[[Any], Awaitable[list[Any]]]
) -> tuple[list[Any], int]:
    """The replies of `calls(client)` on a fresh client, and the round trips they cost after a first call
    that opens the connection."""

    async def run() -> tuple[list[Any], int]:
        client = redis_clients.connect_async(settings)
        try:
            await calls(client)  # connects: its handshake is not what is measured
            with redis.Redis.from_url(servers.admin_redis_url) as admin:
                before = reads(admin)
                replies = await calls(client)
                return replies, reads(admin) - before - 1
        finally:
            await redis_clients.aclose(client)

    return asyncio.run(run())


def test_concurrent_calls_share_round_trips_each_with_its_own_reply(servers: Servers, settings: Settings) -> None:
    async def crowd(client: Any) -> list[Any]:
        calls = CoalescedCalls(client)
        return await asyncio.gather(*(add(calls, f"n{i}", i) for i in range(1, 501)))

    replies, round_trips = measured(servers, settings, crowd)
    assert replies == [2 * i for i in range(1, 501)]  # each caller's own key, added to twice
    assert round_trips < 50, round_trips  # 500 without coalescing


def test_a_lone_call_costs_one_round_trip(servers: Servers, settings: Settings) -> None:
    async def lone(client: Any) -> list[Any]:
        return [await add(CoalescedCalls(client), "lone", 5)]

    assert measured(servers, settings, lone) == ([10], 1)


def test_a_failing_call_fails_only_its_caller(settings: Settings) -> None:
    async def crowd() -> list[Any]:
        client = redis_clients.connect_async(settings)
        try:
            calls = CoalescedCalls(client)
            args = ["bad" if i == 7 else i for i in range(20)]
            return await asyncio.gather(*(add(calls, f"n{i}", a) for i, a in enumerate(args)), return_exceptions=True)
        finally:
            await redis_clients.aclose(client)

    replies = asyncio.run(crowd())
    assert isinstance(replies[7], redis.ResponseError) and "not an integer" in str(replies[7])
    assert [r for i, r in enumerate(replies) if i != 7] == [i for i in range(20) if i != 7]


@pytest.mark.parametrize("failing", [False, True])
def test_with_replicas_required_each_batch_waits_for_them_on_its_own_connection(
    settings: Settings, failing: bool
) -> None:
    """The local Redis has no replica: WAIT confirms none, so every written call is NotReplicated, while
    a call that failed keeps its own error."""

    async def crowd() -> list[Any]:
        client = redis_clients.connect_async(settings)
        try:
            calls = CoalescedCalls(client, Replicas(count=1, timeout_ms=20))
            args: list[Any] = ["bad" if failing and i == 0 else i + 1 for i in range(10)]
            return await asyncio.gather(*(add(calls, f"w{i}", a) for i, a in enumerate(args)), return_exceptions=True)
        finally:
            await redis_clients.aclose(client)

    replies = asyncio.run(crowd())
    written = replies[1:] if failing else replies
    assert all(isinstance(r, NotReplicated) for r in written), replies
    if failing:
        assert isinstance(replies[0], redis.ResponseError) and not isinstance(replies[0], NotReplicated)
