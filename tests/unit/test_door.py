"""The connections a server process admits: per address and in all, upgraded ones until seen closed."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.server import ServerState

from courseflow.http.door import Door, Guarded, door, response
from courseflow.http.framing import ConnectionRefusal
from courseflow.http.problems import SECURITY_HEADERS
from courseflow.platform.config import HttpSettings


class Upgraded:
    """What the door asks of an upgraded connection's transport: whether it is closed yet."""

    def __init__(self) -> None:
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed


def test_an_address_beyond_its_share_is_refused_429_and_others_still_admitted() -> None:
    door = Door(HttpSettings(connections_per_address=2, max_connections=10))
    assert door.admit("a") is None and door.admit("a") is None
    refusal = door.admit("a")
    assert refusal is not None and refusal.status == 429
    assert door.admit("b") is None
    door.release("a")
    assert door.admit("a") is None
    assert door.by_address == {"a": 2, "b": 1} and door.total == 3


def test_all_together_beyond_the_cap_are_refused_503() -> None:
    door = Door(HttpSettings(connections_per_address=5, max_connections=3))
    for address in "abc":
        assert door.admit(address) is None
    refusal = door.admit("d")
    assert refusal is not None and refusal.status == 503
    for address in "abc":
        door.release(address)
    assert door.by_address == {} and door.total == 0


def test_upgraded_connections_count_until_seen_closed() -> None:
    door = Door(HttpSettings(connections_per_address=1, max_connections=10))
    assert door.admit("a") is None
    upgraded = Upgraded()
    door.tunnels[cast(asyncio.BaseTransport, upgraded)] = "a"
    assert door.admit("a") is not None
    upgraded.closed = True
    assert door.admit("a") is None
    assert door.tunnels == {} and door.total == 1


def test_a_refusal_is_a_whole_response_that_closes_the_connection() -> None:
    answer = response(ConnectionRefusal(431, "headers_too_large", "too long"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close" in head and b"content-type: application/problem+json" in head
    assert f"content-length: {len(body)}".encode() in head
    assert b'"status":431' in body and b'"detail":"too long"' in body


def test_a_refusal_carries_the_headers_of_every_error_answer() -> None:
    head = response(ConnectionRefusal(429, "too_many_connections", "close one")).partition(b"\r\n\r\n")[0]
    for name, value in SECURITY_HEADERS.items():
        assert f"\r\n{name.lower()}: {value}\r\n".encode() in head + b"\r\n"


class Wire:
    """A connection's transport in memory: what was written, whether it reads, whether it is closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.reading = True
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.9", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


def test_pipelined_requests_reach_the_application_one_at_a_time_with_reading_paused() -> None:
    async def scenario() -> None:
        started: list[str] = []
        answers = asyncio.Semaphore(0)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            started.append(scope["query_string"].decode())
            await answers.acquire()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

        config = Config(app=app, lifespan="off")
        config.load()
        guarded = Guarded(config=config, server_state=ServerState(), app_state={})
        wire = Wire()
        guarded.connection_made(cast(asyncio.Transport, wire))
        requests = b"".join(b"GET /?%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(50))
        guarded.data_received(requests[:100])
        guarded.data_received(requests[100:])
        await asyncio.sleep(0)
        # One request handed on, the others held with the socket no longer read.
        assert started == ["0"] and not wire.reading
        answers.release()
        for _ in range(20):
            await asyncio.sleep(0)
        # Answered, the next is handed on; reading waits until no request is held.
        assert started == ["0", "1"] and not wire.reading
        for _ in range(49):
            answers.release()
        for _ in range(500):
            await asyncio.sleep(0)
        assert started == [str(n) for n in range(50)]
        assert wire.written.count(b"HTTP/1.1 200 OK\r\n") == 50 and wire.reading
        guarded.connection_lost(None)

    asyncio.run(scenario())


def test_a_connection_whose_answers_are_not_read_is_dropped() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # The write buffer stays full for longer than a body may pause.
        door().settings = HttpSettings(body_timeout_s=0.05)
        config = Config(app=lambda scope, receive, send: None, lifespan="off")
        config.load()
        guarded = Guarded(config=config, server_state=ServerState(), app_state={})
        wire = Wire()
        guarded.connection_made(cast(asyncio.Transport, wire))
        guarded.pause_writing()
        guarded.resume_writing()
        guarded.pause_writing()
        deadline = loop.time() + 5
        while not wire.closed and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert wire.closed
        guarded.connection_lost(None)

    try:
        asyncio.run(scenario())
    finally:
        door.cache_clear()
