"""Slow clients and a WebSocket flood against one API, until SIGTERM; then one line of counts on stdout.

`python -m tests.bench.attacker PORT SLOW WEBSOCKETS`: SLOW connections, spread over loopback addresses
127.0.0.10 and up at most PER_ADDRESS each (under the API's per-address cap, so the timeouts, not the cap,
meet them), each sending a header line every LINE_EVERY_S and never ending its head; one closed is opened
again. WEBSOCKETS sockets on /api/v1/ws send small text messages as fast as they can, reconnecting when closed.
Run the two attacks as two processes: a flood that never waits would starve the slow clients' timers.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import msgspec
import uvloop
import websockets

PER_ADDRESS = 250
LINE_EVERY_S = 2.0
FLOOD_MESSAGE = '{"ping":1}'


class Counts(msgspec.Struct):
    opened: int = 0
    # How the server ended slow connections: by the status it answered ("0": closed without one).
    ended: dict[str, int] = msgspec.field(default_factory=dict)
    # Connections that could not be made at all.
    failed: int = 0
    ws_messages: int = 0
    ws_connections: int = 0
    seconds: float = 0.0


async def slow_client(port: int, source: str, counts: Counts, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            counts.failed += 1
            await asyncio.sleep(0.5)
            continue
        counts.opened += 1
        answer = b""
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: slow\r\n")
            n = 0
            while not stop.is_set() and not answer:
                try:
                    answer = await asyncio.wait_for(reader.read(4096), LINE_EVERY_S) or b"closed"
                except TimeoutError:
                    n += 1
                    writer.write(b"X-Slow-%d: 1\r\n" % n)
        except OSError:
            answer = b"closed"
        finally:
            writer.close()
        if answer:
            status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "0"
            counts.ended[status] = counts.ended.get(status, 0) + 1


async def flood(port: int, counts: Counts, stop: asyncio.Event) -> None:
    url = f"ws://127.0.0.1:{port}/api/v1/ws?course_id=1"
    while not stop.is_set():
        try:
            async with websockets.connect(url, open_timeout=10, max_queue=None) as ws:
                counts.ws_connections += 1
                while not stop.is_set():
                    await ws.send(FLOOD_MESSAGE)
                    counts.ws_messages += 1
                    if counts.ws_messages % 100 == 0:
                        await asyncio.sleep(0)  # a send that need not wait yields nothing: let SIGTERM in
        except (OSError, websockets.WebSocketException, TimeoutError):
            await asyncio.sleep(0.1)


async def attack(port: int, slow: int, sockets: int) -> Counts:
    counts, stop = Counts(), asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(flood(port, counts, stop)) for _ in range(sockets)]
    for n in range(slow):
        tasks.append(asyncio.create_task(slow_client(port, f"127.0.0.{10 + n // PER_ADDRESS}", counts, stop)))
        if n % 100 == 99:
            await asyncio.sleep(0.02)  # not all in one burst: the listen backlog is the server's, not ours to fill
    print("STARTED", flush=True)
    started = time.monotonic()
    await stop.wait()
    counts.seconds = time.monotonic() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def main() -> None:
    port, slow, sockets = (int(arg) for arg in sys.argv[1:4])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        counts = runner.run(attack(port, slow, sockets))
    print("COUNTS " + msgspec.json.encode(counts).decode(), flush=True)


if __name__ == "__main__":
    main()
