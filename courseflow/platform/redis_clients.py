"""The one place Redis clients are made: a single server from REDIS_URL, or Redis Cluster from REDIS_CLUSTER_NODES.

With a cluster, REDIS_URL still carries the credentials and options (its host is not used): every node
has the same users. Commands route by key; each script and MULTI touches one partition's keys only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from courseflow.platform.config import Settings

SyncRedis = redis.Redis | RedisCluster
AsyncRedis = aioredis.Redis | AsyncRedisCluster

# A failover takes the cluster's node timeout plus an election: keep retrying a command that long, re-reading
# the slot map between attempts, instead of failing the request that met the dead master.
_CLUSTER_RETRIES = 12


def _credentials(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }


def _nodes(settings: Settings) -> list[tuple[str, int]]:
    return [(host, int(port)) for host, _, port in (node.rpartition(":") for node in settings.redis.cluster_nodes)]


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=0.05, cap=1.0)


def connect(settings: Settings, max_connections: int = 8, socket_timeout: float | None = None) -> SyncRedis:
    """A blocking client; waits for a free connection instead of raising "Too many connections"."""
    if settings.redis.cluster_nodes:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in _nodes(settings)],  # type: ignore[no-untyped-call]
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            retry=Retry(_backoff(), _CLUSTER_RETRIES),
            **_credentials(settings.redis.url),
        )
    client = redis.Redis(
        connection_pool=redis.BlockingConnectionPool.from_url(
            settings.redis.url,
            max_connections=max_connections,
            timeout=5,
            socket_timeout=socket_timeout,
            health_check_interval=30,
        )
    )
    client.auto_close_connection_pool = True  # close() closes the pool it was made with
    return client


def connect_async(settings: Settings, max_connections: int = 64) -> AsyncRedis:
    if settings.redis.cluster_nodes:
        return AsyncRedisCluster(
            startup_nodes=[AsyncClusterNode(host, port) for host, port in _nodes(settings)],
            max_connections=max_connections,
            retry=AsyncRetry(_backoff(), _CLUSTER_RETRIES),
            **_credentials(settings.redis.url),
        )
    return aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(
            settings.redis.url, max_connections=max_connections, timeout=5
        )
    )


async def aclose(client: AsyncRedis) -> None:
    """Close an async client and the connections it holds."""
    if isinstance(client, aioredis.Redis):
        await client.aclose(close_connection_pool=True)
    else:
        await client.aclose()


def is_cluster(client: SyncRedis | AsyncRedis) -> bool:
    return isinstance(client, RedisCluster | AsyncRedisCluster)
