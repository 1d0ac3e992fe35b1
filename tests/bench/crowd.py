"""The flash crowd (everything decided how soon after the last 202) and accept-to-decision latency under load."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec

from tests.bench import limits, pacer, visibility, wrk
from tests.bench.procs import BenchError
from tests.bench.report import Limit, Row, Target
from tests.bench.stack import Server, Stack
from tests.bench.throughput import WORKERS, WRK_CONNECTIONS, WRK_THREADS, Naive

CROWD_COURSES = dict.fromkeys(range(1, 21), 1000)
PACED_CONNECTIONS = 64


class Opening(Protocol):
    """How registration opens at once for the crowd: the stand-in below, or the courses' own `opens_at`."""

    workers_during_crowd: bool
    note: str

    def course_fields(self) -> dict[str, object]: ...

    def open(self, api: Server, course_ids: list[int]) -> float | None:
        """Open registration after the crowd's last 202; returns the opening time (epoch s), if not then."""


class WorkersStartAfterCrowd:
    """Without registration windows: nothing is decided while the crowd arrives, as if registration were shut."""

    workers_during_crowd = False
    note = "simulated opening: no worker runs while the crowd is accepted; workers start at the last 202"

    def course_fields(self) -> dict[str, object]:
        return {}

    def open(self, api: Server, course_ids: list[int]) -> float | None:
        return None


class OpensAt:
    """Registration windows: running workers defer the crowd until `opens_at`, then every course opens at once."""

    workers_during_crowd = True
    note = "opens_at: workers ran during the crowd (deferring it); every course's opens_at set to one instant after it"
    # Far enough ahead that a worker re-reads the next opening (it blocks at most BLOCK_MS) before it comes.
    LEAD_S = 1.0

    def course_fields(self) -> dict[str, object]:
        return {"opens_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}

    def open(self, api: Server, course_ids: list[int]) -> float | None:
        opens_at = datetime.now(UTC) + timedelta(seconds=self.LEAD_S)
        for course_id in course_ids:
            status, answer = api.patch(f"/api/v1/courses/{course_id}", {"opens_at": opens_at.isoformat()})
            if status != 200:
                raise BenchError(f"opening course {course_id}: {status} {answer!r}")
        return opens_at.timestamp()


OPENINGS: dict[str, type[WorkersStartAfterCrowd] | type[OpensAt]] = {
    "workers-after": WorkersStartAfterCrowd,
    "opens-at": OpensAt,
}


def flash_crowd(stack: Stack, count: int, ref: Naive, opening: Opening, server: limits.ServerLimits) -> Row:
    """`count` requests over 20 courses as fast as wrk sends them, then the time until users see all decided."""
    courses = list(CROWD_COURSES)
    stack.reset()
    timeout = 60 + count / 200
    with stack.api() as api, ExitStack() as deciding:
        api.create_courses(CROWD_COURSES, **opening.course_fields())
        if opening.workers_during_crowd:
            deciding.enter_context(stack.workers(WORKERS))
        crowd = wrk.enroll(
            api.url, courses, "crowd", 600, WRK_THREADS, WRK_CONNECTIONS, until=lambda: stack.accepted() >= count
        )
        spawned = time.time()
        if not opening.workers_during_crowd:
            deciding.enter_context(stack.workers(WORKERS))
        opened_at = opening.open(api, courses)
        with stack.cpu_window() as usage:
            stack.wait_decided(timeout)
            seen = visibility.wait_visible(stack, api, timeout)
    row = stack.db.execute(
        "SELECT count(*), extract(epoch FROM max(requested_at)), extract(epoch FROM min(decided_at)),"
        " extract(epoch FROM max(decided_at)) FROM enrollment_requests"
    ).fetchone()
    assert row is not None
    decided, last_202, first_decided, last_decided = int(row[0]), float(row[1]), float(row[2]), float(row[3])
    # requested_at is stamped just before the Redis write that precedes the 202: the last one is the crowd's end.
    origin = max(last_202, opened_at or 0.0)
    committed, visible = last_decided - origin, seen.epoch - origin
    startup = "" if opening.workers_during_crowd else f", first decision {first_decided - spawned:.1f} s after"
    batched = server.batched[len(courses)]
    return Row(
        name=f"flash crowd: all visible after last 202 ({decided:,} req)",
        value=visible,
        unit="s",
        reference=decided / ref.tps[len(courses)],
        reference_name=f"naive: {decided:,} ÷ pgbench tps, {len(courses)} courses",
        target=Target("value", at_most=5.0),
        limit=Limit.of_duration(visible, decided / batched, f"÷ pgbench {limits.PER_TRANSACTION}/txn"),
        note=(
            f"{opening.note}{startup}; accepted at {crowd.rps:,.0f} req/s"
            f" (wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}, p99 {crowd.p99_us / 1000:.0f} ms), {len(courses)} courses,"
            f" {WORKERS} workers deciding {decided / max(last_decided - first_decided, 1e-3):,.0f}/s;"
            f" the last decision committed {committed:.2f} s after, all visible through the API {visible:.2f} s after"
        ),
        details={
            "decided": decided,
            "wrk": msgspec.structs.asdict(crowd),
            "origin": origin,
            "committed_s": committed,
            "visible_s": visible,
            "visible": msgspec.structs.asdict(seen),
            "cpu_cores": usage,
        },
    )


def _paced(stack: Stack, port: int, tag: str, rate: float, seconds: float) -> dict[str, Any]:
    """Offer `rate` req/s for `seconds`; accept-to-decision percentiles of those requests, from the table."""
    # Cores while the load is offered (not while the rest drains): who kept the rate from being reached.
    with stack.cpu_window() as usage:
        run = pacer.paced_enroll(port, list(CROWD_COURSES), tag, rate, seconds, PACED_CONNECTIONS)
    stack.wait_decided(timeout=60 + run.sent / 200)
    row = stack.db.execute(
        "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP"
        " (ORDER BY extract(epoch FROM decided_at - requested_at)), count(*)"
        " FROM enrollment_requests WHERE idempotency_key LIKE %s",
        (f"{tag}-%",),
    ).fetchone()
    assert row is not None
    p50, p99 = (float(x) * 1000 for x in row[0])
    # p99 per second of arrival: tells a steady tail from one stall (a checkpoint, an AOF rewrite).
    per_second = stack.db.execute(
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - requested_at))"
        " FROM enrollment_requests WHERE idempotency_key LIKE %s"
        " GROUP BY date_trunc('second', requested_at) ORDER BY date_trunc('second', requested_at)",
        (f"{tag}-%",),
    ).fetchall()
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "p99_ms_per_second": [round(float(x) * 1000, 1) for (x,) in per_second],
        "decided": int(row[1]),
        "run": msgspec.structs.asdict(run),
        "cpu_cores": usage,
    }


def steady_latency(stack: Stack, rate: float, seconds: float, floor_rate: float, floor_s: float) -> tuple[Row, int]:
    """p99 of decided_at - requested_at at a steady `rate`, against the same at a light `floor_rate`, with the
    workers and the projector running.

    Also returns a worker's resident set (kB) once it has joined the group and before any load: the
    reference for the worker memory row.
    """
    stack.reset()
    with stack.api() as api:
        api.create_courses(CROWD_COURSES)
        with stack.workers(WORKERS) as children:
            stack.wait_workers_ready(children)
            visibility.wait_projected(api, len(CROWD_COURSES))
            idle_kb = max(stack.rss_kb(children))
            floor = _paced(stack, api.port, "floor", floor_rate, floor_s)
            steady = _paced(stack, api.port, "steady", rate, seconds)
    run = msgspec.convert(steady["run"], pacer.PacedRun)
    per_second = steady["p99_ms_per_second"]
    row = Row(
        name=f"accept→decision p99 at {rate:,.0f} req/s offered",
        value=steady["p99_ms"],
        unit="ms",
        reference=floor["p99_ms"],
        reference_name=f"p99 at {floor_rate:,.0f} req/s",
        target=Target("value", at_most=250.0),
        note=(
            f"achieved {run.rate:,.0f} req/s over {run.seconds:.0f} s ({run.sent:,} of {run.due:,} due; paced from"
            f" Python over {PACED_CONNECTIONS} keep-alive connections, each waiting for its answer);"
            f" {_bottleneck(run, steady['cpu_cores'])}; p50 {steady['p50_ms']:.0f} ms (light load"
            f" {floor['p50_ms']:.0f} ms); p99 per second of arrival (ms): {' '.join(f'{p:.0f}' for p in per_second)};"
            f" 1 API process, {WORKERS} workers and the projector running; decided_at - requested_at from"
            " enrollment_requests" + (f"; {run.reconnects} connections closed by the API" if run.reconnects else "")
        ),
        details={"steady": steady, "floor": floor, "cpu_cores": steady["cpu_cores"]},
    )
    return row, idle_kb


def _bottleneck(run: pacer.PacedRun, cores: dict[str, float]) -> str:
    """Who kept the offered rate from being reached: the pacer (one Python process), or the system under test."""
    pacer_cores = run.cpu_s / max(run.seconds, 1e-3)
    spent = f"pacer {pacer_cores:.2f} cores ({run.cpu_s / max(run.sent, 1) * 1e6:.0f} us a request)"
    if run.sent >= 0.98 * run.due:
        return f"rate held; {spent}"
    if pacer_cores >= 0.8:
        return f"the pacer limits the rate: {spent}"
    busy = sum(cores.values())
    return (
        f"not the pacer ({spent}) but the API's answers limit the rate: API {cores.get('api', 0.0):.2f} cores,"
        f" {busy:.1f} of {len(os.sched_getaffinity(0))} cores busy"
    )
