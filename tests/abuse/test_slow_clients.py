"""Slow and silent clients: heads, bodies and idle connections are timed out (408 or a close), quickly here."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.abuse.attack import LEGITIMATE, Served, answer, one_response, serving, status
from tests.conftest import Servers
from tests.helpers import wait_until

# Short limits, so each attack is over in about a second.
TIMEOUT_S = 1.0
PAUSE_S = 0.3
# An enrollment's head but its length and the blank line: each test sends its own body.
POST_HEAD = b"POST /api/v1/enrollments HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def api(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(
        servers,
        tmp_path_factory.mktemp("slow"),
        HTTP_HEADER_TIMEOUT=str(TIMEOUT_S),
        HTTP_BODY_TIMEOUT=str(TIMEOUT_S),
        HTTP_KEEP_ALIVE="1",
    ) as served:
        yield served


def drip(sock: socket.socket, pieces: list[bytes], within_s: float) -> tuple[bytes, float]:
    """Send `pieces` PAUSE_S apart until the server answers or closes; what it sent, and after how long."""
    started = time.monotonic()
    for piece in pieces:
        if time.monotonic() - started > within_s:
            break
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([sock], [], [], PAUSE_S)[0]:
            break
    response = answer(sock)
    return response, time.monotonic() - started


def test_a_header_line_every_few_tenths_of_a_second_is_408(api: Served) -> None:
    with api.connect() as sock:
        lines = [b"GET /health HTTP/1.1\r\n"] + [b"X-Slow-%d: 1\r\n" % n for n in range(30)]
        response, took = drip(sock, lines, within_s=5)
        assert status(response) == 408
        assert took < TIMEOUT_S + 1.5
        # The connection is closed, not kept for another request.
        assert sock.recv(1) == b""


def test_a_body_byte_at_a_time_is_408_though_no_pause_is_long(api: Served) -> None:
    head = POST_HEAD + b"Content-Length: 1000\r\n\r\n"
    with api.connect() as sock:
        sock.sendall(head)
        response, took = drip(sock, [b" "] * 30, within_s=5)
    assert status(response) == 408
    assert b"500 bytes a second" in response
    assert took < TIMEOUT_S + 1.5


def test_a_body_that_stops_is_408(api: Served) -> None:
    head = (
        b"POST /api/v1/enrollments HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    started = time.monotonic()
    with api.connect() as sock:
        sock.sendall(head + b'{"student_id": ')
        assert status(answer(sock)) == 408
    assert time.monotonic() - started < TIMEOUT_S + 1.5


def test_a_connection_that_sends_nothing_is_closed(api: Served) -> None:
    started = time.monotonic()
    with api.connect() as sock:
        assert answer(sock) == b""
    assert TIMEOUT_S * 0.9 < time.monotonic() - started < TIMEOUT_S + 1.5


def test_an_idle_keep_alive_connection_is_closed(api: Served) -> None:
    with api.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status(one_response(sock)) == 200
        waited = time.monotonic()
        rest = answer(sock)
    assert rest == b""
    assert time.monotonic() - waited < 1 + 1.5


def test_a_chunked_body_is_read_and_answered_and_the_next_head_still_timed(api: Served) -> None:
    body = b'{"student_id": 1, "course_id": 999999}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    with api.connect() as sock:
        sock.sendall(head + chunked)
        first = status(one_response(sock))
        assert first not in (0, 408) and first < 500
        response, _ = drip(sock, [b"GET /health HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 30, within_s=5)
    assert status(response) == 408


def test_many_slow_clients_leave_a_legitimate_one_served_and_memory_bounded(api: Served) -> None:
    rss, descriptors = api.rss_mb(), api.descriptors()
    slow = [api.connect() for _ in range(100)]
    try:
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nX-A: 1\r\n")
        assert api.healthy()
        assert api.status_of(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", LEGITIMATE) == 200
        # Every slow one is answered 408 once its head's time is up.
        assert [status(answer(sock)) for sock in slow] == [408] * 100
    finally:
        for sock in slow:
            sock.close()
    assert api.rss_mb() < rss + 10

    wait_until(lambda: api.descriptors() <= descriptors + 2, 5, "the server to close the slow connections")
