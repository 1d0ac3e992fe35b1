"""A whole deployment in real processes, on servers of its own that the fault tests may kill."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import courseflow_local as services
import httpx2 as httpx
import psycopg
import redis

from courseflow.eventstore import migrations
from tests.conftest import Servers, reset
from tests.helpers import wait_until

# Short timeouts, so reclaiming and recovering fit in a test.
# The crowds come from one address in development mode: one principal, so no rate limit.
TUNING = {
    "CLAIM_IDLE_MS": "1000",
    # Below the claim timeout: a killed worker's partitions go to the others first, then its entries.
    "LEASE_MS": "600",
    "BLOCK_MS": "200",
    "BATCH_SIZE": "100",
    "MAX_DELIVERIES": "5",
    "RATE_LIMIT_REGISTRAR": "off",
    "RATE_LIMIT_ANONYMOUS": "off",
}


class Cluster:
    def __init__(self, data_dir: Path, logs: Path) -> None:
        self.data_dir, self.logs = data_dir, logs
        self.servers = services.up(data_dir, services.free_port(), services.free_port())
        migrations.migrate(self.servers.database_url)
        self.port = services.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = (
            os.environ
            | TUNING
            | {
                "DATABASE_URL": self.servers.database_url,
                "REDIS_URL": self.servers.redis_url,
                "SERVER_PORT": str(self.port),
            }
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def courseflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "courseflow", *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=300)

    def start(self, name: str, *args: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            command = [sys.executable, "-m", "courseflow", *args]
            self.processes[name] = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)

    def start_all(self, workers: int = 3) -> None:
        self.start("api", "api")
        for n in range(1, workers + 1):
            self.start(f"worker-{n}", "worker", "--name", f"worker-{n}")
        self.start("projector", "projector")
        wait_until(self.answers, timeout=60, what="the API to answer")

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.base}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(timeout=30)

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every process, as a deploy does; returns their exit codes."""
        running = {name: p for name, p in self.processes.items() if p.poll() is None}
        for process in running.values():
            process.send_signal(signal.SIGTERM)
        codes = {name: process.wait(timeout=60) for name, process in running.items()}
        self.processes.clear()
        return codes

    def kill_redis(self) -> None:
        pid = services.redis_pid(self.data_dir)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), what="Redis to die")

    def restart_servers(self) -> None:
        """Start whichever server is down. A killed server's port can stay busy for a moment (its
        connections closing), so retry until the deadline."""

        def started() -> bool:
            try:
                services.up(self.data_dir, self.servers.postgres_port, self.servers.redis_port)
            except services.ServicesError:
                return False
            return True

        wait_until(started, timeout=60, what="the servers to start again")

    def reset(self) -> None:
        reset(Servers.of(self.servers))

    def db(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.servers.database_url, autocommit=True)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.servers.redis_url)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        services.down(self.data_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


class Crowd:
    """Students enrolling at once, each retrying (same idempotency key) until answered, as a client should."""

    def __init__(self, base: str, courses: dict[int, int], size: int, concurrency: int = 32) -> None:
        self.base, self.courses, self.concurrency = base, courses, concurrency
        ids = list(courses)
        self.bodies = [
            {"student_id": n + 1, "course_id": ids[n % len(ids)], "idempotency_key": f"k{n}", "priority": n % 101}
            for n in range(size)
        ]
        self.accepted: dict[str, str] = {}
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="crowd")

    @property
    def done(self) -> int:
        return len(self.accepted)

    def create_courses(self) -> None:
        for course_id, capacity in self.courses.items():
            response = httpx.post(
                f"{self.base}/api/v1/courses", json={"course_id": course_id, "capacity": capacity, "title": "Course"}
            )
            assert response.status_code == 201, response.text

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float = 240) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the crowd did not finish: {self.done}/{len(self.bodies)} answered"
        assert self.done == len(self.bodies)

    async def _run(self) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:

            async def send(body: dict[str, object]) -> None:
                async with gate:
                    self.accepted[str(body["idempotency_key"])] = await _until_answered(http, body)

            await asyncio.gather(*(send(body) for body in self.bodies))


async def _until_answered(http: httpx.AsyncClient, body: dict[str, object], deadline_s: float = 180) -> str:
    deadline = time.monotonic() + deadline_s
    pause = 0.05
    while time.monotonic() < deadline:
        try:
            response = await http.post("/enroll", json=body)
            if response.status_code in (200, 202):
                return str(response.json()["request_id"])
            assert response.status_code == 503, response.text
        except httpx.TransportError:
            pass
        await asyncio.sleep(pause)  # the client's own retry backoff
        pause = min(pause * 2, 1.0)
    raise AssertionError(f"no answer for {body} within {deadline_s}s")
