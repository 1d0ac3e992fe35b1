"""The library of Redis functions on a cluster: on every master, loaded again where it was lost, and the
rate limits and intake running on it as on a single Redis."""

from __future__ import annotations

import courseflow_local as services
from redis.cluster import RedisCluster

from courseflow.platform.functions import Functions
from courseflow.platform.library import RaiseHorizon
from tests.cluster.conftest import cluster_client
from tests.test_ratelimit import (
    test_a_limited_student_gets_429_and_slows_no_one_else,
    test_enrollments_count_against_the_callers_write_limit_at_the_gate_refused_bodies_too,
)

__all__ = [
    "test_a_limited_student_gets_429_and_slows_no_one_else",
    "test_enrollments_count_against_the_callers_write_limit_at_the_gate_refused_bodies_too",
]


def _libraries(admin: RedisCluster) -> dict[str, list[bytes]]:
    listed = admin.function_list(target_nodes=RedisCluster.PRIMARIES)  # type: ignore[call-arg]
    return {node: [found[1] for found in libraries] for node, libraries in dict(listed).items()}


def test_masters_that_lost_the_library_get_it_again_and_every_call_runs(
    rds: RedisCluster, redis_cluster: services.LocalCluster
) -> None:
    with cluster_client(redis_cluster, admin=True) as admin:
        admin.function_flush(target_nodes=RedisCluster.PRIMARIES)
        assert set(map(len, _libraries(admin).values())) == {0}
        # Keys of 30 partitions: every master serves some of them.
        Functions(rds).each([RaiseHorizon(f"{{cf:{n}}}:horizon", n + 1) for n in range(30)])
        assert [int(rds.get(f"{{cf:{n}}}:horizon") or 0) for n in range(30)] == list(range(1, 31))
        libraries = _libraries(admin)
    assert len(libraries) == 3 and set(map(tuple, libraries.values())) == {(b"courseflow",)}
