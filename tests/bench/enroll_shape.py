"""The cost of the enroll path's Redis side on a single Redis, as the API runs it: the rate limit and the intake.

Run it against one checkout at a time (PYTHONPATH) and alternate: `python -m tests.bench.enroll_shape URL N C`
times N enrollments, C at a time, through `Limiter` and `Intake` on the Redis at URL, and prints requests/s and
the median and 99th-percentile latency (and, on stderr, the client's CPU per enrollment). It drives whichever
enroll path the checkout has: one script taking the rate limit, the key and the queue together (before), the
gate's rate limit then the two intake steps, or the intake's two calls: the rate limit with the key, then the
queue (now). Run by path, it needs a copy outside `tests/bench/`, whose `limits.py` would hide the library.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import msgspec
import redis

from courseflow.http.auth import DEVELOPER
from courseflow.http.limits import Limiter, subject
from courseflow.intake import accept, queue
from courseflow.platform import redis_clients
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys


async def run(url: str, count: int, concurrency: int) -> tuple[float, float, float]:
    unlimited, base = "100000000 per 60 seconds", Settings()
    if hasattr(base, "limits"):  # settings in sections
        redis_section, limits = msgspec.structs.replace(base.redis, url=url), base.limits
        settings = msgspec.structs.replace(
            base, redis=redis_section, limits=msgspec.structs.replace(limits, registrar=unlimited)
        )
    else:
        settings = msgspec.structs.replace(base, redis_url=url, rate_limit_registrar=unlimited)
    keys = Keys(f"shape{time.time_ns()}", 1)
    with redis.Redis.from_url(url) as sync:
        queue.register_courses(sync, keys, [1])
        queue.ensure_groups(sync, keys)
    client = redis_clients.connect_async(settings)  # the API's own client, with its connection class
    intake: Any = accept.Intake(client, keys)
    limiter: Any = Limiter(settings, client)
    who = subject(DEVELOPER)
    one_script = hasattr(intake, "takes_rate_limits")
    admits = hasattr(limiter, "limits")  # the rate limit taken with the key
    latencies: list[float] = []

    async def enroll(n: int) -> None:
        started = time.perf_counter()
        if one_script:
            done = await intake.accept(DEVELOPER, n, 1, f"k{n}", 0, limiter.windows(who, "POST"))
        elif admits:
            owner = accept.key_owner(DEVELOPER.role, DEVELOPER.sub, n)
            done = await intake.accept(who.caller, owner, n, 1, f"k{n}", 0, limiter.limits(who, "POST"))
        else:
            await limiter.hit(who, "POST")
            done = await intake.accept(accept.key_owner(DEVELOPER.role, DEVELOPER.sub, n), n, 1, f"k{n}", 0)
        assert done.outcome == "queued", done
        latencies.append(time.perf_counter() - started)

    async def lane(start: int) -> None:
        for n in range(start, count, concurrency):
            await enroll(n + 1)

    for n in range(concurrency):  # warm up: connections, the library or the scripts loaded
        await enroll(count + n + 1)
    latencies.clear()
    began, cpu_began = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane(start) for start in range(concurrency)))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    await intake.aclose()
    await redis_clients.aclose(client)
    latencies.sort()
    print(f"client CPU: {cpu / count * 1e6:.0f} µs per enrollment", file=sys.stderr)
    return count / elapsed, statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000


if __name__ == "__main__":
    rate, p50, p99 = asyncio.run(run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    print(f"{rate:.0f} {p50:.2f} {p99:.2f}")
