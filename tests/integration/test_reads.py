"""The reads pages are built on, across the HTTP read handlers and the projections: who the caller is, every
course a page at a time, and the dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jwt
import msgspec
import pytest
import redis
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.http.auth import Role
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.conftest import StartWorkers
from tests.helpers import Conn, create_course, enroll, stream_entries, wait_decided, wait_projected, wait_until
from tests.integration.test_cli import courseflow, server_env
from tests.trust import bearer, secured

PARTITIONS = Keys(partitions=DEFAULT_PARTITIONS)
FIRST, SECOND = PARTITIONS.of_course(1), PARTITIONS.of_course(2)  # two partitions, on a cluster two slots


@pytest.fixture
def secure(settings: Settings) -> Iterator[tuple[TestClient, Settings]]:
    configured = secured(settings)
    with TestClient(create_app(configured)) as client:
        yield client, configured


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    found: dict[str, Any] = response.json()
    return found


def test_me_in_development_mode_is_the_developer(client: TestClient) -> None:
    developer = {"role": "registrar", "sub": "developer", "auth": "off", "expires_at": None}
    assert client.get("/api/v1/me").json() == developer


def test_me_says_who_the_token_names_and_when_it_expires(secure: tuple[TestClient, Settings]) -> None:
    client, settings = secure
    refused = _problem(client.get("/api/v1/me"), 401)  # how a page learns that authentication is on
    assert refused["type"].endswith(":unauthorized")
    callers: list[tuple[Role, str, dict[str, int]]] = [
        ("student", "42", {"student_id": 42}),
        ("registrar", "reg-1", {}),
        ("service", "sis", {}),
    ]
    for role, sub, extra in callers:
        headers = bearer(settings, role, sub, ttl_s=900)
        claims = jwt.decode(headers["Authorization"].removeprefix("Bearer "), options={"verify_signature": False})
        me = client.get("/api/v1/me", headers=headers).json()
        expires_at = me.pop("expires_at")
        assert me == {"role": role, "sub": sub, "auth": "on"} | extra
        # The token's own expiry, without the leeway the server allows for clocks.
        assert datetime.fromisoformat(expires_at) == datetime.fromtimestamp(claims["exp"], UTC)


def test_courses_come_a_page_at_a_time_with_each_ones_figures(
    client: TestClient, db: Conn, start_workers: StartWorkers
) -> None:
    for course_id in (1, 2, 4, 5):  # gaps: `after` is a course id, not an offset
        create_course(client, course_id, 1, f"Course {course_id}")
    # Course 7 opens later: its requests wait in the queue.
    later = {"course_id": 7, "capacity": 3, "title": "Later", "opens_at": "2099-01-01T09:00:00Z"}
    assert client.post("/api/v1/courses", json=later).status_code == 201
    enroll(client, 1, 1)
    enroll(client, 2, 1)
    enroll(client, 3, 7)
    start_workers()
    wait_decided(db, 2)
    wait_projected(db)

    pages: list[list[int]] = []
    listed: dict[int, Any] = {}
    after: int | None = 0
    while after is not None:
        page = client.get(f"/api/v1/courses?after={after}&limit=2").json()
        pages.append([course["course_id"] for course in page["courses"]])
        listed |= {course["course_id"]: course for course in page["courses"]}
        after = page["next_after"]
    assert pages == [[1, 2], [4, 5], [7]]
    for course_id, course in listed.items():
        assert course == client.get(f"/api/v1/courses/{course_id}").json()
    first, waiting = listed[1], listed[7]
    assert (first["seats_taken"], first["waitlist_length"], first["pending"]) == (1, 1, 0)
    assert (first["counters"]["granted"], first["counters"]["waitlisted"]) == (1, 1)
    assert (waiting["title"], waiting["opens_at"], waiting["pending"]) == ("Later", "2099-01-01T09:00:00Z", 1)

    everything = client.get("/api/v1/courses").json()
    assert [c["course_id"] for c in everything["courses"]] == [1, 2, 4, 5, 7] and everything["next_after"] is None
    assert client.get("/api/v1/courses?after=7").json() == {"courses": [], "next_after": None}
    for query, field in (("limit=0", "limit"), ("limit=501", "limit"), ("after=-1", "after")):
        assert _problem(client.get(f"/api/v1/courses?{query}"), 422)["field"] == field


def test_students_read_every_course_but_not_the_dead_letters(secure: tuple[TestClient, Settings]) -> None:
    client, settings = secure
    registrar = bearer(settings, "registrar", "reg-1")
    assert (
        client.post(
            "/api/v1/courses", json={"course_id": 3, "capacity": 2, "title": "Course"}, headers=registrar
        ).status_code
        == 201
    )
    listed = client.get("/api/v1/courses", headers=bearer(settings, "student", 7)).json()["courses"]
    assert [(c["course_id"], c["capacity"]) for c in listed] == [(3, 2)]
    _problem(client.get("/api/v1/courses"), 401)
    for caller in (bearer(settings, "student", 7), bearer(settings, "service", "sis")):
        assert _problem(client.get("/api/v1/dead-letters", headers=caller), 403)["type"].endswith(":forbidden")
    assert client.get("/api/v1/dead-letters", headers=registrar).json() == {"count": 0, "dead_letters": []}


def test_registrars_read_the_dead_letters_newest_first_garbage_included(
    secure: tuple[TestClient, Settings], rds: redis.Redis, start_workers: StartWorkers
) -> None:
    client, settings = secure
    registrar = bearer(settings, "registrar", "reg-1")
    assert (
        client.post(
            "/api/v1/courses", json={"course_id": 1, "capacity": 5, "title": "Course"}, headers=registrar
        ).status_code
        == 201
    )
    # A poison entry: a request for a course that does not exist; a worker sets it aside.
    poison = {
        "type": "EnrollmentRequested",
        "course_id": 77,
        "request_id": "0b6c1f1e-1111-4111-8111-111111111111",
        "student_id": 3,
        "idempotency_key": "k",
        "priority": 0,
        "requested_at": "2026-01-01T00:00:00Z",
    }
    rds.xadd(FIRST.requests, {"request": msgspec.json.encode(poison)})
    start_workers()
    wait_until(lambda: rds.xlen(FIRST.dead_letters) == 1, what="the poison entry dead-lettered")
    ((poison_id, _),) = stream_entries(rds, FIRST.dead_letters)
    at_ms = int(poison_id.split(b"-")[0])
    # Garbage in another partition, later: a request that is not JSON, and an entry with nothing in it but an id
    # no clock reaches.
    rds.xadd(SECOND.dead_letters, {"request": b"\xff\xfe not json", "reason": "undecodable"}, id=f"{at_ms + 1}-0")
    rds.xadd(SECOND.dead_letters, {"something": "else"}, id=f"{10**17}-0")

    answer = client.get("/api/v1/dead-letters", headers=registrar)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    nothing = {"request_id": None, "course_id": None, "student_id": None}
    stamps = [letter.pop("dead_lettered_at") for letter in body["dead_letters"]]
    assert body == {
        "count": 3,
        "dead_letters": [
            {"id": f"{SECOND.partition}:{10**17}-0", "reason": ""} | nothing,
            {"id": f"{SECOND.partition}:{at_ms + 1}-0", "reason": "undecodable"} | nothing,
            {
                "id": f"{FIRST.partition}:{poison_id.decode()}",
                "reason": "unknown course 77",
                "request_id": poison["request_id"],
                "course_id": 77,
                "student_id": 3,
            },
        ],
    }
    assert stamps[0] is None
    assert [datetime.fromisoformat(s) for s in stamps[1:]] == [
        datetime.fromtimestamp(ms / 1000, UTC) for ms in (at_ms + 1, at_ms)
    ]
    assert client.get("/api/v1/metrics").json()["dead_letters"] == 3
    newest = client.get("/api/v1/dead-letters?limit=1", headers=registrar).json()
    assert newest["count"] == 3 and [d["id"] for d in newest["dead_letters"]] == [f"{SECOND.partition}:{10**17}-0"]
    assert _problem(client.get("/api/v1/dead-letters?limit=0", headers=registrar), 422)["field"] == "limit"

    # `courseflow dlq list` reads them the same way: the same ids, in the same order.
    cluster = {"REDIS_CLUSTER_NODES": ",".join(settings.redis.cluster_nodes)} if settings.redis.cluster_nodes else {}
    listed = courseflow("dlq", "list", env=server_env(settings, **cluster))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [d["id"] for d in body["dead_letters"]]
    assert "reason=unknown course 77" in lines[2] and lines[-1] == "3 dead letter(s)"
