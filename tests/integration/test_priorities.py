"""Server-granted priority: a registrar sets it, every API process applies it, the log records it."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
import redis
from starlette.testclient import TestClient

from courseflow.eventstore import priorities
from courseflow.http.app import create_app
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from courseflow.platform.library import Grant
from projections.projector import Projector
from tests.helpers import CLOSED_PORT_REDIS, Conn, wait_until
from tests.trust import bearer, secured

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


@pytest.fixture
def configured(settings: Settings, projector: Projector) -> Settings:
    return secured(settings)


@pytest.fixture
def api(configured: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(configured)) as client:
        yield client


def _grant(client: TestClient, settings: Settings, student_id: int, priority: int) -> dict[str, int]:
    response = client.put(
        f"/api/v1/students/{student_id}/priority", json={"priority": priority}, headers=bearer(settings, "registrar")
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _enroll(client: TestClient, settings: Settings, student_id: int) -> dict[str, object]:
    response = client.post(
        "/api/v1/enrollments",
        json={"course_id": 1, "idempotency_key": f"k{student_id}"},
        headers=bearer(settings, "student", student_id),
    )
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_granted_priority_orders_the_students_requests_in_every_api_process(
    api: TestClient, configured: Settings, db: Conn
) -> None:
    registrar = bearer(configured, "registrar")
    assert (
        api.post(
            "/api/v1/courses", json={"course_id": 1, "capacity": 5, "title": "Course"}, headers=registrar
        ).status_code
        == 201
    )
    # Another API process, running before the grant: it shares nothing with the first but Redis and PostgreSQL.
    with TestClient(create_app(configured)) as other:
        assert _grant(api, configured, 5, 40) == {"student_id": 5, "priority": 40, "previous": 0}
        first = _enroll(api, configured, 6)
        boosted = _enroll(other, configured, 5)
        assert boosted["queue_position"] == 1
        _grant(api, configured, 7, 40)
        _grant(api, configured, 7, 10)
        assert _enroll(other, configured, 7)["queue_position"] == 2  # 10 ranks after 40, ahead of 0
    shown = api.get(f"/api/v1/enrollments/{first['request_id']}", headers=registrar).json()
    assert (shown["queue_position"], shown["priority"]) == (3, 0)
    own = api.get(f"/api/v1/enrollments/{boosted['request_id']}", headers=bearer(configured, "student", 5)).json()
    assert own["priority"] == 40
    assert api.get("/api/v1/students/5/priority", headers=bearer(configured, "student", 5)).json()["priority"] == 40


def test_changes_are_events_and_a_repeat_records_nothing(api: TestClient, configured: Settings, db: Conn) -> None:
    _grant(api, configured, 5, 40)
    assert _grant(api, configured, 5, 40)["previous"] == 40
    assert _grant(api, configured, 5, 0) == {"student_id": 5, "priority": 0, "previous": 40}
    history = api.get("/api/v1/students/5/events", headers=bearer(configured, "student", 5)).json()["events"]
    assert [(e["type"], e["data"]["priority"], e["data"]["previous"]) for e in history] == [
        ("StudentPriorityChanged", 40, 0),
        ("StudentPriorityChanged", 0, 40),
    ]
    row = db.execute("SELECT metadata ->> 'actor' FROM events WHERE stream = 'student-5' LIMIT 1").fetchone()
    assert row == ("registrar:registrar",)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/students/5/priority", {"priority": 101}, "priority"),
        ("/api/v1/students/5/priority", {"priority": -1}, "priority"),
        ("/api/v1/students/5/priority", {"priority": "high"}, "priority"),
        ("/api/v1/students/5/priority", {}, "priority"),
        ("/api/v1/students/0/priority", {"priority": 1}, "student_id"),
        ("/api/v1/students/x/priority", {"priority": 1}, "student_id"),
    ],
)
def test_bad_priorities_are_422(api: TestClient, configured: Settings, path: str, body: object, field: str) -> None:
    response = api.put(path, json=body, headers=bearer(configured, "registrar"))
    assert response.status_code == 422 and response.json()["field"] == field


def test_a_grant_made_while_redis_is_down_reaches_intake_once_it_is_back(configured: Settings, db: Conn) -> None:
    registrar = bearer(configured, "registrar")
    resyncing = msgspec.structs.replace(
        configured, queue=msgspec.structs.replace(configured.queue, priority_sync_s=0.05)
    )
    with TestClient(create_app(resyncing)) as api:
        assert (
            api.post(
                "/api/v1/courses", json={"course_id": 1, "capacity": 5, "title": "Course"}, headers=registrar
            ).status_code
            == 201
        )
        _grant(api, configured, 5, 40)
        down = msgspec.structs.replace(
            configured, redis=msgspec.structs.replace(configured.redis, url=CLOSED_PORT_REDIS)
        )
        with TestClient(create_app(down)) as cut_off:
            response = cut_off.put("/api/v1/students/5/priority", json={"priority": 90}, headers=registrar)
            assert response.status_code == 503 and "recorded" in response.json()["detail"]
        assert priorities.of(db, 5) == 90  # the record has it; intake gets it from the running processes' sync
        with redis.Redis.from_url(configured.redis.url) as rds:
            wait_until(lambda: rds.hget(KEYS.priorities, "5") == b"90", timeout=10, what="the grant to reach intake")
        assert _enroll(api, configured, 5)["queue_position"] == 1
        # An older grant never overwrites a newer one, however late it is applied.
        api.app.state.services.grant_priorities([Grant(5, 40, 1)])  # type: ignore[attr-defined]
        with redis.Redis.from_url(configured.redis.url) as rds:
            assert rds.hget(KEYS.priorities, "5") == b"90"
