"""The HTTP contract: validation, idempotency, courses, status and metrics (no worker running)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from courseflow.platform.config import DEFAULT_PARTITIONS
from courseflow.platform.keys import Keys
from tests.helpers import Conn, create_course, enroll, wait_projected

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition
GOOD = {"student_id": 123, "course_id": 1, "idempotency_key": "unique-key-123", "priority": 10}


def queued(rds: redis.Redis) -> int:
    return int(rds.xlen(KEYS.requests))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD, "student_id": 0}, "student_id"),
        ({**GOOD, "student_id": -4}, "student_id"),
        ({**GOOD, "student_id": "123"}, "student_id"),
        ({**GOOD, "student_id": True}, "student_id"),
        ({**GOOD, "student_id": 1.5}, "student_id"),
        ({k: v for k, v in GOOD.items() if k != "student_id"}, "student_id"),
        ({**GOOD, "course_id": 0}, "course_id"),
        ({**GOOD, "course_id": 2**63}, "course_id"),
        ({**GOOD, "course_id": None}, "course_id"),
        ({**GOOD, "idempotency_key": ""}, "idempotency_key"),
        ({**GOOD, "idempotency_key": "x" * 129}, "idempotency_key"),
        ({**GOOD, "idempotency_key": "tab\there"}, "idempotency_key"),
        ({**GOOD, "idempotency_key": 42}, "idempotency_key"),
        ({k: v for k, v in GOOD.items() if k != "idempotency_key"}, "idempotency_key"),
        ({**GOOD, "priority": -1}, "priority"),
        ({**GOOD, "priority": 101}, "priority"),
        ({**GOOD, "priority": "high"}, "priority"),
        ({**GOOD, "seat": 3}, "seat"),
        ([GOOD], "body"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_nothing_is_queued(
    client: TestClient, rds: redis.Redis, body: Any, field: str
) -> None:
    create_course(client, 1, 10)
    response = client.post("/enroll", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert field in response.json()["detail"]
    assert queued(rds) == 0


@pytest.mark.parametrize(("raw", "status"), [(b"{not json", 400), (b"", 400), (b"x" * 20_000, 413)])
def test_unreadable_body_is_4xx_json(client: TestClient, rds: redis.Redis, raw: bytes, status: int) -> None:
    create_course(client, 1, 10)
    response = client.post("/api/v1/enrollments", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.json()["field"] == "body"
    assert queued(rds) == 0


def test_unknown_course_is_404(client: TestClient, rds: redis.Redis) -> None:
    response = client.post("/enroll", json={**GOOD, "course_id": 99})
    assert response.status_code == 404
    assert response.json()["field"] == "course_id"
    assert queued(rds) == 0


def test_seed_request_is_accepted_with_request_id_and_queue_position(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    response = client.post("/enroll", json=GOOD)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["queue_position"] == 1
    assert queued(rds) == 1
    status = client.get(f"/api/v1/enrollments/{body['request_id']}").json()
    assert status["status"] == "pending" and status["queue_position"] == 1 and status["student_id"] == 123


def test_versioned_route_and_default_priority(client: TestClient) -> None:
    create_course(client, 1, 10)
    body = {k: v for k, v in GOOD.items() if k != "priority"}
    response = client.post("/api/v1/enrollments", json=body)
    assert response.status_code == 202
    assert client.get(f"/api/v1/enrollments/{response.json()['request_id']}").json()["priority"] == 0


def test_queue_position_follows_priority_then_arrival(client: TestClient) -> None:
    create_course(client, 1, 10)
    low = enroll(client, 1, 1, priority=0)
    high = enroll(client, 2, 1, priority=50)
    assert high["queue_position"] == 1
    assert client.get(f"/api/v1/enrollments/{low['request_id']}").json()["queue_position"] == 2
    assert enroll(client, 3, 1, priority=0)["queue_position"] == 3


def test_same_key_same_body_answers_the_same_request(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    first = client.post("/enroll", json=GOOD).json()
    again = client.post("/enroll", json=GOOD)
    assert again.status_code == 202
    assert again.json() == first
    assert queued(rds) == 1


def test_same_key_different_body_is_409(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    first = client.post("/enroll", json=GOOD).json()
    response = client.post("/enroll", json={**GOOD, "priority": 99})
    assert response.status_code == 409
    assert response.json()["field"] == "idempotency_key"
    assert response.json()["request_id"] == first["request_id"]
    assert queued(rds) == 1


def test_key_is_scoped_to_the_student(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    a = client.post("/enroll", json=GOOD).json()
    b = client.post("/enroll", json={**GOOD, "student_id": 124}).json()
    assert a["request_id"] != b["request_id"]
    assert queued(rds) == 2


def test_idempotency_key_header(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    body = {k: v for k, v in GOOD.items() if k != "idempotency_key"}
    first = client.post("/enroll", json=body, headers={"Idempotency-Key": "hdr-1"})
    assert first.status_code == 202
    again = client.post("/enroll", json={**body, "idempotency_key": "hdr-1"})
    assert again.json()["request_id"] == first.json()["request_id"]
    clash = client.post("/enroll", json={**body, "idempotency_key": "other"}, headers={"Idempotency-Key": "hdr-1"})
    assert clash.status_code == 422 and clash.json()["field"] == "idempotency_key"
    assert queued(rds) == 1


def test_course_create_read_and_conflict(client: TestClient, db: Conn) -> None:
    response = client.post(
        "/api/v1/courses",
        json={"course_id": 7, "capacity": 30, "title": "Databases", "opens_at": "2026-12-01T09:00:00+01:00"},
    )
    assert response.status_code == 201
    expected = {
        "course_id": 7,
        "title": "Databases",
        "capacity": 30,
        "opens_at": "2026-12-01T09:00:00+01:00",
        "closes_at": None,
        "seats_taken": 0,
        "waitlist_length": 0,
        "pending": 0,
    }
    assert response.json() == expected
    assert client.post("/api/v1/courses", json={"course_id": 7, "capacity": 5, "title": "Course"}).status_code == 409
    wait_projected(db)
    shown = client.get("/api/v1/courses/7").json()
    assert shown["opens_at"] == "2026-12-01T08:00:00Z"
    assert {k: v for k, v in shown.items() if k not in ("opens_at", "counters")} == {
        k: v for k, v in expected.items() if k != "opens_at"
    }
    assert shown["counters"] == dict.fromkeys(
        ("requested", "granted", "waitlisted", "rejected", "dropped", "left_waitlist", "promoted"), 0
    )
    assert client.get("/api/v1/courses/8").status_code == 404
    assert client.get("/api/v1/courses/abc").json()["field"] == "course_id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"course_id": 0, "capacity": 1, "title": "Course"}, "course_id"),
        ({"course_id": 1, "capacity": -1, "title": "Course"}, "capacity"),
        ({"course_id": 1}, "capacity"),
        ({"course_id": 1, "capacity": 1, "title": 5}, "title"),
        ({"course_id": 1, "capacity": 1, "title": "Course", "opens_at": "tomorrow"}, "opens_at"),
        ({"course_id": 1, "capacity": 1, "title": "Course", "opens_at": "2026-12-01T09:00:00"}, "opens_at"),
        ({"course_id": 1, "capacity": 1, "title": "Course", "closes_at": 17}, "closes_at"),
        (
            {
                "course_id": 1,
                "capacity": 1,
                "title": "Course",
                "opens_at": "2026-12-02T00:00:00Z",
                "closes_at": "2026-12-01T00:00:00Z",
            },
            "closes_at",
        ),
    ],
)
def test_bad_course_is_422(client: TestClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/api/v1/courses", json=body)
    assert response.status_code == 422 and response.json()["field"] == field


def test_metrics_per_course_and_totals(client: TestClient) -> None:
    create_course(client, 1, 10)
    create_course(client, 2, 5)
    enroll(client, 1, 1)
    enroll(client, 2, 1)
    enroll(client, 1, 2)
    assert client.get("/metrics?course_id=1").json() == {
        "course_id": 1,
        "queue_depth": 2,
        "seats_taken": 0,
        "capacity": 10,
        "waitlist_length": 0,
        "status": "open",
    }
    totals = client.get("/metrics").json()
    assert (totals["queue_depth"], totals["capacity"], totals["status"]) == (3, 15, "open")
    assert [c["course_id"] for c in totals["courses"]] == [1, 2]
    assert client.get("/metrics?course_id=3").status_code == 404
    assert client.get("/metrics?course_id=x").status_code == 422


def test_status_of_unknown_or_malformed_request(client: TestClient) -> None:
    assert client.get("/api/v1/enrollments/3f2b4c1e-0000-4000-8000-000000000000").status_code == 404
    response = client.get("/api/v1/enrollments/not-a-uuid")
    assert response.status_code == 422 and response.json()["field"] == "request_id"


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
