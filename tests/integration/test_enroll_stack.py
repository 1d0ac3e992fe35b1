"""The enroll routes pass the app's one middleware stack, traced or not: whatever is added to it runs on them."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from courseflow.http.app import create_app
from courseflow.platform import tracing
from courseflow.platform.config import Settings
from tests.conftest import Servers, reset
from tests.trust import bearer, secured

JSON = {"Content-Type": "application/json"}
ENROLL_PATHS = ("/enroll", "/api/v1/enrollments")


class Recorder:
    """A middleware as anyone might add one: notes each request it sees."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, str]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture(params=[False, True], ids=["untraced", "traced"])
def traced(request: pytest.FixtureRequest) -> Iterator[InMemorySpanExporter | None]:
    if not request.param:
        yield None
        return
    exporter = InMemorySpanExporter()
    tracing.configure("courseflow-test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_a_middleware_added_to_the_app_runs_on_both_enroll_routes(
    settings: Settings, traced: InMemorySpanExporter | None
) -> None:
    seen: list[tuple[str, str]] = []
    app = create_app(settings)
    app.add_middleware(Recorder, seen=seen)
    with TestClient(app) as client:
        assert (
            client.post("/api/v1/courses", json={"course_id": 1, "capacity": 9, "title": "Course"}).status_code == 201
        )
        for n, path in enumerate(ENROLL_PATHS):
            body = {"course_id": 1, "student_id": n + 1, "idempotency_key": "a"}
            assert client.post(path, json=body).status_code == 202
    assert [("POST", path) for path in ENROLL_PATHS] == [s for s in seen if s[1] in ENROLL_PATHS]
    if traced is not None:  # the same stack gave them their server span
        served = [s for s in traced.get_finished_spans() if s.name in {f"POST {p}" for p in ENROLL_PATHS}]
        assert sorted(s.name for s in served) == sorted(f"POST {p}" for p in ENROLL_PATHS)


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


def test_every_refused_enrollment_is_problem_details(settings: Settings, servers: Servers) -> None:
    configured = secured(
        msgspec.structs.replace(
            settings, limits=msgspec.structs.replace(settings.limits, student_writes="3 per 60 seconds")
        )
    )
    reset(servers)
    with TestClient(create_app(configured)) as client:
        registrar = bearer(configured, "registrar")
        for course in (1, 2):
            created = client.post(
                "/api/v1/courses", json={"course_id": course, "capacity": 9, "title": "Course"}, headers=registrar
            )
            assert created.status_code == 201
        answers = [client.post(p, content=b, headers=h) for p, b, h in _requests(configured)]
    assert [a.status_code for a in answers] == [
        *(401, 401, 400, 422, 422, 415, 413, 403, 403, 404),
        *(202, 202, 409, 202, 202, 202, 202, 429, 429),
    ]
    for answer in answers:
        if answer.status_code >= 400:
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["status"] == answer.status_code
    assert answers[10].json()["request_id"] == answers[11].json()["request_id"]
    assert [answers[n].json()["field"] for n in (3, 4, 6, 7, 8)] == [
        "seat",
        "course_id",
        "body",
        "student_id",
        "priority",
    ]
    assert answers[0].headers["www-authenticate"].startswith("Bearer ")
    assert "retry-after" in answers[-1].headers


def _count(route: str, status: str) -> float:
    labels = {"route": route, "method": "POST", "status": status}
    return REGISTRY.get_sample_value("courseflow_http_request_duration_seconds_count", labels) or 0.0


def test_enrollments_are_timed_by_route_and_answered_503_while_draining(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert (
            client.post("/api/v1/courses", json={"course_id": 1, "capacity": 9, "title": "Course"}).status_code == 201
        )
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


def test_an_unforeseen_error_in_an_enrollment_is_a_problem_500_without_details(settings: Settings) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        async def broken(*_: object, **__: object) -> None:
            raise RuntimeError("secret internals")

        client.app.state.services.intake.accept = broken  # type: ignore[attr-defined]
        response = client.post("/enroll", json={"course_id": 1, "student_id": 1, "idempotency_key": "a"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret internals" not in response.text
