"""The event history of a course and of a student: over HTTP, paginated, and from the command line."""

from __future__ import annotations

from starlette.testclient import TestClient

from courseflow.platform.config import Settings
from tests.conftest import StartWorkers
from tests.helpers import Conn, create_course, enroll, wait_decided
from tests.integration.test_cli import courseflow, server_env


def test_course_and_student_history_paginated(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    create_course(client, 1, 1)
    create_course(client, 2, 1)
    first = enroll(client, 7, 1)["request_id"]
    enroll(client, 8, 1)
    enroll(client, 7, 2)
    start_workers()
    wait_decided(db, 3)
    client.delete(f"/api/v1/enrollments/{first}")

    page = client.get("/api/v1/courses/1/events?limit=2").json()
    assert [e["type"] for e in page["events"]] == ["CourseCreated", "EnrollmentGranted"]
    assert [e["version"] for e in page["events"]] == [1, 2]
    # A decision carries its request: the registrar reads who asked, with which key, when and in which order.
    granted = page["events"][1]["data"]
    assert (granted["request_id"], granted["student_id"]) == (first, 7)
    assert {"idempotency_key", "requested_at", "arrival", "priority"} <= granted.keys()
    rest = client.get(f"/api/v1/courses/1/events?after={page['next_after']}").json()
    assert [e["type"] for e in rest["events"]] == [
        "Waitlisted",
        "EnrollmentDropped",
        "WaitlistPromoted",
    ]
    assert rest["next_after"] is None
    assert rest["events"][-1]["data"] == {
        "type": "WaitlistPromoted",
        "course_id": 1,
        "request_id": rest["events"][0]["data"]["request_id"],
        "student_id": 8,
    }

    student = client.get("/api/v1/students/7/events").json()["events"]
    assert [(e["stream"], e["type"]) for e in student] == [
        ("course-1", "EnrollmentGranted"),
        ("course-2", "EnrollmentGranted"),
        ("course-1", "EnrollmentDropped"),
    ]
    assert client.get("/api/v1/courses/1/events?limit=0").json()["field"] == "limit"
    assert client.get("/api/v1/courses/1/events?after=-1").json()["field"] == "after"
    assert client.get("/api/v1/students/x/events").json()["field"] == "student_id"
    unknown = client.get("/api/v1/courses/999/events")
    assert (unknown.status_code, unknown.json()["field"]) == (404, "course_id")


def test_history_and_rebuild_commands(
    client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers
) -> None:
    create_course(client, 3, 2)
    enroll(client, 5, 3)
    start_workers()
    wait_decided(db, 1)
    env = server_env(settings)
    course = courseflow("history", "--course", "3", env=env)
    assert course.returncode == 0, course.stderr
    lines = course.stdout.splitlines()
    assert len(lines) == 2 and "course-3#1" in lines[0] and '"type":"EnrollmentGranted"' in lines[1]
    assert courseflow("history", "--student", "5", env=env).stdout.count("course-3#") == 1
    rebuilt = courseflow("rebuild", "--projection", "course_seats", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith("rebuilt up to position ")
    assert courseflow("rebuild", "--projection", "nope", env=env).returncode == 2
