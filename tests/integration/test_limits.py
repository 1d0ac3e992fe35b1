"""Rate limits per principal, shared through Redis by every API process, with standard 429 answers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import courseflow_local as services
import httpx2 as httpx
import msgspec
import redis
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from tests.helpers import wait_until
from tests.integration.test_cli import server_env
from tests.trust import SECRET, bearer, secured


def limited(settings: Settings, **limits: str) -> Settings:
    """`settings` with these rate limits (fields of the limits section) changed."""
    return msgspec.structs.replace(settings, limits=msgspec.structs.replace(settings.limits, **limits))


def _enroll(client: TestClient | httpx.Client, headers: dict[str, str], n: int) -> httpx.Response:
    return client.post("/api/v1/enrollments", json={"course_id": 1, "idempotency_key": f"k{n}"}, headers=headers)


def test_a_limited_student_gets_429_and_slows_no_one_else(settings: Settings) -> None:
    configured = secured(
        msgspec.structs.replace(
            settings,
            limits=msgspec.structs.replace(
                settings.limits, student_writes="3 per 30 seconds", student_reads="5/minute"
            ),
        )
    )
    with TestClient(create_app(configured)) as client:
        registrar = bearer(configured, "registrar")
        assert (
            client.post(
                "/api/v1/courses", json={"course_id": 1, "capacity": 9, "title": "Course"}, headers=registrar
            ).status_code
            == 201
        )
        alice, bob = bearer(configured, "student", 1), bearer(configured, "student", 2)
        assert [_enroll(client, alice, n).status_code for n in range(3)] == [202, 202, 202]
        limited = _enroll(client, alice, 3)
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        # The sliding window admits one more within two windows at most.
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.headers["RateLimit-Policy"] == '"student-writes";q=3;w=30'
        assert limited.headers["RateLimit"].startswith('"student-writes";r=0;t=')
        # Another student, and the same student's reads, have limits of their own.
        assert _enroll(client, bob, 0).status_code == 202
        reads = [client.get("/api/v1/students/1/enrollments", headers=alice) for _ in range(6)]
        assert [r.status_code for r in reads] == [200] * 5 + [429]
        assert reads[-1].headers["RateLimit-Policy"] == '"student-reads";q=5;w=60'
        assert int(reads[-1].headers["Retry-After"]) >= 1
        # Registrars are counted apart, with their own limit.
        assert client.get("/api/v1/courses/1", headers=registrar).status_code == 200


def test_enrollments_count_against_the_callers_write_limit_refused_bodies_too(
    settings: Settings, rds: redis.Redis
) -> None:
    """Every enrollment is counted once, in the caller's own counter: by the intake's call that claims its key,
    or on its own when the body is refused before that."""
    configured = secured(limited(settings, student_writes="4 per 60 seconds"))
    with TestClient(create_app(configured)) as client:
        registrar = bearer(configured, "registrar")
        assert (
            client.post(
                "/api/v1/courses", json={"course_id": 1, "capacity": 9, "title": "Course"}, headers=registrar
            ).status_code
            == 201
        )
        student = bearer(configured, "student", 1)
        assert [_enroll(client, student, n).status_code for n in range(2)] == [202, 202]
        bad = client.post("/api/v1/enrollments", json={"course_id": "x"}, headers=student)
        assert bad.status_code == 422  # refused requests count too
        assert [_enroll(client, student, n).status_code for n in range(2, 4)] == [202, 429]
    counter = Keys(settings.queue.prefix).rate_limit("student:1", "student-writes:4/60s")
    assert int(rds.hget(counter, "current") or 0) + int(rds.hget(counter, "previous") or 0) == 4


def test_a_refused_hit_counts_on_no_limit_and_says_when_to_come_back(settings: Settings, rds: redis.Redis) -> None:
    """All of a policy's limits are taken together, or none; Retry-After is when the sliding window admits one."""
    configured = secured(limited(settings, registrar="2 per 10 seconds;50 per hour"))
    with TestClient(create_app(configured)) as client:
        registrar = bearer(configured, "registrar")
        answers = [client.get("/api/v1/courses/1", headers=registrar) for _ in range(3)]
    assert [a.status_code for a in answers] == [404, 404, 429]
    assert answers[-1].headers["RateLimit"].startswith('"registrar-1";r=0;t=')
    # Until the next window, then until the previous one's two hits have faded to one: at most two windows.
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 20
    keys = Keys(settings.queue.prefix)
    for limit in ("registrar:2/10s", "registrar:50/3600s"):
        counter = keys.rate_limit("registrar:registrar", limit)
        assert int(rds.hget(counter, "current") or 0) + int(rds.hget(counter, "previous") or 0) == 2, limit


def test_limits_fail_open_while_redis_is_down(settings: Settings) -> None:
    """Reads are answered from PostgreSQL; only intake needs Redis, and says so with a 503."""
    down = msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url="redis://127.0.0.1:9/0"))
    with TestClient(create_app(down)) as client:
        assert client.get("/api/v1/courses/1").status_code == 404
        assert client.post("/enroll", json={"student_id": 1, "course_id": 1, "idempotency_key": "k"}).status_code == 503


def test_off_means_unlimited(settings: Settings) -> None:
    configured = secured(
        msgspec.structs.replace(settings, limits=msgspec.structs.replace(settings.limits, student_reads="off"))
    )
    with TestClient(create_app(configured)) as client:
        student = bearer(configured, "student", 1)
        assert {client.get("/api/v1/students/1/enrollments", headers=student).status_code for _ in range(60)} == {200}


@contextmanager
def api_process(settings: Settings, log: Path, **env: str) -> Iterator[str]:
    port = services.free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "courseflow", "api"],
            env=server_env(settings, SERVER_PORT=str(port), **env),
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return proc.poll() is not None

    try:
        wait_until(answers, timeout=30, what="the API to start")
        assert proc.poll() is None, log.read_text()
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_limit_is_shared_by_every_api_process(settings: Settings, tmp_path: Path) -> None:
    env = {"AUTH_JWT_SECRET": SECRET, "RATE_LIMIT_STUDENT_WRITES": "4 per 60 seconds"}
    with ExitStack() as stack:
        bases = [stack.enter_context(api_process(settings, tmp_path / f"api-{n}.log", **env)) for n in range(2)]
        clients = [stack.enter_context(httpx.Client(base_url=b, timeout=10)) for b in bases]
        student = bearer(secured(settings), "student", 1)
        # Alternate between the two processes: together they allow 4, not 4 each.
        answers = [_enroll(clients[n % 2], student, n).status_code for n in range(6)]
    assert answers == [404, 404, 404, 404, 429, 429]
