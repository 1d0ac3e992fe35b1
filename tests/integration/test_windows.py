"""Registration windows, across the intake, the worker and the decider: a backlog accepted before opening is
decided fairly the moment it opens."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

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
    fair_decisions,
    send_crowd,
    wait_decided,
    wait_until,
)

LATER = "2100-01-01T00:00:00Z"


def crowd(course_id: int, count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "student_id": rng.randint(1, count),
            "course_id": course_id,
            "idempotency_key": f"c{course_id}-{n}",
            "priority": rng.choice([0, 10, 50, 100]),
        }
        for n in range(count)
    ]


def test_backlog_waits_for_the_opening_then_is_decided_in_strict_order(
    api_server: str, db: Conn, rds: redis.Redis, start_workers: StartWorkers, projector: Projector
) -> None:
    courses = {1: 20, 2: 150}
    bodies = crowd(1, 200, seed=3) + crowd(2, 200, seed=4)
    asyncio.run(send_crowd(api_server, bodies, {c: (cap, LATER) for c, cap in courses.items()}))
    start_workers(3, batch_size=30)
    wait_until(lambda: all_acknowledged(rds), what="the workers to read every entry")
    assert decided_count(db) == 0
    assert rds.zcard(Keys(partitions=DEFAULT_PARTITIONS).priority_set(1)) == 200
    asyncio.run(open_now(api_server, list(courses)))
    wait_decided(db, 400)
    for course_id, capacity in courses.items():
        assert fair_decisions(db, course_id, capacity)


async def open_now(base: str, course_ids: list[int]) -> None:
    import httpx2 as httpx

    async with httpx.AsyncClient(base_url=base) as http:
        for course_id in course_ids:
            response = await http.patch(f"/api/v1/courses/{course_id}", json={"opens_at": None})
            assert response.status_code == 200


def test_timed_opening_decides_nothing_before_opens_at(
    client: TestClient, db: Conn, start_workers: StartWorkers
) -> None:
    opens_at = datetime.now(UTC) + timedelta(seconds=1.5)
    created = client.post(
        "/api/v1/courses", json={"course_id": 1, "capacity": 2, "title": "Course", "opens_at": opens_at.isoformat()}
    )
    assert created.status_code == 201
    start_workers(2)
    ids = [enroll(client, s, 1, priority=s)["request_id"] for s in range(1, 6)]
    assert client.get(f"/api/v1/enrollments/{ids[4]}").json()["queue_position"] == 1
    wait_decided(db, 5)
    (first,) = db.execute("SELECT min(decided_at) FROM enrollment_requests").fetchone()  # type: ignore[misc]
    assert first >= opens_at
    granted = [client.get(f"/api/v1/enrollments/{i}").json()["status"] for i in ids]
    assert granted == ["waitlisted", "waitlisted", "waitlisted", "granted", "granted"]


def test_requests_after_closing_are_rejected(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    create_course(client, 1, 5)
    on_time = enroll(client, 1, 1)["request_id"]
    closed = client.patch("/api/v1/courses/1", json={"closes_at": datetime.now(UTC).isoformat()})
    assert closed.status_code == 200
    late = enroll(client, 2, 1)["request_id"]
    start_workers()
    wait_decided(db, 2)
    assert client.get(f"/api/v1/enrollments/{on_time}").json()["status"] == "granted"
    answer = client.get(f"/api/v1/enrollments/{late}").json()
    assert (answer["status"], answer["reason"]) == ("rejected", "closed")
