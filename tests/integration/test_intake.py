"""The intake on its own: concurrent appends share round trips and stay atomic, one each."""

from __future__ import annotations

import asyncio
from typing import cast

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from courseflow import events
from courseflow.errors import IdempotencyKeyReused, RateLimitReached, UnknownCourse
from courseflow.http.auth import DEVELOPER
from courseflow.intake import queue
from courseflow.intake.accept import Accepted, Intake, key_owner
from courseflow.platform import redis_clients
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from courseflow.platform.library import Limit
from tests.conftest import Servers
from tests.helpers import required_versions

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


# The developer's idempotency keys for student 7, in the developer's keys.
OWNER = key_owner(DEVELOPER.role, DEVELOPER.sub, 7)
CALLER = f"{DEVELOPER.role}:{DEVELOPER.sub}"


def reads_processed(rds: redis.Redis) -> int:
    return int(rds.info("stats")["total_reads_processed"])


async def crowd(settings: Settings, size: int) -> list[Accepted]:
    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        keys = Keys(partitions=DEFAULT_PARTITIONS)
        intake = Intake(client, keys)
        with redis.Redis.from_url(settings.redis.url) as sync:
            queue.register_courses(sync, keys, [1])
        owner = DEVELOPER.role, DEVELOPER.sub
        return await asyncio.gather(
            *(intake.accept(CALLER, key_owner(*owner, s), s, 1, f"k{s}", s % 100) for s in range(1, size + 1))
        )
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
    # Two reads per request (claim, then queue) without coalescing; batches need far fewer.
    assert reads < 200, reads


def test_on_one_redis_each_enrollment_is_one_call(settings: Settings, servers: Servers) -> None:
    """Admit and queue share a server here: one FCALL per request, not two (each waits for the disk)."""
    with redis.Redis.from_url(servers.admin_redis_url) as admin:
        admin.config_resetstat()
        accepted = asyncio.run(crowd(settings, 50))
        fcall = admin.info("commandstats")["cmdstat_fcall"]
    assert {a.outcome for a in accepted} == {"queued"}
    # A call refused because the library was not loaded yet is sent again once it is.
    assert fcall["calls"] - fcall["failed_calls"] == 50


def test_a_redis_that_lost_the_function_library_gets_it_again(
    settings: Settings, rds: redis.Redis, servers: Servers
) -> None:
    """As after a restart without persisted functions: the library is loaded once more and every call runs."""
    with redis.Redis.from_url(servers.admin_redis_url) as admin:
        admin.function_flush()
    accepted = asyncio.run(crowd(settings, 20))
    assert {a.outcome for a in accepted} == {"queued"}
    assert rds.xlen(KEYS.requests) == 20
    libraries = [dict(zip(found[::2], found[1::2], strict=True)) for found in rds.function_list()]
    assert [library[b"library_name"] for library in libraries] == [b"courseflow"]


def test_a_key_reused_for_a_course_of_another_partition_is_a_conflict(settings: Settings, rds: redis.Redis) -> None:
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    assert keys.of_course(1) != keys.of_course(2)

    async def attempts() -> list[str]:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            intake = Intake(client, keys)
            with redis.Redis.from_url(settings.redis.url) as sync:
                queue.register_courses(sync, keys, [1, 2])
            first = await intake.accept(CALLER, OWNER, 7, 1, "same-key", None)
            with pytest.raises(IdempotencyKeyReused) as reused:
                await intake.accept(CALLER, OWNER, 7, 2, "same-key", None)
            return [first.request_id, reused.value.request_id]
        finally:
            await client.aclose()

    first, second = asyncio.run(attempts())
    assert second == first
    assert rds.xlen(keys.of_course(2).requests) == 0


def test_a_key_claimed_by_an_attempt_that_never_queued_queues_its_request_once(
    settings: Settings, rds: redis.Redis
) -> None:
    """The first attempt claimed the key and failed before queueing: its retries queue that request, once."""
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    rds.set(keys.caller(CALLER).idempotency(OWNER, "k"), "00000000-0000-4000-8000-000000000001 1:")

    async def retries() -> list[Accepted]:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            intake = Intake(client, keys)
            with redis.Redis.from_url(settings.redis.url) as sync:
                queue.register_courses(sync, keys, [1])
            return [await intake.accept(CALLER, OWNER, 7, 1, "k", None) for _ in range(2)]
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
        assert (
            client.post("/api/v1/courses", json={"course_id": 1, "capacity": 5, "title": "Course"}).status_code == 201
        )
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
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            intake = Intake(client, keys)
            with redis.Redis.from_url(settings.redis.url) as sync:
                queue.register_courses(sync, keys, [2])
            return [
                await intake.accept("service:x:1", key_owner("service", "x:1", 902), 902, 2, "k", None),
                await intake.accept("service:x", key_owner("service", "x", 1), 1, 2, "902:k", None),
            ]
        finally:
            await client.aclose()

    first, second = asyncio.run(both())
    assert (first.outcome, second.outcome) == ("queued", "queued")
    assert first.request_id != second.request_id


def test_the_request_a_known_key_names_is_queued_under_that_id(settings: Settings, rds: redis.Redis) -> None:
    """The queued entry carries the id the key names, not the id this attempt drew."""
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    rds.set(keys.caller(CALLER).idempotency(OWNER, "k"), "00000000-0000-4000-8000-000000000002 1:")

    async def attempt() -> Accepted:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            with redis.Redis.from_url(settings.redis.url) as sync:
                queue.register_courses(sync, keys, [1])
            return await Intake(client, keys).accept(CALLER, OWNER, 7, 1, "k", None)
        finally:
            await client.aclose()

    accepted = asyncio.run(attempt())
    assert accepted.outcome == "queued"
    [(_, fields)] = cast(list[tuple[bytes, dict[bytes, bytes]]], rds.xrange(KEYS.requests))
    queued = events.decode_request(fields[b"request"])
    assert (queued.request_id, queued.student_id, queued.idempotency_key) == (accepted.request_id, 7, "k")
    assert rds.exists(KEYS.queued(queued.request_id))


def test_a_request_for_an_unknown_course_leaves_its_key_unclaimed(settings: Settings, rds: redis.Redis) -> None:
    keys = Keys(partitions=DEFAULT_PARTITIONS)

    async def attempt() -> None:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            with pytest.raises(UnknownCourse):
                await Intake(client, keys).accept(CALLER, OWNER, 7, 1, "k", None)
        finally:
            await client.aclose()

    asyncio.run(attempt())
    assert not rds.exists(keys.caller(CALLER).idempotency(OWNER, "k"))
    assert rds.xlen(KEYS.requests) == 0


def test_a_dropped_connection_is_replaced_and_the_call_goes_through(
    settings: Settings, rds: redis.Redis, servers: Servers
) -> None:
    keys = Keys(partitions=DEFAULT_PARTITIONS)

    async def around_a_kill() -> list[Accepted]:
        client = redis_clients.connect_async(settings)
        try:
            with redis.Redis.from_url(settings.redis.url) as sync:
                queue.register_courses(sync, keys, [1])
            intake = Intake(client, keys)
            first = await intake.accept(CALLER, OWNER, 7, 1, "a", None)
            with redis.Redis.from_url(servers.admin_redis_url) as admin:
                assert admin.client_kill_filter(_type="normal", skipme=True) >= 1  # the intake's held connection too
            return [first, await intake.accept(CALLER, key_owner(DEVELOPER.role, DEVELOPER.sub, 8), 8, 1, "b", None)]
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


def test_an_enrollment_over_its_callers_limit_claims_nothing_and_counts_nothing(
    settings: Settings, rds: redis.Redis
) -> None:
    """The limits and the key are taken in one call: a refused attempt leaves its key free for the retry."""
    keys = Keys(partitions=DEFAULT_PARTITIONS)
    caller = keys.caller(CALLER)
    limits = [Limit(caller.rate_limit("a"), 5, 60_000), Limit(caller.rate_limit("b"), 2, 60_000)]

    async def attempts() -> tuple[list[Accepted], RateLimitReached]:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            intake = Intake(client, keys)
            with redis.Redis.from_url(settings.redis.url) as sync:
                queue.register_courses(sync, keys, [1])
            accepted = [await intake.accept(CALLER, OWNER, 7, 1, key, None, limits) for key in ("k1", "k2")]
            with pytest.raises(RateLimitReached) as reached:
                await intake.accept(CALLER, OWNER, 7, 1, "k3", None, limits)
            return accepted, reached.value
        finally:
            await client.aclose()

    accepted, reached = asyncio.run(attempts())
    assert [a.outcome for a in accepted] == ["queued", "queued"]
    assert reached.index == 1 and 1 <= reached.retry_after_ms <= 120_000
    assert not rds.exists(caller.idempotency(OWNER, "k3"))
    assert [int(rds.hget(limit.counter, "current") or 0) for limit in limits] == [2, 2]
    assert rds.xlen(KEYS.requests) == 2
