"""A legitimate client's latency while slow clients and a WebSocket flood run, against its latency alone."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import uvloop

from tests.bench import cpu
from tests.bench.attacker import PER_ADDRESS, Counts
from tests.bench.procs import ROOT, BenchError
from tests.bench.report import Row, Target
from tests.bench.stack import Stack

SLOW_CONNECTIONS = 2000
FLOOD_SOCKETS = 4
# The legitimate client: paced enrollments on a few keep-alive connections, from an address of its own.
RATE = 200
CONNECTIONS = 4
SOURCE = "127.0.0.2"
COURSES = dict.fromkeys(range(1, 5), 100_000)
# Time for the attack to reach its full size before the measurement.
RAMP_S = 3.0


class Latencies(msgspec.Struct, frozen=True):
    count: int
    failed: int
    p50_ms: float
    p99_ms: float


async def _paced(port: int, tag: str, seconds: float) -> Latencies:
    loop = asyncio.get_running_loop()
    total = int(RATE * seconds)
    start = loop.time() + 0.05
    took: list[float] = []
    failed = [0]

    async def connection(first: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(SOURCE, 0))
        try:
            for n in range(first, total, CONNECTIONS):
                if (wait := start + n / RATE - loop.time()) > 0:
                    await asyncio.sleep(wait)
                body = msgspec.json.encode(
                    {"student_id": n + 1, "course_id": 1 + n % len(COURSES), "idempotency_key": f"{tag}-{n}"}
                )
                head = (
                    f"POST /enroll HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                )
                sent = loop.time()
                writer.write(head.encode() + b"\r\n\r\n" + body)
                answer = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in answer.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                took.append(loop.time() - sent)
                if not answer.startswith(b"HTTP/1.1 202"):
                    failed[0] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(CONNECTIONS)))
    ordered = sorted(took)
    return Latencies(
        len(ordered),
        failed[0],
        statistics.median(ordered) * 1000,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    )


def paced(port: int, tag: str, seconds: float) -> Latencies:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_paced(port, tag, seconds))


def _attacker(port: int, slow: int, sockets: int) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.bench.attacker", str(port), str(slow), str(sockets)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)


def _stopped(attacker: subprocess.Popen[str]) -> str:
    """Its counts, once stopped."""
    attacker.terminate()
    try:
        out, _ = attacker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        attacker.kill()
        out, _ = attacker.communicate()
    line = next((ln for ln in out.splitlines() if ln.startswith("COUNTS ")), None)
    if line is None:
        raise BenchError(f"an attacker stopped without its counts (exit {attacker.returncode})")
    return line.removeprefix("COUNTS ")


def _statuses(ended: dict[str, int]) -> str:
    return ", ".join(f"{count:,} {'closes' if status == '0' else status}" for status, count in sorted(ended.items()))


def _proc_value(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Held(msgspec.Struct):
    """The API process's open descriptors and resident memory, sampled during the attack: the largest seen."""

    descriptors: int = 0
    rss_kb: int = 0


def _watch(pid: int, held: Held, stop: threading.Event) -> None:
    while not stop.wait(0.25):
        held.descriptors = max(held.descriptors, len(os.listdir(f"/proc/{pid}/fd")))
        held.rss_kb = max(held.rss_kb, _proc_value(pid, "VmRSS"))


def slow_and_flood(stack: Stack, seconds: float) -> Row:
    """p99 of paced POST /enroll alone, then while the attacker runs; one API process, no worker."""
    stack.reset()
    # A role of its own: the attack's memory is this row's to report, not the intake rows' peak RSS.
    with stack.http_server("api-attacked", "courseflow", 1) as api:
        api.create_courses(COURSES)
        paced(api.port, "warmup", 1.0)
        alone = paced(api.port, "alone", seconds)
        before = Held(len(os.listdir(f"/proc/{api.child.pid}/fd")), _proc_value(api.child.pid, "VmRSS"))
        attackers = [_attacker(api.port, SLOW_CONNECTIONS, 0), _attacker(api.port, 0, FLOOD_SOCKETS)]
        held, stop = Held(), threading.Event()
        watcher = threading.Thread(target=_watch, args=(api.child.pid, held, stop), daemon=True)
        try:
            for attacker in attackers:
                assert attacker.stdout is not None
                if attacker.stdout.readline().strip() != "STARTED":
                    raise BenchError("an attacker did not start")
            watcher.start()
            time.sleep(RAMP_S)
            pids = [api.child.pid, *(attacker.pid for attacker in attackers)]
            before_s, started = [cpu.seconds([pid]) for pid in pids], time.monotonic()
            attacked = paced(api.port, "attacked", seconds)
            wall = time.monotonic() - started
            # Cores each kept busy while the legitimate client was measured: the API, then each attacker.
            busy = [(cpu.seconds([pid]) - was) / wall for pid, was in zip(pids, before_s, strict=True)]
        finally:
            stop.set()
            outs = [_stopped(attacker) for attacker in attackers]
        slow, flood = (msgspec.json.decode(out, type=Counts) for out in outs)
    return Row(
        name=f"legitimate p99 under {SLOW_CONNECTIONS:,} slow connections and a WebSocket flood",
        value=attacked.p99_ms,
        unit="ms",
        reference=alone.p99_ms,
        reference_name="its p99 alone",
        target=Target("ratio", at_most=3.0),
        note=(
            f"POST /enroll paced at {RATE}/s on {CONNECTIONS} connections for {seconds:g} s each; p50"
            f" {attacked.p50_ms:.1f} ms vs {alone.p50_ms:.1f} ms alone, {attacked.failed} not 202;"
            f" slow connections (a header line every 2 s, {SLOW_CONNECTIONS // PER_ADDRESS} addresses): {slow.opened:,}"
            f" opened in {slow.seconds:.0f} s, ended by the server with {_statuses(slow.ended)};"
            f" {FLOOD_SOCKETS} WebSockets sent {flood.ws_messages:,} messages on {flood.ws_connections} connections;"
            f" cores busy meanwhile: API {busy[0]:.2f}, slow clients {busy[1]:.2f}, flood {busy[2]:.2f};"
            f" API held at most {held.descriptors:,} descriptors (before: {before.descriptors}),"
            f" RSS {held.rss_kb / 1024:.0f} MB (before: {before.rss_kb / 1024:.0f} MB)"
        ),
        details={
            "alone": msgspec.structs.asdict(alone),
            "attacked": msgspec.structs.asdict(attacked),
            "slow_clients": msgspec.structs.asdict(slow),
            "flood": msgspec.structs.asdict(flood),
            "api_held": msgspec.structs.asdict(held),
            "api_before": msgspec.structs.asdict(before),
            "cores_busy": {"api": busy[0], "slow_clients": busy[1], "flood": busy[2]},
        },
    )
