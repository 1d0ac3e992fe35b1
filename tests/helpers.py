"""Waiting on conditions with a deadline, and reading outcomes back from the servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import httpx2 as httpx
import psycopg
import redis
from starlette.testclient import TestClient

from courseflow.platform.config import DEFAULT_PARTITIONS
from courseflow.platform.keys import Keys
from projections import queries

Conn = psycopg.Connection[psycopg.rows.TupleRow]
# Nothing listens on the discard port: a Redis that is down.
CLOSED_PORT_REDIS = "redis://127.0.0.1:9/0"


def wait_until(condition: Callable[[], object], timeout: float = 20.0, what: str = "the condition") -> None:
    """Poll `condition` until it is truthy; fail the test once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    interval = 0.005
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 2, 0.1)


def decided_count(db: Conn) -> int:
    row = db.execute("SELECT count(*) FROM enrollment_requests").fetchone()
    assert row is not None
    return int(row[0])


def projection_lag(db: Conn) -> int:
    return queries.lag(db)


def wait_projected(db: Conn, timeout: float = 30.0) -> None:
    wait_until(lambda: projection_lag(db) == 0, timeout, "the read models to catch up")


def wait_decided(db: Conn, count: int, timeout: float = 30.0) -> None:
    """Wait for `count` decisions and for the read models to include them (a projector must run)."""
    wait_until(lambda: decided_count(db) >= count, timeout, f"{count} decisions")
    assert decided_count(db) == count
    wait_until(lambda: projection_lag(db) == 0, timeout, "the read models to catch up")


def outcomes(db: Conn, course_id: int) -> dict[str, list[int]]:
    """Student ids per status for a course, in the order the decisions were appended."""
    rows = db.execute(
        "SELECT e.data ->> 'type', (e.data ->> 'student_id')::bigint FROM events e"
        " WHERE e.stream = %s AND e.type IN ('EnrollmentGranted', 'Waitlisted', 'EnrollmentRejected')"
        " ORDER BY e.position",
        (f"course-{course_id}",),
    ).fetchall()
    result: dict[str, list[int]] = {"EnrollmentGranted": [], "Waitlisted": [], "EnrollmentRejected": []}
    for kind, student in rows:
        result[kind].append(student)
    return result


def create_course(client: TestClient, course_id: int, capacity: int, title: str = "Course") -> None:
    response = client.post("/api/v1/courses", json={"course_id": course_id, "capacity": capacity, "title": title})
    assert response.status_code == 201, response.text
    wait_until(lambda: client.get(f"/metrics?course_id={course_id}").status_code == 200, what="the course projected")


def enroll(client: TestClient, student_id: int, course_id: int, priority: int = 0, key: str | None = None) -> Any:
    response = client.post(
        "/enroll",
        json={
            "student_id": student_id,
            "course_id": course_id,
            "idempotency_key": key or f"s{student_id}-c{course_id}",
            "priority": priority,
        },
    )
    assert response.status_code == 202, response.text
    return response.json()


def all_acknowledged(rds: redis.Redis) -> bool:
    """Every entry of every partition's request stream was delivered to the group and acknowledged."""
    for partition in Keys(partitions=DEFAULT_PARTITIONS).all():
        groups = rds.xinfo_groups(partition.requests) if rds.exists(partition.requests) else []
        if groups and (groups[0]["lag"] != 0 or groups[0]["pending"] != 0):
            return False
    return True


def stream_entries(rds: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast(list[tuple[bytes, dict[bytes, bytes]]], rds.xrange(key))


async def send_crowd(
    base: str, bodies: list[dict[str, object]], courses: dict[int, tuple[int, str | None]]
) -> list[httpx.Response]:
    """Create the courses ({id: (capacity, opens_at)}), then send every body to /enroll at once."""
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=64)) as http:
        for course_id, (capacity, opens_at) in courses.items():
            body = {"course_id": course_id, "capacity": capacity, "title": "Course", "opens_at": opens_at}
            assert (await http.post("/api/v1/courses", json=body)).status_code == 201
        responses = await asyncio.gather(*(http.post("/enroll", json=body) for body in bodies))
    assert {r.status_code for r in responses} == {202}
    return responses


def fair_decisions(db: Conn, course_id: int, capacity: int) -> bool:
    """Were the course's requests, all pending together, decided exactly as one perfectly fair decider would?

    Priority first, then arrival; a student's second request is a duplicate.
    """
    rows = db.execute(
        "SELECT request_id::text, student_id FROM enrollment_requests WHERE course_id = %s"
        " ORDER BY priority DESC, arrival_ms, arrival_seq",
        (course_id,),
    ).fetchall()
    expected: list[tuple[str, str]] = []
    holders: set[int] = set()
    for request_id, student in rows:
        if student in holders:
            expected.append((request_id, "EnrollmentRejected"))
        else:
            expected.append((request_id, "EnrollmentGranted" if len(holders) < capacity else "Waitlisted"))
            holders.add(student)
    actual = db.execute(
        "SELECT data ->> 'request_id', type FROM events WHERE stream = %s"
        " AND type IN ('EnrollmentGranted', 'Waitlisted', 'EnrollmentRejected') ORDER BY position",
        (f"course-{course_id}",),
    ).fetchall()
    return [tuple(row) for row in actual] == expected


def required_versions(distribution: str) -> Any:
    """The `packaging` SpecifierSet pyproject.toml declares for a runtime dependency."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    declared = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    found = [Requirement(line) for line in declared if Requirement(line).name.lower() == distribution.lower()]
    assert len(found) == 1, f"pyproject.toml declares {distribution} {len(found)} times"
    return found[0].specifier
