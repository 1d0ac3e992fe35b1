"""The request stream: trimmed only below what is still unacknowledged."""

from __future__ import annotations

import redis
from starlette.testclient import TestClient

from courseflow.decisions.worker import entries_of
from courseflow.intake import queue
from courseflow.intake.queue import GROUP
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.conftest import StartWorkers
from tests.helpers import (
    Conn,
    create_course,
    enroll,
    wait_decided,
    wait_until,
)

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def test_stream_is_trimmed_only_below_what_is_unacknowledged(
    client: TestClient, db: Conn, rds: redis.Redis, settings: Settings, start_workers: StartWorkers
) -> None:
    create_course(client, 1, 50)
    for student in range(1, 11):
        enroll(client, student, 1)
    queue.ensure_group(rds, KEYS)
    held = entries_of(rds.xreadgroup(GROUP, "slow", {KEYS.requests: ">"}, count=3))  # read, never acknowledged
    start_workers(claim_idle_ms=60_000)
    wait_until(lambda: rds.xinfo_groups(KEYS.requests)[0]["lag"] == 0, what="the rest read")
    wait_decided(db, 10)  # the worker decides the held ones too: they are in the priority set
    assert queue.trim(rds, KEYS) == 0  # the oldest entry is still pending: nothing below it
    rds.xack(KEYS.requests, GROUP, *[entry_id for entry_id, _ in held])
    assert queue.trim(rds, KEYS) == 9
    assert rds.xlen(KEYS.requests) == 1  # the last delivered entry stays as the trim mark
