"""The intake on its own: concurrent appends share round trips and stay atomic, one each."""

from __future__ import annotations

import asyncio
from typing import cast

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from courseflow import events
from courseflow.http.auth import DEVELOPER, Principal
from courseflow.http.limits import Limiter, subject
from courseflow.intake import queue
from courseflow.intake.accept import Accepted, Intake, key_owner
from courseflow.platform import redis_clients
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.conftest import Servers
from tests.helpers import required_versions

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


@pytest.fixture(params=[True, False], ids=["one-step", "two-step"])
def one_step(request: pytest.FixtureRequest) -> bool:
    """Both ways of accepting: one script on a single Redis, two steps as on a cluster."""
    one: bool = request.param
    return one


def reads_processed(rds: redis.Redis) -> int:
    return int(rds.info("stats")["total_reads_processed"])


async def crowd(settings: Settings, size: int, one_step: bool, flush_scripts_first: bool = False) -> list[Accepted]:
    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        if flush_scripts_first:
            await client.script_flush()
        keys = Keys(partitions=DEFAULT_PARTITIONS)
        intake = Intake(client, keys, one_step=one_step)
        with redis.Redis.from_url(settings.redis.url) as sync:
            queue.register_courses(sync, keys, [1])
        return await asyncio.gather(*(intake.accept(DEVELOPER, s, 1, f"k{s}", s % 100) for s in range(1, size + 1)))
    finally:
        await client.aclose()


def test_concurrent_accepts_share_round_trips(
    settings: Settings, rds: redis.Redis, servers: Servers, one_step: bool
) -> None:
    # INFO is the admin's: the application's Redis user may not read server statistics.
    with redis.Redis.from_url(servers.admin_redis_url) as admin:
        before = reads_processed(admin)
        accepted = asyncio.run(crowd(settings, 300, one_step))
        reads = reads_processed(admin) - before
    assert {a.outcome for a in accepted} == {"queued"}
    assert len({a.request_id for a in accepted}) == 300
    assert rds.xlen(KEYS.requests) == 300 and rds.zcard(KEYS.priority_set(1)) == 300
    # One read per call without coalescing; batches need far fewer.
    assert reads < 100, reads


def test_an_empty_script_cache_is_reloaded(settings: Settings, rds: redis.Redis, one_step: bool) -> None:
    accepted = asyncio.run(crowd(settings, 20, one_step, flush_scripts_first=True))
    assert {a.outcome for a in accepted} == {"queued"}
    assert rds.xlen(KEYS.requests) == 20


def test_a_key_reused_for_a_course_of_another_partition_is_a_conflict(
    settings: Settings, rds: redis.Redis, one_step: bool
) -> None:
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    assert keys.of_course(1) != keys.of_course(2)

    async def attempts() -> list[Accepted]:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            intake = Intake(client, keys, one_step=one_step)
            with redis.Redis.from_url(settings.redis.url) as sync:
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
    settings: Settings, rds: redis.Redis, one_step: bool
) -> None:
    """The first attempt claimed the key and failed before queueing: its retries queue that request, once."""
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    owner = key_owner(DEVELOPER, 7)
    rds.set(keys.of_idempotency(owner, "k").idempotency(owner, "k"), "00000000-0000-4000-8000-000000000001 1:")

    async def retries() -> list[Accepted]:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            intake = Intake(client, keys, one_step=one_step)
            with redis.Redis.from_url(settings.redis.url) as sync:
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

    from courseflow.http.app import create_app

    body = {"student_id": 7, "course_id": 1, "idempotency_key": "durable"}
    waiting = msgspec.structs.replace(
        settings, redis=msgspec.structs.replace(settings.redis, wait_replicas=1, wait_timeout_ms=50)
    )
    with TestClient(create_app(waiting)) as client:
        assert client.post("/api/v1/courses", json={"course_id": 1, "capacity": 5}).status_code == 201
        for _ in range(2):  # this Redis has no replica: never confirmed
            refused = client.post("/enroll", json=body)
            assert refused.status_code == 503 and "Retry-After" in refused.headers
    with TestClient(create_app(settings)) as client:
        answered = client.post("/enroll", json=body)
    assert answered.status_code == 202 and answered.json()["queue_position"] == 1
    assert rds.xlen(Keys(partitions=DEFAULT_PARTITIONS).of_course(1).requests) == 1  # queued once, for all three


def test_idempotency_keys_of_different_callers_never_meet_whatever_their_characters(
    settings: Settings, one_step: bool
) -> None:
    """A service `x:1` acting for student 902 with key "k", and a service `x` for student 1 with key "902:k"."""
    keys = Keys(partitions=DEFAULT_PARTITIONS)

    async def both() -> list[Accepted]:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            intake = Intake(client, keys, one_step=one_step)
            with redis.Redis.from_url(settings.redis.url) as sync:
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


def test_the_request_a_known_key_names_is_queued_under_that_id(
    settings: Settings, rds: redis.Redis, one_step: bool
) -> None:
    """The queued entry carries the id the key names, not the id this attempt drew."""
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    owner = key_owner(DEVELOPER, 7)
    rds.set(keys.of_idempotency(owner, "k").idempotency(owner, "k"), "00000000-0000-4000-8000-000000000002 1:")

    async def attempt() -> Accepted:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            with redis.Redis.from_url(settings.redis.url) as sync:
                queue.register_courses(sync, keys, [1])
            return await Intake(client, keys, one_step=one_step).accept(DEVELOPER, 7, 1, "k", None)
        finally:
            await client.aclose()

    accepted = asyncio.run(attempt())
    assert accepted.outcome == "queued"
    [(_, fields)] = cast(list[tuple[bytes, dict[bytes, bytes]]], rds.xrange(KEYS.requests))
    queued = events.decode_request(fields[b"request"])
    assert (queued.request_id, queued.student_id, queued.idempotency_key) == (accepted.request_id, 7, "k")
    assert rds.exists(KEYS.queued(queued.request_id))


def test_a_request_for_an_unknown_course_leaves_its_key_unclaimed(
    settings: Settings, rds: redis.Redis, one_step: bool
) -> None:
    keys = Keys(partitions=DEFAULT_PARTITIONS)

    async def attempt() -> Accepted:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            return await Intake(client, keys, one_step=one_step).accept(DEVELOPER, 7, 1, "k", None)
        finally:
            await client.aclose()

    assert asyncio.run(attempt()).outcome == "unknown_course"
    owner = key_owner(DEVELOPER, 7)
    assert not rds.exists(keys.of_idempotency(owner, "k").idempotency(owner, "k"))
    assert rds.xlen(KEYS.requests) == 0


def test_one_step_intake_takes_the_rate_limit_first_and_a_refused_request_takes_nothing_else(
    settings: Settings, rds: redis.Redis
) -> None:
    limited = msgspec.structs.replace(
        settings, limits=msgspec.structs.replace(settings.limits, student_writes="2 per 60 seconds")
    )
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    student = Principal(role="student", sub="7")

    async def attempts() -> list[Accepted]:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            with redis.Redis.from_url(settings.redis.url) as sync:
                queue.register_courses(sync, keys, [1])
            intake, limiter = Intake(client, keys), Limiter(limited, client)
            assert intake.takes_rate_limits
            windows = limiter.windows(subject(student), "POST")
            return [await intake.accept(student, 7, 1, f"k{n}", None, windows) for n in range(3)]
        finally:
            await client.aclose()

    first, second, third = asyncio.run(attempts())
    assert (first.outcome, second.outcome) == ("queued", "queued")
    assert (third.outcome, third.refused_by) == ("rate_limited", 0)
    assert rds.xlen(KEYS.requests) == 2
    owner = key_owner(student, 7)
    assert not rds.exists(keys.of_idempotency(owner, "k2").idempotency(owner, "k2"))


def test_a_dropped_connection_is_replaced_and_the_call_goes_through(
    settings: Settings, rds: redis.Redis, servers: Servers, one_step: bool
) -> None:
    keys = Keys(partitions=DEFAULT_PARTITIONS)

    async def around_a_kill() -> list[Accepted]:
        client = redis_clients.connect_async(settings)
        try:
            with redis.Redis.from_url(settings.redis.url) as sync:
                queue.register_courses(sync, keys, [1])
            intake = Intake(client, keys, one_step=one_step)
            first = await intake.accept(DEVELOPER, 7, 1, "a", None)
            with redis.Redis.from_url(servers.admin_redis_url) as admin:
                assert admin.client_kill_filter(_type="normal", skipme=True) >= 1  # the intake's held connection too
            return [first, await intake.accept(DEVELOPER, 8, 1, "b", None)]
        finally:
            await redis_clients.aclose(client)

    assert [a.outcome for a in asyncio.run(around_a_kill())] == ["queued", "queued"]
    assert rds.xlen(KEYS.requests) == 2


def test_the_redis_requirement_admits_only_clients_with_what_the_held_connection_uses() -> None:
    """The client factory and the coalescer are written against redis-py 5.3 and later: older releases are
    refused at install time, not met at the first enrollment."""
    from importlib.metadata import version

    admitted = required_versions("redis")
    assert version("redis") in admitted
    for too_old in ("5.0.8", "5.2.1"):
        assert too_old not in admitted, too_old
