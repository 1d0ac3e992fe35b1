"""GET /metrics: seats and queues as the seed's JSON, or Prometheus series, at a bounded cost to anyone.

Public, so bounded for any number of callers and courses: the totals, and what a scrape reads from the
servers, are computed at most once a second per process and shared by every caller meanwhile; the per-course
list is the first page of at most MAX_METRICS_PAGE courses for anyone, the pages after it for registrars and
services; `Accept` is negotiated, and what cannot be written is a 406.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from courseflow.eventstore import store
from courseflow.http import scrape
from courseflow.http.common import JSON, Services, services
from courseflow.http.operations import operation, query
from courseflow.http.payloads import MAX_METRICS_PAGE, MetricsQuery
from courseflow.http.problems import NotAcceptable, NotFound
from courseflow.http.views import CourseMetrics, Latency, Metrics, RedisMemoryView
from courseflow.platform import redis_memory
from courseflow.platform.recent import Recent
from courseflow.platform.redis_memory import RedisMemory
from projections import queries

# How old an answer may be: one computation a second per process, however many ask.
MAX_AGE_S = 1.0


class Totals(msgspec.Struct, frozen=True, kw_only=True):
    queue_depth: int
    seats_taken: int
    capacity: int
    waitlist_length: int
    status: Literal["open", "full"]
    dead_letters: int
    projection_lag: int
    latency: Latency
    redis_memory: RedisMemoryView | None
    course_count: int


class Listed(msgspec.Struct, frozen=True, kw_only=True):
    courses: list[CourseMetrics]
    next_after: int | None


class Recently:
    """What /metrics computed in the last second, by what was asked: shared by every caller."""

    def __init__(self, max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.totals: Recent[str, Totals] = Recent(max_age_s, 1, clock)
        self.pages: Recent[tuple[int, int], Listed] = Recent(max_age_s, 256, clock)
        # What a scrape reads from the servers; the process's own series are rendered afresh for each scrape.
        self.pipelines: Recent[str, scrape.Pipeline] = Recent(max_age_s, 1, clock)


def _recently(request: Request) -> Recently:
    found: Recently = request.app.state.recently
    return found


@operation(
    summary="Seats and queues: the seed's /metrics, or Prometheus series",
    tag="monitoring",
    description=(
        "`queue_depth`, `seats_taken`, `capacity` and `status` (open while any seat is free) summed over every "
        "course, the pipeline's dead letters and projection lag, accept-to-decision percentiles over the latest "
        "decisions, how full Redis is (`redis_memory`), `course_count`, and the first `limit` courses by id "
        "(`next_after` for the next page). The pages after the first (`after`) need a registrar's or service's "
        "token. The totals and each page are computed at most once a second per server, so they may be a "
        "second old. With `course_id`, that course's figures only, current. "
        "`Accept: text/plain` (or `application/openmetrics-text`) answers the Prometheus exposition instead; an "
        "`Accept` naming nothing that is written (another media type, a version not written) is a 406."
    ),
    query=MetricsQuery,
    answers={200: Metrics | CourseMetrics},
    problems=(401, 403, 404, 406),
    public=True,
    text="text/plain",
)
async def metrics(request: Request) -> Response:
    svc = services(request)
    answer = scrape.negotiate(request.headers.get("accept", ""))
    if answer is None:
        raise NotAcceptable(f"/metrics answers {scrape.OFFERED}", "Accept")
    if answer != scrape.JSON:
        top = svc.settings.metrics.top_courses
        pipeline = await _recently(request).pipelines.get("all", lambda: scrape.read_pipeline(svc, top))
        body, content_type = await run_in_threadpool(scrape.render, pipeline, answer)
        return Response(body, media_type=content_type)
    asked = query(request, MetricsQuery)
    if asked.course_id is not None:
        rows = await svc.read(queries.seats, asked.course_id)
        if not rows:
            raise NotFound(f"no course {asked.course_id}", "course_id")
        return JSON((await _courses(svc, rows))[0])
    recently = _recently(request)
    totals = await recently.totals.get("all", lambda: _totals(svc))
    if asked.after:
        # Every `after` is another computation: later pages are for those who run the term, not for anyone.
        svc.authenticator.authenticate(request.headers.get("authorization")).require("registrar", "service")
        page = await recently.pages.get((asked.after, asked.limit), lambda: _page(svc, asked.after, asked.limit))
    else:
        page = _first(
            await recently.pages.get((0, MAX_METRICS_PAGE), lambda: _page(svc, 0, MAX_METRICS_PAGE)), asked.limit
        )
    return JSON(Metrics(**msgspec.structs.asdict(totals), courses=page.courses, next_after=page.next_after))


def _first(page: Listed, limit: int) -> Listed:
    """The first `limit` courses of the (shared) first page: a smaller `limit` is no new computation."""
    if len(page.courses) <= limit:
        return page
    return Listed(courses=page.courses[:limit], next_after=page.courses[limit - 1].course_id)


async def _totals(svc: Services) -> Totals:
    """Summed in PostgreSQL and Redis: one row, and a round trip or two, whatever the number of courses."""
    seats = await svc.read(queries.seat_totals)
    return Totals(
        queue_depth=await svc.intake.pending_total(),
        seats_taken=seats["seats_taken"],
        capacity=seats["capacity"],
        waitlist_length=seats["waitlist_length"],
        status="open" if seats["open"] else "full",
        dead_letters=await svc.intake.dead_letter_count(),
        projection_lag=await svc.read(queries.lag),
        latency=_latency(await svc.read(store.decision_latency_ms)),
        redis_memory=_memory(await redis_memory.read(svc.redis)),
        course_count=seats["courses"],
    )


async def _page(svc: Services, after: int, limit: int) -> Listed:
    rows = await svc.read(queries.seats_page, after, limit + 1)
    more = len(rows) > limit
    courses = await _courses(svc, rows[:limit])
    return Listed(courses=courses, next_after=courses[-1].course_id if more else None)


async def _courses(svc: Services, rows: list[dict[str, int]]) -> list[CourseMetrics]:
    depths = await svc.intake.queue_depths([row["course_id"] for row in rows])
    return [
        CourseMetrics(
            course_id=row["course_id"],
            queue_depth=depth,
            seats_taken=row["seats_taken"],
            capacity=row["capacity"],
            waitlist_length=row["waitlist_length"],
            status="open" if row["seats_taken"] < row["capacity"] else "full",
        )
        for row, depth in zip(rows, depths, strict=True)
    ]


def _memory(memory: RedisMemory | None) -> RedisMemoryView | None:
    if memory is None:
        return None
    return RedisMemoryView(used_bytes=memory.used_bytes, max_bytes=memory.max_bytes, ratio=memory.ratio)


def _latency(measured: store.DecisionLatency | None) -> Latency:
    if measured is None:
        return Latency(p50_ms=None, p95_ms=None, p99_ms=None)
    return Latency(p50_ms=round(measured.p50, 3), p95_ms=round(measured.p95, 3), p99_ms=round(measured.p99, 3))
