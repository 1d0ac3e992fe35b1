"""A 1,000-request crowd over 5 courses, decided by 2 workers in one consumer group."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import httpx2 as httpx

from projections.projector import Projector
from tests.conftest import StartWorkers
from tests.helpers import Conn, wait_decided

CAPACITIES = {1: 5, 2: 40, 3: 120, 4: 200, 5: 400}


async def send_crowd(base: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        for course_id, capacity in CAPACITIES.items():
            created = await http.post("/api/v1/courses", json={"course_id": course_id, "capacity": capacity})
            assert created.status_code == 201
        return await asyncio.gather(*(http.post("/enroll", json=body) for body in bodies))


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


def expected_outcomes(rows: list[tuple[str, int, int, int, int]], capacity: int) -> list[tuple[str, str]]:
    """(request id, status) in decision order, as one perfectly fair decider gives for requests pending together."""
    outcome: list[tuple[str, str]] = []
    holders: set[int] = set()
    seats = 0
    for request_id, student, _, _, _ in sorted(rows, key=lambda r: (-r[2], r[3], r[4])):
        if student in holders:
            outcome.append((request_id, "rejected"))
        elif seats < capacity:
            holders.add(student)
            seats += 1
            outcome.append((request_id, "granted"))
        else:
            holders.add(student)
            outcome.append((request_id, "waitlisted"))
    return outcome


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
    responses = asyncio.run(send_crowd(api_server, bodies))
    assert {r.status_code for r in responses} == {202}
    # Small batches, so the two workers hold interleaved slices of every course.
    start_workers(2, batch_size=25)
    check_exactly_once_and_capacity(db, bodies)
    kinds = {"EnrollmentGranted": "granted", "Waitlisted": "waitlisted", "EnrollmentRejected": "rejected"}
    for course_id, capacity in CAPACITIES.items():
        rows = db.execute(
            "SELECT request_id::text, student_id, priority, arrival_ms, arrival_seq FROM enrollment_requests"
            " WHERE course_id = %s",
            (course_id,),
        ).fetchall()
        decided_in_order = [
            (rid, kinds[kind])
            for rid, kind in db.execute(
                "SELECT data ->> 'request_id', type FROM events WHERE stream = %s AND type = ANY(%s) ORDER BY position",
                (f"course-{course_id}", list(kinds)),
            ).fetchall()
        ]
        assert decided_in_order == expected_outcomes(rows, capacity), f"course {course_id} was not decided fairly"


def test_crowd_arriving_while_workers_run_is_decided_exactly_once(
    api_server: str, db: Conn, start_workers: StartWorkers, projector: Projector
) -> None:
    bodies = crowd(seed=11)
    start_workers(2, batch_size=25)
    responses = asyncio.run(send_crowd(api_server, bodies))
    assert {r.status_code for r in responses} == {202}
    check_exactly_once_and_capacity(db, bodies)
