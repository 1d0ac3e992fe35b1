"""A new course is known to the intake whatever Redis went through (down at creation, killed midway,
forgetful), and it reads back at once."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import courseflow_local as services
import msgspec
import pytest
import redis
from courseflow_local.unprivileged import server_dir, server_user
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.helpers import CLOSED_PORT_REDIS, Conn, create_course, enroll, wait_until

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def test_a_course_created_while_redis_is_down_works_once_it_is_back(
    settings: Settings, client: TestClient, db: Conn
) -> None:
    body = {"course_id": 4, "capacity": 2, "title": "Course"}
    with TestClient(
        create_app(
            msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url=CLOSED_PORT_REDIS))
        )
    ) as down:
        assert down.post("/api/v1/courses", json=body).status_code == 201
        assert down.get("/api/v1/courses/4").status_code == 200
        assert down.post("/enroll", json={"student_id": 1, "course_id": 4, "idempotency_key": "k"}).status_code == 503
    # Redis is reachable again: no second POST, intake learns the course from PostgreSQL.
    assert enroll(client, 1, 4)["status"] == "queued"


class PrivateRedis:
    """A Redis of one test's own, on a free loopback port, that the test may kill and start again."""

    def __init__(self, data_dir: Path) -> None:
        self.port = services.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._data_dir = data_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Like every local server: started by root, it runs as an unprivileged user, in a directory of its own.
        user = server_user()
        workdir = server_dir(self._data_dir, user, "redis")
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--dir", str(workdir)]
        # As the user itself (not through runuser), so killing this process kills the server.
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, user=user, group=user)
        with redis.Redis(port=self.port) as probe:
            wait_until(lambda: _answers(probe), timeout=10, what="the private Redis")

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def test_redis_killed_between_the_two_steps_of_a_course_creation(
    settings: Settings, db: Conn, private_redis: PrivateRedis
) -> None:
    """PostgreSQL has committed the course; Redis dies before intake learns it: it works once Redis is back."""
    with TestClient(
        create_app(
            msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url=private_redis.url))
        )
    ) as client:
        svc = client.app.state.services  # type: ignore[attr-defined]
        register = svc.register_courses

        def killed_first(course_ids: list[int]) -> None:
            # Intake learns a course only once it is committed: a worker must be able to see it.
            assert db.execute("SELECT count(*) FROM courses").fetchone() == (1,)
            private_redis.kill()
            register(course_ids)

        svc.register_courses = killed_first
        assert (
            client.post("/api/v1/courses", json={"course_id": 4, "capacity": 2, "title": "Course"}).status_code == 201
        )
        svc.register_courses = register
        private_redis.start()  # back, and empty: it kept nothing
        body = {"student_id": 1, "course_id": 4, "idempotency_key": "k"}
        # As a client does after a 503 with Retry-After: the same request again (a pooled connection may be stale).
        wait_until(lambda: client.post("/enroll", json=body).status_code == 202, timeout=10, what="a 202")
        assert (
            client.post("/api/v1/courses", json={"course_id": 4, "capacity": 2, "title": "Course"}).status_code == 409
        )


def test_intake_relearns_a_course_redis_forgot(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 5)
    rds.delete(KEYS.courses)  # e.g. Redis restored from an older snapshot
    assert enroll(client, 1, 1)["status"] == "queued"
    assert rds.sismember(KEYS.courses, "1")


def test_a_new_course_reads_back_at_once(settings: Settings) -> None:
    """No projector runs here: the answer comes from the write model until the read model has it."""
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/v1/courses", json={"course_id": 3, "capacity": 7, "title": "Logic"}).status_code == 201
        shown = client.get("/api/v1/courses/3")
        assert shown.status_code == 200
        assert (shown.json()["title"], shown.json()["capacity"], shown.json()["seats_taken"]) == ("Logic", 7, 0)
        assert client.get("/api/v1/courses/3/waitlist").json()["waitlist_length"] == 0
