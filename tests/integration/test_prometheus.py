"""Prometheus series on real servers: what the API, the workers and the projector record, as a scraper reads it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import courseflow_local as services
import httpx2 as httpx
import msgspec
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.http.monitoring import Recently
from courseflow.platform.config import Settings
from tests.conftest import Servers, StartWorkers, serving_api
from tests.helpers import create_course, enroll, wait_decided, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
PROMETHEUS_TEXT = {"Accept": "text/plain"}


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics", headers=PROMETHEUS_TEXT)
    assert response.status_code == 200, response.text
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_the_pipeline_series_move_as_requests_are_decided(
    client: TestClient, db: psycopg.Connection[psycopg.rows.TupleRow], start_workers: StartWorkers
) -> None:
    # Every scrape reads the servers afresh, as one a second later would.
    client.app.state.recently = Recently(max_age_s=0)  # type: ignore[attr-defined]
    create_course(client, 7, capacity=2)
    before, started = scrape(client), time.monotonic()
    for student in (1, 2, 3):
        enroll(client, student, 7)
    assert client.get("/no/such/path/42").status_code == 404

    queued = scrape(client)
    assert moved(before, queued, "courseflow_requests_accepted_total") == 3
    assert value(queued, "courseflow_queue_depth") == 3
    assert value(queued, "courseflow_course_queue_depth", course_id="7") == 3
    assert value(queued, "courseflow_course_capacity", course_id="7") == 2
    assert value(queued, "courseflow_stream_consumer_lag") == 3  # no worker has read them yet
    enrolled = {"route": "/enroll", "method": "POST", "status": "2xx"}
    assert moved(before, queued, "courseflow_http_request_duration_seconds_count", **enrolled) == 3
    # Raw paths never become labels.
    unmatched = {"route": "unmatched", "method": "GET", "status": "4xx"}
    assert moved(before, queued, "courseflow_http_request_duration_seconds_count", **unmatched) == 1
    assert not any("/no/such" in dict(labels).get("route", "") for _, labels in queued)

    start_workers(1)
    wait_decided(db, 3)
    wait_until(lambda: value(scrape(client), "courseflow_queue_depth") == 0, what="the queue to empty")
    decided = scrape(client)
    assert moved(before, decided, "courseflow_decisions_total", outcome="granted") == 2
    assert moved(before, decided, "courseflow_decisions_total", outcome="waitlisted") == 1
    assert moved(before, decided, "courseflow_accept_to_decision_seconds_count") == 3
    # In seconds, and no wait longer than the test itself.
    waited = moved(before, decided, "courseflow_accept_to_decision_seconds_sum")
    assert 0 < waited <= 3 * (time.monotonic() - started)
    assert moved(before, decided, "courseflow_decision_batch_size_sum") == 3
    assert moved(before, decided, "courseflow_decision_transaction_seconds_count") >= 1
    assert moved(before, decided, "courseflow_projected_events_total") >= 3  # each decision, carrying its request
    assert value(decided, "courseflow_workers_alive") >= 1
    assert value(decided, "courseflow_course_seats_taken", course_id="7") == 2
    assert value(decided, "courseflow_stream_pending_entries") == 0

    # A replay is counted apart from a new request: here answered with its outcome.
    replay = client.post("/enroll", json={"student_id": 1, "course_id": 7, "idempotency_key": "s1-c7", "priority": 0})
    assert replay.status_code == 200
    assert moved(decided, scrape(client), "courseflow_requests_replayed_total") == 1


def test_text_for_the_scraper_json_for_everyone_else(client: TestClient) -> None:
    create_course(client, 8, capacity=1)
    text = client.get("/metrics", headers=PROMETHEUS_TEXT)
    assert text.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    openmetrics = client.get("/api/v1/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    names = {f.name for f in text_string_to_metric_families(text.text)}
    # Besides prometheus-client's own process and runtime series, every name is ours.
    assert {n for n in names if not n.startswith(("courseflow_", "python_", "process_"))} == set()

    seed = client.get("/metrics").json()
    assert {"queue_depth", "seats_taken", "capacity", "status", "courses"} <= seed.keys()
    assert seed["latency"] == {"p50_ms": None, "p95_ms": None, "p99_ms": None}  # nothing decided yet


def test_latency_percentiles_once_requests_are_decided(
    client: TestClient, db: psycopg.Connection[psycopg.rows.TupleRow], start_workers: StartWorkers
) -> None:
    create_course(client, 9, capacity=5)
    start_workers(1)
    for student in range(1, 5):
        enroll(client, student, 9)
    wait_decided(db, 4)
    latency = client.get("/metrics").json()["latency"]
    assert 0 <= latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] < 60_000


def test_refusals_at_the_gate_are_counted_by_route_template(settings: Settings) -> None:
    secured = msgspec.structs.replace(settings, auth=msgspec.structs.replace(settings.auth, jwt_secret="s" * 32))
    with TestClient(create_app(secured)) as client:
        before = scrape(client)
        assert client.get("/api/v1/enrollments/8a4c1b7e-2f1c-4a8e-9a39-0a2a9f8d6c11").status_code == 401
        after = scrape(client)
    assert moved(before, after, "courseflow_auth_failures_total") == 1
    refused = {"route": "/api/v1/enrollments/{request_id}", "method": "GET", "status": "4xx"}
    assert moved(before, after, "courseflow_http_request_duration_seconds_count", **refused) == 1


def test_the_api_shows_the_workers_series_in_multiprocess_mode(
    servers: Servers, settings: Settings, tmp_path: Path
) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env: Mapping[str, str] = {
        "DATABASE_URL": settings.postgres.url,
        "REDIS_URL": settings.redis.url,
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "BLOCK_MS": "100",
    }
    with serving_api(servers, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(shared)) as base:
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "courseflow", "worker", "--name", "metrics-worker"],
            env=os.environ | env,
            stdout=log,
            stderr=log,
        )
        try:
            assert (
                httpx.post(
                    f"{base}/api/v1/courses", json={"course_id": 5, "capacity": 3, "title": "Course"}
                ).status_code
                == 201
            )
            body = {"course_id": 5, "student_id": 1, "idempotency_key": "s1-c5"}
            assert httpx.post(f"{base}/enroll", json=body).status_code == 202

            def api_scrape() -> Samples:
                return parse(httpx.get(f"{base}/metrics", headers=PROMETHEUS_TEXT, timeout=5).text)

            wait_until(
                lambda: value(api_scrape(), "courseflow_decisions_total", outcome="granted") == 1,
                timeout=30,
                what="the worker's decision in the API's /metrics",
            )
            samples = api_scrape()
            assert value(samples, "courseflow_workers_alive") == 1
            assert value(samples, "courseflow_accept_to_decision_seconds_count") == 1
            assert value(samples, "courseflow_requests_accepted_total") == 1  # the API process's own
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            log.close()


def test_courseflow_run_shares_one_fresh_metrics_directory(settings: Settings, tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    (shared / "counter_999999.db").write_bytes(b"an earlier run's")  # would break every scrape if kept
    port = services.free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "DATABASE_URL": settings.postgres.url,
        "MIGRATION_DATABASE_URL": settings.postgres.owner_url,
        "REDIS_URL": settings.redis.url,
        "SERVER_PORT": str(port),
        "COURSEFLOW_DATA_DIR": str(tmp_path),
        "BLOCK_MS": "100",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen([sys.executable, "-m", "courseflow", "run"], env=env, stdout=log, stderr=log)
    try:

        def api_scrape() -> Samples:
            try:
                return parse(httpx.get(f"{base}/metrics", headers=PROMETHEUS_TEXT, timeout=5).text)
            except httpx.TransportError:
                return {}

        wait_until(lambda: value(api_scrape(), "courseflow_workers_alive") == 2, timeout=60, what="two live workers")
        body = {"course_id": 1, "student_id": 1, "idempotency_key": "s1-c1"}  # the demo course
        assert httpx.post(f"{base}/enroll", json=body, timeout=5).status_code == 202
        wait_until(
            lambda: value(api_scrape(), "courseflow_decisions_total", outcome="granted") == 1,
            what="a supervised worker's decision in the API's /metrics",
        )
        wait_until(lambda: value(api_scrape(), "courseflow_projected_events_total") >= 2, what="the projector's series")
    finally:
        run.terminate()
        run.wait(timeout=60)
        log.close()
    assert not (shared / "counter_999999.db").exists()


def test_refused_enrollments_are_counted_by_reason(settings: Settings) -> None:
    limited = msgspec.structs.replace(
        settings, limits=msgspec.structs.replace(settings.limits, registrar="2 per minute", anonymous="off")
    )
    with TestClient(create_app(limited)) as client:  # development mode: every caller is a registrar
        before = scrape(client)
        body = {"course_id": 404, "student_id": 1, "idempotency_key": "k"}
        assert [client.post("/enroll", json=body).status_code for _ in range(3)] == [404, 404, 429]
        after = scrape(client)
    assert moved(before, after, "courseflow_requests_refused_total", reason="unknown_course") == 2
    assert moved(before, after, "courseflow_requests_refused_total", reason="rate_limited") == 1
    assert moved(before, after, "courseflow_rate_limited_total", role="registrar") == 1


def test_a_refusal_is_counted_once_by_the_answer_it_gets(settings: Settings) -> None:
    limited = msgspec.structs.replace(
        settings, limits=msgspec.structs.replace(settings.limits, registrar="1 per minute", anonymous="off")
    )
    with TestClient(create_app(limited)) as client:
        before = scrape(client)
        invalid = {"course_id": 0, "student_id": 1, "idempotency_key": "k"}
        # The first is refused as invalid; the second would be too, but is over the limit first: a 429.
        assert [client.post("/enroll", json=invalid).status_code for _ in range(2)] == [422, 429]
        after = scrape(client)
    assert moved(before, after, "courseflow_requests_refused_total", reason="invalid") == 1
    assert moved(before, after, "courseflow_requests_refused_total", reason="rate_limited") == 1
