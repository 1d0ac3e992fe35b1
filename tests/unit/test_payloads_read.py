"""A JSON body is read whole from however many messages the server hands over, and a cut-off one is a 400."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request
from starlette.types import Message

from courseflow.http.payloads import Enrollment, read
from courseflow.http.problems import InvalidInput


def _request(messages: list[Message]) -> Request:
    incoming = iter(messages)

    async def receive() -> Message:
        return next(incoming)

    headers = [(b"content-type", b"application/json")]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def test_a_body_sent_in_pieces_is_decoded_whole() -> None:
    body = b'{"course_id": 7, "student_id": 42, "idempotency_key": "k"}'
    pieces = [body[:5], b"", body[5:20], body[20:]]
    messages: list[Message] = [
        {"type": "http.request", "body": piece, "more_body": n < len(pieces) - 1} for n, piece in enumerate(pieces)
    ]
    assert asyncio.run(read(_request(messages), Enrollment)) == Enrollment(
        course_id=7, student_id=42, idempotency_key="k"
    )


def test_a_client_gone_before_the_last_piece_is_a_400_on_the_body() -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"course_id": ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(read(_request(messages), Enrollment))
    assert refused.value.status_code == 400 and refused.value.field == "body"
    assert "cut off" in refused.value.detail
