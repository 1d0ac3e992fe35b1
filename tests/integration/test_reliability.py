"""Readiness, unavailable dependencies, delivery limits, dead letters, stream trimming, `courseflow check`."""

from __future__ import annotations

import msgspec
import psycopg
import redis
from starlette.testclient import TestClient

from courseflow.decisions.worker import Worker, _entries
from courseflow.http.app import create_app
from courseflow.intake import queue
from courseflow.intake.queue import GROUP
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.conftest import Servers, StartWorkers
from tests.helpers import (
    CLOSED_PORT_REDIS,
    Conn,
    all_acknowledged,
    create_course,
    enroll,
    stream_entries,
    wait_decided,
    wait_projected,
    wait_until,
)
from tests.integration.test_cli import courseflow, server_env

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def test_ready_names_each_failing_dependency(settings: Settings, servers: Servers) -> None:
    with TestClient(create_app(settings)) as client:
        # No worker has run: the API creates the consumer group itself and is ready at once.
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["auth"] == "off"
        with redis.Redis.from_url(settings.redis_url) as rds:
            assert [g["name"] for g in rds.xinfo_groups(KEYS.requests)] == [GROUP.encode()]
    with TestClient(create_app(msgspec.structs.replace(settings, redis_url=CLOSED_PORT_REDIS))) as client:
        down = client.get("/ready").json()
        assert down["failing"] == ["redis"] and down["checks"]["redis"].startswith("unreachable")
    # The application's role may not create databases: the admin does.
    with psycopg.connect(servers.admin_database_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS courseflow_unmigrated")
        conn.execute("CREATE DATABASE courseflow_unmigrated")
    unmigrated = settings.database_url.rsplit("/", 1)[0] + "/courseflow_unmigrated"
    with TestClient(create_app(msgspec.structs.replace(settings, database_url=unmigrated))) as client:
        body = client.get("/ready").json()
        assert body["failing"] == ["migrations"] and "001_event_store" in body["checks"]["migrations"]


def test_intake_answers_503_with_retry_after_while_redis_is_down(settings: Settings) -> None:
    with TestClient(create_app(msgspec.structs.replace(settings, redis_url=CLOSED_PORT_REDIS))) as client:
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


def test_an_entry_that_keeps_failing_is_dead_lettered(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings
) -> None:
    create_course(client, 1, 5)
    request_id = enroll(client, 1, 1)["request_id"]
    queue.ensure_group(rds, KEYS)
    # Two consumers read it and die without deciding it; the third delivery is one too many.
    assert _entries(rds.xreadgroup(GROUP, "ghost-1", {KEYS.requests: ">"}, count=1))
    rds.xclaim(KEYS.requests, GROUP, "ghost-2", 0, [stream_entries(rds, KEYS.requests)[0][0]])
    worker = Worker(msgspec.structs.replace(settings, max_deliveries=2, claim_idle_ms=0), "survivor")
    worker.reclaim()
    worker.close()
    (reason,) = [f[b"reason"].decode() for _, f in stream_entries(rds, KEYS.dead_letters)]
    assert reason == "not decided after 2 deliveries"
    assert all_acknowledged(rds) and rds.zcard(KEYS.priority_set(1)) == 0 and rds.hlen(KEYS.pending_index) == 0
    (recorded,) = db.execute("SELECT data FROM events WHERE type = 'RequestDeadLettered'").fetchone()  # type: ignore[misc]
    assert recorded["request_id"] == request_id and recorded["course_id"] == 1
    assert client.get("/metrics").json()["dead_letters"] == 1
    wait_projected(db)
    answer = client.get(f"/api/v1/enrollments/{request_id}").json()
    assert (answer["status"], answer["reason"], answer["student_id"]) == (
        "dead_lettered",
        "not decided after 2 deliveries",
        1,
    )

    listed = courseflow("dlq", "list", env=server_env(settings))
    assert "1 dead letter(s)" in listed.stdout and "reason=not decided after 2 deliveries" in listed.stdout
    dead_id = listed.stdout.split()[0]
    retried = courseflow("dlq", "retry", dead_id, env=server_env(settings))
    assert retried.returncode == 0, retried.stdout
    assert rds.xlen(KEYS.dead_letters) == 0 and rds.zcard(KEYS.priority_set(1)) == 1
    again = Worker(settings, "after-retry")
    while again.step():
        pass
    again.close()
    wait_decided(db, 1)
    assert client.get(f"/api/v1/enrollments/{request_id}").json()["status"] == "granted"


def test_dlq_drop_and_errors(settings: Settings, rds: redis.Redis) -> None:
    raw_id = rds.xadd(KEYS.dead_letters, {"request": "garbage", "reason": "undecodable"}).decode()  # type: ignore[union-attr]
    entry_id = f"{KEYS.partition}:{raw_id}"  # as `dlq list` shows it
    env = server_env(settings)
    assert courseflow("dlq", "drop", raw_id, env=env).returncode == 1  # no partition: which stream?
    assert courseflow("dlq", "retry", entry_id, env=env).returncode == 1
    assert courseflow("dlq", "retry", env=env).returncode == 2
    dropped = courseflow("dlq", "drop", entry_id, env=env)
    assert dropped.returncode == 0 and rds.xlen(KEYS.dead_letters) == 0
    assert courseflow("dlq", "drop", entry_id, env=env).returncode == 1


def test_stream_is_trimmed_only_below_what_is_unacknowledged(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 50)
    for student in range(1, 11):
        enroll(client, student, 1)
    queue.ensure_group(rds, KEYS)
    held = _entries(rds.xreadgroup(GROUP, "slow", {KEYS.requests: ">"}, count=3))  # read, never acknowledged
    start_workers(claim_idle_ms=60_000)
    wait_until(lambda: rds.xinfo_groups(KEYS.requests)[0]["lag"] == 0, what="the rest read")
    wait_decided(db, 10)  # the worker decides the held ones too: they are in the priority set
    assert queue.trim(rds, KEYS) == 0  # the oldest entry is still pending: nothing below it
    rds.xack(KEYS.requests, GROUP, *[entry_id for entry_id, _ in held])
    assert queue.trim(rds, KEYS) == 9
    assert rds.xlen(KEYS.requests) == 1  # the last delivered entry stays as the trim mark


def test_check_passes_on_a_healthy_deployment_and_names_what_breaks(
    client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 2)
    for student in range(1, 5):
        enroll(client, student, 1)
    start_workers()
    wait_decided(db, 4)
    env = server_env(settings)
    healthy = courseflow("check", env=env)
    assert healthy.returncode == 0, healthy.stdout
    assert "FAIL" not in healthy.stdout and "4 accepted: 4 decided" in healthy.stdout
    db.execute("UPDATE course_seats SET seats_taken = 7")
    # Tampering behind the events' back: capacity cut without a CapacityChanged, a seat lost.
    db.execute("UPDATE courses SET capacity = 0, seats_taken = 1")
    broken = courseflow("check", env=env)
    assert broken.returncode == 1
    assert "FAIL  seats = granted - dropped: course 1: events say 2, write model 1, read model 7" in broken.stdout
    assert "FAIL  no course over capacity: course 1: 1 seats > capacity 0" in broken.stdout
    assert "FAIL  read models = replay of the events: course_seats: 2 rows differ" in broken.stdout
    wait_projected(db)
