"""What a WebSocket client may send: a message over WS_MAX_MESSAGE_BYTES closes the socket with 1009, more than
a burst of messages closes it with 1008; a client within both is followed as before."""

from __future__ import annotations

import asyncio

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from courseflow.platform.config import default
from tests.integration.test_live import frame, new_course, ws_url

MOST_BYTES = int(str(default("WS_MAX_MESSAGE_BYTES")))
BURST = int(str(default("WS_MESSAGE_BURST")))


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason the server sent, once every frame before it is read."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None, "the server hung up without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def following_a_course(api_server: str, course_id: int) -> ClientConnection:
    async with httpx.AsyncClient(base_url=api_server, timeout=10) as http:
        await new_course(http, course_id, 5)
    ws = await connect(ws_url(api_server, f"course_id={course_id}"), proxy=None, open_timeout=10, max_size=None)
    assert (await frame(ws))["type"] == "counts"  # subscribed: what follows is read by the endpoint
    return ws


@pytest.mark.usefixtures("settings")  # emptied servers
def test_a_message_one_byte_over_the_bound_closes_the_socket_with_1009(api_server: str) -> None:
    async def scenario() -> None:
        ws = await following_a_course(api_server, 1)
        async with ws:
            await ws.send("x" * MOST_BYTES)
            while (await frame(ws))["type"] != "counts":  # a message at the bound is read, and the socket lives on
                pass
            await ws.send("x" * (MOST_BYTES + 1))
            code, reason = await closed_with(ws)
        assert code == 1009, reason

    asyncio.run(scenario())


@pytest.mark.usefixtures("settings")
def test_a_burst_of_messages_closes_the_socket_with_1008_saying_why(api_server: str) -> None:
    async def scenario() -> None:
        ws = await following_a_course(api_server, 1)
        async with ws:
            for _ in range(3 * BURST):
                await ws.send("hello")
            code, reason = await closed_with(ws)
        assert (code, reason) == (1008, "too many messages: at most 5 a second")

    asyncio.run(scenario())


def flood(client: TestClient, message: str) -> int:
    """Follow course 1 and send `message` over and over: the code the endpoint closed the socket with."""
    with client.websocket_connect("/api/v1/ws?course_id=1") as ws:
        assert ws.receive_json()["type"] == "counts"
        with pytest.raises(WebSocketDisconnect) as closed:
            for _ in range(3 * BURST):
                ws.send_text(message)
            while True:
                ws.receive_text()
    return closed.value.code


@pytest.mark.parametrize(("message", "code"), [("x" * (MOST_BYTES + 1), 1009), ("hello", 1008)], ids=["big", "many"])
def test_the_endpoint_itself_holds_a_client_to_both_bounds_whatever_serves_it(
    client: TestClient, message: str, code: int
) -> None:
    """The in-process client bounds no message size: the endpoint does, as it would behind another server. Its
    caller's next socket is then refused while it cools down, before a subscription."""
    assert client.post("/api/v1/courses", json={"course_id": 1, "capacity": 5, "title": "Compilers"}).status_code == 201
    assert flood(client, message) == code
    with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/api/v1/ws?course_id=1"):
        pass
    assert refused.value.status_code == 429 and refused.value.headers["Retry-After"] == "10"
    # Other requests of that caller are answered as before.
    assert client.get("/api/v1/courses/1").status_code == 200
