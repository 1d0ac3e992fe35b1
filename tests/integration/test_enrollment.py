"""The seed's scenarios, end to end through the API and real workers, made deterministic."""

from __future__ import annotations

import asyncio

import httpx2 as httpx
import redis
from starlette.testclient import TestClient

from courseflow.platform.config import DEFAULT_PARTITIONS
from courseflow.platform.keys import Keys
from projections.projector import Projector
from tests.conftest import StartWorkers
from tests.helpers import (
    Conn,
    all_acknowledged,
    create_course,
    decided_count,
    enroll,
    outcomes,
    wait_decided,
    wait_until,
)

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def status_of(client: TestClient, request_id: str) -> dict[str, object]:
    return client.get(f"/api/v1/enrollments/{request_id}").json()  # type: ignore[no-any-return]


def test_waitlist_when_full(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    create_course(client, 1, 2)
    requests = [enroll(client, s, 1) for s in (1, 2, 3)]
    start_workers()
    wait_decided(db, 3)
    assert [status_of(client, r["request_id"])["status"] for r in requests] == ["granted", "granted", "waitlisted"]
    assert status_of(client, requests[2]["request_id"])["waitlist_position"] == 1
    course = client.get("/api/v1/courses/1").json()
    assert (course["seats_taken"], course["waitlist_length"], course["pending"]) == (2, 1, 0)


def test_priority_affects_order(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    create_course(client, 1, 2)
    for student, priority in [(1, 0), (2, 10), (3, 90), (4, 50)]:
        enroll(client, student, 1, priority)
    start_workers()
    wait_decided(db, 4)
    assert outcomes(db, 1) == {"EnrollmentGranted": [3, 4], "Waitlisted": [2, 1], "EnrollmentRejected": []}


def test_capacity_not_exceeded(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    create_course(client, 1, 10)
    start_workers(2)
    for student in range(1, 61):
        enroll(client, student, 1, priority=student % 7)
    wait_decided(db, 60)
    result = outcomes(db, 1)
    assert len(result["EnrollmentGranted"]) == 10
    assert len(result["Waitlisted"]) == 50
    assert client.get("/metrics?course_id=1").json() == {
        "course_id": 1,
        "queue_depth": 0,
        "seats_taken": 10,
        "capacity": 10,
        "waitlist_length": 50,
        "status": "full",
    }


def test_spike_stability(
    api_server: str, db: Conn, rds: redis.Redis, start_workers: StartWorkers, projector: Projector
) -> None:
    """500 concurrent requests over real HTTP: every one accepted, stored and decided once."""

    async def crowd() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api_server, timeout=30) as http:
            created = await http.post("/api/v1/courses", json={"course_id": 1, "capacity": 25, "title": "Course"})
            assert created.status_code == 201
            bodies = [{"student_id": s, "course_id": 1, "idempotency_key": f"spike-{s}"} for s in range(1, 501)]
            return await asyncio.gather(*(http.post("/enroll", json=b) for b in bodies))

    start_workers(2)
    responses = asyncio.run(crowd())
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["request_id"] for r in responses}) == 500
    wait_decided(db, 500)
    assert len(outcomes(db, 1)["EnrollmentGranted"]) == 25
    wait_until(lambda: all_acknowledged(rds), what="all entries acknowledged")
    assert rds.zcard(KEYS.priority_set(1)) == 0


def test_idempotency_protection(
    api_server: str, db: Conn, rds: redis.Redis, start_workers: StartWorkers, projector: Projector
) -> None:
    """The same request sent 20 times at once is stored once, decided once."""

    async def retries() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api_server, timeout=30) as http:
            await http.post("/api/v1/courses", json={"course_id": 1, "capacity": 5, "title": "Course"})
            body = {"student_id": 42, "course_id": 1, "idempotency_key": "retry-me", "priority": 3}
            return await asyncio.gather(*(http.post("/enroll", json=body) for _ in range(20)))

    responses = asyncio.run(retries())
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["request_id"] for r in responses}) == 1
    assert rds.xlen(KEYS.requests) == 1
    start_workers(2)
    wait_decided(db, 1)
    assert outcomes(db, 1)["EnrollmentGranted"] == [42]


def test_priority_boost(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    """A late request with a higher priority overtakes everything already waiting."""
    create_course(client, 1, 1)
    for student in range(1, 6):
        enroll(client, student, 1, priority=10)
    boosted = enroll(client, 99, 1, priority=80)
    assert boosted["queue_position"] == 1
    start_workers()
    wait_decided(db, 6)
    assert status_of(client, boosted["request_id"])["status"] == "granted"
    assert outcomes(db, 1)["Waitlisted"] == [1, 2, 3, 4, 5]


def test_waitlist_places_follow_priority_then_arrival(
    client: TestClient, db: Conn, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 1)
    first = enroll(client, 1, 1, priority=50)
    waiting = [enroll(client, s, 1, priority=p) for s, p in [(2, 5), (3, 20), (4, 5)]]
    start_workers()
    wait_decided(db, 4)
    assert status_of(client, first["request_id"])["status"] == "granted"
    positions = [status_of(client, w["request_id"])["waitlist_position"] for w in waiting]
    assert positions == [2, 1, 3]


def test_a_second_request_from_a_waitlisted_student_is_a_duplicate(
    client: TestClient, db: Conn, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 1)
    enroll(client, 1, 1)
    enroll(client, 2, 1)
    start_workers()
    wait_decided(db, 2)
    again = enroll(client, 2, 1, priority=100, key="second-try")
    wait_decided(db, 3)
    rejected = status_of(client, again["request_id"])
    assert (rejected["status"], rejected["reason"]) == ("rejected", "duplicate")
    assert client.get("/api/v1/courses/1").json()["waitlist_length"] == 1


def test_decided_replay_answers_the_outcome(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    create_course(client, 1, 1)
    body = {"student_id": 5, "course_id": 1, "idempotency_key": "once"}
    first = client.post("/enroll", json=body).json()
    start_workers()
    wait_decided(db, 1)
    replay = client.post("/enroll", json=body)
    assert replay.status_code == 200
    assert replay.json()["request_id"] == first["request_id"]
    assert replay.json()["status"] == "granted"
    assert decided_count(db) == 1
