"""Many idle sockets: each address holds at most its share (429 beyond), all together at most the cap (503)."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator

import pytest

from tests.abuse.attack import ATTACKER, LEGITIMATE, Served, answer, serving, status
from tests.conftest import Servers
from tests.helpers import wait_until

PER_ADDRESS = 40
IN_ALL = 100


@pytest.fixture(scope="module")
def api(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(
        servers,
        tmp_path_factory.mktemp("caps"),
        HTTP_CONNECTIONS_PER_ADDRESS=str(PER_ADDRESS),
        HTTP_MAX_CONNECTIONS=str(IN_ALL),
    ) as served:
        yield served


def idle(api: Served, count: int, source: str) -> list[socket.socket]:
    return [api.connect(source) for _ in range(count)]


def held_open(api: Served, descriptors: int) -> None:
    """Until the server has accepted every connection made so far (`descriptors` of them open)."""
    wait_until(lambda: api.descriptors() >= descriptors, 5, "the server to accept the connections")


def closed_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def test_one_address_beyond_its_share_is_refused_429_and_others_are_served(api: Served) -> None:
    descriptors, rss = api.descriptors(), api.rss_mb()
    held = idle(api, PER_ADDRESS, ATTACKER)
    try:
        held_open(api, descriptors + PER_ADDRESS)
        for n in range(20):
            with api.connect(ATTACKER) as extra:
                if n % 2:
                    # A client that asks at once still reads the refusal, not a reset.
                    extra.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                response = answer(extra)
                assert status(response) == 429
                assert b"retry-after: 1" in response.lower()
        assert api.healthy()
        assert api.descriptors() <= descriptors + PER_ADDRESS + 2
        assert api.rss_mb() < rss + 10
        # Nothing was read from the idle ones: they are still open, not answered.
        held[0].setblocking(False)
        with pytest.raises(BlockingIOError):
            held[0].recv(1)
    finally:
        closed_all(held)
    wait_until(lambda: api.descriptors() <= descriptors + 1, 5, "the server to see them closed")
    assert api.status_of(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", ATTACKER) == 200


def test_all_addresses_together_beyond_the_cap_are_refused_503(api: Served) -> None:
    descriptors = api.descriptors()
    sources = ["127.0.0.3", "127.0.0.4", "127.0.0.5"]
    held = idle(api, PER_ADDRESS, sources[0]) + idle(api, PER_ADDRESS, sources[1])
    held += idle(api, IN_ALL - 2 * PER_ADDRESS, sources[2])
    try:
        held_open(api, descriptors + IN_ALL)
        with api.connect("127.0.0.6") as extra:
            assert status(answer(extra)) == 503
        assert api.descriptors() <= descriptors + IN_ALL + 2
    finally:
        closed_all(held)
    wait_until(lambda: api.descriptors() <= descriptors + 1, 5, "the server to see them closed")
    assert api.status_of(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", LEGITIMATE) == 200


def websocket(api: Served, source: str) -> socket.socket:
    sock = api.connect(source)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /api/v1/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n"
    )
    return sock


def test_websocket_connections_count_while_open_and_not_after(api: Served) -> None:
    source, descriptors = "127.0.0.7", api.descriptors()
    upgraded = [websocket(api, source) for _ in range(PER_ADDRESS)]
    try:
        for sock in upgraded:
            assert status(sock.recv(4096)) == 101
        with api.connect(source) as extra:
            assert status(answer(extra)) == 429
    finally:
        closed_all(upgraded)
    # Their places are given back: a full share of plain connections fits again.
    wait_until(lambda: api.descriptors() <= descriptors + 1, 5, "the server to see them closed")
    again = idle(api, PER_ADDRESS, source)
    try:
        for sock in again:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert [status(answer(sock)) for sock in again] == [200] * PER_ADDRESS
    finally:
        closed_all(again)
