"""The enrollment fast lane answers exactly what routing and the middleware answer, refusals included."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from courseflow.http.app import CourseFlow, create_app
from courseflow.platform.config import Settings
from tests.conftest import Servers, reset
from tests.trust import bearer, secured

JSON = {"Content-Type": "application/json"}
# Headers whose values must be the same whichever lane answered.
COMPARED = ("content-type", "www-authenticate", "retry-after", "ratelimit-policy")


@contextmanager
def serving(settings: Settings, fast: bool) -> Iterator[TestClient]:
    app = create_app(settings)
    assert isinstance(app, CourseFlow) and app.express is not None
    if not fast:
        app.express = None  # every request through routing and the middleware
    with TestClient(app) as client:
        yield client


def _requests(configured: Settings) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers): one of each answer an enrollment can get, in an order that makes it so."""
    student = [{**JSON, **bearer(configured, "student", n)} for n in range(20)]
    service = {**JSON, **bearer(configured, "service", "sis")}
    return [
        ("/enroll", b'{"course_id":1,"idempotency_key":"a"}', JSON),  # no token: 401
        ("/enroll", b'{"course_id":1,"idempotency_key":"a"}', {**JSON, "Authorization": "Bearer nope"}),
        ("/api/v1/enrollments", b'{"course_id":1,', student[1]),  # not JSON: 400
        ("/api/v1/enrollments", b'{"course_id":1,"idempotency_key":"a","seat":1}', student[2]),
        ("/api/v1/enrollments", b'{"course_id":1,"course\\u005fid":2,"idempotency_key":"a"}', student[3]),
        ("/api/v1/enrollments", b'{"course_id":1,"idempotency_key":"a"}', {**student[4], "Content-Type": "text/plain"}),
        ("/api/v1/enrollments", b'{"course_id":1,"idempotency_key":"' + b"k" * 17_000 + b'"}', student[5]),  # 413
        ("/api/v1/enrollments", b'{"course_id":1,"student_id":3,"idempotency_key":"a"}', student[6]),  # 403
        ("/api/v1/enrollments", b'{"course_id":1,"idempotency_key":"a","priority":5}', student[7]),  # 403
        ("/api/v1/enrollments", b'{"course_id":404,"idempotency_key":"a"}', student[8]),  # no such course
        ("/api/v1/enrollments", b'{"course_id":1,"idempotency_key":"a"}', student[9]),  # 202
        ("/enroll", b'{"course_id":1,"idempotency_key":"a"}', student[9]),  # the same again: 202, same request
        ("/enroll", b'{"course_id":2,"idempotency_key":"a"}', student[9]),  # another body, same key: 409
        ("/enroll", b'{"course_id":1,"student_id":7,"idempotency_key":"a","priority":9}', service),
        # The student write limit is 3 attempts: student 10's fourth is refused, whatever its body.
        *[("/enroll", b'{"course_id":1,"idempotency_key":"k%d"}' % n, student[10]) for n in range(3)],
        ("/enroll", b'{"course_id":1,"idempotency_key":"k3"}', student[10]),
        ("/enroll", b"{", student[10]),
    ]


def _answer(response: Any) -> tuple[object, ...]:
    body = response.json()
    seen: tuple[object, ...]
    if response.status_code >= 400:
        seen = (body["type"], body["title"], body.get("field"), body["detail"].split(" retry in ")[0])
    else:
        seen = (sorted(body), body.get("status"), body.get("queue_position"))
    return (response.status_code, seen, *(response.headers.get(name) for name in COMPARED))


def test_both_lanes_answer_every_enrollment_alike(settings: Settings, servers: Servers) -> None:
    configured = secured(
        msgspec.structs.replace(
            settings, limits=msgspec.structs.replace(settings.limits, student_writes="3 per 60 seconds")
        )
    )
    answers: dict[bool, list[tuple[object, ...]]] = {}
    for fast in (True, False):
        reset(servers)
        with serving(configured, fast) as client:
            registrar = bearer(configured, "registrar")
            for course in (1, 2):
                created = client.post("/api/v1/courses", json={"course_id": course, "capacity": 9}, headers=registrar)
                assert created.status_code == 201
            answers[fast] = [_answer(client.post(p, content=b, headers=h)) for p, b, h in _requests(configured)]
    assert answers[True] == answers[False]
    statuses = [answer[0] for answer in answers[True]]
    assert statuses == [401, 401, 400, 422, 422, 415, 413, 403, 403, 404, 202, 202, 409, 202, 202, 202, 202, 429, 429]


def _count(route: str, status: str) -> float:
    labels = {"route": route, "method": "POST", "status": status}
    return REGISTRY.get_sample_value("courseflow_http_request_duration_seconds_count", labels) or 0.0


def test_the_fast_lane_times_its_answers_by_route_and_answers_503_while_draining(settings: Settings) -> None:
    with serving(settings, fast=True) as client:
        assert client.post("/api/v1/courses", json={"course_id": 1, "capacity": 9}).status_code == 201
        before = _count("/enroll", "2xx"), _count("/api/v1/enrollments", "4xx"), _count("/enroll", "5xx")
        body = {"course_id": 1, "student_id": 1, "idempotency_key": "a"}
        assert client.post("/enroll", json=body).status_code == 202
        assert client.post("/api/v1/enrollments", json={"course_id": 1}).status_code == 422
        client.app.state.shutdown["draining"] = True  # type: ignore[attr-defined]
        refused = client.post("/enroll", json=body)
        client.app.state.shutdown["draining"] = False  # type: ignore[attr-defined]
    assert refused.status_code == 503 and refused.json()["type"].endswith("shutting_down")
    assert refused.headers["Retry-After"] == "1"
    after = _count("/enroll", "2xx"), _count("/api/v1/enrollments", "4xx"), _count("/enroll", "5xx")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-lane", "routing"])
def test_an_unforeseen_error_in_an_enrollment_is_a_problem_500_without_details(settings: Settings, fast: bool) -> None:
    app = create_app(settings)
    assert isinstance(app, CourseFlow)
    if not fast:
        app.express = None
    with TestClient(app, raise_server_exceptions=False) as client:

        async def broken(*_: object, **__: object) -> None:
            raise RuntimeError("secret internals")

        client.app.state.services.intake.accept = broken  # type: ignore[attr-defined]
        response = client.post("/enroll", json={"course_id": 1, "student_id": 1, "idempotency_key": "a"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret internals" not in response.text
