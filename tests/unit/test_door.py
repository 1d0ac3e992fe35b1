"""The connections a server process admits: per address and in all, upgraded ones until seen closed."""

from __future__ import annotations

import asyncio
from typing import cast

from courseflow.http.door import Door, response
from courseflow.http.framing import ConnectionRefusal
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
