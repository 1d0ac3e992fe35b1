"""Dead letters: an entry delivered too often is set aside, recorded and answered for; the CLI lists, retries
and drops them."""

from __future__ import annotations

import msgspec
import redis
from starlette.testclient import TestClient

from courseflow.decisions.worker import Worker, entries_of
from courseflow.intake import queue
from courseflow.intake.queue import GROUP
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.helpers import (
    Conn,
    all_acknowledged,
    create_course,
    enroll,
    stream_entries,
    wait_decided,
    wait_projected,
)
from tests.integration.test_cli import courseflow, server_env

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition
REASON = "not decided after 2 deliveries"


def _dead_lettered(client: TestClient, rds: redis.Redis, settings: Settings) -> str:
    """A request of course 1 delivered twice and never decided, then reclaimed by a worker allowing 2 deliveries."""
    create_course(client, 1, 5)
    request_id: str = enroll(client, 1, 1)["request_id"]
    queue.ensure_group(rds, KEYS)
    # Two consumers read it and die without deciding it; the third delivery is one too many.
    assert entries_of(rds.xreadgroup(GROUP, "ghost-1", {KEYS.requests: ">"}, count=1))
    rds.xclaim(KEYS.requests, GROUP, "ghost-2", 0, [stream_entries(rds, KEYS.requests)[0][0]])
    worker = Worker(
        msgspec.structs.replace(
            settings, worker=msgspec.structs.replace(settings.worker, max_deliveries=2, claim_idle_ms=0)
        ),
        "survivor",
    )
    worker.reclaim()
    worker.close()
    return request_id


def test_an_entry_delivered_too_often_is_dead_lettered_with_its_reason_and_leaves_the_queue(
    client: TestClient, rds: redis.Redis, settings: Settings
) -> None:
    _dead_lettered(client, rds, settings)
    (reason,) = [f[b"reason"].decode() for _, f in stream_entries(rds, KEYS.dead_letters)]
    assert reason == REASON
    assert all_acknowledged(rds) and rds.zcard(KEYS.priority_set(1)) == 0 and rds.hlen(KEYS.pending_index) == 0


def test_a_dead_letter_is_recorded_as_an_event_and_counted(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings
) -> None:
    request_id = _dead_lettered(client, rds, settings)
    (recorded,) = db.execute("SELECT data FROM events WHERE type = 'RequestDeadLettered'").fetchone()  # type: ignore[misc]
    assert recorded["request_id"] == request_id and recorded["course_id"] == 1
    assert client.get("/metrics").json()["dead_letters"] == 1


def test_a_dead_lettered_request_answers_its_status_and_reason(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings
) -> None:
    request_id = _dead_lettered(client, rds, settings)
    wait_projected(db)
    answer = client.get(f"/api/v1/enrollments/{request_id}").json()
    assert (answer["status"], answer["reason"], answer["student_id"]) == ("dead_lettered", REASON, 1)


def test_dlq_lists_a_dead_letter_and_a_retry_gets_it_decided(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings
) -> None:
    request_id = _dead_lettered(client, rds, settings)
    listed = courseflow("dlq", "list", env=server_env(settings))
    assert "1 dead letter(s)" in listed.stdout and f"reason={REASON}" in listed.stdout
    retried = courseflow("dlq", "retry", listed.stdout.split()[0], env=server_env(settings))
    assert retried.returncode == 0, retried.stdout
    assert rds.xlen(KEYS.dead_letters) == 0 and rds.zcard(KEYS.priority_set(1)) == 1
    again = Worker(settings, "after-retry")
    while again.step():
        pass
    again.close()
    wait_decided(db, 1)
    assert client.get(f"/api/v1/enrollments/{request_id}").json()["status"] == "granted"


def _garbage_dead_letter(rds: redis.Redis) -> str:
    return rds.xadd(KEYS.dead_letters, {"request": "garbage", "reason": "undecodable"}).decode()  # type: ignore[union-attr]


def test_dlq_drop_removes_an_entry_named_with_its_partition(settings: Settings, rds: redis.Redis) -> None:
    entry_id = f"{KEYS.partition}:{_garbage_dead_letter(rds)}"  # as `dlq list` shows it
    dropped = courseflow("dlq", "drop", entry_id, env=server_env(settings))
    assert dropped.returncode == 0 and rds.xlen(KEYS.dead_letters) == 0
    assert courseflow("dlq", "drop", entry_id, env=server_env(settings)).returncode == 1  # already gone


def test_dlq_refuses_an_id_without_its_partition_and_a_retry_of_garbage_or_of_nothing(
    settings: Settings, rds: redis.Redis
) -> None:
    raw_id = _garbage_dead_letter(rds)
    env = server_env(settings)
    assert courseflow("dlq", "drop", raw_id, env=env).returncode == 1  # no partition: which stream?
    assert courseflow("dlq", "retry", f"{KEYS.partition}:{raw_id}", env=env).returncode == 1  # undecodable
    assert courseflow("dlq", "retry", env=env).returncode == 2  # no id given
    assert rds.xlen(KEYS.dead_letters) == 1
