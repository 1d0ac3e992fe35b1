"""Many anonymous /metrics callers against a real API with thousands of courses: each answer stays small, and
another caller is served as before, every request within a generous deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import msgspec
import psycopg
import pytest

from courseflow.platform.config import default
from tests.abuse.attack import ATTACKER, LEGITIMATE, Served, serving
from tests.conftest import Servers, reset

COURSES = 5000
# A legitimate read takes milliseconds alone, and stays well under this in the crowd (it took 3.5 s when every
# answer listed every course).
DEADLINE_S = 2.0
LEGITIMATE_READS = 100
CALLERS = 12
ANONYMOUS = str(default("RATE_LIMIT_ANONYMOUS"))
ASKED = [{}, {"Accept": "text/plain"}, {"Accept": "application/openmetrics-text; version=1.0.0"}]


class Crowd(msgspec.Struct):
    statuses: set[int]
    largest: int
    calls: int


@pytest.fixture(scope="module")
def api(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    reset(servers)
    with psycopg.connect(servers.database_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO courses (course_id, title, capacity) SELECT g, 'Course ' || g, 30"
            " FROM generate_series(1, %s) AS g",
            (COURSES,),
        )
        db.execute(
            "INSERT INTO course_seats (course_id, title, capacity) SELECT course_id, title, capacity FROM courses"
        )
    # Started after the courses exist: intake learns every one of them, so each has a queue depth to read.
    # The anonymous limit as shipped: the crowd, from one address, gets up to its share and a 429 beyond.
    with serving(servers, tmp_path_factory.mktemp("metrics"), RATE_LIMIT_ANONYMOUS=ANONYMOUS) as served:
        yield served


def crowd(api: Served, stop: threading.Event, asked: dict[str, str]) -> Crowd:
    """One anonymous caller asking /metrics back to back until told to stop."""
    seen = Crowd(statuses=set(), largest=0, calls=0)
    transport = httpx.HTTPTransport(local_address=ATTACKER)
    with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", transport=transport, timeout=30) as http:
        while not stop.is_set():
            response = http.get("/metrics", headers=asked)
            seen.statuses.add(response.status_code)
            seen.largest = max(seen.largest, len(response.content))
            seen.calls += 1
    return seen


def test_a_crowd_of_anonymous_metrics_calls_slows_no_one_else(api: Served) -> None:
    stop = threading.Event()
    transport = httpx.HTTPTransport(local_address=LEGITIMATE)
    with (
        ThreadPoolExecutor(CALLERS) as pool,
        httpx.Client(base_url=f"http://127.0.0.1:{api.port}", transport=transport, timeout=DEADLINE_S) as http,
    ):
        crowds = [pool.submit(crowd, api, stop, ASKED[n % len(ASKED)]) for n in range(CALLERS)]
        try:
            served, slowest = [], 0.0
            for n in range(LEGITIMATE_READS):
                started = time.monotonic()
                # A read model and Redis, like /metrics: what the crowd would starve (a timeout fails the test).
                served.append(http.get(f"/api/v1/metrics?course_id={n % COURSES + 1}").status_code)
                slowest = max(slowest, time.monotonic() - started)
        finally:
            stop.set()
        seen = [c.result() for c in crowds]
    assert served == [200] * LEGITIMATE_READS
    assert set().union(*(c.statuses for c in seen)) <= {200, 429}
    assert sum(c.calls for c in seen) > LEGITIMATE_READS  # the crowd was busy all along
    # Listing 5,000 courses took 517 kB an answer; totals and a page of 100 stay small.
    assert max(c.largest for c in seen[:: len(ASKED)]) < 20_000
    whole = httpx.get(f"http://127.0.0.1:{api.port}/metrics").json()
    assert (whole["course_count"], len(whole["courses"])) == (COURSES, 100)
    assert slowest < DEADLINE_S
