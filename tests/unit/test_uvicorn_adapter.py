"""What uvicorn_adapter relies on in uvicorn is still there and still means the same: the protocols driven in
memory with the requests and frames a flooding client sends. A release that changes any of it fails here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from websockets.frames import Close, Frame, Opcode

from courseflow.http.uvicorn_adapter import SLICE_BYTES, BoundedWebSocket, on_response_complete

MAX_SIZE = 4096
HANDSHAKE = (
    b"GET /api/v1/ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Wire:
    """The transport under the protocol: what it wrote, whether it reads and whether it is closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def close_code(self) -> int | None:
        """The code of the close frame the server wrote, if any."""
        at = self.written.find(b"\x88")
        if at < 0:
            return None
        length = self.written[at + 1] & 0x7F
        return Close.parse(bytes(self.written[at + 2 : at + 2 + length])).code


def frame(opcode: Opcode, data: bytes = b"", fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True, extensions=[])


App = Callable[[Any, Any, Any], Awaitable[None]]


def connected(app: App) -> tuple[BoundedWebSocket, Wire]:
    config = Config(app=app, ws=BoundedWebSocket, ws_max_size=MAX_SIZE, ws_ping_interval=None, lifespan="off")
    config.load()
    protocol = BoundedWebSocket(config=config, server_state=ServerState(), app_state={})
    wire = Wire()
    protocol.connection_made(wire)  # type: ignore[arg-type]
    protocol.data_received(HANDSHAKE)
    return protocol, wire


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def reading(received: list[str], most: int | None = None) -> App:
    """An app that accepts, takes messages one by one, and closes with 1008 after `most` of them."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append(message["text"])
            if most is not None and len(received) >= most:
                await send({"type": "websocket.close", "code": 1008, "reason": "too many messages"})
                return

    return app


def test_one_read_of_many_frames_reaches_the_parser_a_slice_at_a_time() -> None:
    async def scenario() -> None:
        received: list[str] = []
        release = asyncio.Event()

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await release.wait()
            while len(received) < 3:
                received.append((await receive())["text"])

        protocol, wire = connected(slow)
        await settle()
        flood = frame(Opcode.TEXT, b"hi") * 40_000
        protocol.data_received(flood)
        # The app has not taken a message: one slice parsed, the rest held with the socket paused.
        assert protocol.queue.qsize() <= SLICE_BYTES // 8
        assert len(protocol.unread) >= len(flood) - SLICE_BYTES and not wire.reading
        release.set()
        await settle()
        assert received == ["hi", "hi", "hi"]

    asyncio.run(scenario())


def test_a_peer_still_sending_after_the_close_frame_is_cut_off() -> None:
    async def scenario() -> None:
        received: list[str] = []
        protocol, wire = connected(reading(received, most=2))
        await settle()
        protocol.data_received(frame(Opcode.TEXT, b"a") + frame(Opcode.TEXT, b"b"))
        await settle()
        assert wire.close_code() == 1008 and not wire.closed
        protocol.data_received(frame(Opcode.TEXT, b"x" * 100) * (MAX_SIZE // 100 + 2))
        assert wire.closed

    asyncio.run(scenario())


def test_a_peer_answering_the_close_frame_closes_cleanly() -> None:
    async def scenario() -> None:
        protocol, wire = connected(reading([], most=1))
        await settle()
        protocol.data_received(frame(Opcode.TEXT, b"a"))
        await settle()
        assert wire.close_code() == 1008 and not wire.closed
        protocol.data_received(frame(Opcode.TEXT, b"in flight") + frame(Opcode.CLOSE, Close(1008, "").serialize()))
        assert wire.closed

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "flood",
    [frame(Opcode.PING), frame(Opcode.PONG), frame(Opcode.CONT, fin=False)],
    ids=["pings", "pongs", "empty fragments"],
)
def test_frames_the_app_never_sees_spend_from_the_message_rate(flood: bytes) -> None:
    async def scenario() -> None:
        protocol, wire = connected(reading([]))
        await settle()
        opening = frame(Opcode.TEXT, fin=False) if flood.startswith(b"\x00") else b""
        protocol.data_received(opening + flood * 10_000)
        await settle()
        assert wire.close_code() == 1008 and wire.closed
        # Parsed no further than the slice that spent the rate: a slice's worth of pongs at most was written back.
        assert wire.written.count(b"\x8a\x00") <= 2 * SLICE_BYTES // len(flood)

    asyncio.run(scenario())


def test_a_message_over_the_size_is_refused_from_its_header() -> None:
    async def scenario() -> None:
        protocol, wire = connected(reading([]))
        await settle()
        header = frame(Opcode.TEXT, b"x" * (8 * 1024 * 1024))[:14]  # the payload never comes
        protocol.data_received(header)
        await settle()
        assert wire.close_code() == 1009 and wire.closed

    asyncio.run(scenario())


@pytest.mark.parametrize("protocol_class", [HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def test_the_response_hook_runs_once_after_each_response(protocol_class: type[asyncio.Protocol]) -> None:
    async def scenario() -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

        config = Config(app=app, http=protocol_class, lifespan="off")
        config.load()
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
        wire = Wire()
        protocol.connection_made(wire)  # type: ignore[arg-type]
        answered: list[int] = []
        on_response_complete(protocol, lambda: answered.append(bytes(wire.written).count(b"HTTP/1.1 200")))
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        await settle()
        # Called after each answer was written in full, once each.
        assert answered == [1, 2, 3]

    asyncio.run(scenario())


def test_a_protocol_without_a_known_response_hook_is_refused() -> None:
    with pytest.raises(TypeError):
        on_response_complete(asyncio.Protocol(), lambda: None)
