"""An A/B in one run: the intake and decision rows for an older commit and for the working tree, alternately.

Both sides run on the same servers, each on a database of its own created and migrated by its own code,
with Redis emptied before every run. The same benchmark code drives both: it starts each side's API,
workers and projector through `python -m courseflow`, and fills the decision backlog through the HTTP API,
so nothing of one side's internals is used to measure the other.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from tests.bench import throughput
from tests.bench.report import RESULTS
from tests.bench.sides import Side
from tests.bench.stack import Stack
from tests.bench.throughput import HOT_COURSE, MANY_COURSES, WORKERS


class Sizes(msgspec.Struct, frozen=True):
    """How long each intake run lasts and how big each decision backlog is (from the plan, quick or full)."""

    intake_s: float
    warmup_s: float
    backlog: int


class Sample(msgspec.Struct, frozen=True):
    """One run's figure, and the API processes' CPU per request where the row has one: unlike throughput on a
    shared machine, CPU time per request barely moves with what else runs."""

    value: float
    api_cpu_us: float | None = None


class Case(msgspec.Struct, frozen=True):
    name: str
    unit: str
    measure: Callable[[Stack], Sample]


def cases(sizes: Sizes) -> list[Case]:
    """The rows of `make bench` that the comparison repeats: intake, and decisions with the shipped workers."""

    def intake(processes: int) -> Callable[[Stack], Sample]:
        def measure(stack: Stack) -> Sample:
            run, cores = throughput.intake_run(stack, processes, sizes.intake_s, sizes.warmup_s)
            return Sample(run.rps, cores.get("api", 0.0) / run.rps * 1e6 if run.rps else None)

        return measure

    def decisions(courses: dict[int, int]) -> Callable[[Stack], Sample]:
        return lambda stack: Sample(throughput.drain(stack, courses, WORKERS, sizes.backlog, through_api=True).rate)

    workers = f"{WORKERS} worker{'s' if WORKERS > 1 else ''}"
    return [
        Case("intake, 1 API process", "req/s", intake(1)),
        Case("intake, 2 API processes", "req/s", intake(2)),
        Case(f"decisions, hot course, {workers}", "decisions/s", decisions(HOT_COURSE)),
        Case(f"decisions, {len(MANY_COURSES)} courses, {workers}", "decisions/s", decisions(MANY_COURSES)),
    ]


class Comparison(msgspec.Struct):
    """One row's figures, one per round, for the base commit and for the working tree."""

    name: str
    unit: str
    base: list[float]
    new: list[float]
    # The API processes' CPU microseconds per request, per round (intake rows only).
    base_cpu_us: list[float] = msgspec.field(default_factory=list)
    new_cpu_us: list[float] = msgspec.field(default_factory=list)

    @property
    def ratio(self) -> float:
        """new / base of the medians: above 1, the working tree is faster."""
        return statistics.median(self.new) / statistics.median(self.base)


def compare(
    stack: Stack, base: Side, new: Side, sizes: Sizes, rounds: int, say: Callable[[str], None]
) -> list[Comparison]:
    """Each round runs every row for the base, then for the working tree (A B A B …): a machine that gets
    busier or quieter during the run then weighs on both sides alike."""
    measured = cases(sizes)
    results = [Comparison(case.name, case.unit, [], []) for case in measured]
    for round_no in range(1, rounds + 1):
        for case, result in zip(measured, results, strict=True):
            for side, values, cpu in ((base, result.base, result.base_cpu_us), (new, result.new, result.new_cpu_us)):
                say(f"round {round_no}/{rounds}: {case.name}, {side.label}")
                stack.use(side)
                sample = case.measure(stack)
                values.append(sample.value)
                if sample.api_cpu_us is not None:
                    cpu.append(sample.api_cpu_us)
                say(f"  {sample.value:,.0f} {case.unit}")
    return results


def _spread(values: list[float]) -> str:
    """Smallest to largest, and that range as a share of the median."""
    middle = statistics.median(values)
    share = (max(values) - min(values)) / middle if middle else 0.0
    return f"{min(values):,.0f} to {max(values):,.0f} (±{share / 2:.0%})"


_CPU = "API CPU µs/request, old → new"


def _cpu(row: Comparison) -> str:
    if not (row.base_cpu_us and row.new_cpu_us):
        return ""
    return f"{statistics.median(row.base_cpu_us):,.0f} → {statistics.median(row.new_cpu_us):,.0f}"


def table(results: list[Comparison], base: Side, new: Side) -> str:
    header = ["row", "unit", f"{base.label} median", "spread", f"{new.label} median", "spread", "new/old", _CPU]
    lines = [
        [
            r.name,
            r.unit,
            f"{statistics.median(r.base):,.0f}",
            _spread(r.base),
            f"{statistics.median(r.new):,.0f}",
            _spread(r.new),
            f"{r.ratio:.2f}",
            _cpu(r),
        ]
        for r in results
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]

    def render(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule, *map(render, lines)])


def save(started: datetime, duration_s: float, setup: dict[str, Any], results: list[Comparison]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-ab-{started.strftime('%Y%m%dT%H%M%S')}.json"
    document = {
        "mode": "ab",
        "date": started.astimezone().isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 1),
        **setup,
        "rows": [msgspec.structs.asdict(r) | {"ratio": r.ratio} for r in results],
    }
    path.write_bytes(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
    return path
