"""Worker recovery: redelivery after commit, reclaiming a dead consumer's entries, poison entries."""

from __future__ import annotations

import msgspec
import redis
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from courseflow.decisions.decider import Delivered
from courseflow.decisions.worker import Worker, entries_of
from courseflow.intake import queue
from courseflow.intake.queue import GROUP
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.conftest import StartWorkers
from tests.helpers import (
    Conn,
    all_acknowledged,
    create_course,
    decided_count,
    enroll,
    stream_entries,
    wait_decided,
    wait_until,
)

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def event_count(db: Conn) -> int:
    row = db.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def test_redelivery_after_commit_adds_nothing(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings
) -> None:
    """A worker that dies between COMMIT and XACK: on restart it only completes the acknowledgement."""
    create_course(client, 1, 1)
    for student in (1, 2):
        enroll(client, student, 1)
    crashing = Worker(settings, "w-1")
    queue.ensure_group(crashing.redis, KEYS)
    entries = entries_of(crashing.redis.xreadgroup(GROUP, "w-1", {KEYS.requests: ">"}, count=10))
    by_course = {1: [Delivered.decode(KEYS.partition, entry_id, fields) for entry_id, fields in entries]}
    crashing.decider.decide_batch(crashing.pg, by_course)  # committed, never acknowledged: the process "died" here
    crashing.close()
    assert decided_count(db) == 2
    before = event_count(db)
    assert rds.xpending(KEYS.requests, GROUP)["pending"] == 2

    restarted = Worker(settings, "w-1")
    restarted.recover_own(KEYS.partition)
    restarted.close()
    assert event_count(db) == before
    assert rds.xpending(KEYS.requests, GROUP)["pending"] == 0
    assert rds.zcard(KEYS.priority_set(1)) == 0
    assert rds.hlen(KEYS.pending_index) == 0


def test_entries_of_a_dead_consumer_are_reclaimed(
    client: TestClient, db: Conn, rds: redis.Redis, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 5)
    for student in range(1, 4):
        enroll(client, student, 1)
    queue.ensure_group(rds, KEYS)
    # A consumer reads the entries and dies without deciding them.
    assert len(entries_of(rds.xreadgroup(GROUP, "ghost", {KEYS.requests: ">"}, count=10))) == 3
    (survivor,) = start_workers(claim_idle_ms=100)
    wait_decided(db, 3)
    workers = {
        row[0] for row in db.execute("SELECT metadata ->> 'worker' FROM events WHERE type = 'EnrollmentGranted'")
    }
    assert workers == {survivor.name}
    wait_until(lambda: all_acknowledged(rds), what="the reclaimed entries acknowledged")


def test_poison_entries_go_to_the_dead_letter_stream_without_blocking(
    client: TestClient, db: Conn, rds: redis.Redis, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 5)
    dead_before = _dead_letters()
    enroll(client, 1, 1)
    rds.xadd(KEYS.requests, {"request": b"\xff\xfe not json"})
    rds.xadd(KEYS.requests, {"something": "else"})
    wrong_course = msgspec.json.encode(
        {
            "type": "EnrollmentRequested",
            "course_id": 77,
            "request_id": "0b6c1f1e-1111-4111-8111-111111111111",
            "student_id": 3,
            "idempotency_key": "k",
            "priority": 0,
            "requested_at": "2026-01-01T00:00:00Z",
        }
    )
    rds.xadd(KEYS.requests, {"request": wrong_course})
    enroll(client, 2, 1)
    start_workers()
    wait_decided(db, 2)
    wait_until(lambda: rds.xlen(KEYS.dead_letters) == 3, what="three dead letters")
    reasons = [fields[b"reason"].decode() for _, fields in stream_entries(rds, KEYS.dead_letters)]
    assert reasons[0].startswith("undecodable")
    assert reasons[1:] == ["missing request field", "unknown course 77"]
    wait_until(lambda: all_acknowledged(rds), what="every entry acknowledged")
    # The workers run in this process: their counter is this process's.
    assert _dead_letters() - dead_before == 3


def _dead_letters() -> float:
    return REGISTRY.get_sample_value("courseflow_dead_letters_total") or 0.0


def test_workers_decide_nothing_twice_with_duplicated_stream_entries(
    client: TestClient, db: Conn, rds: redis.Redis, start_workers: StartWorkers
) -> None:
    """An entry added to the stream twice (a replayed append) yields one decision."""
    create_course(client, 1, 5)
    enroll(client, 1, 1)
    ((_, fields),) = stream_entries(rds, KEYS.requests)
    rds.xadd(KEYS.requests, {b"request": fields[b"request"]})
    start_workers(2)
    wait_until(lambda: all_acknowledged(rds), what="both entries acknowledged")
    wait_decided(db, 1)
    assert event_count(db) == 2  # CourseCreated, EnrollmentGranted (which carries its request)


def test_a_read_and_a_round_hold_a_bounded_share_of_any_backlog(
    client: TestClient, db: Conn, settings: Settings
) -> None:
    """XREADGROUP's COUNT applies to each stream: shared out, a read over all the partitions holds at most a batch
    (and still a whole one); a round decides at most two batches over all its courses, however deep the backlog
    ranked ahead of the batch."""
    courses = range(1, 9)
    for course in courses:
        create_course(client, course, 1000)
    # Priority rising with arrival: the first batch ranks behind everything pending, so deciding it means
    # deciding each course's whole backlog first.
    total = 40 * len(courses)
    for n in range(total):
        enroll(client, n + 1, courses[n % len(courses)], priority=n // len(courses))
    worker = Worker(
        msgspec.structs.replace(settings, worker=msgspec.structs.replace(settings.worker, batch_size=32)), "w-1"
    )
    try:
        assert len(worker.lease()) == DEFAULT_PARTITIONS  # alone: it reads every partition
        assert worker.step() == 32
        while decided_count(db) < total:
            assert worker.step() <= 32
    finally:
        worker.close()
    per_transaction = db.execute(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM events"
        " WHERE type IN ('EnrollmentGranted', 'Waitlisted', 'EnrollmentRejected') GROUP BY txid) t"
    ).fetchone()
    assert per_transaction is not None and per_transaction[0] <= 2 * 32
