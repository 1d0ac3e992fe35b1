"""A pre-filled backlog: accepted requests put straight into Redis through CourseFlow's own Intake."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis

from courseflow.http.auth import DEVELOPER
from courseflow.intake.accept import Intake, key_owner
from courseflow.platform import redis_clients
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from tests.bench.procs import BenchError

# Priorities as in tests/integration/test_crowd.py: mostly the default 0. The mix matters: a worker decides everything a
# course has pending ahead of its batch's worst-ranked request, so higher priorities make bigger transactions.
PRIORITY_MIX = (0, 0, 0, 10, 50, 100)


def priority(n: int, courses: int) -> int:
    """The priority of request `n` when requests go round-robin over `courses`: each course cycles the mix."""
    return PRIORITY_MIX[(n // courses) % len(PRIORITY_MIX)]


# Enough requests in flight that Redis groups many writes into one AOF fsync (appendfsync always).
CONCURRENCY = 128


async def _fill(env: Mapping[str, str], courses: Sequence[int], count: int, tag: str, mixed: bool) -> None:
    settings = Settings.from_env(env)
    client = redis_clients.connect_async(settings, max_connections=CONCURRENCY)
    intake = Intake(client, Keys(settings.queue.prefix, settings.queue.partitions), settings.queue.idempotency_ttl_s)

    async def accept_every(start: int) -> None:
        for n in range(start, count, CONCURRENCY):
            # One student per request, so none is rejected as a duplicate.
            accepted = await intake.accept(
                f"{DEVELOPER.role}:{DEVELOPER.sub}",
                key_owner(DEVELOPER.role, DEVELOPER.sub, n + 1),
                n + 1,
                courses[n % len(courses)],
                f"{tag}-{n}",
                priority(n, len(courses)) if mixed else 0,
            )
            if accepted.outcome != "queued":
                raise BenchError(f"backlog request {n} was not queued: {accepted.outcome}")

    try:
        await asyncio.gather(*(accept_every(start) for start in range(CONCURRENCY)))
    finally:
        if isinstance(client, aioredis.Redis):
            await client.aclose(close_connection_pool=True)
        else:
            await client.aclose()


def fill(env: Mapping[str, str], courses: Sequence[int], count: int, tag: str, mixed: bool = True) -> None:
    """Accept `count` requests round-robin over `courses` (which must exist), with the servers of `env` (as a
    process of the stack would); `mixed=False`: all priority 0."""
    asyncio.run(_fill(env, courses, count, tag, mixed))
