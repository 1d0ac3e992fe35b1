"""The library of Redis functions on a cluster: on every master, loaded again where it was lost, and the
rate limits and intake running on it as on a single Redis."""

from __future__ import annotations

import asyncio
from typing import cast

import courseflow_local as services
from redis.cluster import ClusterNode, RedisCluster

from courseflow.platform import redis_clients
from courseflow.platform.config import Settings
from courseflow.platform.functions import AsyncFunctions, Functions
from courseflow.platform.library import RaiseHorizon
from tests.cluster.conftest import cluster_client
from tests.integration.test_limits import (
    test_a_limited_student_gets_429_and_slows_no_one_else,
    test_enrollments_count_against_the_callers_write_limit_refused_bodies_too,
)

__all__ = [
    "test_a_limited_student_gets_429_and_slows_no_one_else",
    "test_enrollments_count_against_the_callers_write_limit_refused_bodies_too",
]


def _libraries(admin: RedisCluster) -> dict[str, list[bytes]]:
    """Each master's libraries, by name, asked of each master itself."""
    return {
        node.name: [found[1] for found in cast(list[list[bytes]], node.redis_connection.function_list())]
        for node in _masters(admin)
        if node.redis_connection is not None
    }


def _masters(admin: RedisCluster) -> list[ClusterNode]:
    return cast(list[ClusterNode], admin.get_primaries())  # type: ignore[no-untyped-call]


def _flush(admin: RedisCluster) -> None:
    for node in _masters(admin):
        assert node.redis_connection is not None
        node.redis_connection.function_flush()
    assert set(map(len, _libraries(admin).values())) == {0}


async def _raise_async(settings: Settings, horizons: list[RaiseHorizon]) -> None:
    client = redis_clients.connect_async(settings)
    functions = AsyncFunctions(client)
    try:
        await asyncio.gather(*(functions(horizon) for horizon in horizons))
    finally:
        await functions.aclose()
        await redis_clients.aclose(client)


def test_masters_that_lost_the_library_get_it_again_and_every_call_runs(
    settings: Settings, rds: RedisCluster, redis_cluster: services.LocalCluster
) -> None:
    # Keys of 30 partitions: every master serves some of them.
    horizons = [RaiseHorizon(f"{{cf:{n}}}:horizon", n + 1) for n in range(30)]
    with cluster_client(redis_cluster, admin=True) as admin:
        _flush(admin)
        Functions(rds).each(horizons)
        assert [int(rds.get(f"{{cf:{n}}}:horizon") or 0) for n in range(30)] == list(range(1, 31))
        assert set(map(tuple, _libraries(admin).values())) == {(b"courseflow",)}
        _flush(admin)
        asyncio.run(_raise_async(settings, [RaiseHorizon(h.key, h.position + 100) for h in horizons]))
        assert [int(rds.get(f"{{cf:{n}}}:horizon") or 0) for n in range(30)] == list(range(101, 131))
        libraries = _libraries(admin)
    assert len(libraries) == 3 and set(map(tuple, libraries.values())) == {(b"courseflow",)}
