"""Drops and promotions, leaving the waitlist, capacity changes, re-enrolling: through the HTTP API."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.conftest import StartWorkers
from tests.helpers import Conn, create_course, enroll, wait_decided, wait_projected


def status(client: TestClient, request_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/enrollments/{request_id}").json()  # type: ignore[no-any-return]


def course(client: TestClient, course_id: int = 1) -> dict[str, Any]:
    return client.get(f"/api/v1/courses/{course_id}").json()  # type: ignore[no-any-return]


def full_course(client: TestClient, db: Conn, start_workers: StartWorkers) -> dict[str, str]:
    """Course 1 with one seat: `a` holds it; `low`, `high`, `later` wait (priority 5, 50, 50)."""
    create_course(client, 1, 1)
    ids = {"a": enroll(client, 1, 1, priority=90)["request_id"]}
    for name, student, priority in [("low", 2, 5), ("high", 3, 50), ("later", 4, 50)]:
        ids[name] = enroll(client, student, 1, priority)["request_id"]
    start_workers()
    wait_decided(db, 4)
    return ids


def test_drop_promotes_the_waitlist_head_by_priority_then_arrival(
    client: TestClient, db: Conn, start_workers: StartWorkers
) -> None:
    ids = full_course(client, db, start_workers)
    assert [status(client, ids[n])["waitlist_position"] for n in ("high", "later", "low")] == [1, 2, 3]
    response = client.delete(f"/api/v1/enrollments/{ids['a']}")
    assert response.status_code == 200
    assert response.json() == {"request_id": ids["a"], "status": "dropped", "promoted": [ids["high"]]}
    wait_projected(db)
    assert status(client, ids["a"])["status"] == "dropped"
    assert status(client, ids["high"])["status"] == "granted"
    assert [status(client, ids[n])["waitlist_position"] for n in ("later", "low")] == [1, 2]
    shown = course(client)
    assert (shown["seats_taken"], shown["waitlist_length"]) == (1, 2)
    assert shown["counters"]["dropped"] == 1 and shown["counters"]["promoted"] == 1


def test_leave_the_waitlist(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    ids = full_course(client, db, start_workers)
    response = client.delete(f"/api/v1/enrollments/{ids['high']}")
    assert response.json() == {"request_id": ids["high"], "status": "left", "promoted": []}
    again = client.delete(f"/api/v1/enrollments/{ids['high']}")
    assert again.status_code == 200 and again.json()["status"] == "left"
    wait_projected(db)
    assert status(client, ids["later"])["waitlist_position"] == 1
    assert (course(client)["seats_taken"], course(client)["waitlist_length"]) == (1, 2)
    listed = client.get("/api/v1/courses/1/waitlist").json()["waitlist"]
    assert [(w["position"], w["request_id"]) for w in listed] == [(1, ids["later"]), (2, ids["low"])]


def test_re_enroll_after_drop_goes_to_the_back(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    ids = full_course(client, db, start_workers)
    client.delete(f"/api/v1/enrollments/{ids['a']}")
    again = enroll(client, 1, 1, priority=50, key="second-time")
    wait_decided(db, 5)
    # Same priority as `later`, but it arrived after it: last of the priority-50 requests.
    assert status(client, again["request_id"])["waitlist_position"] == 2
    history = client.get("/api/v1/students/1/enrollments").json()["enrollments"]
    assert [e["status"] for e in history] == ["dropped", "waitlisted"]


def test_raising_capacity_promotes_at_once(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    ids = full_course(client, db, start_workers)
    response = client.patch("/api/v1/courses/1", json={"capacity": 3})
    assert response.status_code == 200
    assert response.json()["promoted"] == [ids["high"], ids["later"]]
    assert (response.json()["seats_taken"], response.json()["waitlist_length"]) == (3, 1)
    wait_projected(db)
    assert status(client, ids["later"])["status"] == "granted"
    assert status(client, ids["low"])["waitlist_position"] == 1


def test_lowering_capacity_revokes_no_seat_and_stops_grants_until_drops(
    client: TestClient, db: Conn, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 3)
    seated = [enroll(client, s, 1)["request_id"] for s in (1, 2, 3)]
    start_workers()
    wait_decided(db, 3)
    lowered = client.patch("/api/v1/courses/1", json={"capacity": 1}).json()
    assert (lowered["capacity"], lowered["seats_taken"]) == (1, 3)
    waiting = enroll(client, 9, 1, priority=100)["request_id"]
    wait_decided(db, 4)
    assert status(client, waiting)["status"] == "waitlisted"
    assert client.delete(f"/api/v1/enrollments/{seated[0]}").json()["promoted"] == []
    assert client.delete(f"/api/v1/enrollments/{seated[1]}").json()["promoted"] == []
    # Now one seat taken of one: the next drop frees a seat and the head takes it.
    assert client.delete(f"/api/v1/enrollments/{seated[2]}").json()["promoted"] == [waiting]
    wait_projected(db)
    assert (course(client)["seats_taken"], course(client)["capacity"]) == (1, 1)


def test_release_errors(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    create_course(client, 1, 1)
    pending = enroll(client, 1, 1)["request_id"]
    assert client.delete(f"/api/v1/enrollments/{pending}").status_code == 409
    unknown = client.delete("/api/v1/enrollments/3f2b4c1e-0000-4000-8000-000000000000")
    assert unknown.status_code == 404 and unknown.json()["field"] == "request_id"
    assert client.delete("/api/v1/enrollments/nope").status_code == 422
    duplicate = enroll(client, 1, 1, key="again")["request_id"]
    start_workers()
    wait_decided(db, 2)
    rejected = client.delete(f"/api/v1/enrollments/{duplicate}")
    assert rejected.status_code == 409 and rejected.json()["type"].endswith(":nothing_to_release")


def test_patch_validation(client: TestClient) -> None:
    create_course(client, 1, 1)
    for body, field in [
        ({}, "body"),
        ({"capacity": -1}, "capacity"),
        ({"title": "x"}, "title"),
        ({"opens_at": "soon"}, "opens_at"),
    ]:
        response = client.patch("/api/v1/courses/1", json=body)
        assert response.status_code == 422 and response.json()["field"] == field, body
    closes_first = client.patch("/api/v1/courses/1", json={"closes_at": "2026-01-01T00:00:00Z"})
    assert closes_first.status_code == 200
    wrong_order = client.patch("/api/v1/courses/1", json={"opens_at": "2026-02-01T00:00:00Z"})
    assert wrong_order.status_code == 422 and wrong_order.json()["field"] == "opens_at"  # the field sent
    assert client.patch("/api/v1/courses/5", json={"capacity": 2}).status_code == 404
