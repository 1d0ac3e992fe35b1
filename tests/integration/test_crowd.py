"""A crowd through the whole pipeline (API, queue, workers, store): 1,000 requests over 5 courses, decided by 2
workers in one consumer group."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from projections.projector import Projector
from tests.conftest import StartWorkers
from tests.helpers import Conn, fair_decisions, send_crowd, wait_decided

CAPACITIES = {1: 5, 2: 40, 3: 120, 4: 200, 5: 400}
COURSES: dict[int, tuple[int, str | None]] = {c: (cap, None) for c, cap in CAPACITIES.items()}


def crowd(seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    # A small student pool, so some students ask for the same course twice.
    return [
        {
            "student_id": rng.randint(1, 400),
            "course_id": rng.choice(list(CAPACITIES)),
            "idempotency_key": f"crowd-{n}",
            "priority": rng.choice([0, 0, 0, 10, 50, 100]),
        }
        for n in range(1000)
    ]


def check_exactly_once_and_capacity(db: Conn, bodies: list[dict[str, object]]) -> None:
    wait_decided(db, len(bodies), timeout=60)
    (decision_events,) = db.execute(  # type: ignore[misc]
        "SELECT count(*) FROM events WHERE type IN ('EnrollmentGranted', 'Waitlisted', 'EnrollmentRejected')"
    ).fetchone()
    assert decision_events == len(bodies)
    distinct: dict[int, set[int]] = defaultdict(set)
    for body in bodies:
        distinct[body["course_id"]].add(body["student_id"])  # type: ignore[index, arg-type]
    for course_id, capacity in CAPACITIES.items():
        (granted,) = db.execute(  # type: ignore[misc]
            "SELECT count(*) FROM enrollment_requests WHERE course_id = %s AND status = 'granted'", (course_id,)
        ).fetchone()
        assert granted == min(capacity, len(distinct[course_id]))
        (seats,) = db.execute("SELECT seats_taken FROM courses WHERE course_id = %s", (course_id,)).fetchone()  # type: ignore[misc]
        assert seats == granted


def test_crowd_pending_together_is_decided_in_strict_priority_then_arrival_order(
    api_server: str, db: Conn, start_workers: StartWorkers, projector: Projector
) -> None:
    bodies = crowd(seed=7)
    asyncio.run(send_crowd(api_server, bodies, COURSES))
    # Small batches, so the two workers hold interleaved slices of every course.
    start_workers(2, batch_size=25)
    check_exactly_once_and_capacity(db, bodies)
    for course_id, capacity in CAPACITIES.items():
        assert fair_decisions(db, course_id, capacity), f"course {course_id} was not decided fairly"


def test_crowd_arriving_while_workers_run_is_decided_exactly_once(
    api_server: str, db: Conn, start_workers: StartWorkers, projector: Projector
) -> None:
    bodies = crowd(seed=11)
    start_workers(2, batch_size=25)
    asyncio.run(send_crowd(api_server, bodies, COURSES))
    check_exactly_once_and_capacity(db, bodies)
