"""Oversized request lines and header fields: refused (414, 431) after their limit, at no lasting cost in memory."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.abuse.attack import Served, answer, serving, status
from tests.conftest import Servers

CHUNK = b"a" * 65536


@pytest.fixture(scope="module")
def api(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(servers, tmp_path_factory.mktemp("heads"), HTTP_CONNECTIONS_PER_ADDRESS="64") as served:
        yield served


def stream_header(api: Served, megabytes: int) -> int:
    """Send one header field of `megabytes` MB, never ending it; the bytes sent before the server closed."""
    sent = 0
    with api.connect(timeout=10) as sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: ")
            while sent < megabytes * 2**20:
                sock.sendall(CHUNK)
                sent += len(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            return sent
        answer(sock)  # a server that keeps reading would still be waiting here: the timeout fails the test
    return sent


def test_a_request_line_over_8_KiB_is_414(api: Served) -> None:
    assert api.status_of(b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: a\r\n\r\n") == 414
    assert api.status_of(b"GET /health?" + b"a" * 8000 + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") == 200


def test_headers_over_16_KiB_are_431(api: Served) -> None:
    assert api.status_of(b"GET /health HTTP/1.1\r\nX-Big: " + b"v" * 17_000 + b"\r\n\r\n") == 431
    head = b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: "
    assert api.status_of(head + b"v" * 15_000 + b"\r\n\r\n") == 200


def test_more_than_100_headers_are_431(api: Served) -> None:
    fields = b"".join(b"X-%d: 1\r\n" % n for n in range(101))
    assert api.status_of(b"GET /health HTTP/1.1\r\n" + fields + b"\r\n") == 431
    enough = b"Host: a\r\nConnection: close\r\n" + fields[: fields.index(b"X-98:")]  # 100 in all
    assert api.status_of(b"GET /health HTTP/1.1\r\n" + enough + b"\r\n") == 200


def test_ten_thousand_headers_are_refused(api: Served) -> None:
    fields = b"".join(b"X-%d: 1\r\n" % n for n in range(10_000))
    with api.connect() as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /health HTTP/1.1\r\n" + fields + b"\r\n")
        # The server closes after reading its limit: the rest may reset the connection before the 431 is read.
        assert status(answer(sock)) in (431, 0)


def test_a_64_MB_header_is_cut_off_without_growing_the_server(api: Served) -> None:
    rss = api.rss_mb()
    sent = stream_header(api, 64)
    # What loopback buffers hold besides; the server itself reads 24 KiB of it.
    assert sent < 16 * 2**20
    assert api.rss_mb() < rss + 10
    assert api.healthy()


def test_thirty_1_MB_headers_at_once_leave_memory_and_descriptors_bounded(api: Served) -> None:
    rss, descriptors = api.rss_mb(), api.descriptors()
    sent: list[int] = []
    attackers = [threading.Thread(target=lambda: sent.append(stream_header(api, 1))) for _ in range(30)]
    for thread in attackers:
        thread.start()
    healthy_meanwhile = api.healthy()
    for thread in attackers:
        thread.join(timeout=20)
    assert len(sent) == 30 and healthy_meanwhile
    assert api.rss_mb() < rss + 20
    assert api.descriptors() <= descriptors + 2


def test_a_complete_1_MB_header_is_not_answered_200(api: Served) -> None:
    with api.connect() as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, socket.timeout):
            sock.sendall(b"GET /health HTTP/1.1\r\nX-Big: " + b"v" * 2**20 + b"\r\n\r\n")
        assert status(answer(sock)) in (431, 0)


def test_refusals_are_problem_details(api: Served) -> None:
    with api.connect() as sock:
        sock.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
        response = answer(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    assert b'"status":414' in body and b"8192 bytes" in body
