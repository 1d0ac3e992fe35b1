"""A live socket whose client vanishes while a message is being sent ends its stream quietly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from courseflow.http import streams
from courseflow.platform.config import LimitsSettings
from projections.messages import Message, Reconnect


class _Vanished:
    """A socket whose client is gone: every send fails as Starlette reports it, and nothing is ever received."""

    application_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {"type": "websocket", "client": ("127.0.0.1", 1), "state": {}}
        self.sends = 0

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send_text(self, data: str) -> None:
        self.sends += 1
        raise WebSocketDisconnect(1006)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        raise AssertionError("a vanished client is not sent a close")


async def _messages() -> AsyncGenerator[Message, None]:
    while True:
        yield Reconnect(id=1, reason="overflow")


def test_a_client_gone_mid_send_ends_the_stream_without_an_error() -> None:
    socket = _Vanished()
    inbound = streams.Inbound(LimitsSettings())
    asyncio.run(asyncio.wait_for(streams.push(cast(WebSocket, socket), _messages(), inbound), 5))
    assert socket.sends == 1
