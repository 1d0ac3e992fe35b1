"""The one table: each row a measurement, its reference from the same run, the ratio, and the target."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from tests.bench import cpu

RESULTS = Path(__file__).with_name("results")


class Target(msgspec.Struct, frozen=True):
    """A bound from the issue, on the ratio to the reference or on the value itself."""

    on: Literal["ratio", "value"]
    at_least: float | None = None
    at_most: float | None = None

    def text(self, unit: str) -> str:
        bound = f"≥ {self.at_least:g}" if self.at_least is not None else f"≤ {self.at_most:g}"
        return f"{bound}x" if self.on == "ratio" else f"{bound} {unit}"

    def met(self, value: float, ratio: float | None) -> bool | None:
        measured = ratio if self.on == "ratio" else value
        if measured is None:
            return None
        if self.at_least is not None and measured < self.at_least:
            return False
        return not (self.at_most is not None and measured > self.at_most)


class Limit(msgspec.Struct, frozen=True):
    """What the servers themselves do at a row's work (redis-benchmark, pgbench), in the row's unit."""

    value: float
    name: str
    # The row's share of it: 1 is as good as the bare servers.
    share: float

    @classmethod
    def of_rate(cls, value: float, limit: float, name: str) -> Limit:
        return cls(limit, name, value / limit if limit else 0.0)

    @classmethod
    def of_duration(cls, value: float, limit: float, name: str) -> Limit:
        return cls(limit, name, limit / value if value else 0.0)


class Row(msgspec.Struct, kw_only=True):
    name: str
    value: float
    unit: str
    reference: float | None
    reference_name: str
    target: Target | None = None
    # The servers' own ceiling for this row's work, where one bounds it.
    limit: Limit | None = None
    note: str = ""
    # Raw measurements behind the row (latencies, counts, CPU per role) for the JSON file.
    details: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.value / self.reference if self.reference else None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value, self.ratio)


def busy_cores(seconds: float = 1.0) -> float:
    """Cores the machine keeps busy before we start anything: another job running skews every number."""
    before = cpu.snapshot({})["machine"]
    time.sleep(seconds)
    return round((cpu.snapshot({})["machine"] - before) / seconds, 2)


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), platform.processor())
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    ram_kb = next(int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal:"))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "ram_gb": round(ram_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
        "busy_cores_before": busy_cores(),
        "python": platform.python_version(),
    }


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(rows: list[Row]) -> str:
    header = ["#", "row", "value", "unit", "reference", "ratio", "target", "met", "server limit", "of limit"]
    lines = [
        [
            str(n),
            row.name,
            _num(row.value),
            row.unit,
            f"{_num(row.reference)} ({row.reference_name})" if row.reference is not None else row.reference_name,
            "—" if row.ratio is None else f"{row.ratio:.2f}x",
            row.target.text(row.unit) if row.target else "—",
            {True: "yes", False: "NO", None: "—"}[row.met],
            "—" if row.limit is None else f"{_num(row.limit.value)} ({row.limit.name})",
            "—" if row.limit is None else f"{row.limit.share:.0%}",
        ]
        for n, row in enumerate(rows, 1)
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    right = {0, 2, 5, 9}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [fmt(header), "  ".join("-" * w for w in widths), *map(fmt, lines)]
    notes = [f"  [{n}] {row.note}{_cores(row)}" for n, row in enumerate(rows, 1) if row.note]
    disturbed = [str(n) for n, row in enumerate(rows, 1) if row.details.get("cpu_cores", {}).get("other", 0) >= 0.25]
    if disturbed:
        notes.append(f"  WARNING: rows {', '.join(disturbed)} ran while something else kept ≥ 0.25 cores busy: rerun")
    return "\n".join(out + (["", "notes:", *notes] if notes else []))


def _cores(row: Row) -> str:
    """CPU cores each process role kept busy while the row was measured: where the time went."""
    usage: dict[str, float] = row.details.get("cpu_cores") or {}
    busy = [f"{role} {cores:.2f}" for role, cores in sorted(usage.items(), key=lambda kv: -kv[1]) if cores >= 0.01]
    return f"; cores busy: {', '.join(busy)}" if busy else ""


def header(mode: str, started: datetime, info: dict[str, Any]) -> str:
    busy = info["busy_cores_before"]
    warning = (
        f"\nWARNING: {busy} cores were busy before the run started: something else is running" if busy > 0.2 else ""
    )
    return (
        f"CourseFlow benchmark ({mode}) — {started.astimezone().isoformat(timespec='seconds')}\n"
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, Linux {info['kernel']},"
        f" Python {info['python']}; load average {' '.join(info['load_average'])}, {busy} cores busy before start"
        f"{warning}"
    )


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the service's files differed from it (results are compared over time)."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "courseflow", "projections", "sql", "pyproject.toml")
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted_changes": bool(changed)}


def save(mode: str, started: datetime, duration_s: float, setup: dict[str, Any], rows: list[Row]) -> Path:
    """`setup`: the machine, the code and the benchmark's parameters, stored beside the rows."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{mode}-{started.strftime('%Y%m%dT%H%M%S')}.json"
    document = {
        "mode": mode,
        "date": started.astimezone().isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 1),
        **setup,
        "rows": [
            msgspec.structs.asdict(row)
            | {"ratio": row.ratio, "met": row.met, "target": row.target and row.target.text(row.unit)}
            for row in rows
        ],
    }
    path.write_bytes(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
    return path
