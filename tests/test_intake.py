"""The intake on its own: concurrent appends share round trips and stay atomic, one each."""

from __future__ import annotations

import asyncio

import msgspec
import redis
import redis.asyncio as aioredis

from courseflow import queue
from courseflow.auth import DEVELOPER, Principal
from courseflow.config import DEFAULT_PARTITIONS, Settings
from courseflow.intake import Accepted, Intake, key_owner
from courseflow.keys import Keys
from tests.conftest import Servers

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def reads_processed(rds: redis.Redis) -> int:
    return int(rds.info("stats")["total_reads_processed"])


async def crowd(settings: Settings, size: int, flush_scripts_first: bool = False) -> list[Accepted]:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        if flush_scripts_first:
            await client.script_flush()
        keys = Keys(partitions=DEFAULT_PARTITIONS)
        intake = Intake(client, keys)
        with redis.Redis.from_url(settings.redis_url) as sync:
            queue.register_courses(sync, keys, [1])
        return await asyncio.gather(*(intake.accept(DEVELOPER, s, 1, f"k{s}", s % 100) for s in range(1, size + 1)))
    finally:
        await client.aclose()


def test_concurrent_accepts_share_round_trips(settings: Settings, rds: redis.Redis, servers: Servers) -> None:
    # INFO is the admin's: the application's Redis user may not read server statistics.
    with redis.Redis.from_url(servers.admin_redis_url) as admin:
        before = reads_processed(admin)
        accepted = asyncio.run(crowd(settings, 300))
        reads = reads_processed(admin) - before
    assert {a.outcome for a in accepted} == {"queued"}
    assert len({a.request_id for a in accepted}) == 300
    assert rds.xlen(KEYS.requests) == 300 and rds.zcard(KEYS.priority_set(1)) == 300
    # One read per call without coalescing; batches need far fewer.
    assert reads < 100, reads


def test_an_empty_script_cache_is_reloaded(settings: Settings, rds: redis.Redis) -> None:
    accepted = asyncio.run(crowd(settings, 20, flush_scripts_first=True))
    assert {a.outcome for a in accepted} == {"queued"}
    assert rds.xlen(KEYS.requests) == 20


def test_a_key_reused_for_a_course_of_another_partition_is_a_conflict(settings: Settings, rds: redis.Redis) -> None:
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    assert keys.of_course(1) != keys.of_course(2)

    async def attempts() -> list[Accepted]:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            intake = Intake(client, keys)
            with redis.Redis.from_url(settings.redis_url) as sync:
                queue.register_courses(sync, keys, [1, 2])
            first = await intake.accept(DEVELOPER, 7, 1, "same-key", None)
            return [first, await intake.accept(DEVELOPER, 7, 2, "same-key", None)]
        finally:
            await client.aclose()

    first, second = asyncio.run(attempts())
    assert first.outcome == "queued"
    assert (second.outcome, second.request_id) == ("conflict", first.request_id)
    assert rds.xlen(keys.of_course(2).requests) == 0


def test_a_key_claimed_by_an_attempt_that_never_queued_queues_its_request_once(
    settings: Settings, rds: redis.Redis
) -> None:
    """The first attempt claimed the key and failed before queueing: its retries queue that request, once."""
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    owner = key_owner(DEVELOPER, 7)
    rds.set(keys.of_idempotency(owner, "k").idempotency(owner, "k"), "00000000-0000-4000-8000-000000000001 1:")

    async def retries() -> list[Accepted]:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            intake = Intake(client, keys)
            with redis.Redis.from_url(settings.redis_url) as sync:
                queue.register_courses(sync, keys, [1])
            return [await intake.accept(DEVELOPER, 7, 1, "k", None) for _ in range(2)]
        finally:
            await client.aclose()

    queued, replayed = asyncio.run(retries())
    assert (queued.outcome, queued.request_id) == ("queued", "00000000-0000-4000-8000-000000000001")
    assert (replayed.outcome, replayed.request_id, replayed.queue_position) == ("replayed", queued.request_id, 1)
    assert rds.xlen(keys.of_course(1).requests) == 1


def test_without_the_replicas_redis_wait_replicas_asks_for_the_answer_is_503_and_a_retry_queues_nothing_new(
    settings: Settings, rds: redis.Redis
) -> None:
    from starlette.testclient import TestClient

    from courseflow.api import create_app

    body = {"student_id": 7, "course_id": 1, "idempotency_key": "durable"}
    waiting = msgspec.structs.replace(settings, redis_wait_replicas=1, redis_wait_timeout_ms=50)
    with TestClient(create_app(waiting)) as client:
        assert client.post("/api/v1/courses", json={"course_id": 1, "capacity": 5}).status_code == 201
        for _ in range(2):  # this Redis has no replica: never confirmed
            refused = client.post("/enroll", json=body)
            assert refused.status_code == 503 and "Retry-After" in refused.headers
    with TestClient(create_app(settings)) as client:
        answered = client.post("/enroll", json=body)
    assert answered.status_code == 202 and answered.json()["queue_position"] == 1
    assert rds.xlen(Keys(partitions=DEFAULT_PARTITIONS).of_course(1).requests) == 1  # queued once, for all three


def test_idempotency_keys_of_different_callers_never_meet_whatever_their_characters(settings: Settings) -> None:
    """A service `x:1` acting for student 902 with key "k", and a service `x` for student 1 with key "902:k"."""
    keys = Keys(partitions=DEFAULT_PARTITIONS)

    async def both() -> list[Accepted]:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            intake = Intake(client, keys)
            with redis.Redis.from_url(settings.redis_url) as sync:
                queue.register_courses(sync, keys, [2])
            return [
                await intake.accept(Principal(role="service", sub="x:1"), 902, 2, "k", None),
                await intake.accept(Principal(role="service", sub="x"), 1, 2, "902:k", None),
            ]
        finally:
            await client.aclose()

    first, second = asyncio.run(both())
    assert (first.outcome, second.outcome) == ("queued", "queued")
    assert first.request_id != second.request_id
