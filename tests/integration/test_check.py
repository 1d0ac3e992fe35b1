"""`courseflow check`: passes on a healthy deployment and names each invariant that breaks."""

from __future__ import annotations

import msgspec
import redis
from starlette.testclient import TestClient

from courseflow import check
from courseflow.http.app import create_app
from courseflow.http.auth import DEVELOPER
from courseflow.http.limits import subject
from courseflow.intake import accepted
from courseflow.intake.accept import key_owner
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.conftest import StartWorkers
from tests.helpers import (
    Conn,
    create_course,
    enroll,
    wait_decided,
    wait_projected,
    wait_until,
)
from tests.integration.test_cli import courseflow, server_env

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def _decided_deployment(client: TestClient, db: Conn, start_workers: StartWorkers) -> None:
    """Course 1 of capacity 2, four requests decided: two granted, two waitlisted, read models caught up."""
    create_course(client, 1, 2)
    for student in range(1, 5):
        enroll(client, student, 1)
    start_workers()
    wait_decided(db, 4)
    wait_projected(db)


def test_check_passes_on_a_healthy_deployment(
    client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers
) -> None:
    _decided_deployment(client, db, start_workers)
    healthy = courseflow("check", env=server_env(settings))
    assert healthy.returncode == 0, healthy.stdout
    assert "FAIL" not in healthy.stdout and "4 accepted: 4 decided" in healthy.stdout


def test_check_names_a_seat_the_write_model_lost(
    client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers
) -> None:
    _decided_deployment(client, db, start_workers)
    # Tampering behind the events' back: a seat lost without a drop.
    db.execute("UPDATE courses SET seats_taken = 1")
    broken = courseflow("check", env=server_env(settings))
    assert broken.returncode == 1
    assert "FAIL  seats = granted - dropped: course 1: events say 2, write model 1, read model 2" in broken.stdout


def test_check_names_an_id_beyond_the_safe_bound(
    client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers
) -> None:
    _decided_deployment(client, db, start_workers)
    assert "ok    every id is a safe integer" in courseflow("check", env=server_env(settings)).stdout
    # What an earlier version let a registrar create: a course a browser reads as course 2^53.
    db.execute("INSERT INTO courses (course_id, capacity, title) VALUES (9007199254740993, 1, 'Beyond')")
    broken = courseflow("check", env=server_env(settings))
    assert broken.returncode == 1
    assert "FAIL  every id is a safe integer (at most 2^53 - 1): 1 courses and 0 requests" in broken.stdout


def test_check_names_a_course_over_capacity(
    client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers
) -> None:
    _decided_deployment(client, db, start_workers)
    # Capacity cut without a CapacityChanged.
    db.execute("UPDATE courses SET capacity = 1")
    broken = courseflow("check", env=server_env(settings))
    assert broken.returncode == 1
    assert "FAIL  no course over capacity: course 1: 2 seats > capacity 1" in broken.stdout


def test_check_names_a_read_model_that_differs_from_a_replay(
    client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers
) -> None:
    _decided_deployment(client, db, start_workers)
    db.execute("UPDATE course_seats SET seats_taken = 7")
    broken = courseflow("check", env=server_env(settings))
    assert broken.returncode == 1
    assert "FAIL  read models = replay of the events: course_seats: 2 rows differ" in broken.stdout


def _idempotency_key(owner: str, key: str) -> str:
    """In development mode the caller is the client's address: the test client's here."""
    caller = subject(DEVELOPER, "testclient").caller
    return Keys(partitions=DEFAULT_PARTITIONS).caller(caller).idempotency(owner, key)


def test_idempotency_keys_expire_and_check_stays_exact(settings: Settings, rds: redis.Redis, projector: object) -> None:
    with TestClient(
        create_app(
            msgspec.structs.replace(settings, queue=msgspec.structs.replace(settings.queue, idempotency_ttl_s=1))
        )
    ) as client:
        create_course(client, 1, 5)
        first = enroll(client, 1, 1, key="once")
        assert enroll(client, 1, 1, key="once")["request_id"] == first["request_id"]  # inside the window
        wait_until(
            lambda: rds.exists(_idempotency_key(key_owner(DEVELOPER.role, DEVELOPER.sub, 1), "once")) == 0,
            timeout=10,
            what="the key to expire",
        )
        assert enroll(client, 1, 1, key="once")["request_id"] != first["request_id"]
    findings = {f.check: f for f in check.run(settings)}
    accounted = findings["every accepted request is decided or pending"]
    assert accounted.ok and accounted.detail.startswith("2 accepted"), accounted.detail
    # A request lost after its key expired is still noticed: the count of accepted requests says so.
    rds.hdel(KEYS.pending_index, first["request_id"])
    lost = {f.check: f for f in check.run(settings)}["every accepted request is decided or pending"]
    assert not lost.ok and "1 LOST" in lost.detail


def test_a_lost_accepted_count_starts_again_from_every_known_request_in_its_partition(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings, start_workers: StartWorkers
) -> None:
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    for course_id in (1, 2):
        create_course(client, course_id, 5)
    enroll(client, 1, 1)
    start_workers()
    wait_decided(db, 1)
    for student in (2, 3):
        enroll(client, student, 1)  # pending, with the decided one: 3 in course 1's partition
    enroll(client, 4, 2)
    rds.delete(*(p.accepted for p in keys.all()))  # e.g. Redis restored from an older snapshot
    with redis.Redis.from_url(settings.redis.url) as fresh:
        accepted.start_counting(db, fresh, keys)
    wait_decided(db, 4)
    assert int(rds.get(keys.of_course(1).accepted) or 0) == 3
    assert int(rds.get(keys.of_course(2).accepted) or 0) == 1
    findings = {f.check: f for f in check.run(settings)}
    assert findings["every accepted request is decided or pending"].ok
