"""What /metrics reads from Redis and PostgreSQL at scrape time, and how it renders every series.

Queue depth, the consumer group's pending entries and lag, Redis's memory, and the busiest courses' seats live in the
servers, not in any process's memory: they are read when scraped (with the API's async clients, so the
event loop never waits on them), then yielded as gauges by a Collector beside the process's own series.
Per-course gauges cover the top `METRICS_TOP_COURSES` courses only, so series stay bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import cast

import psycopg
import redis
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from psycopg_pool import PoolTimeout

from courseflow.http.common import Services
from courseflow.intake.queue import GROUP
from courseflow.platform import redis_memory
from courseflow.platform.redis_memory import RedisMemory
from projections import queries

# Each server a scrape reads gets this long before its gauges are left out of the answer.
SOURCE_TIMEOUT_S = 2.0
log = logging.getLogger("courseflow.api")

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Pipeline(Collector):
    """Gauges read from the servers for one scrape; yields nothing for a server that could not be read."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def read_pipeline(svc: Services, top: int) -> Pipeline:
    families: list[Metric] = []
    # A server that hangs must not hang the scraper: each source gets a bounded time, then is left out.
    try:
        async with asyncio.timeout(SOURCE_TIMEOUT_S):
            depths = await queue_depths(svc)
            families += await _queue(svc, depths)
            families += _memory(await redis_memory.read(svc.redis))
    except (redis.RedisError, TimeoutError) as exc:
        log.warning("/metrics without queue gauges: Redis is unreachable (%s)", type(exc).__name__)
        return Pipeline(families)  # nor course gauges: their queue depths are Redis's
    try:
        async with asyncio.timeout(SOURCE_TIMEOUT_S):
            families += await _busiest_courses(svc, depths, top)
    except (psycopg.Error, PoolTimeout, TimeoutError) as exc:
        log.warning("/metrics without course gauges: %s", type(exc).__name__)
    return Pipeline(families)


async def queue_depths(svc: Services) -> dict[int, int]:
    """Each course intake knows and its requests not decided yet: read once, for the total and the busiest.
    A course's own count is read only where its partition has anything pending (its pending index)."""
    async with svc.redis.pipeline(transaction=False) as pipe:
        for partition in svc.keys.all():
            pipe.smembers(partition.courses)
            pipe.hlen(partition.pending_index)
        replies = await pipe.execute()
    known = cast(list[set[bytes]], replies[::2])
    waiting = [int(pending) > 0 for pending in replies[1::2]]
    depths = {int(raw): 0 for members in known for raw in members}
    busy = sorted(
        int(raw) for members, any_pending in zip(known, waiting, strict=True) if any_pending for raw in members
    )
    depths.update(zip(busy, await svc.intake.queue_depths(busy), strict=True))
    return depths


async def _queue(svc: Services, depths: dict[int, int]) -> list[Metric]:
    client, keys = svc.redis, svc.keys
    families: list[Metric] = [
        GaugeMetricFamily(
            "courseflow_queue_depth",
            "Requests accepted and not decided yet, over every course",
            value=sum(depths.values()),
        )
    ]
    async with client.pipeline(transaction=False) as pipe:
        for partition in keys.all():
            pipe.xpending(partition.requests, GROUP)
            pipe.xinfo_groups(partition.requests)
        replies = await pipe.execute(raise_on_error=False)
    pending, lag = 0, 0
    for summary, groups in zip(replies[::2], replies[1::2], strict=True):
        if isinstance(summary, redis.ResponseError) or isinstance(groups, redis.ResponseError):
            continue  # no stream or no group yet: nothing read, nothing pending
        pending += int(summary["pending"])
        # Redis cannot always tell (entries deleted inside the unread range): then it counts as none.
        lag += int(next((g.get("lag") for g in groups if g["name"] in (GROUP, GROUP.encode())), None) or 0)
    families.append(
        GaugeMetricFamily(
            "courseflow_stream_pending_entries",
            "Stream entries delivered to a worker and not acknowledged yet",
            value=pending,
        )
    )
    families.append(
        GaugeMetricFamily("courseflow_stream_consumer_lag", "Stream entries not delivered to any worker yet", value=lag)
    )
    return families


def _memory(memory: RedisMemory | None) -> list[Metric]:
    if memory is None:
        return []
    families: list[Metric] = [
        GaugeMetricFamily("courseflow_redis_memory_used_bytes", "Memory Redis uses", value=memory.used_bytes),
        GaugeMetricFamily(
            "courseflow_redis_memory_max_bytes", "Redis's maxmemory (0: unbounded)", value=memory.max_bytes
        ),
    ]
    if memory.ratio is not None:
        # At 1 every new request is refused (503): noeviction keeps what was accepted.
        families.append(
            GaugeMetricFamily("courseflow_redis_memory_ratio", "used / maxmemory of Redis", value=memory.ratio)
        )
    return families


async def _busiest_courses(svc: Services, depths: dict[int, int], top: int) -> list[Metric]:
    rows = await svc.read(queries.seats, None)
    # A course intake does not know has no priority set: nothing waits for it.
    queued = [(row, depths.get(row["course_id"], 0)) for row in rows]
    busiest = sorted(queued, key=lambda r: (r[1], r[0]["seats_taken"]), reverse=True)[:top]
    seats = GaugeMetricFamily("courseflow_course_seats_taken", "Seats granted in a course", labels=["course_id"])
    capacity = GaugeMetricFamily("courseflow_course_capacity", "Seats a course has", labels=["course_id"])
    depth = GaugeMetricFamily(
        "courseflow_course_queue_depth", "Requests for a course not decided yet", labels=["course_id"]
    )
    for row, pending in busiest:
        course = [str(row["course_id"])]
        seats.add_metric(course, row["seats_taken"])
        capacity.add_metric(course, row["capacity"])
        depth.add_metric(course, pending)
    return [seats, capacity, depth]


class _Registered(Collector):
    """The process's own series (the default registry) beside the scrape's, without registering per scrape."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def render(pipeline: Pipeline, exposition: str) -> tuple[bytes, str]:
    """The exposition `negotiate` chose (Prometheus text or OpenMetrics) and its content type.

    With PROMETHEUS_MULTIPROC_DIR set, the series of every process writing there (API processes, workers,
    projector) are summed; otherwise this process's own. Reads files in multiprocess mode: call off the loop.
    """
    encoder, content_type = choose_encoder(exposition)
    registry = CollectorRegistry(auto_describe=False)
    path = os.environ.get(MULTIPROC_DIR)
    if path:
        MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
        registry.register(pipeline)
    else:
        registry.register(_Registered(REGISTRY, pipeline))
    return encoder(registry), content_type


JSON = "application/json"
# The text expositions written, by media type and `version` ("": none given), each as the one version it is.
TEXT_VERSIONS: Mapping[str, Mapping[str, str]] = {
    "text/plain": {"": "0.0.4", "0.0.4": "0.0.4", "1.0.0": "1.0.0"},
    "text/*": {"": "0.0.4"},
    "application/openmetrics-text": {"": "1.0.0", "1.0.0": "1.0.0"},
}
_ESCAPINGS = frozenset({"allow-utf-8", "underscores", "dots", "values"})
# The first ranges of a long `Accept` are read, no more: the work per request stays bounded.
MOST_RANGES = 32
_QUALITY = re.compile(r"0(\.\d{0,3})?|1(\.0{0,3})?")
OFFERED = "application/json, text/plain (version 0.0.4 or 1.0.0) or application/openmetrics-text (version 1.0.0)"


def negotiate(accept: str) -> str | None:
    """What `Accept` gets: JSON, the `Accept` value prometheus-client is handed for a text exposition (one
    version it writes, never a version it cannot read), or None when nothing asked for is written (406).

    No `Accept` is JSON, the seed's answer; ranges are taken by quality, then in the order given."""
    if not accept.strip():
        return JSON
    ranges: list[tuple[float, int, str, dict[str, str]]] = []
    for index, item in enumerate(accept.split(",")[:MOST_RANGES]):
        kind, *parameters = item.split(";")
        given: dict[str, str] = {}
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            given.setdefault(name.strip().lower(), value.strip().strip('"'))
        quality = given.get("q", "1")
        if _QUALITY.fullmatch(quality) and float(quality) > 0:
            ranges.append((-float(quality), index, kind.strip().lower(), given))
    for _, _, kind, given in sorted(ranges, key=lambda r: r[:2]):
        if kind in (JSON, "application/*", "*/*"):
            return JSON
        version = TEXT_VERSIONS.get(kind, {}).get(given.get("version", ""))
        if version is None:
            continue
        media_type = "application/openmetrics-text" if kind == "application/openmetrics-text" else "text/plain"
        if not given.get("version"):
            return media_type  # prometheus-client's own default for it
        escaping = given.get("escaping", "")
        return f"{media_type}; version={version}" + (f"; escaping={escaping}" if escaping in _ESCAPINGS else "")
    return None
