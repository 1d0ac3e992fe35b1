"""Where the CPU went during a measurement, per role, from /proc: on 2 cores the bottleneck is whoever holds them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.bench.procs import descendants

_TICK = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int, reaped: bool) -> int:
    """utime + stime of `pid`, plus those of its children already waited for when `reaped`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # After the ')': state is field 3, so utime (14), stime (15), cutime (16), cstime (17) sit at 11..14.
    own = int(fields[11]) + int(fields[12])
    return own + (int(fields[13]) + int(fields[14]) if reaped else 0)


def seconds(roots: Sequence[int]) -> float:
    """CPU seconds of each root, of its live descendants and of the descendants it already reaped
    (PostgreSQL backends and uvicorn processes come and go under their parent)."""
    ticks = 0
    for root in roots:
        ticks += _ticks(root, reaped=True) + sum(_ticks(pid, reaped=False) for pid in descendants(root))
    return ticks / _TICK


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores), from the first line of /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def snapshot(roles: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Cumulative CPU seconds per role; "driver" is this process plus the load generators it waited for (wrk),
    "machine" everything, so that what no role accounts for (another job on the machine) shows as "other"."""
    own = {role: seconds(pids) for role, pids in roles.items()}
    return own | {"driver": _ticks(os.getpid(), reaped=True) / _TICK, "machine": _machine_busy()}


def cores(before: Mapping[str, float], after: Mapping[str, float], wall_s: float) -> dict[str, float]:
    """Average cores each role kept busy between two snapshots."""
    used = {role: (after[role] - before.get(role, 0.0)) / wall_s for role in after}
    machine = used.pop("machine")
    used["other"] = max(0.0, machine - sum(used.values()))
    return {role: round(value, 2) for role, value in used.items()}
