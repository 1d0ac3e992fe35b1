"""Intake (requests/s against the bare-Starlette ceiling) and decisions (a backlog drained, against pgbench)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from pathlib import Path

import msgspec

from courseflow.http import auth
from courseflow.platform.config import Settings
from tests.bench import backlog, limits, locks, pacer, pgbench, visibility, wrk
from tests.bench.report import Row, Target
from tests.bench.stack import Stack

# The shipped default (WORKERS), used wherever one number of workers is measured.
WORKERS = Settings().worker.count
WRK_THREADS = 2
WRK_CONNECTIONS = 32
PGBENCH_CLIENTS = 8
# Several courses, so intake writes spread over several priority sets as in a real opening.
INTAKE_COURSES = dict.fromkeys(range(1, 21), 1000)
HOT_COURSE = {1: 1000}
MANY_COURSES = dict.fromkeys(range(1, 51), 500)


def _ms(us: int) -> str:
    return f"{us / 1000:.1f}"


def _enroll(stack: Stack, url: str, tag: str, seconds: float, warmup_s: float) -> tuple[wrk.WrkRun, dict[str, float]]:
    courses = list(INTAKE_COURSES)
    if warmup_s > 0:  # first connections, lazy imports, the pools filling up
        wrk.enroll(url, courses, f"{tag}-warmup", warmup_s, WRK_THREADS, WRK_CONNECTIONS)
    with stack.cpu_window() as usage:
        run = wrk.enroll(url, courses, tag, seconds, WRK_THREADS, WRK_CONNECTIONS)
    return run, usage


def intake_run(stack: Stack, processes: int, seconds: float, warmup_s: float) -> tuple[wrk.WrkRun, dict[str, float]]:
    """CourseFlow's POST /enroll alone, on a fresh database and Redis, no worker running."""
    stack.reset()
    with stack.api(processes) as api:
        api.create_courses(INTAKE_COURSES)
        return _enroll(stack, api.url, "intake", seconds, warmup_s)


def intake(stack: Stack, processes: int, seconds: float, warmup_s: float) -> Row:
    """POST /enroll with unique bodies, no worker running: CourseFlow, then the bare endpoint, same uvicorn setup."""
    courses = list(INTAKE_COURSES)
    with stack.bare(processes) as bare:
        ceiling, ceiling_cpu = _enroll(stack, bare.url, "bare", seconds, warmup_s)
    run, usage = intake_run(stack, processes, seconds, warmup_s)
    plural = "es" if processes > 1 else ""
    return Row(
        name=f"intake, {processes} API process{plural}",
        value=run.rps,
        unit="req/s",
        reference=ceiling.rps,
        reference_name=f"bare Starlette, {processes} process{plural}",
        target=Target("ratio", at_least=0.60),
        note=(
            f"p50 {_ms(run.p50_us)} / p99 {_ms(run.p99_us)} ms (bare {_ms(ceiling.p50_us)} / {_ms(ceiling.p99_us)} ms);"
            f" wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} {round(seconds)} s, unique bodies over {len(courses)} courses,"
            " no worker running"
        ),
        details={
            "courseflow": msgspec.structs.asdict(run),
            "bare": msgspec.structs.asdict(ceiling),
            "cpu_cores": usage,
            "bare_cpu_cores": ceiling_cpu,
        },
    )


# One token a student; each is reused for a few requests per run, as a student's would be.
AUTH_STUDENTS = 10_000
BENCH_SECRET = secrets.token_hex(32)


def intake_authenticated(stack: Stack, seconds: float, warmup_s: float) -> Row:
    """What the trust boundary costs intake: student tokens and rate limits on, against development mode.

    Both use one API process and the same courses; development mode runs without rate limits. They run
    alternately, twice each, and the better run of each counts: two cores shared with the load generator
    make single runs swing by more than the cost being measured.
    """
    courses = list(INTAKE_COURSES)
    settings = msgspec.structs.replace(
        Settings(), auth=msgspec.structs.replace(Settings().auth, jwt_secret=BENCH_SECRET)
    )
    # Warm-up and measurement use different students: the measured run verifies each of its tokens once.
    warmup_tokens = stack.data_dir / "warmup-tokens.txt"
    tokens = stack.data_dir / "student-tokens.txt"
    for path, first in ((warmup_tokens, AUTH_STUDENTS + 1), (tokens, 1)):
        path.write_text(
            "\n".join(auth.issue(settings, "student", str(s), 3600) for s in range(first, first + AUTH_STUDENTS))
        )

    def measure(server_env: dict[str, str], tag: str, token_file: Path | None) -> tuple[wrk.WrkRun, dict[str, float]]:
        stack.reset()
        with stack.api(1, **server_env) as api:
            api.bearer = auth.issue(settings, "registrar", "bench", 3600) if token_file else None
            api.create_courses(INTAKE_COURSES)
            warm = warmup_tokens if token_file else None
            if warmup_s > 0:
                wrk.enroll(api.url, courses, f"{tag}-warmup", warmup_s, WRK_THREADS, WRK_CONNECTIONS, tokens=warm)
            with stack.cpu_window() as usage:
                run = wrk.enroll(api.url, courses, tag, seconds, WRK_THREADS, WRK_CONNECTIONS, tokens=token_file)
        return run, usage

    opens, secureds = [], []
    for n in range(2):
        opens.append(measure({}, f"open{n}", None))
        secureds.append(measure({"AUTH_JWT_SECRET": BENCH_SECRET}, f"secured{n}", tokens))
    open_run, open_usage = max(opens, key=lambda m: m[0].rps)
    secured_run, usage = max(secureds, key=lambda m: m[0].rps)
    cpu_us = {
        name: u.get("api", 0.0) / r.rps * 1e6
        for name, (r, u) in (("open", (open_run, open_usage)), ("secured", (secured_run, usage)))
    }
    return Row(
        name="intake with authentication and rate limits",
        value=secured_run.rps,
        unit="req/s",
        reference=open_run.rps,
        reference_name="intake in development mode, no limits",
        target=Target("ratio", at_least=0.90),
        note=(
            f"p50 {_ms(secured_run.p50_us)} / p99 {_ms(secured_run.p99_us)} ms; {AUTH_STUDENTS:,} students (others"
            " in the warm-up), each request with its student's HS256 token, verified on first sight, and the"
            " student write limit; 1 API process;"
            f" API CPU per request {cpu_us['secured']:.0f} us vs {cpu_us['open']:.0f} us; better of 2 runs each"
        ),
        details={
            "secured": msgspec.structs.asdict(secured_run),
            "open": msgspec.structs.asdict(open_run),
            "cpu_cores": usage,
        },
    )


class Naive(msgspec.Struct, frozen=True):
    """pgbench tps of the one-transaction-per-decision design, by number of courses."""

    tps: dict[int, float]
    clients: int


def naive(stack: Stack, course_counts: list[int], seconds: int) -> Naive:
    tps = {n: pgbench.naive_tps(stack.database_url, stack.data_dir, n, PGBENCH_CLIENTS, seconds) for n in course_counts}
    return Naive(tps, PGBENCH_CLIENTS)


class Drain(msgspec.Struct, frozen=True):
    """A pre-filled backlog decided: how long until committed, and until visible through the API."""

    decided: int
    visible_s: float
    committed_s: float
    seen: visibility.Visible
    fill_rate: float
    cpu_cores: dict[str, float]
    lock_waits: locks.LockWaits

    @property
    def rate(self) -> float:
        return self.decided / self.visible_s


def drain(
    stack: Stack,
    courses: Mapping[int, int],
    workers: int,
    count: int,
    mixed: bool = True,
    cluster: bool = False,
    through_api: bool = False,
) -> Drain:
    """Time `workers` workers deciding a pre-filled backlog of `count` requests, on the single Redis or on the
    local Redis Cluster, until users see every decision through the API (the projector runs beside them).

    The workers start first and are paused (SIGSTOP) once they hold their partitions, while the backlog is
    filled; the clock starts when they are resumed, so interpreter start-up is not counted.
    `mixed=False` gives every request priority 0: arrival order alone. `through_api`: the backlog is sent to
    the API (the same for any version of the code) instead of put into Redis with this tree's Intake.
    """
    stack.reset()
    redis_env = stack.cluster_env() if cluster else {}
    timeout = 60 + count / 200
    with stack.api(1, **redis_env) as api:
        api.create_courses(courses)
        with stack.workers(workers, **redis_env) as children:
            stack.wait_workers_ready(children)
            visibility.wait_projected(api, len(courses))
            for child in children:
                child.pause()
            filled = time.monotonic()
            if through_api:
                pacer.burst(api.port, list(courses), "backlog", count, WRK_CONNECTIONS, mixed)
            else:
                backlog.fill(stack.env(**redis_env), list(courses), count, "backlog", mixed)
            fill_rate = count / (time.monotonic() - filled)
            with stack.cpu_window() as usage, locks.sampled(stack.database_url) as waits:
                resumed = time.time()
                for child in children:
                    child.resume()
                stack.wait_decided(timeout, count)
                committed = time.time() - resumed
                seen = visibility.wait_visible(stack, api, timeout)
    return Drain(stack.decided(), seen.epoch - resumed, committed, seen, fill_rate, usage, waits)


def decisions(
    stack: Stack,
    courses: Mapping[int, int],
    workers: int,
    count: int,
    ref: Naive,
    server: limits.ServerLimits,
    mixed: bool = True,
    cluster: bool = False,
) -> Row:
    """The decisions row of `drain`, against pgbench's naive decisions on as many courses."""
    run = drain(stack, courses, workers, count, mixed, cluster)
    visible, decided, committed, waits = run.visible_s, run.decided, run.committed_s, run.lock_waits
    label = "hot course" if len(courses) == 1 else f"{len(courses)} courses"
    plural = "s" if workers > 1 else ""
    mix = f"priorities {'/'.join(map(str, backlog.PRIORITY_MIX))} per course" if mixed else "all priority 0"
    rate = run.rate
    return Row(
        name=(
            f"decisions, {label}, {workers} worker{plural}{'' if mixed else ', all priority 0'}"
            f"{', Redis Cluster' if cluster else ''}"
        ),
        value=rate,
        unit="decisions/s",
        reference=ref.tps[len(courses)],
        reference_name=f"pgbench naive, {label}, -c {ref.clients}",
        target=Target("ratio", at_least=20.0) if len(courses) == 1 and workers == WORKERS and mixed else None,
        limit=limits.decisions(server, len(courses), rate),
        note=(
            f"{decided:,} pre-filled requests, {mix}; all visible through the API {visible:.2f} s after the paused"
            f" workers resumed, committed after {committed:.2f} s ({decided / committed:,.0f}/s committed);"
            f" a worker waited on another's lock in {waits.waiting} of {waits.samples} pg_stat_activity samples"
            f" (and for another to extend the events table in {waits.extending})"
        ),
        details={
            "decided": decided,
            "seconds": visible,
            "visible_per_s": rate,
            "committed_seconds": committed,
            "committed_per_s": decided / committed,
            "visible": msgspec.structs.asdict(run.seen),
            "fill_rate": run.fill_rate,
            "cpu_cores": run.cpu_cores,
            "lock_waits": msgspec.structs.asdict(waits),
        },
    )
