"""The one place Redis clients are made: a single server from REDIS_URL, or Redis Cluster from REDIS_CLUSTER_NODES.

With a cluster, REDIS_URL still carries the credentials and every other option (TLS, timeouts, client name…);
its host is not used: every node has the same users and settings. Commands route by key; each script and MULTI
touches one partition's keys only.
"""

from __future__ import annotations

import inspect
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import parse_url as parse_async_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.typing import EncodableT

from courseflow.platform.config import Settings

SyncRedis = redis.Redis | RedisCluster
AsyncRedis = aioredis.Redis | AsyncRedisCluster

# A failover takes the cluster's node timeout plus an election: keep retrying a command that long, re-reading
# the slot map between attempts, instead of failing the request that met the dead master.
_CLUSTER_RETRIES = 12
# What a REDIS_URL without these options gets: no call waits forever on a silent server.
_DEFAULTS: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, "health_check_interval": 30}
# How long a caller waits for a free connection of a full pool before it fails.
_POOL_WAIT_S = 5.0
# A connection the server closed while it sat in the pool fails its first command: send it once more, on a new one
# (a script's second run is a replay, thanks to idempotency keys; a rate-limit hit in it counts twice).
_RECONNECT_ONCE = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
_RECONNECT_ONCE_ASYNC = AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
# The options of REDIS_URL that only a single server's pool takes (the cluster client has no blocking pool).
_POOL_ONLY = frozenset({"timeout", "max_connections"})


class UnsupportedOption(ValueError):
    """REDIS_URL names an option the cluster client cannot honour: refused rather than silently dropped."""


def url_options(url: str, for_async: bool = False) -> dict[str, Any]:
    """REDIS_URL's options as client keyword arguments, read by redis-py's own parser: username and password,
    TLS (`rediss://`, `ssl_*`), db, timeouts, client name and the rest of the query string."""
    parsed: dict[str, Any] = dict(parse_async_url(url)) if for_async else parse_url(url)  # type: ignore[no-untyped-call]
    return {**_DEFAULTS, **parsed}


def cluster_options(url: str) -> dict[str, Any]:
    """REDIS_URL's options for a cluster client: the same, less the host (the nodes come from
    REDIS_CLUSTER_NODES) and what only a single server's pool takes."""
    options = url_options(url)
    if "path" in options:
        raise UnsupportedOption("REDIS_URL: a Unix socket cannot reach a Redis Cluster")
    for name in ("host", "port", *_POOL_ONLY):
        options.pop(name, None)
    if options.pop("connection_class", None) is not None:  # parse_url's sign of rediss://
        options["ssl"] = True
    # A cluster has database 0 only: `/0` is what REDIS_URL says anyway, another number cannot be had.
    if int(options.pop("db", 0) or 0) != 0:
        raise UnsupportedOption("REDIS_URL: a Redis Cluster has database 0 only")
    # Both cluster clients take the same options; the async one names them all.
    accepted = inspect.signature(AsyncRedisCluster).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UnsupportedOption(f"REDIS_URL: the cluster client takes no {', '.join(unknown)}")
    return options


def _nodes(settings: Settings) -> list[tuple[str, int]]:
    return [(host, int(port)) for host, _, port in (node.rpartition(":") for node in settings.redis.cluster_nodes)]


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=0.05, cap=1.0)


def connect(settings: Settings, max_connections: int = 8, socket_timeout: float | None = None) -> SyncRedis:
    """A blocking client; waits for a free connection instead of raising "Too many connections".

    `max_connections` and `socket_timeout` win over REDIS_URL's: they size the process's pool and keep a
    blocking read's BLOCK below the socket timeout (redis-py #2807)."""
    if settings.redis.cluster_nodes:
        options = cluster_options(settings.redis.url)
        if socket_timeout is not None:
            options["socket_timeout"] = socket_timeout
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in _nodes(settings)],  # type: ignore[no-untyped-call]
            max_connections=max_connections,
            retry=Retry(_backoff(), _CLUSTER_RETRIES),
            **options,
        )
    options = url_options(settings.redis.url) | {"max_connections": max_connections}
    if socket_timeout is not None:
        options["socket_timeout"] = socket_timeout
    options.setdefault("timeout", _POOL_WAIT_S)
    options.setdefault("retry", _RECONNECT_ONCE)
    client = redis.Redis(connection_pool=redis.BlockingConnectionPool(**options))  # type: ignore[no-untyped-call]
    client.auto_close_connection_pool = True  # close() closes the pool it was made with
    return client


def _packed(connection: aioredis.connection.AbstractConnection, args: tuple[EncodableT, ...]) -> list[bytes] | None:
    """A command packed by hiredis in one C call, or None where redis-py's own packing must decide: a first
    argument holding several words, another text encoding, or a value hiredis does not take (bool, None…)."""
    if connection.encoder.encoding != "utf-8" or not isinstance(args[0], str) or " " in args[0]:
        return None
    try:
        return [hiredis.pack_command(args)]  # type: ignore[arg-type]
    except (TypeError, UnicodeError):
        return None


# The async single-server connections, packing commands with hiredis: redis-py checks and encodes each argument
# in Python first, a third of the client's work per function call on the enroll path (tests/bench/enroll_shape.py).
class HiredisPacked(aioredis.Connection):
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        return _packed(self, args) or super().pack_command(*args)


class HiredisPackedSSL(aioredis.SSLConnection):
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        return _packed(self, args) or super().pack_command(*args)


class HiredisPackedUnix(aioredis.UnixDomainSocketConnection):
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        return _packed(self, args) or super().pack_command(*args)


_HIREDIS_PACKED: dict[type[aioredis.connection.AbstractConnection], type[aioredis.connection.AbstractConnection]] = {
    aioredis.Connection: HiredisPacked,
    aioredis.SSLConnection: HiredisPackedSSL,
    aioredis.UnixDomainSocketConnection: HiredisPackedUnix,
}


def connect_async(settings: Settings, max_connections: int = 64) -> AsyncRedis:
    """The API's client. Its socket timeout leaves room for a WAIT of REDIS_WAIT_TIMEOUT_MS (REDIS_WAIT_REPLICAS)."""
    wait_s = settings.redis.wait_timeout_ms / 1000 if settings.redis.wait_replicas else 0.0
    if settings.redis.cluster_nodes:
        options = cluster_options(settings.redis.url)
        options["socket_timeout"] = (options["socket_timeout"] or 0.0) + wait_s
        return AsyncRedisCluster(
            startup_nodes=[AsyncClusterNode(host, port) for host, port in _nodes(settings)],
            max_connections=max_connections,
            retry=AsyncRetry(_backoff(), _CLUSTER_RETRIES),
            **options,
        )
    options = url_options(settings.redis.url, for_async=True) | {"max_connections": max_connections}
    options["socket_timeout"] = (options["socket_timeout"] or 0.0) + wait_s
    options.setdefault("timeout", _POOL_WAIT_S)
    options.setdefault("retry", _RECONNECT_ONCE_ASYNC)
    given = options.get("connection_class", aioredis.Connection)
    options["connection_class"] = _HIREDIS_PACKED.get(given, given)
    return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool(**options))


def connect_master(cluster: AsyncRedisCluster, host: str, port: int) -> aioredis.Redis:
    """A plain client to one master of `cluster`, with the cluster client's options (credentials, TLS,
    timeouts…), for work that must stay on one connection to that master (scripts and their WAIT). It retries
    once, on a connection closed before the call; never elsewhere, unlike the cluster client."""
    given = cluster.get_connection_kwargs()
    accepted = inspect.signature(aioredis.Redis).parameters
    options: dict[str, Any] = {
        name: value for name, value in given.items() if name in accepted and name not in ("host", "port")
    }
    options["ssl"] = given.get("connection_class") is aioredis.SSLConnection
    options["max_connections"] = 4
    return aioredis.Redis(host=host, port=port, retry=_RECONNECT_ONCE_ASYNC, **options)


async def aclose(client: AsyncRedis) -> None:
    """Close an async client and the connections it holds."""
    if isinstance(client, aioredis.Redis):
        await client.aclose(close_connection_pool=True)
    else:
        await client.aclose()


def is_cluster(client: SyncRedis | AsyncRedis) -> bool:
    return isinstance(client, RedisCluster | AsyncRedisCluster)
