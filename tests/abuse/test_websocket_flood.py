"""A WebSocket flood against a real API: sockets sending small frames as fast as they can, or 8 MB frames,
ignoring the server's close frame. Each is closed promptly, the API's memory stays bounded, and a legitimate
client is served meanwhile."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import msgspec
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from courseflow.platform.config import Settings
from tests.abuse.attack import ATTACKER, LEGITIMATE, Served, serving
from tests.conftest import Servers

COURSE_ID = 1
# How long a flooding socket may stay open: the server closes it within a fraction of this.
PROMPTLY_S = 5.0
# The attack lasts while a legitimate client reads a course this many times, each attacker flooding at most
# MOST_SOCKETS sockets one after another.
LEGITIMATE_READS = 20
MOST_SOCKETS = 40
SMALL = Frame(Opcode.TEXT, b"hi").serialize(mask=True, extensions=[]) * 1000
HUGE = Frame(Opcode.TEXT, b"x" * (8 * 1024 * 1024)).serialize(mask=True, extensions=[])


class Flooded(msgspec.Struct, frozen=True):
    """One flooding socket: how long the server let it stay open, the close code it sent, what was sent."""

    open_s: float
    code: int | None
    sent_bytes: int


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def flood(api: Served, data: bytes) -> Flooded:
    """Follow the course, then send `data` over and over without reading a frame's worth of answer, as an
    attacker would; stop when the server has closed the connection (or after PROMPTLY_S)."""
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{api.port}/api/v1/ws?course_id={COURSE_ID}"))
    protocol.send_request(protocol.connect())
    with api.connect(ATTACKER) as sock:
        sock.sendall(b"".join(protocol.data_to_send()))
        while not any(isinstance(e, Response) for e in protocol.events_received()):
            protocol.receive_data(sock.recv(65536))
        assert protocol.handshake_exc is None, protocol.handshake_exc
        sock.setblocking(False)
        started, sent, view = time.monotonic(), 0, memoryview(data)
        while (elapsed := time.monotonic() - started) < PROMPTLY_S:
            readable, writable, _ = select.select([sock], [sock], [], 0.5)
            try:
                if readable:
                    received = sock.recv(65536)
                    if not received:
                        break
                    protocol.receive_data(received)  # its close reply is never sent: the attacker ignores it
                if writable:
                    sent += sock.send(view[sent % len(data) :])
            except (BrokenPipeError, ConnectionResetError):
                break
        code = protocol.close_rcvd.code if protocol.close_rcvd is not None else None
        return Flooded(open_s=elapsed, code=code, sent_bytes=sent)


class Legitimate(threading.Thread):
    """A client reading a course over and over, from its own address, until told to stop."""

    def __init__(self, api: Served) -> None:
        super().__init__(daemon=True)
        self.api, self.stop, self.answers = api, threading.Event(), list[int]()

    def run(self) -> None:
        transport = httpx.HTTPTransport(local_address=LEGITIMATE)
        with httpx.Client(base_url=f"http://127.0.0.1:{self.api.port}", transport=transport, timeout=10) as http:
            while not self.stop.is_set() or not self.answers:
                try:
                    self.answers.append(http.get(f"/api/v1/courses/{COURSE_ID}").status_code)
                except httpx.TransportError:
                    self.answers.append(0)


@pytest.fixture(scope="module")
def api(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(servers, tmp_path_factory.mktemp("flood")) as served:
        yield served


def attacked(api: Served, data: bytes, attackers: int, served: int) -> tuple[list[Flooded], list[int]]:
    """`attackers` at once, each flooding one socket after another, until a client reading meanwhile has been
    answered `served` times (or each attacker has flooded MOST_SOCKETS)."""
    legitimate = Legitimate(api)

    def attacker() -> list[Flooded]:
        flooded: list[Flooded] = []
        while len(legitimate.answers) < served and len(flooded) < MOST_SOCKETS:
            flooded.append(flood(api, data))
        return flooded

    legitimate.start()
    try:
        with ThreadPoolExecutor(attackers) as pool:
            flooded = [f for each in pool.map(lambda _: attacker(), range(attackers)) for f in each]
    finally:
        legitimate.stop.set()
        legitimate.join(30)
    return flooded, legitimate.answers


@pytest.mark.parametrize(
    ("data", "code"), [(SMALL, 1008), (HUGE, 1009)], ids=["small frames as fast as can be", "8 MB frames"]
)
def test_a_flood_is_closed_promptly_at_the_cost_of_a_quiet_client(
    api: Served, settings: Settings, data: bytes, code: int
) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", timeout=10) as http:
        created = http.post("/api/v1/courses", json={"course_id": COURSE_ID, "capacity": 5, "title": "Compilers"})
        assert created.status_code == 201, created.text
    rss, cpu = api.rss_mb(), cpu_s(api.pid)

    flooded, answers = attacked(api, data, attackers=8, served=LEGITIMATE_READS)

    assert all(f.open_s < PROMPTLY_S for f in flooded), [f.open_s for f in flooded]
    # Where the close frame arrived before the connection was cut, it says why.
    assert {f.code for f in flooded} <= {code, None} and code in {f.code for f in flooded}
    assert len(answers) >= LEGITIMATE_READS and set(answers) == {200}, answers
    assert api.rss_mb() < rss + 30
    # Each socket cost about a quiet follower's handshake and subscription, not its flood (which was read
    # for seconds of CPU per socket before).
    assert cpu_s(api.pid) - cpu < 0.1 * len(flooded) + 2.0, f"sent {sum(f.sent_bytes for f in flooded):,} bytes"
    assert api.healthy()
