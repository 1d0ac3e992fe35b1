"""503 with Retry-After while Redis is away or refuses writes, and once shutdown begins: answers a client can act on."""

from __future__ import annotations

import msgspec
import redis
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.platform.config import Settings
from tests.conftest import Servers
from tests.helpers import (
    CLOSED_PORT_REDIS,
    create_course,
)


def test_intake_answers_503_with_retry_after_while_redis_is_down(settings: Settings) -> None:
    with TestClient(
        create_app(
            msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url=CLOSED_PORT_REDIS))
        )
    ) as client:
        response = client.post("/enroll", json={"student_id": 1, "course_id": 1, "idempotency_key": "k"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["type"].endswith(":unavailable")


def test_intake_answers_503_while_redis_refuses_writes(client: TestClient, servers: Servers) -> None:
    """A Redis out of memory (maxmemory, noeviction) refuses the intake's writes: the client hears 503 and
    retries with its key, not a 500 that says nothing it can act on."""
    create_course(client, 1, 5)
    with redis.Redis.from_url(servers.admin_redis_url) as admin:
        before = admin.config_get("maxmemory")["maxmemory"]
        admin.config_set("maxmemory", 1)
        try:
            response = client.post("/enroll", json={"student_id": 1, "course_id": 1, "idempotency_key": "k"})
        finally:
            admin.config_set("maxmemory", before)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["type"].endswith(":unavailable")
        assert client.post("/enroll", json={"student_id": 1, "course_id": 1, "idempotency_key": "k"}).status_code == 202


def test_new_requests_get_503_once_shutdown_begins(client: TestClient) -> None:
    client.app.state.shutdown["draining"] = True  # type: ignore[attr-defined]
    response = client.post("/enroll", json={"student_id": 1, "course_id": 1, "idempotency_key": "k"})
    assert response.status_code == 503 and response.json()["type"].endswith(":shutting_down")
