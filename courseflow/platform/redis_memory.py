"""How full Redis is: used memory against `maxmemory`, for /metrics and the board.

Redis runs with `noeviction`: once full, every write that needs memory fails (intake answers 503), so this
is the gauge to alert on well before it reaches 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import redis

from courseflow.platform.redis_clients import AsyncRedis


class RedisMemory(msgspec.Struct, frozen=True, kw_only=True):
    used_bytes: int
    # 0: no maxmemory (unbounded, and nothing refuses a flood).
    max_bytes: int

    @property
    def ratio(self) -> float | None:
        return self.used_bytes / self.max_bytes if self.max_bytes else None


def _of(info: Mapping[str, Any]) -> RedisMemory:
    return RedisMemory(used_bytes=int(info["used_memory"]), max_bytes=int(info.get("maxmemory", 0)))


async def read(client: AsyncRedis) -> RedisMemory | None:
    """INFO memory of the server, or of a cluster's fullest node (each refuses writes on its own once full); None
    where the application's user may not run INFO."""
    try:
        info: Mapping[str, Any] = await client.info("memory")
    except redis.exceptions.NoPermissionError:
        return None
    if "used_memory" in info:
        return _of(info)
    nodes = [_of(node) for node in info.values() if isinstance(node, Mapping) and "used_memory" in node]
    return max(nodes, key=lambda m: (m.ratio or 0.0, m.used_bytes))
