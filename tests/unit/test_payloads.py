"""A body is counted as it arrives: past the limit the read that crosses it is a 413, whoever reads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from starlette.types import Message, Receive, Scope, Send

from courseflow.http.payloads import MAX_BODY_BYTES, BodyLimit
from courseflow.http.problems import InvalidInput


def _messages(chunks: list[bytes]) -> Iterator[Message]:
    for n, chunk in enumerate(chunks):
        yield {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
    while True:
        yield {"type": "http.disconnect"}


def _read_through(method: str, chunks: list[bytes]) -> tuple[bytes, int]:
    """(what the app read, how many messages the server handed over) with BodyLimit in front."""
    incoming = _messages(chunks)
    handed = 0
    read = bytearray()

    async def receive() -> Message:
        nonlocal handed
        handed += 1
        return next(incoming)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            read.extend(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent here")

    scope: Scope = {"type": "http", "method": method, "path": "/", "headers": []}
    asyncio.run(BodyLimit(app)(scope, receive, send))
    return bytes(read), handed


def test_a_body_within_the_limit_passes_whole() -> None:
    chunks = [b"x" * 1000] * (MAX_BODY_BYTES // 1000) + [b"x" * (MAX_BODY_BYTES % 1000)]
    assert _read_through("POST", chunks) == (b"x" * MAX_BODY_BYTES, len(chunks))


def test_a_chunked_body_past_the_limit_is_a_413() -> None:
    chunks = [b"x" * 4096] * 100
    with pytest.raises(InvalidInput) as refused:
        _read_through("PATCH", chunks)
    assert refused.value.status_code == 413 and refused.value.field == "body"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reads_that_take_no_body_are_left_alone(method: str) -> None:
    assert _read_through(method, [b"x" * (MAX_BODY_BYTES + 1)])[0] == b"x" * (MAX_BODY_BYTES + 1)
