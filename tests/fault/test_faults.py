"""Faults injected into real processes in the middle of a crowd.

After each one: every request that got a 202 is decided exactly once, no course is over capacity,
the dead-letter stream holds exactly the poison entries, and the read models equal a replay
(`courseflow check`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import courseflow_local as services
import pytest

from courseflow.intake.queue import qualified
from courseflow.platform.config import DEFAULT_PARTITIONS
from courseflow.platform.keys import Keys
from tests.conftest import server_dir
from tests.fault.cluster import Cluster, Crowd
from tests.helpers import projection_lag, stream_entries, wait_until

pytestmark = pytest.mark.fault

COURSES = {1: 100, 2: 400, 3: 900, 4: 2000}
SIZE = 3000
KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with server_dir() as data_dir:
        running = Cluster(data_dir, Path(tmp_path_factory.mktemp("logs")))
        try:
            yield running
        finally:
            running.close()


@pytest.fixture
def crowd(cluster: Cluster) -> Iterator[Crowd]:
    cluster.restart_servers()
    cluster.reset()
    cluster.start_all()
    crowd = Crowd(cluster.base, COURSES, SIZE)
    crowd.create_courses()
    yield crowd
    codes = cluster.stop_all()
    assert set(codes.values()) <= {0}, f"a process did not stop cleanly on SIGTERM: {codes}"


def verify(cluster: Cluster, crowd: Crowd, poison: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
    accepted = set(crowd.accepted.values())
    assert len(accepted) == SIZE
    with cluster.db() as db:

        def decided() -> int:
            row = db.execute("SELECT count(*) FROM enrollment_requests").fetchone()
            return int(row[0]) if row else 0  # type: ignore[call-overload]

        wait_until(lambda: decided() == SIZE, timeout=180, what=f"{SIZE} decisions")
        assert {row[0] for row in db.execute("SELECT request_id::text FROM enrollment_requests")} == accepted
        wait_until(lambda: projection_lag(db) == 0, timeout=120, what="the projector to catch up")
    with cluster.redis() as rds:
        dead = {fields[b"entry_id"] for _, fields in stream_entries(rds, KEYS.dead_letters)}
    assert dead == poison
    check = cluster.courseflow("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{SIZE} accepted: {SIZE} decided" in check.stdout


def test_workers_killed_mid_crowd(cluster: Cluster, crowd: Crowd) -> None:
    crowd.start()
    wait_until(lambda: crowd.done >= SIZE * 0.3, what="a third of the crowd")
    cluster.kill("worker-1")
    wait_until(lambda: crowd.done >= SIZE * 0.6, what="two thirds of the crowd")
    cluster.kill("worker-2")
    crowd.join()
    verify(cluster, crowd)


def test_redis_killed_and_restarted_from_its_append_only_file(cluster: Cluster, crowd: Crowd) -> None:
    crowd.start()
    wait_until(lambda: crowd.done >= SIZE * 0.3, what="a third of the crowd")
    cluster.kill_redis()
    cluster.restart_servers()
    crowd.join()
    verify(cluster, crowd)


def test_postgres_stopped_and_restarted(cluster: Cluster, crowd: Crowd) -> None:
    crowd.start()
    wait_until(lambda: crowd.done >= SIZE * 0.3, what="a third of the crowd")
    services.down(cluster.data_dir, only="postgres")
    wait_until(lambda: crowd.done >= SIZE * 0.6, what="intake to go on without PostgreSQL")
    cluster.restart_servers()
    crowd.join()
    verify(cluster, crowd)


def test_poison_entries_are_dead_lettered_and_block_nothing(cluster: Cluster, crowd: Crowd) -> None:
    poison: set[bytes] = set()
    crowd.start()
    with cluster.redis() as rds:
        for share, fields in [
            (0.2, {"request": b"\xff garbage"}),
            (0.4, {"unexpected": "field"}),
            (0.6, {"request": b'{"type":"EnrollmentRequested"}'}),
        ]:
            wait_until(lambda: crowd.done >= SIZE * share, what=f"{share:.0%} of the crowd")  # noqa: B023
            poison.add(qualified(KEYS.partition, rds.xadd(KEYS.requests, fields)).encode())  # as dead letters name it
    crowd.join()
    verify(cluster, crowd, poison)


def test_everything_sigtermed_mid_crowd_and_started_again(cluster: Cluster, crowd: Crowd) -> None:
    crowd.start()
    wait_until(lambda: crowd.done >= SIZE * 0.4, what="two fifths of the crowd")
    codes = cluster.stop_all()
    assert set(codes.values()) == {0}, f"a process did not exit cleanly on SIGTERM: {codes}"
    cluster.start_all()
    crowd.join()
    verify(cluster, crowd)
