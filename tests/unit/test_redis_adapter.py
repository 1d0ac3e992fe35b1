"""What redis_adapter relies on in redis-py is still there and still means the same: a release that changes any of
it fails here, not at the first enrollment."""

from __future__ import annotations

import asyncio
import inspect

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import parse_url as parse_async_url
from redis.connection import parse_url

from courseflow.platform import redis_adapter

# Nothing listens here: building a client must not connect.
TLS_URL = "rediss://app:secret@127.0.0.1:1/0"
PLAIN_URL = "redis://app:secret@127.0.0.1:1/0"


def test_parse_url_says_tls_by_a_connection_class_and_plain_by_none() -> None:
    sync_tls = parse_url(TLS_URL)  # type: ignore[no-untyped-call]
    async_tls = dict(parse_async_url(TLS_URL))
    assert sync_tls["connection_class"] is redis.SSLConnection
    assert async_tls["connection_class"] is aioredis.SSLConnection
    assert redis_adapter.pop_tls(sync_tls) and "connection_class" not in sync_tls
    plain = parse_url(PLAIN_URL)  # type: ignore[no-untyped-call]
    assert "connection_class" not in plain and not redis_adapter.pop_tls(plain)


def test_a_tls_cluster_client_names_the_ssl_connection_class_in_its_connection_options() -> None:
    tls = AsyncRedisCluster(startup_nodes=[AsyncClusterNode("127.0.0.1", 1)], ssl=True)
    plain = AsyncRedisCluster(startup_nodes=[AsyncClusterNode("127.0.0.1", 1)])
    assert redis_adapter.uses_tls(tls.get_connection_kwargs())
    assert not redis_adapter.uses_tls(plain.get_connection_kwargs())

    async def close() -> None:
        await tls.aclose()
        await plain.aclose()

    asyncio.run(close())


def test_async_connections_pack_through_an_overridable_pack_command_with_an_encoder() -> None:
    for base in (aioredis.Connection, aioredis.SSLConnection, aioredis.UnixDomainSocketConnection):
        parameters = list(inspect.signature(base.pack_command).parameters.values())
        assert [(p.name, p.kind) for p in parameters] == [
            ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            ("args", inspect.Parameter.VAR_POSITIONAL),
        ], base
        options = {"connection_class": base}
        redis_adapter.pack_with_hiredis(options)
        packing = options["connection_class"]
        assert issubclass(packing, base) and packing.pack_command is not base.pack_command
    connection = aioredis.Connection(host="127.0.0.1", port=1)
    assert connection.encoder.encoding == "utf-8"
    packed = hiredis.pack_command(("GET", "k"))  # type: ignore[arg-type]
    assert packed == b"".join(connection.pack_command("GET", "k"))


def test_the_async_cluster_client_rereads_its_slot_map_through_its_nodes_manager() -> None:
    cluster = AsyncRedisCluster(startup_nodes=[AsyncClusterNode("127.0.0.1", 1)])
    assert inspect.iscoroutinefunction(cluster.nodes_manager.initialize)
    # Called with no arguments: every parameter it has must keep a default.
    parameters = inspect.signature(cluster.nodes_manager.initialize).parameters.values()
    assert all(p.default is not inspect.Parameter.empty for p in parameters)
    asyncio.run(cluster.aclose())
