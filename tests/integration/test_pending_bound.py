"""A student may have at most PENDING_PER_STUDENT requests waiting for a decision: Redis state stays bounded."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2 as httpx
import msgspec
import pytest
import redis
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from tests.conftest import Servers, StartWorkers
from tests.helpers import wait_until
from tests.trust import bearer, secured

PARKED, OPEN = 1, 2  # a course opening in 2099 (its requests wait), and one open now


@pytest.fixture
def bounded(settings: Settings) -> Settings:
    """Authentication on, the default bound, and no write limit getting in the way of 51 requests."""
    configured = secured(settings)
    assert configured.queue.pending_per_student == 50
    return msgspec.structs.replace(configured, limits=msgspec.structs.replace(configured.limits, student_writes="off"))


@pytest.fixture
def app(bounded: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(bounded)) as client:
        registrar = bearer(bounded, "registrar")
        for course_id, opens in ((PARKED, "2099-09-01T09:00:00Z"), (OPEN, None)):
            body = {"course_id": course_id, "title": f"Course {course_id}", "capacity": 100, "opens_at": opens}
            assert client.post("/api/v1/courses", json=body, headers=registrar).status_code == 201
        yield client


def _enroll(client: TestClient, headers: dict[str, str], course_id: int, key: str) -> httpx.Response:
    return client.post("/api/v1/enrollments", json={"course_id": course_id, "idempotency_key": key}, headers=headers)


def test_the_51st_pending_request_is_refused_until_one_is_decided(
    app: TestClient, bounded: Settings, start_workers: StartWorkers
) -> None:
    student = bearer(bounded, "student", 7)
    parked = [_enroll(app, student, PARKED, f"parked-{n}").status_code for n in range(49)]
    assert parked == [202] * 49
    assert _enroll(app, student, OPEN, "open").status_code == 202  # the 50th, decided once a worker runs
    refused = _enroll(app, student, PARKED, "one-too-many")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "urn:courseflow:problem:pending_limit" and "at most 50 requests" in problem["detail"]
    assert problem["field"] == "course_id" and "Retry-After" not in refused.headers
    assert "PENDING_PER_STUDENT" in problem["detail"]
    # A replay of a request already pending is no new request: answered as before.
    assert _enroll(app, student, PARKED, "parked-0").status_code == 202
    # Another student has places of their own.
    assert _enroll(app, bearer(bounded, "student", 8), PARKED, "other").status_code == 202

    start_workers()
    wait_until(lambda: _enroll(app, student, PARKED, "one-too-many").status_code == 202, what="a place freed")
    assert _enroll(app, student, PARKED, "and-another").status_code == 429


def test_a_place_left_behind_by_a_crash_is_found_and_freed(
    app: TestClient, bounded: Settings, servers: Servers
) -> None:
    """A worker killed between a decision's COMMIT and freeing the student's place leaves an id in the set:
    the student's next request at the bound forgets it."""
    student = bearer(bounded, "student", 7)
    assert [_enroll(app, student, PARKED, f"parked-{n}").status_code for n in range(49)] == [202] * 49
    with redis.Redis.from_url(servers.admin_redis_url) as admin:
        key = Keys(bounded.queue.prefix, bounded.queue.partitions).student_pending(7)
        admin.sadd(key, "00000000-0000-4000-8000-000000000000")  # decided, its place never freed
        assert admin.scard(key) == 50
        assert _enroll(app, student, PARKED, "fiftieth").status_code == 202
        assert admin.scard(key) == 50
    assert _enroll(app, student, PARKED, "fifty-first").status_code == 429


def test_registrars_and_services_acting_for_a_student_are_not_counted(app: TestClient, bounded: Settings) -> None:
    service = bearer(bounded, "service", "sis")
    body = {"course_id": PARKED, "student_id": 9}
    answers = [
        app.post("/api/v1/enrollments", json={**body, "idempotency_key": f"k{n}"}, headers=service).status_code
        for n in range(51)
    ]
    assert answers == [202] * 51
