"""A Redis Cluster master SIGKILLed in the middle of a crowd: its replica takes over, and every request that got
a 202 is decided exactly once. Clients retry a 503 with the same idempotency key, as the API asks them to."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import courseflow_local as services
import httpx2 as httpx
import pytest

from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from projections.projector import Projector
from tests import failover
from tests.cluster.conftest import cluster_env
from tests.conftest import Servers, StartWorkers, serving_api
from tests.helpers import Conn, decided_count, wait_projected, wait_until
from tests.integration.test_cli import courseflow, server_env

# redis-py's cluster client drops its connection objects to a dead node without closing them: their sockets
# are reclaimed by the garbage collector, which pytest reports. Nothing of ours leaks.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CAPACITIES = {1: 30, 2: 60, 3: 90, 4: 120, 5: 150}
SIZE = 600
# A request's retries stop after this long: far more than a failover takes (cluster-node-timeout 3 s).
RETRY_FOR_S = 60.0


class Crowd:
    """Sends the bodies, a few at a time, each until it is accepted; counts the answers as they come."""

    def __init__(self, base: str, bodies: list[dict[str, object]]) -> None:
        self.base, self.bodies = base, bodies
        self.accepted: dict[int, str] = {}  # body index -> request id of its 202 (or of the replay that answered)
        self.retried = 0

    async def send(self, http: httpx.AsyncClient, index: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_FOR_S
        delay = 0.05
        while True:
            try:
                response = await http.post("/enroll", json=self.bodies[index])
                if response.status_code in (200, 202):
                    self.accepted[index] = response.json()["request_id"]
                    return
                assert response.status_code == 503, response.text  # the only answer a client should retry
            except httpx.TransportError:
                pass
            self.retried += 1
            assert loop.time() < deadline, f"request {index} was not accepted within {RETRY_FOR_S} s"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def run(self, concurrency: int = 16) -> None:
        queue = list(range(len(self.bodies)))
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as http:

            async def sender() -> None:
                while queue:
                    await self.send(http, queue.pop(0))

            await asyncio.gather(*(sender() for _ in range(concurrency)))


def test_a_master_killed_mid_crowd_loses_no_accepted_request_and_decides_each_once(
    servers: Servers,
    settings: Settings,
    redis_cluster: services.LocalCluster,
    db: Conn,
    start_workers: StartWorkers,
    projector: Projector,
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    bodies: list[dict[str, object]] = [
        {"student_id": rng.randint(1, 500), "course_id": rng.choice(list(CAPACITIES)), "idempotency_key": f"f-{n}"}
        for n in range(SIZE)
    ]
    env = cluster_env(redis_cluster) | {"REDIS_WAIT_REPLICAS": "1", "RATE_LIMIT_REGISTRAR": "off"}
    with serving_api(servers, tmp_path, **env) as base:
        with httpx.Client(base_url=base) as http:
            for course_id, capacity in CAPACITIES.items():
                assert (
                    http.post(
                        "/api/v1/courses", json={"course_id": course_id, "capacity": capacity, "title": "Course"}
                    ).status_code
                    == 201
                )
        # Reclaiming soon after the failover: entries read from the dead master may come back unacknowledged.
        start_workers(2, claim_idle_ms=2000)
        crowd = Crowd(base, bodies)
        victim = failover.shard_of(redis_cluster, Keys(partitions=DEFAULT_PARTITIONS).of_course(1).requests)

        async def crowd_with_a_crash() -> None:
            sending = asyncio.create_task(crowd.run())
            while len(crowd.accepted) < SIZE // 3:
                assert not sending.done()
                await asyncio.sleep(0.01)
            await asyncio.to_thread(failover.kill, redis_cluster, victim.master)
            await asyncio.to_thread(failover.wait_failed_over, redis_cluster, victim)
            # Until the dead node is back as the new master's replica, no write of that shard can be confirmed
            # by a replica (REDIS_WAIT_REPLICAS=1): its requests get 503s, and their clients keep retrying.
            await asyncio.to_thread(failover.rejoin, redis_cluster, victim.master)
            await sending

        asyncio.run(crowd_with_a_crash())

    accepted = set(crowd.accepted.values())
    assert len(crowd.accepted) == SIZE
    assert crowd.retried > 0  # the crash was felt: some requests were refused (503) until the shard was back
    wait_until(lambda: decided_count(db) >= len(accepted), timeout=120, what=f"{len(accepted)} decisions")
    decided = {row[0] for row in db.execute("SELECT request_id::text FROM enrollment_requests")}
    assert decided == accepted  # each accepted request decided, nothing else
    (decisions,) = db.execute(  # type: ignore[misc]
        "SELECT count(*) FROM events WHERE type IN ('EnrollmentGranted', 'Waitlisted', 'EnrollmentRejected')"
    ).fetchone()
    assert decisions == len(accepted)  # exactly once
    for course_id, capacity in CAPACITIES.items():
        (granted,) = db.execute(  # type: ignore[misc]
            "SELECT count(*) FROM enrollment_requests WHERE course_id = %s AND status = 'granted'", (course_id,)
        ).fetchone()
        assert granted <= capacity
    wait_projected(db)
    check = courseflow("check", env=server_env(settings, **cluster_env(redis_cluster)))
    assert check.returncode == 0, check.stdout + check.stderr
