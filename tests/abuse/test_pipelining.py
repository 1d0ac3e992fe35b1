"""Pipelined requests: held a few at a time at the door, whatever a client sends ahead of its answers."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tests.abuse.attack import Served, answer, serving, status
from tests.conftest import Servers
from tests.helpers import wait_until

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
STALL_S = 1.0


@pytest.fixture(scope="module")
def api(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(
        servers, tmp_path_factory.mktemp("pipelining"), HTTP_BODY_TIMEOUT=str(STALL_S), HTTP_HEADER_TIMEOUT="2"
    ) as served:
        yield served


def flood(api: Served, requests: int, hold_s: float, peak: list[float]) -> None:
    """Send `requests` pipelined requests at once, never reading an answer, for `hold_s` seconds."""
    with api.connect(timeout=10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(HEALTH * requests)
        ends = time.monotonic() + hold_s
        while time.monotonic() < ends:
            peak.append(api.rss_mb())
            time.sleep(0.1)


def test_a_pipelining_flood_leaves_memory_bounded_and_others_served(api: Served) -> None:
    rss = api.rss_mb()
    peak: list[float] = []
    attackers = [threading.Thread(target=flood, args=(api, 100_000, 3.0, peak)) for _ in range(4)]
    for thread in attackers:
        thread.start()
    served_meanwhile = api.healthy()
    for thread in attackers:
        thread.join(timeout=20)
    assert served_meanwhile
    # 400,000 requests queued at once took hundreds of MB; held a few at a time, they take next to nothing.
    assert max(peak) < rss + 50, (rss, max(peak))
    assert api.rss_mb() < rss + 50


def test_pipelined_requests_are_all_answered_in_order(api: Served) -> None:
    requests = b"".join(b"GET /health?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(200))
    with api.connect() as sock:
        sock.sendall(requests + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        responses = answer(sock)
    assert responses.count(b"HTTP/1.1 200 OK\r\n") == 201


def test_a_client_that_never_reads_its_answers_is_closed(api: Served) -> None:
    descriptors = api.descriptors()
    with api.connect(timeout=10) as sock:
        # Big answers, never read: the server's write buffer fills and stays full.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
        started = time.monotonic()
        wait_until(lambda: api.descriptors() <= descriptors, 15, "the server to close a connection that never reads")
        assert time.monotonic() - started < STALL_S + 10


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_connections_closed_with_requests_queued_leave_no_traceback(api: Served, reset: bool) -> None:
    logged, descriptors = api.log.stat().st_size, api.descriptors()
    sockets = [api.connect() for _ in range(5)]
    for sock in sockets:
        # Answers too big to be written at once, so that one is being written when the connection goes.
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.send(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
    # Closed while answers are being written to each of them.
    wait_until(lambda: len(select.select(sockets, [], [], 0)[0]) == 5, 10, "answers on every connection")
    for sock in sockets:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    # Gone from the server, and a request served after them: their queued requests were dropped by then.
    wait_until(lambda: api.descriptors() <= descriptors, 10, "the closed connections to be let go")
    assert api.healthy()
    log = api.log.read_bytes()[logged:]
    assert b"Traceback" not in log and b"Exception in ASGI application" not in log, log[-3000:]


def test_a_refusal_carries_the_security_headers(api: Served) -> None:
    with api.connect() as sock:
        sock.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
        response = answer(sock)
    assert status(response) == 414
    head = response.partition(b"\r\n\r\n")[0].lower()
    assert b"content-security-policy: default-src 'none'; frame-ancestors 'none'\r\n" in head
    assert b"referrer-policy: no-referrer\r\n" in head
    assert b"x-content-type-options: nosniff\r\n" in head
