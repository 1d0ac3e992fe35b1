"""/metrics at a bounded cost: every `Accept` answers 200 or 406, the JSON answer stays small whatever the
number of courses (totals and the first page for everyone, later pages for registrars and services), computed
once a second."""

from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.http.monitoring import Recently
from courseflow.http.payloads import MAX_METRICS_PAGE
from courseflow.platform.config import Settings
from projections.projector import Projector
from tests.helpers import create_course
from tests.trust import bearer, secured

Conn = psycopg.Connection[psycopg.rows.TupleRow]
# The largest id a JavaScript client reads exactly: the longest a listed course can make its entry.
LARGEST_ID = 2**53 - 1
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;"
    "version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,"
    "*/*;q=0.2"
)
STRANGE_ACCEPTS = [
    "application/openmetrics-text; version=1.x",
    "text/plain; version=abc",
    "text/plain; version=",
    "text/plain; version=2",
    "text/plain; version=1.0.0.0",
    "text/plain; version=-1",
    "application/openmetrics-text; version=0.0.1",
    "application/openmetrics-text; version=2.0.0",
    "application/openmetrics-text; version=1.0.0; escaping=nonsense",
    "application/openmetrics-text; version",
    "application/openmetrics-text;;;version=1.0.0",
    "text/plain; q=abc",
    "text/plain; q=2",
    "text/plain; q=0",
    "application/json; q=0",
    "application/json; q=0.5, text/plain; version=x; q=1",
    "text/html",
    "image/png",
    "text/*",
    "*/*",
    "application/*",
    "*",
    ";",
    ",,,",
    "=",
    "q=1",
    "text/plain; version=\u00e9",
    "\u0000",
    "a" * 4000,
    ", ".join(["text/plain; version=bad"] * 500),
    "application/openmetrics-text; version=1.0.0" + "; x=y" * 300,
    PROMETHEUS_3,
]


@pytest.mark.parametrize("accept", STRANGE_ACCEPTS, ids=range(len(STRANGE_ACCEPTS)))
def test_every_accept_is_answered_200_or_406_never_an_error(client: TestClient, accept: str) -> None:
    response = client.get("/metrics", headers={b"Accept": accept.encode()})  # as sent: bytes, UTF-8 and all
    assert response.status_code in (200, 406), response.text
    if response.status_code == 406:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["field"] == "Accept"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("", "application/json"),
        ("*/*", "application/json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),
        ("text/plain", "text/plain; version=0.0.4; charset=utf-8"),
        ("text/plain; version=1.0.0", "text/plain; version=1.0.0; charset=utf-8; escaping=underscores"),
        ("application/openmetrics-text", "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (PROMETHEUS_3, "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"),
        # A version never written is passed over for the next range asked for.
        ("text/plain; version=abc, application/json; q=0.1", "application/json"),
        ("application/openmetrics-text; version=1.x, text/plain; q=0.5", "text/plain; version=0.0.4; charset=utf-8"),
    ],
)
def test_accept_chooses_the_answer(client: TestClient, accept: str, content_type: str) -> None:
    response = client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type


@pytest.mark.parametrize(
    "accept", ["application/openmetrics-text; version=1.x", "text/plain; version=abc", "image/png"]
)
def test_what_cannot_be_written_is_a_406_saying_what_can(client: TestClient, accept: str) -> None:
    response = client.get("/api/v1/metrics", headers={"Accept": accept})
    assert response.status_code == 406
    assert "text/plain (version 0.0.4 or 1.0.0)" in response.json()["detail"]


def many_courses(db: Conn, count: int) -> list[int]:
    """`count` courses straight into the write and read models, with the longest ids a client reads exactly."""
    ids = list(range(LARGEST_ID - count + 1, LARGEST_ID + 1))
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO courses (course_id, title, capacity) VALUES (%s, 'c', 1000000)", [(i,) for i in ids]
        )
        cur.execute(
            "INSERT INTO course_seats (course_id, title, capacity) SELECT course_id, title, capacity FROM courses"
        )
    return ids


def test_two_thousand_courses_answer_totals_and_one_page_in_a_bounded_size(client: TestClient, db: Conn) -> None:
    ids = many_courses(db, 2000)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert len(response.content) < 20_000  # 2,000 courses listed would be over 200 kB
    figures = response.json()
    assert (figures["course_count"], figures["capacity"], figures["status"]) == (2000, 2000 * 1_000_000, "open")
    assert [c["course_id"] for c in figures["courses"]] == ids[:MAX_METRICS_PAGE]
    assert figures["next_after"] == ids[MAX_METRICS_PAGE - 1]

    listed, after = [], 0
    while after is not None:
        page = client.get(f"/metrics?after={after}&limit={MAX_METRICS_PAGE}").json()
        listed += [c["course_id"] for c in page["courses"]]
        after = page["next_after"]
    assert listed == ids  # every course once, in order, and the last page says so
    assert client.get(f"/metrics?limit={MAX_METRICS_PAGE + 1}").status_code == 422


def test_calls_within_a_second_share_one_computation(client: TestClient) -> None:
    now = [1000.0]
    client.app.state.recently = Recently(clock=lambda: now[0])  # type: ignore[attr-defined]
    create_course(client, 1, capacity=10, title="Compilers")
    first = client.get("/metrics").json()
    create_course(client, 2, capacity=5, title="Databases")  # shown by itself at once (`?course_id=`) ...
    assert client.get("/metrics").json() == first  # ... but not in the totals computed within the same second
    now[0] += 1.0
    later = client.get("/metrics").json()
    assert (later["course_count"], later["capacity"]) == (first["course_count"] + 1, first["capacity"] + 5)


def test_anyone_gets_the_first_page_and_only_registrars_and_services_the_pages_after_it(
    settings: Settings, projector: Projector, db: Conn
) -> None:
    ids = many_courses(db, 2 * MAX_METRICS_PAGE)
    configured = secured(settings)
    with TestClient(create_app(configured)) as anyone:
        short = anyone.get("/metrics?limit=10").json()
        assert [c["course_id"] for c in short["courses"]] == ids[:10] and short["next_after"] == ids[9]
        after = f"/metrics?after={ids[MAX_METRICS_PAGE - 1]}"
        assert anyone.get(after).status_code == 401
        assert anyone.get(after, headers=bearer(configured, "student", 7)).status_code == 403
        for role in ("registrar", "service"):
            page = anyone.get(after, headers=bearer(configured, role)).json()
            assert [c["course_id"] for c in page["courses"]] == ids[MAX_METRICS_PAGE:]
