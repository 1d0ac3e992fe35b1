"""A real `courseflow api` process to attack, what it holds (/proc), and raw sockets from chosen loopback addresses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import courseflow_local as services
import msgspec

from tests.conftest import Servers
from tests.helpers import wait_until

# The attacker's address; the legitimate client comes from another one (all of 127/8 is loopback on Linux).
ATTACKER = "127.0.0.1"
LEGITIMATE = "127.0.0.2"


class Served(msgspec.Struct, frozen=True):
    port: int
    pid: int
    log: Path

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def connect(self, source: str = ATTACKER, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout, source_address=(source, 0))
        return sock

    def status_of(self, request: bytes, source: str = LEGITIMATE) -> int:
        """Send one whole request on a new connection; the status of the answer."""
        with self.connect(source) as sock:
            sock.sendall(request)
            return status(answer(sock))

    def healthy(self) -> bool:
        """A legitimate client's request answers 200."""
        return self.status_of(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") == 200


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b"" if it only closed or reset it)."""
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


def one_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, read off a connection that stays open."""
    received = bytearray()
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def status(response: bytes) -> int:
    """The status code of the first response in `response`, 0 for none."""
    parts = response.split(b" ", 2)
    return int(parts[1]) if response.startswith(b"HTTP/1.1 ") and len(parts) > 1 else 0


@contextmanager
def serving(servers: Servers, log_dir: Path, **env: str) -> Iterator[Served]:
    """`courseflow api` on a free loopback port with `env` added, until the block ends."""
    port = services.free_port()
    env = os.environ | {
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "SERVER_PORT": str(port),
        "RATE_LIMIT_ANONYMOUS": "off",
        **env,
    }
    log_path = log_dir / "api.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "courseflow", "api"], env=env, stdout=log, stderr=log)
    served = Served(port, proc.pid, log_path)
    try:

        def up() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                return served.healthy()
            except OSError:
                return False

        wait_until(up, 30, "the API to start")
        yield served
    finally:
        proc.terminate()
        proc.wait(timeout=30)
