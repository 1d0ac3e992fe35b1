"""Hostile and careless input: a clear 4xx naming the field, never a 5xx, nothing queued or half-done."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.conftest import StartWorkers
from tests.helpers import Conn, create_course, enroll, wait_decided

JSON_HEADERS = {"Content-Type": "application/json"}

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def queued(rds: redis.Redis) -> int:
    return int(rds.xlen(KEYS.requests))


def _problem(response: Any, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["field"] == field and body["title"] and body["type"]
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"course_id": 9, "capacity": 1, "title": "Course", "opens_at": "9999-12-31T23:59:59-14:00"}, "opens_at"),
        ({"course_id": 9, "capacity": 1, "title": "Course", "closes_at": "1999-12-31T23:59:59Z"}, "closes_at"),
        ({"course_id": 9, "capacity": 1, "title": "Course", "opens_at": "0001-01-01T00:00:00+14:00"}, "opens_at"),
        ({"course_id": 9, "capacity": 1, "title": "Course", "opens_at": "2026-12-01T09:00:00" + "0" * 80}, "opens_at"),
        ({"course_id": 9, "capacity": 1, "title": "Course", "opens_at": "2030-01-01T09:00:00+14:00:30"}, "opens_at"),
        ({"course_id": 9, "capacity": 1, "title": "Course", "opens_at": "2030-01-01T09:00:00+23:59"}, "opens_at"),
        ({"course_id": 9, "capacity": 1, "title": "x" * 201}, "title"),
        ({"course_id": 9, "capacity": 1, "title": "line\nbreak"}, "title"),
        ({"course_id": 9, "capacity": 1_000_001, "title": "Course"}, "capacity"),
        ({"course_id": 2**63, "capacity": 1, "title": "Course"}, "course_id"),
        ({"course_id": 9, "capacity": 1, "extra": {"a": 1}}, "extra"),
    ],
)
def test_course_fields_out_of_range_are_422(client: TestClient, db: Conn, body: dict[str, Any], field: str) -> None:
    _problem(client.post("/api/v1/courses", json=body), 422, field)
    assert db.execute("SELECT count(*) FROM courses").fetchone() == (0,)


def test_a_window_patch_out_of_range_is_422(client: TestClient) -> None:
    create_course(client, 1, 5)
    _problem(client.patch("/api/v1/courses/1", json={"opens_at": "9999-12-31T23:59:59-14:00"}), 422, "opens_at")
    _problem(client.patch("/api/v1/courses/1", json={}), 422, "body")
    assert client.get("/api/v1/courses/1").json()["opens_at"] is None
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        (b'{"course_id": ' + b"[" * 1000 + b"]" * 1000 + b', "idempotency_key": "k"}', 422, "course_id"),
        (b"[" * 1000 + b"]" * 1000, 422, "body"),
        (b'{"student_id": 1, "course_id": 1, "idempotency_key": "\xff\xfe"}', 400, "body"),
        (b'{"student_id": 1, "course_id": 1, "course_id": 2, "idempotency_key": "k"}', 422, "course_id"),
        (b'{"student_id": 1, "course_id": 1, "idempotency_key": "k", "idempotency_key": "j"}', 422, "idempotency_key"),
        (b'{"student_id": 1, "course_id": 1, "idempotency_key": "k"} trailing', 400, "body"),
        (b'{"student_id": 1, "course_id": 1, "idempotency_key": "' + b"k" * 129 + b'"}', 422, "idempotency_key"),
        (b'{"student_id": 1, "course_id": 1, "course\\u005fid": 2, "idempotency_key": "k"}', 422, "course_id"),
    ],
    ids=[
        "deep-field",
        "deep-body",
        "invalid-utf8",
        "duplicate-key",
        "duplicate-key-2",
        "trailing",
        "long-key",
        "escaped-duplicate-key",
    ],
)
def test_malformed_bodies_are_4xx(client: TestClient, rds: redis.Redis, raw: bytes, status: int, field: str) -> None:
    create_course(client, 1, 10)
    _problem(client.post("/api/v1/enrollments", content=raw, headers=JSON_HEADERS), status, field)
    assert queued(rds) == 0


def test_a_value_that_names_a_field_is_no_duplicate_key(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    raw = b'{"student_id": 1, "course_id": 1, "idempotency_key": "course_id"}'
    assert client.post("/api/v1/enrollments", content=raw, headers=JSON_HEADERS).status_code == 202
    assert queued(rds) == 1


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/evil+json",
        "text/json",
        "application/json; charset=latin-1",
        None,
    ],
)
def test_a_body_that_is_not_json_is_415(client: TestClient, rds: redis.Redis, content_type: str | None) -> None:
    create_course(client, 1, 10)
    raw = b'{"student_id": 1, "course_id": 1, "idempotency_key": "k"}'
    headers = {} if content_type is None else {"Content-Type": content_type}
    _problem(client.post("/enroll", content=raw, headers=headers), 415, "Content-Type")
    assert queued(rds) == 0
    charset = client.post("/enroll", content=raw, headers={"Content-Type": "application/json; charset=utf-8"})
    assert charset.status_code == 202


def test_a_compressed_body_is_415(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    raw = b'{"student_id": 1, "course_id": 1, "idempotency_key": "k"}'
    headers = JSON_HEADERS | {"Content-Encoding": "gzip"}
    _problem(client.post("/enroll", content=raw, headers=headers), 415, "Content-Encoding")
    assert queued(rds) == 0


def test_the_idempotency_key_header_is_utf8_and_single(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    body = {"student_id": 1, "course_id": 1}
    key = "clé".encode()
    first = client.post("/enroll", json=body, headers=[(b"Idempotency-Key", key)])
    again = client.post("/enroll", json=body | {"idempotency_key": "clé"})
    assert first.status_code == 202 and again.json()["request_id"] == first.json()["request_id"]
    twice = [(b"Idempotency-Key", b"a"), (b"Idempotency-Key", b"b")]
    _problem(client.post("/enroll", json=body, headers=twice), 400, "Idempotency-Key")
    assert queued(rds) == 1


def test_bodies_are_bounded_while_they_are_read(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    big = b'{"student_id": 1, "course_id": 1, "idempotency_key": "' + b"k" * 20_000 + b'"}'
    _problem(client.post("/enroll", content=big, headers=JSON_HEADERS), 413, "body")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds as the chunks arrive
        yield b'{"student_id": 1, "course_id": 1, "idempotency_key": "'
        for _ in range(100):
            yield b"k" * 1000
        yield b'"}'

    _problem(client.post("/enroll", content=chunks(), headers=JSON_HEADERS), 413, "body")
    assert queued(rds) == 0


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/courses/%C2%B2", "course_id"),
        ("/api/v1/courses/%D9%A1", "course_id"),
        ("/api/v1/courses/99999999999999999999", "course_id"),
        ("/api/v1/courses/-1", "course_id"),
        ("/api/v1/courses/1/events?limit=%D9%A1", "limit"),
        ("/api/v1/courses/1/events?limit=0", "limit"),
        ("/api/v1/courses/1/waitlist?after=1180591620717411303424", "after"),
        ("/api/v1/courses/1/waitlist?after=%C2%B2", "after"),
        ("/api/v1/students/1180591620717411303424/events", "student_id"),
        ("/metrics?course_id=%C2%B2", "course_id"),
        ("/api/v1/enrollments/%FF", "request_id"),
        ("/api/v1/courses/1e0", "course_id"),
        ("/api/v1/courses/1.0", "course_id"),
        ("/api/v1/courses/+1", "course_id"),
        ("/api/v1/courses/1/events?limit=1e2", "limit"),
        ("/metrics?course_id=1.0", "course_id"),
        ("/api/v1/courses?after=%C2%B2", "after"),
        ("/api/v1/courses?limit=0", "limit"),
        ("/api/v1/dead-letters?limit=501", "limit"),
        ("/api/v1/dead-letters?limit=1e2", "limit"),
    ],
)
def test_path_and_query_integers_are_ascii_and_within_range(client: TestClient, path: str, field: str) -> None:
    create_course(client, 1, 10)
    problem = _problem(client.get(path), 422, field)
    where = "query" if "?" in path else "path"
    assert problem["errors"] == [{"field": field, "in": where, "detail": problem["errors"][0]["detail"]}]


def test_a_parameter_given_twice_is_refused(client: TestClient) -> None:
    create_course(client, 1, 10)
    _problem(client.get("/api/v1/courses/1/events?limit=1&limit=2"), 400, "limit")


def test_a_body_field_at_fault_is_named_with_a_json_pointer(client: TestClient) -> None:
    create_course(client, 1, 10)
    answer = client.post("/api/v1/enrollments", json={"course_id": 1, "student_id": 0, "idempotency_key": "k"})
    problem = _problem(answer, 422, "student_id")
    assert problem["errors"] == [
        {"field": "student_id", "in": "body", "pointer": "/student_id", "detail": problem["errors"][0]["detail"]}
    ]
    assert problem["type"] == "urn:courseflow:problem:invalid_input" and problem["title"] == "Invalid input"


def test_routing_errors_are_problem_details_too(client: TestClient) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    wrong = client.put("/api/v1/courses/1", json={})
    assert wrong.status_code == 405 and wrong.headers["content-type"] == "application/problem+json"
    # One route per method: `Allow` still names every method the path takes.
    assert wrong.headers["allow"] == "GET, HEAD, PATCH"
    # No redirect built from the client's Host header for a trailing slash.
    slash = client.post("/api/v1/enrollments/", json={}, headers={"Host": "evil.example"}, follow_redirects=False)
    assert slash.status_code == 404 and "location" not in slash.headers


def test_an_unforeseen_error_is_a_problem_500_without_details(settings: Settings) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        def broken(*_: object, **__: object) -> None:
            raise RuntimeError("secret internals")

        client.app.state.services.db = broken  # type: ignore[attr-defined]
        response = client.get("/api/v1/courses/1")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret internals" not in response.text


def test_a_course_row_that_cannot_be_read_never_takes_metrics_down(
    client: TestClient, db: Conn, start_workers: StartWorkers
) -> None:
    """A row written before the range check (year 10000 in UTC) must not break anything for other courses."""
    create_course(client, 1, 1)
    db.execute("INSERT INTO courses (course_id, capacity, opens_at) VALUES (2, 5, '9999-12-31T23:59:59-14:00')")
    db.execute(
        "INSERT INTO course_seats (course_id, title, capacity, opens_at)"
        " SELECT course_id, title, capacity, opens_at FROM courses WHERE course_id = 2"
    )
    enroll(client, 1, 1)
    enroll(client, 1, 2)  # Redis never heard of course 2: intake learns it from PostgreSQL
    start_workers()
    wait_decided(db, 1)
    assert client.get("/metrics").status_code == 200
    assert [c["course_id"] for c in client.get("/metrics").json()["courses"]] == [1, 2]
    assert client.get("/api/v1/courses/2").status_code == 200
    assert client.patch("/api/v1/courses/2", json={"capacity": 6}).status_code == 200


# ---- ids: safe integers everywhere a client names one (RFC 7493: at most 2^53 - 1) ---------------------------

SAFE = 2**53 - 1


def test_the_largest_safe_id_works_and_the_next_two_are_refused(client: TestClient, db: Conn) -> None:
    """The board once merged 2^53 and 2^53 + 1 into one row: neither can be created now, so none can be merged."""
    created = client.post("/api/v1/courses", json={"course_id": SAFE, "capacity": 1, "title": "Largest"})
    assert created.status_code == 201 and created.json()["course_id"] == SAFE
    for beyond in (SAFE + 1, SAFE + 2):
        _problem(
            client.post("/api/v1/courses", json={"course_id": beyond, "capacity": 1, "title": "T"}), 422, "course_id"
        )
    assert db.execute("SELECT array_agg(course_id) FROM courses").fetchone() == ([SAFE],)
    assert client.get(f"/api/v1/courses/{SAFE}").json()["course_id"] == SAFE


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"/api/v1/courses/{SAFE + 1}", "course_id"),
        (f"/api/v1/courses/{SAFE + 1}/waitlist", "course_id"),
        (f"/api/v1/courses?after={SAFE + 1}", "after"),
        (f"/api/v1/courses/1/events?after={SAFE + 1}", "after"),
        (f"/api/v1/students/{SAFE + 1}/enrollments", "student_id"),
        (f"/api/v1/students/{SAFE + 1}/priority", "student_id"),
        (f"/metrics?course_id={SAFE + 1}", "course_id"),
    ],
)
def test_an_id_beyond_the_safe_bound_in_a_path_or_query_is_422(client: TestClient, path: str, field: str) -> None:
    create_course(client, 1, 10)
    problem = _problem(client.get(path), 422, field)
    assert str(SAFE) in problem["detail"]


@pytest.mark.parametrize("field", ["course_id", "student_id"])
def test_an_enrollment_naming_an_id_beyond_the_safe_bound_is_422(
    client: TestClient, rds: redis.Redis, field: str
) -> None:
    create_course(client, 1, 10)
    body = {"course_id": 1, "student_id": 1, "idempotency_key": "k"} | {field: SAFE + 1}
    _problem(client.post("/api/v1/enrollments", json=body), 422, field)
    assert queued(rds) == 0


def test_a_live_stream_resuming_beyond_the_safe_bound_is_refused(client: TestClient) -> None:
    create_course(client, 1, 10)
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(SAFE + 1)}
    _problem(client.get("/api/v1/courses/1/events", headers=headers), 400, "Last-Event-ID")
    for query, field in ((f"course_id={SAFE + 1}", "course_id"), (f"course_id=1&after={SAFE + 1}", "after")):
        with client.websocket_connect(f"/api/v1/ws?{query}") as socket:
            refused = socket.receive_json()
        assert (refused["type"], refused["status"], refused["field"]) == ("error", 422, field)


# ---- the door's last holes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["2027-W01-1T09:00:00Z", "20270101T090000Z", "2027-01-01T09:00:00,5Z", "2027-01-01T09:00:00+0100"]
)
def test_timestamps_are_rfc_3339_only(client: TestClient, db: Conn, value: str) -> None:
    body = {"course_id": 9, "capacity": 1, "title": "T", "opens_at": value}
    problem = _problem(client.post("/api/v1/courses", json=body), 422, "opens_at")
    assert "RFC 3339" in problem["detail"]
    create_course(client, 1, 5)
    _problem(client.patch("/api/v1/courses/1", json={"closes_at": value}), 422, "closes_at")
    assert db.execute(
        "SELECT count(*) FROM courses WHERE opens_at IS NOT NULL OR closes_at IS NOT NULL"
    ).fetchone() == (0,)


@pytest.mark.parametrize("title", [None, "", "   ", "\t \u00a0"])
def test_a_course_title_is_required_and_not_blank(client: TestClient, db: Conn, title: str | None) -> None:
    body: dict[str, Any] = {"course_id": 9, "capacity": 1} | ({} if title is None else {"title": title})
    problem = _problem(client.post("/api/v1/courses", json=body), 422, "title")
    assert problem["detail"] == ("title is required" if title is None else "title must not be blank")
    assert db.execute("SELECT count(*) FROM courses").fetchone() == (0,)


def test_the_documented_title_rule_is_the_enforced_one(client: TestClient) -> None:
    """The board's form reads its limits from the OpenAPI document: it must say what the API enforces."""
    schema = client.get("/openapi.json").json()["components"]["schemas"]["NewCourse"]
    assert "title" in schema["required"] and schema["properties"]["title"]["pattern"] == "\\S"


def test_a_lone_surrogate_is_reported_as_such(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    raw = b'{"course_id": 1, "student_id": 1, "idempotency_key": "\\ud800"}'
    problem = _problem(client.post("/api/v1/enrollments", content=raw, headers=JSON_HEADERS), 400, "body")
    assert "lone UTF-16 surrogate" in problem["detail"] and "truncated" not in problem["detail"]
    assert queued(rds) == 0


@pytest.mark.parametrize("escape", [b"\\u12", b"\\uzzzz"])
def test_a_unicode_escape_without_four_hex_digits_is_a_400(client: TestClient, rds: redis.Redis, escape: bytes) -> None:
    create_course(client, 1, 10)
    raw = b'{"course_id": 1, "student_id": 1, "idempotency_key": "' + escape + b'"}'
    problem = _problem(client.post("/api/v1/enrollments", content=raw, headers=JSON_HEADERS), 400, "body")
    assert problem["detail"].startswith("body is not valid JSON")
    assert queued(rds) == 0


def test_a_field_name_with_a_backtick_is_reported_whole(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    raw = b'{"course_id": 1, "student_id": 1, "idempotency_key": "k", "a`b": 1}'
    problem = _problem(client.post("/api/v1/enrollments", content=raw, headers=JSON_HEADERS), 422, "a`b")
    assert problem["detail"] == "a`b is not a known field"
    assert queued(rds) == 0


def test_two_content_types_are_a_400(client: TestClient, rds: redis.Redis) -> None:
    create_course(client, 1, 10)
    body = b'{"course_id": 1, "student_id": 1, "idempotency_key": "k"}'
    for second in (b"text/plain", b"application/json"):
        headers = [(b"Content-Type", b"application/json"), (b"Content-Type", second)]
        problem = _problem(client.post("/api/v1/enrollments", content=body, headers=headers), 400, "Content-Type")
        assert problem["errors"][0]["in"] == "header"
    assert queued(rds) == 0
