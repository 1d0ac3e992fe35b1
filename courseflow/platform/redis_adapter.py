"""What we rely on in redis-py beyond its documented API, in one place; tests/unit/test_redis_adapter.py fails
on a release where any of it changed.

- `parse_url` says TLS (`rediss://`) only by naming a connection class: the cluster client and a plain client
  made from a cluster's options need it as `ssl=True`.
- The async connections pack commands with hiredis, overriding `pack_command` and reading the connection's
  `encoder`: redis-py checks and encodes each argument in Python first, a third of the client's work per
  function call on the enroll path (tests/bench/enroll_shape.py).
- The async cluster client re-reads its slot map only through `nodes_manager.initialize()`.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.typing import EncodableT


def pop_tls(options: dict[str, Any]) -> bool:
    """Remove the connection class that `parse_url` put in `options`; whether it meant TLS."""
    return options.pop("connection_class", None) is not None


def uses_tls(connection_kwargs: dict[str, Any]) -> bool:
    """Whether a client's connection options (`get_connection_kwargs()`) connect with TLS."""
    return connection_kwargs.get("connection_class") is aioredis.SSLConnection


def _packed(connection: aioredis.connection.AbstractConnection, args: tuple[EncodableT, ...]) -> list[bytes] | None:
    """A command packed by hiredis in one C call, or None where redis-py's own packing must decide: a first
    argument holding several words, another text encoding, or a value hiredis does not take (bool, None…)."""
    if connection.encoder.encoding != "utf-8" or not isinstance(args[0], str) or " " in args[0]:
        return None
    try:
        return [hiredis.pack_command(args)]  # type: ignore[arg-type]
    except (TypeError, UnicodeError):
        return None


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


def pack_with_hiredis(options: dict[str, Any]) -> None:
    """Make the async pool that `options` (from `parse_url`) will build pack its commands with hiredis."""
    given = options.get("connection_class", aioredis.Connection)
    options["connection_class"] = _HIREDIS_PACKED.get(given, given)


async def reread_slot_map(cluster: AsyncRedisCluster) -> None:
    """Read the cluster's slot map again now (after a failover moved slots), not at the next redirection."""
    await cluster.nodes_manager.initialize()
