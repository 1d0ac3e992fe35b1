"""The read replica: reads served by it, never older than what was written or shown, the primary as fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import courseflow_local as services
import httpx2 as httpx
import msgspec
import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from courseflow_local import credentials
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.http.common import Services
from courseflow.http.replica import ReadReplica
from courseflow.http.views import EnrollmentStatus
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from projections import status
from projections.projector import Projector
from tests.conftest import Replica, Servers, StartWorkers, serving_api
from tests.helpers import Conn, all_acknowledged, create_course, decided_count, enroll, wait_decided, wait_until

# Long enough that the lag bound never moves the horizon during a test that does not mean it to.
_NO_LAG_BOUND = str(3_600_000)


def _position(conn: Conn, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def _caught_up(replica: Replica, db: Conn) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    target = _position(db, "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
    with psycopg.connect(replica.database_url, autocommit=True) as conn:
        replayed = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
        wait_until(lambda: _position(conn, replayed) >= target, what="the replica to catch up")


@contextmanager
def _paused(replica: Replica) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """The replica replays nothing more until the block ends: a lag as long as the test wants, made on purpose.

    Yields the application's connection to the replica, to see what it still holds."""
    with psycopg.connect(replica.admin_database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_wal_replay_pause()")
        try:
            state = "SELECT pg_get_wal_replay_pause_state()"
            wait_until(lambda: admin.execute(state).fetchone() == ("paused",), what="replay to pause")
            with psycopg.connect(replica.database_url, autocommit=True) as conn:
                yield conn
        finally:
            admin.execute("SELECT pg_wal_replay_resume()")


@contextmanager
def _api(servers: Servers, replica: Replica, log_dir: Path, **env: str) -> Iterator[httpx.Client]:
    log_dir.mkdir(exist_ok=True)
    env = {"DATABASE_REPLICA_URL": replica.database_url, "REPLICA_MAX_LAG_MS": _NO_LAG_BOUND} | env
    with serving_api(servers, log_dir, **env) as base, httpx.Client(base_url=base, timeout=10) as http:
        yield http


def _create_course(http: httpx.Client, course_id: int, capacity: int) -> None:
    response = http.post("/api/v1/courses", json={"course_id": course_id, "capacity": capacity, "title": "Course"})
    assert response.status_code == 201, response.text


def _enroll_in(http: httpx.Client, student_id: int, course_id: int) -> str:
    body = {"student_id": student_id, "course_id": course_id, "idempotency_key": f"s{student_id}-c{course_id}"}
    response = http.post("/api/v1/enrollments", json=body)
    assert response.status_code == 202, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def _status(http: httpx.Client, request_id: str) -> str:
    response = http.get(f"/api/v1/enrollments/{request_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def _held(conn: psycopg.Connection[tuple[Any, ...]], request_id: str) -> str | None:
    row = conn.execute("SELECT status FROM enrollment_requests WHERE request_id = %s", (request_id,)).fetchone()
    return None if row is None else str(row[0])


def test_reads_are_served_by_the_replica_while_the_primary_is_locked(
    settings: Settings,
    servers: Servers,
    replica: Replica,
    db: Conn,
    client: TestClient,
    start_workers: StartWorkers,
    tmp_path: Path,
) -> None:
    # Written before the replica's API process starts: it then has nothing to show from the primary, so
    # nothing it reads there can move its horizon past the paused replica.
    create_course(client, 1, capacity=1)
    granted, waiting = enroll(client, 7, 1)["request_id"], enroll(client, 8, 1)["request_id"]
    start_workers()
    wait_decided(db, 2)
    with _api(servers, replica, tmp_path) as http:
        _caught_up(replica, db)
        # An ACCESS EXCLUSIVE lock is WAL-logged and replayed: the replica must not replay this one.
        with _paused(replica), db.transaction():
            db.execute(
                "LOCK TABLE courses, enrollment_requests, events, course_seats, enrollments, enrollment_counters,"
                " waitlist_entries IN ACCESS EXCLUSIVE MODE"
            )
            # Any of these read on the primary would wait for the lock, and time out.
            assert _status(http, granted) == "granted"
            assert _status(http, waiting) == "waitlisted"
            course = http.get("/api/v1/courses/1").json()
            assert (course["seats_taken"], course["waitlist_length"], course["counters"]["granted"]) == (1, 1, 1)
            assert [p["student_id"] for p in http.get("/api/v1/courses/1/waitlist").json()["waitlist"]] == [8]
            assert http.get("/api/v1/metrics?course_id=1").json()["seats_taken"] == 1
            assert http.get("/api/v1/metrics").json()["projection_lag"] == 0
            assert [e["type"] for e in http.get("/api/v1/students/7/events").json()["events"]] == [
                "EnrollmentGranted",
            ]
            assert [e["status"] for e in http.get("/api/v1/students/8/enrollments").json()["enrollments"]] == [
                "waitlisted"
            ]
            ready = http.get("/ready").json()
            assert ready["status"] == "ready" and ready["checks"]["replica"].startswith("ok")


def test_a_read_right_after_a_change_never_goes_back_in_time(
    settings: Settings,
    servers: Servers,
    replica: Replica,
    db: Conn,
    start_workers: StartWorkers,
    tmp_path: Path,
) -> None:
    # Two API processes, as behind a load balancer: what one wrote, the other never reads back undone.
    with _api(servers, replica, tmp_path / "a") as http, _api(servers, replica, tmp_path / "b") as other:
        _create_course(http, 1, capacity=1)
        holder, waiting = _enroll_in(http, 7, 1), _enroll_in(http, 8, 1)
        start_workers()
        wait_until(lambda: decided_count(db) == 2, what="two decisions")
        # Projected once, then no more: the read models stay behind every change below, as after a burst.
        Projector(settings.postgres.url).catch_up(db)
        assert (_status(http, holder), _status(other, waiting)) == ("granted", "waitlisted")
        _caught_up(replica, db)
        with _paused(replica) as behind:
            dropped = http.delete(f"/api/v1/enrollments/{holder}")
            assert dropped.json() == {"request_id": holder, "status": "dropped", "promoted": [waiting]}
            for reader in (http, other):
                assert (_status(reader, holder), _status(reader, waiting)) == ("dropped", "granted")
                course = reader.get("/api/v1/courses/1").json()
                assert (course["seats_taken"], course["waitlist_length"]) == (1, 0)
            assert http.patch("/api/v1/courses/1", json={"capacity": 3}).status_code == 200
            assert other.get("/api/v1/courses/1").json()["capacity"] == 3

            # A request decided while the replica lags is not lost between Redis and the replica.
            late = _enroll_in(other, 9, 1)
            wait_until(lambda: decided_count(db) == 3, what="the third decision")
            assert _status(other, late) == "granted"
            assert http.get("/api/v1/students/9/events").json()["events"][-1]["type"] == "EnrollmentGranted"

            # The replica still holds the old state: those answers came from the primary.
            assert (_held(behind, holder), _held(behind, waiting), _held(behind, late)) == (
                "granted",
                "waitlisted",
                None,
            )
        # Caught up, it serves again, and shows the same.
        _caught_up(replica, db)
        assert (_status(other, holder), _status(other, waiting), _status(other, late)) == (
            "dropped",
            "granted",
            "granted",
        )


def test_a_request_decided_while_the_replica_lags_is_never_unknown(
    settings: Settings,
    replica: Replica,
    db: Conn,
    rds: redis.Redis,
    client: TestClient,
    start_workers: StartWorkers,
) -> None:
    create_course(client, 1, capacity=1)
    _caught_up(replica, db)
    with _paused(replica) as behind:
        request_id = enroll(client, 7, 1)["request_id"]
        start_workers()
        wait_until(lambda: decided_count(db) == 1, what="the decision")
        wait_until(lambda: all_acknowledged(rds), what="the request to leave the queue")
        assert _held(behind, request_id) is None

        async def current() -> EnrollmentStatus | None:
            # A process that has shown nothing since the replica paused: only the primary knows the decision.
            svc = Services(
                msgspec.structs.replace(
                    settings, postgres=msgspec.structs.replace(settings.postgres, replica_url=replica.database_url)
                )
            )
            svc.pool.open()
            assert svc.replica is not None
            svc.replica.pool.open()
            try:
                return await status.current(svc, request_id)
            finally:
                await svc.close()

        found = asyncio.run(current())
        assert found is not None and found.status == "granted"


def test_a_replica_further_behind_than_the_bound_is_skipped(
    settings: Settings,
    servers: Servers,
    replica: Replica,
    db: Conn,
    start_workers: StartWorkers,
    tmp_path: Path,
) -> None:
    with TestClient(create_app(settings)) as client:
        assert (
            client.post("/api/v1/courses", json={"course_id": 1, "capacity": 5, "title": "Course"}).status_code == 201
        )
        enroll(client, 7, 1)
    start_workers()
    wait_until(lambda: decided_count(db) == 1, what="the decision")
    with _api(servers, replica, tmp_path, REPLICA_MAX_LAG_MS="200", REPLICA_WAIT_MS="20") as http:
        _caught_up(replica, db)
        with _paused(replica):
            assert http.get("/api/v1/metrics?course_id=1").status_code == 404  # not projected anywhere yet
            # The projector's writes wake no API process: only the lag bound moves reads off the paused replica.
            Projector(settings.postgres.url).catch_up(db)
            wait_until(
                lambda: http.get("/api/v1/metrics?course_id=1").json().get("seats_taken") == 1,
                timeout=10,
                what="the metrics to show the seat",
            )


def test_the_horizon_one_api_process_raises_is_the_one_every_other_reads(settings: Settings, replica: Replica) -> None:
    async def share() -> None:
        async with aioredis.Redis.from_url(settings.redis.url) as shared:
            one, other = (ReadReplica(replica.database_url, shared, Keys().replica_horizon, 0) for _ in range(2))
            assert (await one.horizon(), await other.horizon()) == (0, 0)
            await one.shown(5_000)
            assert await other.horizon() == 5_000
            await other.shown(4_000)  # older than what was shown elsewhere: never lowers it
            assert (await one.horizon(), await other.horizon()) == (5_000, 5_000)
            one.caught_up_to(9_000)  # the lag bound is each process's own
            assert (await one.horizon(), await other.horizon()) == (9_000, 5_000)

    asyncio.run(share())


def test_reads_fall_back_to_the_primary_while_the_replica_is_down(
    settings: Settings,
    servers: Servers,
    replica: Replica,
    db: Conn,
    start_workers: StartWorkers,
    projector: Projector,
    tmp_path: Path,
) -> None:
    with _api(servers, replica, tmp_path) as http:
        _create_course(http, 1, capacity=1)
        request_id = _enroll_in(http, 7, 1)
        start_workers()
        wait_decided(db, 1)
        replica.stop()
        try:
            ready = http.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["replica"].startswith("unreachable")
            assert _status(http, request_id) == "granted"
            assert http.get("/api/v1/courses/1").json()["seats_taken"] == 1
            assert http.get("/api/v1/metrics?course_id=1").json()["seats_taken"] == 1
            assert len(http.get("/api/v1/students/7/events").json()["events"]) == 1  # the decision
        finally:
            replica.start()
        wait_until(
            lambda: http.get("/ready").json()["checks"]["replica"] == "ok", timeout=30, what="the replica to be back"
        )
        assert _status(http, request_id) == "granted"


def test_services_up_with_a_replica_is_idempotent(servers: Servers, replica: Replica) -> None:
    assert servers.data_dir is not None
    again = services.up(servers.data_dir, services.free_port(), services.free_port(), services.free_port())
    assert again.replica_port == replica.port
    assert services.status(servers.data_dir)["replica"] == f"running on 127.0.0.1:{replica.port}"
    with psycopg.connect(replica.database_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE written_on_a_replica (x int)")


def test_a_credentials_file_from_before_replicas_gains_the_replication_password(tmp_path: Path) -> None:
    saved = msgspec.structs.replace(credentials.Credentials.generate(), postgres_replication_password=None)
    older = {k: v for k, v in msgspec.to_builtins(saved).items() if k != "postgres_replication_password"}
    credentials.write_private(credentials.path(tmp_path), msgspec.json.encode(older))
    upgraded = credentials.load_or_create(tmp_path)
    assert upgraded.postgres_replication_password
    assert msgspec.structs.replace(upgraded, postgres_replication_password=None) == saved
    assert credentials.load(tmp_path) == upgraded


def test_the_replica_url_is_not_shown_with_its_password() -> None:
    url = "postgresql://courseflow:s3cret@replica.example:5432/courseflow"
    configured = Settings.from_env({"DATABASE_URL": url, "REDIS_URL": "redis://x/0", "DATABASE_REPLICA_URL": url})
    assert configured.postgres.replica_url == url
    assert "s3cret" not in repr(configured)
    assert Settings.from_env({"DATABASE_URL": url, "REDIS_URL": "redis://x/0"}).postgres.replica_url is None
