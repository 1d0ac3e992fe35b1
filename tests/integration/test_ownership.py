"""Roles and ownership, across every handler behind the gate: a student acts only for themselves; registrars
manage; services enroll anyone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from projections.projector import Projector
from tests.conftest import StartWorkers
from tests.helpers import Conn, wait_decided, wait_projected
from tests.trust import bearer, secured

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


class Campus:
    """One API with authentication on, and a token per caller."""

    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.registrar = bearer(settings, "registrar", "reg-1")
        self.service = bearer(settings, "service", "sis")

    def student(self, student_id: int) -> dict[str, str]:
        return bearer(self.settings, "student", student_id)

    def course(self, course_id: int, capacity: int) -> None:
        body = {"course_id": course_id, "capacity": capacity, "title": "Course"}
        assert self.client.post("/api/v1/courses", json=body, headers=self.registrar).status_code == 201

    def enroll(self, student_id: int, course_id: int = 1) -> str:
        body = {"course_id": course_id, "idempotency_key": f"s{student_id}-c{course_id}"}
        response = self.client.post("/api/v1/enrollments", json=body, headers=self.student(student_id))
        assert response.status_code == 202, response.text
        return str(response.json()["request_id"])


@pytest.fixture
def campus(settings: Settings, projector: Projector) -> Iterator[Campus]:
    configured = secured(settings)
    with TestClient(create_app(configured)) as client:
        yield Campus(client, configured)


def _status(campus: Campus, request_id: str, headers: dict[str, str]) -> Any:
    return campus.client.get(f"/api/v1/enrollments/{request_id}", headers=headers)


def test_a_student_cannot_drop_or_read_anothers_seat(campus: Campus, db: Conn, start_workers: StartWorkers) -> None:
    campus.course(1, 1)
    seat = campus.enroll(1)
    waiting = campus.enroll(2)
    start_workers()
    wait_decided(db, 2)
    # Student 2 at the head of the waitlist tries to take student 1's seat.
    attempt = campus.client.delete(f"/api/v1/enrollments/{seat}", headers=campus.student(2))
    assert attempt.status_code == 404 and "student_id" not in attempt.text
    assert _status(campus, seat, campus.student(2)).status_code == 404
    assert _status(campus, seat, campus.registrar).json()["status"] == "granted"
    assert _status(campus, waiting, campus.student(2)).json()["status"] == "waitlisted"
    # The owner can.
    dropped = campus.client.delete(f"/api/v1/enrollments/{seat}", headers=campus.student(1))
    # Who took the seat is another student's business.
    assert dropped.status_code == 200 and dropped.json() == {"request_id": seat, "status": "dropped"}
    wait_projected(db)
    assert _status(campus, waiting, campus.student(2)).json()["status"] == "granted"


def test_a_student_enrolls_only_themselves_and_cannot_choose_a_priority(campus: Campus, rds: redis.Redis) -> None:
    campus.course(1, 5)
    other = campus.client.post(
        "/enroll", json={"student_id": 8, "course_id": 1, "idempotency_key": "k"}, headers=campus.student(7)
    )
    assert other.status_code == 403 and other.json()["field"] == "student_id"
    boosted = campus.client.post(
        "/enroll",
        json={"student_id": 7, "course_id": 1, "idempotency_key": "k", "priority": 100},
        headers=campus.student(7),
    )
    assert boosted.status_code == 403 and boosted.json()["field"] == "priority"
    assert rds.xlen(KEYS.requests) == 0
    own = campus.client.post("/enroll", json={"course_id": 1, "idempotency_key": "k"}, headers=campus.student(7))
    assert own.status_code == 202
    shown = _status(campus, own.json()["request_id"], campus.student(7)).json()
    assert (shown["student_id"], shown["priority"]) == (7, 0)


def test_a_service_enrolls_any_student_with_a_priority(campus: Campus) -> None:
    campus.course(1, 5)
    body = {"student_id": 8, "course_id": 1, "idempotency_key": "sis-1", "priority": 60}
    accepted = campus.client.post("/api/v1/enrollments", json=body, headers=campus.service)
    assert accepted.status_code == 202
    shown = _status(campus, accepted.json()["request_id"], campus.service).json()
    assert (shown["student_id"], shown["priority"]) == (8, 60)
    assert _status(campus, accepted.json()["request_id"], campus.student(8)).status_code == 200
    assert _status(campus, accepted.json()["request_id"], campus.student(9)).status_code == 404
    # A service is not a registrar.
    assert (
        campus.client.post(
            "/api/v1/courses", json={"course_id": 2, "capacity": 1, "title": "Course"}, headers=campus.service
        ).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/courses", {"course_id": 2, "capacity": 1, "title": "Course"}),
        ("PATCH", "/api/v1/courses/1", {"capacity": 1_000_000}),
        ("PATCH", "/api/v1/courses/1", {"closes_at": "2026-01-01T00:00:00Z"}),
        ("PUT", "/api/v1/students/7/priority", {"priority": 100}),
        ("GET", "/api/v1/dead-letters", None),
    ],
)
def test_only_registrars_manage_courses_and_priorities_and_read_dead_letters(
    campus: Campus, db: Conn, method: str, path: str, body: dict[str, Any] | None
) -> None:
    campus.course(1, 5)
    response = campus.client.request(method, path, json=body, headers=campus.student(7))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    wait_projected(db)
    shown = campus.client.get("/api/v1/courses/1", headers=campus.registrar).json()
    assert (shown["capacity"], shown["closes_at"]) == (5, None)
    assert campus.client.get("/api/v1/courses/2", headers=campus.registrar).status_code == 404
    assert campus.client.get("/api/v1/students/7/priority", headers=campus.student(7)).json()["priority"] == 0


def test_histories_and_waitlists_show_other_students_to_registrars_only(
    campus: Campus, db: Conn, start_workers: StartWorkers
) -> None:
    campus.course(1, 1)
    campus.enroll(1)
    mine = campus.enroll(2)
    campus.enroll(3)
    start_workers()
    wait_decided(db, 3)
    assert campus.client.get("/api/v1/students/1/events", headers=campus.student(2)).status_code == 403
    assert campus.client.get("/api/v1/students/1/enrollments", headers=campus.student(2)).status_code == 403
    own = campus.client.get("/api/v1/students/2/enrollments", headers=campus.student(2)).json()["enrollments"]
    assert [e["request_id"] for e in own] == [mine]

    seen = campus.client.get("/api/v1/courses/1/events", headers=campus.student(2)).json()["events"]
    others = [e["data"] for e in seen if e["type"] != "CourseCreated" and "student_id" not in e["data"]]
    assert len(others) == 2  # students 1 and 3: a decision each (carrying its request), without ids or keys
    assert all(not {"request_id", "idempotency_key", "priority", "requested_at", "arrival"} & d.keys() for d in others)
    assert {e["data"]["request_id"] for e in seen if e["data"].get("student_id") == 2} == {mine}
    on_behalf = campus.client.get("/api/v1/students/1/events", headers=campus.service).json()["events"]
    assert {e["data"].get("student_id") for e in on_behalf} == {1}  # a service reads a student's history whole
    everything = campus.client.get("/api/v1/courses/1/events", headers=campus.registrar).json()["events"]
    assert {e["data"]["student_id"] for e in everything if "student_id" in e["data"]} == {1, 2, 3}
    assert any("idempotency_key" in e["data"] for e in everything)

    listed = campus.client.get("/api/v1/courses/1/waitlist", headers=campus.student(2)).json()
    assert listed["waitlist_length"] == 2
    assert [(w["position"], w["request_id"]) for w in listed["waitlist"]] == [(1, mine)]
    full = campus.client.get("/api/v1/courses/1/waitlist", headers=campus.registrar).json()["waitlist"]
    assert [w["student_id"] for w in full] == [2, 3]
