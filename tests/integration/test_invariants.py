"""Invariants of the whole pipeline (API, queue, workers, store, projections): random sequences of registrar
operations, and the invariants hold after every single step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from courseflow.decisions.worker import Worker
from courseflow.http.app import create_app
from courseflow.intake import queue
from courseflow.platform.config import Settings
from projections.projector import Projector
from projections.rebuild import differences
from tests.conftest import Servers, reset

COURSES = (1, 2)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("enroll"), st.integers(1, 6), st.sampled_from(COURSES), st.sampled_from([0, 50, 100])),
        st.tuples(st.just("enroll"), st.integers(1, 6), st.sampled_from(COURSES), st.sampled_from([0, 50, 100])),
        st.tuples(st.just("decide")),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("capacity"), st.sampled_from(COURSES), st.integers(0, 4)),
    ),
    min_size=1,
    max_size=24,
)


class Registrar:
    """The system under test, driven one step at a time: API in-process, one worker, one projector."""

    def __init__(self, settings: Settings, client: TestClient, db: psycopg.Connection[Any]) -> None:
        self.settings, self.client, self.db = settings, client, db
        self.worker = Worker(settings, "invariants")
        queue.ensure_groups(self.worker.redis, self.worker.keys)
        self.projector = Projector(settings.postgres.url)
        self.requests: list[str] = []
        self.keys = 0
        # Seats may stay above capacity only after capacity was lowered under them, never grow there.
        self.ceiling = dict.fromkeys(COURSES, 0)

    def apply(self, op: tuple[Any, ...]) -> None:
        match op:
            case ("enroll", student, course_id, priority):
                self.keys += 1
                body = {
                    "student_id": student,
                    "course_id": course_id,
                    "idempotency_key": f"k{self.keys}",
                    "priority": priority,
                }
                response = self.client.post("/enroll", json=body)
                assert response.status_code == 202
                self.requests.append(response.json()["request_id"])
            case ("decide",):
                while self.worker.step():
                    pass
            case ("release", index) if self.requests:
                response = self.client.delete(f"/api/v1/enrollments/{self.requests[index % len(self.requests)]}")
                assert response.status_code in (200, 409)
            case ("capacity", course_id, capacity):
                seats = self.course(course_id)["seats_taken"]
                response = self.client.patch(f"/api/v1/courses/{course_id}", json={"capacity": capacity})
                assert response.status_code == 200
                self.ceiling[course_id] = max(self.ceiling[course_id], seats)

    def course(self, course_id: int) -> dict[str, Any]:
        row = self.db.execute(
            "SELECT capacity, seats_taken, waitlist_length FROM courses WHERE course_id = %s", (course_id,)
        ).fetchone()
        assert row is not None
        return dict(zip(("capacity", "seats_taken", "waitlist_length"), row, strict=True))

    def check(self) -> None:
        self.projector.catch_up(self.db)
        for course_id in COURSES:
            course = self.course(course_id)
            self.ceiling[course_id] = min(self.ceiling[course_id], course["seats_taken"])
            assert course["seats_taken"] <= max(course["capacity"], self.ceiling[course_id])
            if course["waitlist_length"]:
                assert course["seats_taken"] >= course["capacity"], "a seat is free while someone waits"
            counts = self.db.execute(
                "SELECT count(*) FILTER (WHERE status = 'granted'), count(*) FILTER (WHERE status = 'waitlisted')"
                " FROM enrollment_requests WHERE course_id = %s",
                (course_id,),
            ).fetchone()
            assert counts == (course["seats_taken"], course["waitlist_length"])
            projected = self.db.execute(
                "SELECT capacity, seats_taken, waitlist_length FROM course_seats WHERE course_id = %s", (course_id,)
            ).fetchone()
            assert projected == tuple(course.values()), "read model differs from the write model"
            expected_order = [
                row[0]
                for row in self.db.execute(
                    "SELECT request_id::text FROM enrollment_requests WHERE course_id = %s AND status = 'waitlisted'"
                    " ORDER BY priority DESC, arrival_ms, arrival_seq",
                    (course_id,),
                )
            ]
            listed = self.client.get(f"/api/v1/courses/{course_id}/waitlist").json()["waitlist"]
            assert [w["request_id"] for w in listed] == expected_order
            assert [w["position"] for w in listed] == list(range(1, len(listed) + 1))
        both = self.db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM enrollments WHERE status IN ('granted', 'waitlisted')"
            " GROUP BY course_id, student_id HAVING count(*) > 1) AS twice"
        ).fetchone()
        assert both == (0,), "a student holds two places in one course"
        assert set(differences(self.settings.postgres.url).values()) == {0}, "read models differ from a replay"


@pytest.fixture
def registrar_factory(servers: Servers, settings: Settings) -> Iterator[Any]:
    def make() -> Iterator[Registrar]:
        reset(servers)
        with TestClient(create_app(settings)) as client, psycopg.connect(settings.postgres.url, autocommit=True) as db:
            for course_id in COURSES:
                assert (
                    client.post(
                        "/api/v1/courses", json={"course_id": course_id, "capacity": 2, "title": "Course"}
                    ).status_code
                    == 201
                )
            registrar = Registrar(settings, client, db)
            try:
                yield registrar
            finally:
                registrar.worker.close()

    yield make


# The crowded case first: more students than seats, then drops, waitlist exits and capacity changes.
CROWDED = [("enroll", s, 1, p) for s, p in [(1, 0), (2, 50), (3, 100), (4, 0), (5, 50)]] + [
    ("decide",),
    ("release", 2),
    ("release", 0),
    ("capacity", 1, 4),
    ("capacity", 1, 0),
    ("release", 1),
    ("enroll", 3, 1, 0),
    ("decide",),
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(ops=CROWDED)
@given(ops=operations)
def test_invariants_hold_after_every_operation(registrar_factory: Any, ops: list[tuple[Any, ...]]) -> None:
    for registrar in registrar_factory():
        for op in ops:
            registrar.apply(op)
            registrar.check()
        registrar.apply(("decide",))
        registrar.check()
