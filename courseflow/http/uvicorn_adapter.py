"""uvicorn's protocols, held at the wire: when an HTTP response is complete, and what a live-status client may send.

uvicorn bounds a message's size (`ws_max_size`: 1009 from the frame's header) and pauses reading while the app
has a message to take; no setting bounds the rest, done here: the parser gets each read a slice at a time (one
read of 256 KiB is tens of thousands of small frames, all queued at once), a peer still sending after our close
frame is cut off (uvicorn reads on for 10 s), and frames the app never sees (pings, answered without it; pongs;
fragments, empty ones counted by no size bound) spend from the message rate. The uvicorn names relied on are
checked by tests/unit/test_uvicorn_adapter.py.
"""

from __future__ import annotations

import functools
from asyncio import BaseTransport, Protocol
from collections.abc import Callable

from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

from courseflow.http.cooldown import flooded
from courseflow.platform.bucket import TokenBucket
from courseflow.platform.config import LimitsSettings, Settings

# What the parser is handed at once: a few small frames, or a slice of one large message.
SLICE_BYTES = 1024
# A close reply with the longest reason a close frame may carry, masked.
CLOSE_REPLY_BYTES = 2 + 4 + 125
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


def on_response_complete(protocol: Protocol, callback: Callable[[], None]) -> None:
    """Call `callback` after each response the HTTP protocol completes (after uvicorn's own bookkeeping).

    Each request's cycle calls the protocol's `on_response_complete` once, looked up when the cycle is made.
    """
    if not isinstance(protocol, HttpToolsProtocol | H11Protocol):
        raise TypeError(f"no response hook known for {type(protocol).__name__}")
    completed = protocol.on_response_complete

    def then() -> None:
        completed()
        callback()

    protocol.on_response_complete = then  # type: ignore[method-assign]


@functools.cache
def _limits() -> LimitsSettings:
    # uvicorn builds the protocol from its own config: ours comes from the environment the app reads too.
    return Settings.from_env().limits


class BoundedWebSocket(WebSocketsSansIOProtocol):
    """A socket that reads no faster than the app takes messages, reads one message's room after its close
    frame, and takes control frames and fragments at the message rate."""

    def connection_made(self, transport: BaseTransport) -> None:
        limits = _limits()
        self.frames_unseen = TokenBucket(limits.ws_messages_per_s, limits.ws_message_burst)
        self.unread = bytearray()
        self.read_after_close = 0
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.unread += data
        self.feed()

    def feed(self) -> None:
        """Hand the parser what was read, a slice at a time, until the app has a message to take."""
        room = self.config.ws_max_size + CLOSE_REPLY_BYTES
        while self.unread and (self.close_sent or not self.read_paused):
            if self.transport.is_closing():
                self.unread.clear()
                return
            if self.close_sent and self.read_after_close + len(self.unread) > room:
                # Still sending after our close frame: not closing. Stop reading.
                self.unread.clear()
                self.transport.close()
                return
            piece = bytes(self.unread[:SLICE_BYTES])
            del self.unread[:SLICE_BYTES]
            if self.close_sent:
                self.read_after_close += len(piece)
            super().data_received(piece)

    async def receive(self) -> ASGIReceiveEvent:
        message = await super().receive()
        self.feed()
        return message

    def allowed(self) -> bool:
        """A frame the app never sees as a message (a ping, a pong, a fragment) spends from the message rate:
        such frames are answered or kept without the app, which cannot pace them."""
        if self.close_sent:
            return False
        if self.frames_unseen.take():
            return True
        self.conn.fail(POLICY_VIOLATION, "too many frames: at most a few a second")
        self.handle_parser_exception()  # sends the close frame, tells the app, stops reading
        return False

    def handle_parser_exception(self) -> None:
        # Closed at the wire for a frame's size or count: a flood, which cools its caller down before it can
        # reconnect (the app may still be opening its subscription, and hears of it later).
        close = self.conn.close_sent
        if close is not None and close.code in (POLICY_VIOLATION, MESSAGE_TOO_BIG):
            flooded(self.scope)
        super().handle_parser_exception()

    def handle_ping(self) -> None:
        if self.allowed():
            super().handle_ping()

    def handle_pong(self, event: Frame) -> None:
        if self.allowed():
            super().handle_pong(event)

    def handle_cont(self, event: Frame) -> None:
        if self.allowed():
            super().handle_cont(event)

    def handle_text(self, event: Frame) -> None:
        if event.fin or self.allowed():
            super().handle_text(event)

    def handle_bytes(self, event: Frame) -> None:
        if event.fin or self.allowed():
            super().handle_bytes(event)
