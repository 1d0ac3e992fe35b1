"""A steady request rate (wrk2 is not available, and wrk's delay() only spaces requests after answers).

Request k is due at start + k / rate; a few keep-alive connections take turns, each sending its next
request when it is due, or at once when it is behind, until the run's time is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgspec
import uvloop

from tests.bench.backlog import priority
from tests.bench.procs import BenchError


class PacedRun(msgspec.Struct, frozen=True):
    target_rate: float
    # Requests due within the run's duration, and those sent (fewer when the answers came too slowly).
    due: int
    sent: int
    accepted: int
    seconds: float
    # How far behind schedule a request went out, at worst: 0 means the rate was held.
    max_lag_s: float
    # CPU seconds the pacer itself spent sending and reading: near `seconds`, the pacer would be the limit.
    cpu_s: float
    # Connections the server closed mid-run (each request then resent once).
    reconnects: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds


def _request(port: int, body: bytes) -> bytes:
    head = f"POST /enroll HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection; returns the response status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next((int(ln.split(b":")[1]) for ln in lines if ln.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return int(lines[0].split(b" ", 2)[1])


def _requests(port: int, courses: Sequence[int], tag: str, total: int, mixed: bool = True) -> list[bytes]:
    """Every request of the run, encoded before the clock starts: the pacer then only sends and reads."""
    return [
        _request(
            port,
            msgspec.json.encode(
                {
                    "student_id": n + 1,
                    "course_id": courses[n % len(courses)],
                    "idempotency_key": f"{tag}-{n}",
                    "priority": priority(n, len(courses)) if mixed else 0,
                }
            ),
        )
        for n in range(total)
    ]


async def _run(port: int, courses: Sequence[int], tag: str, rate: float, seconds: float, connections: int) -> PacedRun:
    loop = asyncio.get_running_loop()
    requests = _requests(port, courses, tag, int(rate * seconds))
    cpu_before = time.process_time()
    start = loop.time() + 0.05
    # Requests still unsent when the run's time is up are not sent: the run lasts `seconds`, whatever the rate.
    end = start + seconds
    statuses: list[int] = []
    last_sent = [start]
    lag = [0.0]
    reconnects = [0]

    async def connection(first: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in range(first, len(requests), connections):
                due = start + n / rate
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                now = loop.time()
                if now >= end:
                    break
                last_sent[0], lag[0] = max(last_sent[0], now), max(lag[0], now - due)
                try:
                    statuses.append(await _exchange(reader, writer, requests[n]))
                except (asyncio.IncompleteReadError, ConnectionError):
                    # The server closed the connection: resend once on a new one (the idempotency key
                    # makes a repeat harmless), and count it.
                    writer.close()
                    reconnects[0] += 1
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    statuses.append(await _exchange(reader, writer, requests[n]))
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    if not statuses:
        raise BenchError("paced load: no request was answered")
    return PacedRun(
        target_rate=rate,
        due=len(requests),
        sent=len(statuses),
        accepted=sum(1 for s in statuses if s == 202),
        seconds=last_sent[0] - start,
        max_lag_s=lag[0],
        cpu_s=time.process_time() - cpu_before,
        reconnects=reconnects[0],
    )


def paced_enroll(
    port: int, courses: Sequence[int], tag: str, rate: float, seconds: float, connections: int
) -> PacedRun:
    """POST /enroll to 127.0.0.1:`port` at `rate` requests/s for `seconds`, unique bodies, over `connections`."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(port, courses, tag, rate, seconds, connections))


async def _burst(port: int, courses: Sequence[int], tag: str, count: int, connections: int, mixed: bool) -> None:
    requests = _requests(port, courses, tag, count, mixed)

    async def connection(first: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in range(first, count, connections):
                if (status := await _exchange(reader, writer, requests[n])) != 202:
                    raise BenchError(f"backlog request {n} was answered {status}, not 202")
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))


def burst(port: int, courses: Sequence[int], tag: str, count: int, connections: int, mixed: bool = True) -> None:
    """POST /enroll `count` times, as fast as the API answers, each request accepted: a backlog filled through
    the HTTP API alone, so that any version of the code can be given the same one."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_burst(port, courses, tag, count, connections, mixed))
