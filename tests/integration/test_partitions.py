"""Partitions of the request queue: where requests go, and how workers share the partitions."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter

import msgspec
import redis
from starlette.testclient import TestClient

from courseflow.decisions import partitions
from courseflow.decisions.worker import Worker
from courseflow.intake.queue import GROUP
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.conftest import StartWorkers
from tests.helpers import Conn, create_course, decided_count, enroll, wait_until
from tests.integration.test_cli import courseflow, server_env

KEYS = Keys(partitions=DEFAULT_PARTITIONS)


def _held(db: Conn) -> Counter[str | None]:
    return Counter(partitions.owners(db).values())


def test_requests_go_to_their_courses_partition_and_are_found_by_id(
    client: TestClient, rds: redis.Redis, db: Conn
) -> None:
    for course_id in (1, 2, 17):  # 1 and 17 share a partition of 16; 2 has its own
        create_course(client, course_id, 5)
    queued = {course_id: enroll(client, 1, course_id)["request_id"] for course_id in (1, 2, 17)}
    assert rds.xlen(KEYS.of_course(1).requests) == 2
    assert rds.xlen(KEYS.of_course(2).requests) == 1
    assert KEYS.of_course(1).requests == KEYS.of_course(17).requests != KEYS.of_course(2).requests
    for course_id, request_id in queued.items():
        answer = client.get(f"/api/v1/enrollments/{request_id}").json()
        assert (answer["status"], answer["course_id"], answer["queue_position"]) == ("pending", course_id, 1)


def test_live_workers_share_the_partitions_evenly_and_a_dead_ones_are_taken_over(db: Conn) -> None:
    for name in ("a", "b", "c"):
        partitions.balance(db, name, lease_s=60)
    for _ in range(2):  # a round to give back what is over the share, one to take it up
        for name in ("a", "b", "c"):
            partitions.balance(db, name, lease_s=60)
    held = _held(db)
    assert held[None] == 0 and sorted(held.values()) == [5, 5, 6]

    # "c" stops renewing (killed): once its leases run out, "a" and "b" take its partitions over.
    db.execute("UPDATE partition_leases SET expires_at = now() - interval '1 second' WHERE owner = 'c'")
    db.execute("UPDATE workers SET expires_at = now() - interval '1 second' WHERE name = 'c'")
    for _ in range(2):
        for name in ("a", "b"):
            partitions.balance(db, name, lease_s=60)
    held = _held(db)
    assert held["a"] + held["b"] == DEFAULT_PARTITIONS and sorted([held["a"], held["b"]]) == [8, 8]

    partitions.leave(db, "a")  # a worker stopping gives its partitions back at once
    assert _held(db)["a"] == 0
    shares = partitions.balance(db, "b", lease_s=60)
    assert len(shares.held) == DEFAULT_PARTITIONS


def test_a_dead_workers_partition_and_entries_are_taken_over_within_the_claim_timeout(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings
) -> None:
    create_course(client, 1, 5)
    fast = msgspec.structs.replace(
        settings, worker=msgspec.structs.replace(settings.worker, lease_ms=300, claim_idle_ms=500)
    )
    doomed = Worker(fast, "doomed")
    doomed.lease()
    assert len(doomed.held) == DEFAULT_PARTITIONS
    for student in (1, 2, 3):
        enroll(client, student, 1)
    # It reads the entries and dies before deciding them: no renewal, no acknowledgement, no goodbye.
    stream = KEYS.of_course(1).requests
    assert len(rds.xreadgroup(GROUP, "doomed", {stream: ">"}, count=10)[0][1]) == 3  # type: ignore[index]
    doomed.held = ()
    doomed.close()

    survivor = Worker(fast, "survivor")
    try:

        def taken_over() -> bool:
            survivor.step(block_ms=50)
            survivor.reclaim()  # as its run loop does every half claim timeout
            return decided_count(db) == 3

        wait_until(taken_over, timeout=20, what="the takeover")
        assert _held(db)["survivor"] == DEFAULT_PARTITIONS
        assert rds.xpending(stream, GROUP)["pending"] == 0
    finally:
        survivor.close()


def test_worker_processes_share_the_partitions_and_decide(
    client: TestClient, db: Conn, settings: Settings, start_workers: StartWorkers
) -> None:
    for course_id in range(1, 9):
        create_course(client, course_id, 3)
    env = server_env(settings, LEASE_MS="600", BLOCK_MS="100")
    command = [sys.executable, "-m", "courseflow", "worker", "--processes", "2", "--name", "pool"]
    supervisor = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _held(db)["pool-1"] == _held(db)["pool-2"] == 8, timeout=30, what="an even share each")
        for course_id in range(1, 9):
            for student in range(1, 5):
                enroll(client, student, course_id)
        wait_until(lambda: decided_count(db) == 32, timeout=30, what="32 decisions")
        granted = db.execute("SELECT count(*) FROM enrollment_requests WHERE status = 'granted'").fetchone()
        assert granted == (24,)  # 3 seats in each of 8 courses
        deciders = {
            row[0] for row in db.execute("SELECT DISTINCT metadata ->> 'worker' FROM events WHERE metadata ? 'worker'")
        }
        assert deciders == {"pool-1", "pool-2"}
    finally:
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = supervisor.communicate(timeout=30)
    assert supervisor.returncode == 0, stderr.decode()
    assert _held(db)["pool-1"] == _held(db)["pool-2"] == 0  # given back on the way out


def test_a_different_partition_count_is_refused_with_what_to_set(settings: Settings) -> None:
    refused = courseflow("migrate", env=server_env(settings, PARTITIONS="8"))
    assert refused.returncode == 1
    assert f"created with {DEFAULT_PARTITIONS} partitions; set PARTITIONS={DEFAULT_PARTITIONS}" in refused.stderr
    worker = courseflow("worker", env=server_env(settings, PARTITIONS="4"))
    assert worker.returncode == 1 and "PARTITIONS" in worker.stderr
    assert courseflow("migrate", env=server_env(settings, PARTITIONS="0")).returncode != 0


def test_a_worker_restarted_under_its_name_decides_what_it_had_read_at_once(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings
) -> None:
    """Its leases are still its own, so nothing is taken over: it recovers its unacknowledged entries itself,
    without waiting for the claim timeout (60 s here)."""
    create_course(client, 1, 5)
    first = Worker(settings, "steady-name")
    first.lease()
    for student in (1, 2):
        enroll(client, student, 1)
    stream = KEYS.of_course(1).requests
    assert len(rds.xreadgroup(GROUP, "steady-name", {stream: ">"}, count=10)[0][1]) == 2  # type: ignore[index]
    first.held = ()  # killed: no goodbye, its leases stay until they expire
    first.close()

    restarted = Worker(settings, "steady-name")
    try:
        restarted.step(block_ms=10)
        assert decided_count(db) == 2
        assert rds.xpending(stream, GROUP)["pending"] == 0
    finally:
        restarted.close()


def test_every_command_that_reads_the_queue_refuses_another_partition_count(settings: Settings) -> None:
    env = server_env(settings, PARTITIONS="8")
    for command in (["check"], ["dlq", "list"], ["worker", "--processes", "2"]):
        refused = courseflow(*command, env=env)
        assert refused.returncode == 1, command
        assert "set PARTITIONS=16" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr


def test_a_lease_longer_than_the_claim_timeout_is_refused(settings: Settings) -> None:
    refused = courseflow("worker", env=server_env(settings, LEASE_MS="20000", CLAIM_IDLE_MS="15000"))
    assert refused.returncode != 0 and "LEASE_MS (20000) must be below CLAIM_IDLE_MS (15000)" in refused.stderr
