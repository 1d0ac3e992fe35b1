"""`python -m tests.bench [--quick] [--ab BASE]`: start servers, measure, print one table, save it as JSON, clean up."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from tests.bench import ab, abuse, crowd, doors, limits, report, sides, throughput
from tests.bench.procs import BenchError
from tests.bench.report import Row, Target
from tests.bench.stack import Stack
from tests.bench.throughput import WORKERS


class Plan(msgspec.Struct, frozen=True):
    mode: str
    intake_s: float
    warmup_s: float
    backlog: int
    pgbench_s: int
    crowd: int
    paced_s: float
    floor_s: float
    # XADD commands of redis-benchmark without pipelining (8 times as many pipelined).
    xadd_requests: int
    # Each half of the slow-clients row: the legitimate client alone, then under attack.
    abuse_s: float


# Full: about 10 minutes on 2 cores. Quick: the same rows from smaller samples, about 2 minutes.
FULL = Plan(
    "full",
    intake_s=10,
    warmup_s=2,
    backlog=50_000,
    pgbench_s=10,
    crowd=100_000,
    paced_s=30,
    floor_s=4,
    xadd_requests=60_000,
    abuse_s=10,
)
QUICK = Plan(
    "quick",
    intake_s=2,
    warmup_s=0,
    backlog=4_000,
    pgbench_s=1,
    crowd=20_000,
    paced_s=2,
    floor_s=0.5,
    xadd_requests=10_000,
    abuse_s=3,
)
PACED_RATE = 5_000
FLOOR_RATE = 500


def _progress(started: float) -> Callable[[str], None]:
    def say(what: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {what}", file=sys.stderr, flush=True)

    return say


def measure(stack: Stack, plan: Plan, opening: Callable[[], crowd.Opening], say: Callable[[str], None]) -> list[Row]:
    course_counts = [1, len(crowd.CROWD_COURSES), len(throughput.MANY_COURSES)]
    say(f"pgbench: naive decisions, 1, 20 and 50 courses, {plan.pgbench_s} s each")
    naive = throughput.naive(stack, course_counts, plan.pgbench_s)
    say(f"server limits: redis-benchmark XADD, pgbench {limits.PER_TRANSACTION} decisions per transaction")
    server = limits.measure(
        stack, throughput.WRK_CONNECTIONS, plan.xadd_requests, throughput.PGBENCH_CLIENTS, course_counts, plan.pgbench_s
    )
    rows = limits.rows(server, naive.tps)
    for processes in (1, 2):
        say(f"intake with {processes} API process(es), and the bare ceiling")
        rows.append(throughput.intake(stack, processes, plan.intake_s, plan.warmup_s))
    say("intake with authentication and rate limits, and in development mode")
    rows.append(throughput.intake_authenticated(stack, plan.intake_s, plan.warmup_s))
    for row in rows[-3:]:
        row.limit = limits.intake(server, row.value)
    # Scaling 1, 2, 4 workers; for the hot course also arrival order alone.
    runs = [(throughput.HOT_COURSE, workers, True) for workers in (1, 2, 4)] + [(throughput.HOT_COURSE, WORKERS, False)]
    runs += [(throughput.MANY_COURSES, workers, True) for workers in (1, 2, 4)]
    for courses, workers, mixed in runs:
        what = "mixed priorities" if mixed else "all priority 0"
        say(f"decisions: {plan.backlog:,} requests ({what}) over {len(courses)} course(s), {workers} worker(s)")
        rows.append(throughput.decisions(stack, courses, workers, plan.backlog, naive, server, mixed))
    # Scaling out: the same 50 courses with the queue on the local Redis Cluster (3 masters, 3 replicas).
    for workers in (1, 2, 4):
        say(f"decisions on Redis Cluster: {plan.backlog:,} requests over 50 courses, {workers} worker(s)")
        many = throughput.MANY_COURSES
        rows.append(throughput.decisions(stack, many, workers, plan.backlog, naive, server, cluster=True))
    say(f"flash crowd: {plan.crowd:,} requests over {len(crowd.CROWD_COURSES)} courses")
    rows.append(crowd.flash_crowd(stack, plan.crowd, naive, opening(), server))
    say(f"accept-to-decision latency at {FLOOR_RATE:,} then {PACED_RATE:,} req/s")
    latency, worker_idle_kb = crowd.steady_latency(stack, PACED_RATE, plan.paced_s, FLOOR_RATE, plan.floor_s)
    rows.append(latency)
    say(f"a legitimate client alone, then beside {abuse.SLOW_CONNECTIONS:,} slow connections and a WebSocket flood")
    rows.append(abuse.slow_and_flood(stack, plan.abuse_s))
    rows += memory(stack, worker_idle_kb)
    return rows


def memory(stack: Stack, worker_idle_kb: int) -> list[Row]:
    """Peak RSS (VmHWM) of any one process, over every API and worker process the run started."""
    mb = 1024.0
    return [
        Row(
            name="API peak RSS (largest process)",
            value=stack.peak_kb["api"] / mb,
            unit="MB",
            reference=stack.peak_kb["bare"] / mb,
            reference_name="bare Starlette peak",
            target=Target("value", at_most=150.0),
            note="VmHWM of every uvicorn process (parent and workers) of every API started in this run",
        ),
        Row(
            name="worker peak RSS (largest process)",
            value=stack.peak_kb["worker"] / mb,
            unit="MB",
            reference=worker_idle_kb / mb,
            reference_name="idle worker",
            target=Target("value", at_most=80.0),
            note=f"VmHWM of every worker of this run; reference: VmRSS of one of {WORKERS} workers just after joining",
        ),
        Row(
            name="projector peak RSS",
            value=stack.peak_kb["projector"] / mb,
            unit="MB",
            reference=stack.peak_kb["worker"] / mb,
            reference_name="worker peak",
            target=Target("value", at_most=150.0),
            note="VmHWM of the projector of every row with workers (it runs beside them)",
        ),
    ]


def compare(base_commit: str, plan: Plan, rounds: int) -> int:
    """The intake and decision rows for `base_commit` and for the working tree, alternately, in one run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started_at, started = datetime.now(UTC), time.monotonic()
    say = _progress(started)
    info, code = report.machine(), report.code_version()
    sizes = ab.Sizes(plan.intake_s, plan.warmup_s, plan.backlog)
    new = msgspec.structs.replace(sides.WORKING_TREE, database="courseflow_new")
    try:
        with sides.checkout(base_commit) as base:
            for side in (base, new):
                sides.check_imports(side, os.environ | side.env())
            with Stack.started() as stack:
                say(f"servers up in {stack.data_dir}; {base.label} checked out in {base.root}")
                results = ab.compare(stack, base, new, sizes, rounds, say)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    duration = time.monotonic() - started
    print(report.header(f"A/B {plan.mode}, {rounds} rounds", started_at, info))
    print(ab.table(results, base, new))
    parameters = msgspec.structs.asdict(sizes) | {"rounds": rounds, "workers": WORKERS, "plan": plan.mode}
    setup = {"machine": info, "code": code, "base": base.label, "parameters": parameters}
    path = ab.save(started_at, duration, setup, results)
    print(f"\nfinished in {duration:.0f} s; written to {path}")
    return 0


def compare_doors(plan: Plan, rounds: int, variants: list[str]) -> int:
    """Intake through each way of bounding slow and heavy clients that was weighed, alternately in one run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started_at, started = datetime.now(UTC), time.monotonic()
    say = _progress(started)
    info = report.machine()
    try:
        with Stack.started() as stack:
            runs = doors.compare(stack, variants, plan.intake_s, plan.warmup_s, rounds, say)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(report.header(f"doors {plan.mode}, {rounds} rounds", started_at, info))
    print(doors.table(runs))
    print(f"\nfinished in {time.monotonic() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller samples: the whole table in about 2 minutes")
    parser.add_argument(
        "--opening",
        choices=sorted(crowd.OPENINGS),
        default="opens-at",
        help="how the flash crowd's registration opens: its courses' opens_at (default), or workers started after it",
    )
    parser.add_argument(
        "--ab",
        metavar="BASE",
        help="compare the intake and decision rows of commit BASE and of the working tree, run alternately",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --ab: runs of each row per side (at least 2)")
    parser.add_argument(
        "--doors",
        nargs="?",
        const=",".join(doors.VARIANTS),
        metavar="VARIANTS",
        help=f"intake through each server configuration weighed, alternately (default all: {','.join(doors.VARIANTS)})",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.doors is not None:
        unknown = set(args.doors.split(",")) - set(doors.VARIANTS)
        if unknown:
            parser.error(f"--doors: unknown {', '.join(sorted(unknown))}")
        return compare_doors(plan, args.rounds, args.doors.split(","))
    if args.ab is not None:
        if args.rounds < 2:
            parser.error("--rounds must be at least 2: one run per side gives no spread")
        return compare(args.ab, plan, args.rounds)
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the servers and their data dir are still removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started_at, started = datetime.now(UTC), time.monotonic()
    say = _progress(started)
    info, code = report.machine(), report.code_version()  # before the run: the tree may change meanwhile
    try:
        with Stack.started() as stack:
            say(f"servers up in {stack.data_dir}")
            rows = measure(stack, plan, crowd.OPENINGS[args.opening], say)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    duration = time.monotonic() - started
    print(report.header(plan.mode, started_at, info))
    print(report.table(rows))
    parameters = msgspec.structs.asdict(plan) | {
        "workers": WORKERS,
        "wrk": f"-t{throughput.WRK_THREADS} -c{throughput.WRK_CONNECTIONS}",
        "pgbench_clients": throughput.PGBENCH_CLIENTS,
        "xadd_pipeline": limits.PIPELINE,
        "pgbench_per_transaction": limits.PER_TRANSACTION,
        "paced_rate": PACED_RATE,
        "floor_rate": FLOOR_RATE,
        "opening": args.opening,
    }
    setup = {"machine": info, "code": code, "parameters": parameters}
    path = report.save(plan.mode, started_at, duration, setup, rows)
    print(f"\nfinished in {duration:.0f} s; written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
