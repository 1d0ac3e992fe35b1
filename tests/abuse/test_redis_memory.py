"""A flood of enrollments into a Redis near its maxmemory: refused with 503s, nothing accepted lost, and a
legitimate client is served once the workers have drained what was accepted."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx

from tests.conftest import Servers, StartWorkers, serving_api
from tests.helpers import Conn, wait_until
from tests.integration.test_redis_memory import tight_redis

FLOOD = 3_000
SENDERS = 8


def test_a_flood_into_a_full_redis_gets_503s_and_loses_nothing(
    servers: Servers, db: Conn, start_workers: StartWorkers, tmp_path: Path
) -> None:
    with serving_api(servers, tmp_path, RATE_LIMIT_REGISTRAR="off") as base, tight_redis(servers):
        with httpx.Client(base_url=base, timeout=10) as http:
            created = http.post("/api/v1/courses", json={"course_id": 1, "title": "Flooded", "capacity": 100_000})
            assert created.status_code == 201, created.text
        accepted: list[str] = []
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def send(first: int) -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                for n in range(first, FLOOD, SENDERS):
                    body = {"student_id": n + 1, "course_id": 1, "idempotency_key": f"flood-{n}"}
                    answer = http.post("/api/v1/enrollments", json=body)
                    with lock:
                        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                        if answer.status_code == 202:
                            accepted.append(answer.json()["request_id"])
                        elif answer.status_code == 503:
                            assert answer.headers["content-type"] == "application/problem+json"
                            assert "full" in answer.json()["detail"]

        with ThreadPoolExecutor(SENDERS) as senders:
            list(senders.map(send, range(SENDERS)))
        assert set(statuses) == {202, 503}, statuses
        assert statuses[503] > FLOOD // 2 and len(accepted) > 100, statuses

        # Deciding frees the memory the flood took: every accepted request is decided, none evicted or lost.
        start_workers(claim_idle_ms=6_000)  # trims decided entries from the streams every 3 s
        wait_until(lambda: _decided(db, accepted) == len(accepted), timeout=20, what="every accepted request decided")
        with httpx.Client(base_url=base, timeout=10) as legitimate:
            body = {"student_id": 999_999, "course_id": 1, "idempotency_key": "after-the-flood"}
            wait_until(lambda: legitimate.post("/api/v1/enrollments", json=body).status_code == 202, 10, "a 202")


def _decided(db: Conn, request_ids: list[str]) -> int:
    row = db.execute("SELECT count(*) FROM enrollment_requests WHERE request_id = ANY(%s::uuid[])", (request_ids,))
    found = row.fetchone()
    return int(found[0]) if found else 0
