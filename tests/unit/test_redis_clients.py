"""The client factory keeps every REDIS_URL option, on a single server and on a cluster alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from courseflow.platform import redis_clients
from courseflow.platform.config import RedisSettings, Settings

# Nothing listens here: building a client must not connect.
URL = (
    "rediss://app:s%40cret@127.0.0.1:1/0"
    "?socket_timeout=2.5&socket_connect_timeout=1.5&client_name=courseflow-api"
    "&ssl_cert_reqs=none&ssl_ca_certs=/etc/courseflow/ca.pem"
)
KEPT = {
    "username": "app",
    "password": "s@cret",
    "socket_connect_timeout": 1.5,
    "client_name": "courseflow-api",
    "ssl_cert_reqs": "none",
    "ssl_ca_certs": "/etc/courseflow/ca.pem",
}


def single() -> Settings:
    return Settings(redis=RedisSettings(url=URL))


def cluster() -> Settings:
    return Settings(redis=RedisSettings(url=URL, cluster_nodes=("127.0.0.1:1", "127.0.0.1:2")))


def subset(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: kwargs.get(name) for name in KEPT}


def test_a_single_server_client_keeps_tls_credentials_timeouts_and_name() -> None:
    client = redis_clients.connect(single())
    assert isinstance(client, redis.Redis)
    pool = client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)  # waits for a connection instead of raising
    assert pool.connection_class is redis.SSLConnection
    assert subset(pool.connection_kwargs) == KEPT
    assert pool.connection_kwargs["socket_timeout"] == 2.5
    client.close()


def test_a_blocking_reads_socket_timeout_wins_over_the_urls() -> None:
    client = redis_clients.connect(single(), socket_timeout=11.0)
    assert client.get_connection_kwargs()["socket_timeout"] == 11.0
    client.close()


def test_an_async_single_server_client_keeps_them_and_leaves_room_for_wait() -> None:
    settings = Settings(redis=RedisSettings(url=URL, wait_replicas=1, wait_timeout_ms=4000))
    client = redis_clients.connect_async(settings)
    assert isinstance(client, aioredis.Redis)
    pool = client.connection_pool
    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert issubclass(pool.connection_class, aioredis.SSLConnection)
    assert subset(pool.connection_kwargs) == KEPT
    assert pool.connection_kwargs["socket_timeout"] == 2.5 + 4.0
    asyncio.run(redis_clients.aclose(client))


def test_an_async_cluster_client_keeps_them_and_its_masters_too() -> None:
    client = redis_clients.connect_async(cluster())
    assert isinstance(client, AsyncRedisCluster)
    kwargs = client.get_connection_kwargs()
    assert kwargs["connection_class"] is aioredis.SSLConnection
    assert subset(kwargs) == KEPT and kwargs["socket_timeout"] == 2.5
    # The plain client that carries a script and its WAIT to one master has the same options.
    master = redis_clients.connect_master(client, "127.0.0.1", 3)
    pool = master.connection_pool
    assert pool.connection_class is aioredis.SSLConnection
    assert subset(pool.connection_kwargs) == KEPT
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"]) == ("127.0.0.1", 3)

    async def close() -> None:
        await redis_clients.aclose(master)
        await redis_clients.aclose(client)

    asyncio.run(close())


def test_cluster_options_are_the_urls_less_its_host() -> None:
    options = redis_clients.cluster_options(URL)
    assert options["ssl"] is True and subset(options) == KEPT and options["socket_timeout"] == 2.5
    assert "host" not in options and "port" not in options


def test_an_option_a_cluster_cannot_take_is_refused_not_dropped() -> None:
    with pytest.raises(redis_clients.UnsupportedOption, match="retry_on_timeout"):
        redis_clients.cluster_options("redis://127.0.0.1:1/0?retry_on_timeout=yes")
    with pytest.raises(redis_clients.UnsupportedOption, match="Unix socket"):
        redis_clients.cluster_options("unix:///run/redis.sock")


def test_a_cluster_takes_database_zero_only() -> None:
    assert "db" not in redis_clients.cluster_options("redis://u:p@127.0.0.1:1/0")
    with pytest.raises(redis_clients.UnsupportedOption, match="database 0 only"):
        redis_clients.cluster_options("redis://u:p@127.0.0.1:1/3")


@pytest.mark.parametrize(
    "command",
    [
        ("FCALL", "queue_request", 2, "{cf:1}:courses", "{cf:1}:queued:é", b"\x00\xff", -3, 0.1, 1e20, 2**70),
        ("CONFIG GET", "maxmemory"),  # redis-py sends its words apart
        ("SET", "k", True),  # refused by redis-py's own checks, not sent as 1
        ("SET", "k", bytearray(b"v")),
    ],
)
def test_an_async_connection_packs_every_command_as_redis_py_does(command: tuple[Any, ...]) -> None:
    for url in ("redis://127.0.0.1:1/0", URL, "unix:///tmp/nothing.sock"):
        client = redis_clients.connect_async(Settings(redis=RedisSettings(url=url)))
        assert isinstance(client, aioredis.Redis)
        ours = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        plain = next(base for base in type(ours).__mro__[1:] if base.__module__ == "redis.asyncio.connection")
        assert type(ours) is not plain, url  # hiredis packs them
        theirs = plain(**client.connection_pool.connection_kwargs)
        try:
            expected = b"".join(theirs.pack_command(*command))
        except redis.DataError:
            with pytest.raises(redis.DataError):
                ours.pack_command(*command)
        else:
            assert b"".join(ours.pack_command(*command)) == expected
