"""A WebSocket flood against a real API: sockets sending small frames as fast as they can, or 8 MB frames,
ignoring the server's close frame. Each is closed promptly, the flooder's next sockets are refused for a
cool-down, the API's memory stays bounded, and a legitimate client is served meanwhile."""

from __future__ import annotations

import select
import socket
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
from tests.helpers import wait_until

COURSE_ID = 1
# How long a flooding socket may stay open: the server closes it within a fraction of this.
PROMPTLY_S = 5.0
# The attack lasts while a legitimate client reads a course this many times, each attacker flooding at most
# MOST_SOCKETS sockets one after another, for at most ATTACK_S.
LEGITIMATE_READS = 20
MOST_SOCKETS = 40
ATTACK_S = 15.0
SMALL = Frame(Opcode.TEXT, b"hi").serialize(mask=True, extensions=[]) * 1000
HUGE = Frame(Opcode.TEXT, b"x" * (8 * 1024 * 1024)).serialize(mask=True, extensions=[])


class Flooded(msgspec.Struct, frozen=True):
    """One flooding socket: how long the server let it stay open, the close code it sent, what was sent; or the
    status that refused its handshake."""

    open_s: float
    code: int | None
    sent_bytes: int
    refused: int | None = None


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def handshake(api: Served, source: str) -> tuple[ClientProtocol, Response, socket.socket]:
    """Open a socket following the course from `source`: the protocol, the handshake's answer, the connection."""
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{api.port}/api/v1/ws?course_id={COURSE_ID}"))
    protocol.send_request(protocol.connect())
    sock = api.connect(source)
    sock.sendall(b"".join(protocol.data_to_send()))
    while not (answers := [e for e in protocol.events_received() if isinstance(e, Response)]):
        received = sock.recv(65536)
        assert received, "closed before the handshake was answered"
        protocol.receive_data(received)
    return protocol, answers[0], sock


def flood(api: Served, data: bytes, source: str = ATTACKER) -> Flooded:
    """Follow the course, then send `data` over and over without reading a frame's worth of answer, as an
    attacker would; stop when the server has closed the connection (or after PROMPTLY_S)."""
    protocol, response, sock = handshake(api, source)
    with sock:
        if response.status_code != 101:
            return Flooded(open_s=0.0, code=None, sent_bytes=0, refused=response.status_code)
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


def attacked(api: Served, data: bytes, attackers: int, served: int, source: str) -> tuple[list[Flooded], list[int]]:
    """`attackers` at once from `source`, each flooding one socket after another (reconnecting at once when
    refused), until a client reading meanwhile has been answered `served` times (or each has flooded MOST_SOCKETS,
    or ATTACK_S has passed)."""
    legitimate = Legitimate(api)

    def attacker() -> list[Flooded]:
        flooded: list[Flooded] = []
        # Also until it has been refused once: the attack is a flood and the reconnections after it, each at once.
        deadline = time.monotonic() + ATTACK_S
        while len(legitimate.answers) < served or not any(f.refused for f in flooded):
            if sum(f.refused is None for f in flooded) >= MOST_SOCKETS or time.monotonic() > deadline:
                break
            flooded.append(flood(api, data, source))
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
    ("data", "code", "source"),
    [(SMALL, 1008, "127.0.0.11"), (HUGE, 1009, "127.0.0.12")],  # each its own caller: the cool-down is per caller
    ids=["small frames as fast as can be", "8 MB frames"],
)
def test_a_flood_is_closed_promptly_at_the_cost_of_a_quiet_client(
    api: Served, settings: Settings, data: bytes, code: int, source: str
) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", timeout=10) as http:
        created = http.post("/api/v1/courses", json={"course_id": COURSE_ID, "capacity": 5, "title": "Compilers"})
        assert created.status_code == 201, created.text
    rss, cpu = api.rss_mb(), cpu_s(api.pid)

    flooded, answers = attacked(api, data, attackers=8, served=LEGITIMATE_READS, source=source)

    assert all(f.open_s < PROMPTLY_S for f in flooded), [f.open_s for f in flooded]
    # Where the close frame arrived before the connection was cut, it says why.
    opened = [f for f in flooded if f.refused is None]
    assert {f.code for f in opened} <= {code, None} and code in {f.code for f in opened}
    # Once one socket was closed for flooding, the caller's reconnections are refused: each attacker had at most
    # the one it opened before then.
    assert len(opened) <= 8 and {f.refused for f in flooded} == {None, 429}, [f.refused for f in flooded]
    assert len(answers) >= LEGITIMATE_READS and set(answers) == {200}, answers
    assert api.rss_mb() < rss + 30
    # Each socket cost about a quiet follower's handshake and subscription, not its flood (which was read
    # for seconds of CPU per socket before).
    assert cpu_s(api.pid) - cpu < 0.1 * len(flooded) + 2.0, f"sent {sum(f.sent_bytes for f in flooded):,} bytes"
    assert api.healthy()


# A cool-down short enough to wait out in a test.
COOLDOWN_S = 2


@pytest.fixture(scope="module")
def cooling_api(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(servers, tmp_path_factory.mktemp("cooling"), WS_FLOOD_COOLDOWN=str(COOLDOWN_S)) as served:
        yield served


def first_message(api: Served, source: str) -> dict[str, object] | int:
    """Follow the course from `source`: its first message, or the status that refused the handshake."""
    protocol, response, sock = handshake(api, source)
    with sock:
        if response.status_code != 101:
            return response.status_code
        while True:
            for event in protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    found: dict[str, object] = msgspec.json.decode(event.data)
                    return found
            received = sock.recv(65536)
            assert received, "closed before a message"
            protocol.receive_data(received)


def snapshot(api: Served, source: str) -> bool:
    """Whether a socket from `source` was accepted and sent the course's counts."""
    message = first_message(api, source)
    return isinstance(message, dict) and message.get("type") == "counts"


def test_a_flooder_is_refused_new_sockets_until_its_cool_down_ends_and_no_one_else_is(cooling_api: Served) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{cooling_api.port}", timeout=10) as http:
        created = http.post("/api/v1/courses", json={"course_id": COURSE_ID, "capacity": 5, "title": "Compilers"})
        assert created.status_code in (201, 409), created.text  # the other tests' course is as good
    assert snapshot(cooling_api, ATTACKER)

    assert flood(cooling_api, SMALL, ATTACKER).code == 1008
    # Refused at the handshake, before any subscription: no snapshot, a 429 that says when to come back.
    _, refused, sock = handshake(cooling_api, ATTACKER)
    sock.close()
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= COOLDOWN_S
    problem = msgspec.json.decode(refused.body or b"{}")
    assert problem["type"] == "urn:courseflow:problem:rate_limited" and "flooding" in problem["detail"], problem
    # Another caller meanwhile is served its snapshot.
    assert snapshot(cooling_api, LEGITIMATE)

    wait_until(lambda: snapshot(cooling_api, ATTACKER), 10 * COOLDOWN_S, "the flooder to be served again")
