"""The decider: a batch's round decides, in one transaction, the best-ranked pending requests up to its limit."""

from __future__ import annotations

import redis
from starlette.testclient import TestClient

from courseflow.decisions.decider import Delivered
from courseflow.decisions.worker import Worker, entries_of
from courseflow.intake import queue
from courseflow.intake.queue import GROUP
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.helpers import Conn, create_course, decided_count, enroll

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def test_a_backlog_is_decided_best_first_in_rounds_as_full_as_the_limit(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings
) -> None:
    """A worker that read one entry decides, in its transaction, the best-ranked pending up to its limit."""
    create_course(client, 1, 2)
    for student in range(1, 8):
        enroll(client, student, 1, priority=50 if student == 5 else 0)
    worker = Worker(settings, "w-1")
    try:
        worker.decider.limit = 3
        queue.ensure_group(worker.redis, KEYS)
        entries = entries_of(worker.redis.xreadgroup(GROUP, "w-1", {KEYS.requests: ">"}, count=1))
        by_course = {1: [Delivered.decode(KEYS.partition, entry_id, fields) for entry_id, fields in entries]}
        outcome = worker.decider.decide_batch(worker.pg, by_course)
    finally:
        worker.close()
    # Student 1's request alone was read, yet the round took the best three: 5 (priority 50), then 1 and 2.
    assert decided_count(db) == 3
    in_order = db.execute(
        "SELECT (data ->> 'student_id')::int FROM events"
        " WHERE type IN ('EnrollmentGranted', 'Waitlisted', 'EnrollmentRejected') ORDER BY position"
    ).fetchall()
    assert [student for (student,) in in_order] == [5, 1, 2]
    # What the batch's acknowledgement needs: its own request, decided; not the rest of the round.
    (read,) = by_course[1]
    assert outcome.decided == {read.request.request_id}
    assert rds.zcard(KEYS.priority_set(1)) == 4


def test_a_batch_decided_before_is_reported_decided_and_adds_nothing(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings
) -> None:
    """A batch delivered again after its COMMIT (its worker died before acknowledging): no second decision, yet
    every request is reported decided, so that it is acknowledged this time."""
    create_course(client, 1, 1)
    for student in (1, 2):
        enroll(client, student, 1)
    worker = Worker(settings, "w-1")
    try:
        queue.ensure_group(worker.redis, KEYS)
        entries = entries_of(worker.redis.xreadgroup(GROUP, "w-1", {KEYS.requests: ">"}, count=10))
        by_course = {1: [Delivered.decode(KEYS.partition, entry_id, fields) for entry_id, fields in entries]}
        first = worker.decider.decide_batch(worker.pg, by_course)
        events = db.execute("SELECT count(*) FROM events").fetchone()
        again = worker.decider.decide_batch(worker.pg, by_course)
        assert db.execute("SELECT count(*) FROM events").fetchone() == events
    finally:
        worker.close()
    assert decided_count(db) == 2
    assert again.decided == first.decided == {item.request.request_id for item in by_course[1]}
    assert rds.zcard(KEYS.priority_set(1)) == 0
