"""Closed-loop HTTP load with `wrk` and a Lua script that makes every POST /enroll body unique."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from tests.bench.backlog import PRIORITY_MIX
from tests.bench.procs import BenchError

SCRIPT = Path(__file__).with_name("enroll.lua")


class WrkRun(msgspec.Struct, frozen=True):
    """What the script's done() prints; latencies in microseconds."""

    requests: int
    duration_us: int
    p50_us: int
    p99_us: int
    non2xx: int
    socket_errors: int

    @property
    def seconds(self) -> float:
        return self.duration_us / 1e6

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def enroll(
    url: str,
    courses: Sequence[int],
    tag: str,
    seconds: float,
    threads: int,
    connections: int,
    until: Callable[[], bool] | None = None,
    tokens: Path | None = None,
) -> WrkRun:
    """Run wrk for `seconds`, or until `until()` holds (then it is interrupted and still reports).

    With `tokens` (a file of student bearer tokens), every request is sent by one of those students.
    """
    binary = shutil.which("wrk")
    if binary is None:
        raise BenchError("wrk not found; install it: apt-get install -y wrk")
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"refusing to load anything but 127.0.0.1: {url}")
    argv = [binary, "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
    argv += ["-s", str(SCRIPT), url, "--", tag, ",".join(map(str, courses)), ",".join(map(str, PRIORITY_MIX))]
    argv += [] if tokens is None else [str(tokens)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        if until is not None:
            while proc.poll() is None and not until():
                time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # wrk stops its threads and prints the summary
        out, err = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {proc.returncode}):\n{out}{err}")
    run = msgspec.json.decode(line.removeprefix("BENCH "), type=WrkRun)
    if run.non2xx or run.socket_errors:
        raise BenchError(f"wrk saw {run.non2xx} non-2xx answers and {run.socket_errors} socket errors:\n{out}")
    return run
