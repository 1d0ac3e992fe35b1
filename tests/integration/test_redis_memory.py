"""Redis is bounded (maxmemory, noeviction): a full Redis refuses new requests with a 503 and evicts nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import redis
from starlette.testclient import TestClient

from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from tests.conftest import Servers, StartWorkers
from tests.helpers import Conn, create_course, wait_until

# Room left above what Redis uses when the test starts: about a thousand requests (with less, what deciding frees
# is outweighed by what the first writes allocate for good: hash tables, the consumer group).
HEADROOM_BYTES = 1_500_000


@contextmanager
def tight_redis(servers: Servers, headroom: int = HEADROOM_BYTES) -> Iterator[int]:
    """The session's Redis bounded to what it uses now plus `headroom`, with noeviction; its bound restored after.
    Yields the bound."""
    with redis.Redis.from_url(servers.admin_redis_url) as admin:
        before = cast(dict[str, str], admin.config_get("maxmemory*"))
        bound = int(cast(dict[str, int], admin.info("memory"))["used_memory"]) + headroom
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", bound)
        try:
            yield bound
        finally:
            admin.config_set("maxmemory", before["maxmemory"])
            admin.config_set("maxmemory-policy", before["maxmemory-policy"])


def accepted_still_pending(rds: redis.Redis, settings: Settings, request_ids: list[str]) -> list[str]:
    """Those of `request_ids` in their partition's pending index (every partition asked)."""
    keys = Keys(settings.queue.prefix, settings.queue.partitions)
    found: set[str] = set()
    for partition in keys.all():
        values = cast(list[bytes | None], rds.hmget(partition.pending_index, request_ids))
        found |= {request_id for request_id, value in zip(request_ids, values, strict=True) if value is not None}
    return [request_id for request_id in request_ids if request_id in found]


def test_a_full_redis_refuses_with_503_evicts_nothing_and_takes_requests_again_once_decided(
    client: TestClient, servers: Servers, settings: Settings, rds: redis.Redis, db: Conn, start_workers: StartWorkers
) -> None:
    create_course(client, 1, capacity=10_000)
    accepted: list[str] = []
    refused = None
    with tight_redis(servers) as bound:
        for n in range(5_000):
            answer = client.post("/enroll", json={"student_id": n + 1, "course_id": 1, "idempotency_key": f"k{n}"})
            if answer.status_code != 202:
                refused = answer
                break
            accepted.append(answer.json()["request_id"])
        assert refused is not None, f"{len(accepted)} requests did not fill {bound} bytes"
        assert refused.status_code == 503 and refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["Retry-After"] == "1" and "full" in refused.json()["detail"]
        assert len(accepted) > 10
        # Full: nothing accepted was evicted to make room.
        assert accepted_still_pending(rds, settings, accepted) == accepted
        scraped = client.get("/metrics", headers={"Accept": "text/plain"}).text
        ratio = next(line for line in scraped.splitlines() if line.startswith("courseflow_redis_memory_ratio "))
        assert float(ratio.split()[1]) > 0.9
        assert client.get("/metrics").json()["redis_memory"]["max_bytes"] == bound
        # Deciding frees memory: the queue drains while Redis is full, then new requests are taken again.
        start_workers(claim_idle_ms=6_000)  # it trims decided entries from the stream every 3 s
        wait_until(lambda: _decided(db) == len(accepted), timeout=60, what="every accepted request decided")
        after = {"student_id": 1, "course_id": 1, "idempotency_key": "after"}
        wait_until(lambda: client.post("/enroll", json=after).status_code == 202, 30, "a request taken once drained")


def _decided(db: Conn) -> int:
    row = db.execute("SELECT count(*) FROM enrollment_requests").fetchone()
    return int(row[0]) if row else 0


def test_the_redis_memory_gauge_is_on_metrics(client: TestClient) -> None:
    scraped = client.get("/metrics", headers={"Accept": "text/plain"}).text
    names = {line.split()[0] for line in scraped.splitlines() if line.startswith("courseflow_redis_memory")}
    assert names == {
        "courseflow_redis_memory_used_bytes",
        "courseflow_redis_memory_max_bytes",
        "courseflow_redis_memory_ratio",
    }
    memory = client.get("/metrics").json()["redis_memory"]
    assert 0 < memory["used_bytes"] < memory["max_bytes"] and 0 < memory["ratio"] < 1
