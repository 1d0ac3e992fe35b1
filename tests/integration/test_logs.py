"""Structured logs: one JSON object a line for every logger, context fields, access logs, no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import psycopg
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from courseflow.eventstore import store
from courseflow.platform import logs
from courseflow.platform.config import Settings
from tests.conftest import Servers, serving_api
from tests.helpers import wait_until
from tests.trust import SECRET, bearer, secured

REQUIRED = ("timestamp", "level", "logger", "message")
# Shaped like a JWT, signed with nothing this server knows.
FORGED = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3Iiwicm9sZSI6InN0dWRlbnQifQ.c2lnbmF0dXJlLW5vdC12YWxpZA"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """`logs.configure` writing into a buffer; the root logger and structlog as they were afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        yield out
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_stdlib_record_is_one_json_line_with_the_bound_context(stream: io.StringIO) -> None:
    logs.configure({"LOG_FORMAT": "json"}, stream)
    with structlog.contextvars.bound_contextvars(request_id="r-1", course_id=101, student_id=42):
        logging.getLogger("courseflow.test").info("decided %s", "r-1")
    logging.getLogger("courseflow.test").info("after")
    first, after = lines(stream.getvalue())
    assert first["message"] == "decided r-1" and "event" not in first
    assert (first["level"], first["logger"]) == ("info", "courseflow.test")
    assert first["timestamp"].endswith("Z") and first["timestamp"][:4].isdigit()
    assert (first["request_id"], first["course_id"], first["student_id"]) == ("r-1", 101, 42)
    assert "request_id" not in after and "trace_id" not in after


def test_structlog_loggers_and_settings_share_the_renderer(stream: io.StringIO) -> None:
    logs.configure(Settings(log_format="json", log_level="WARNING"), stream)
    structlog.get_logger("courseflow.native").warning("seat granted", course_id=7)
    logging.getLogger("courseflow.test").info("below the level")
    (line,) = lines(stream.getvalue())
    assert {k: line[k] for k in ("level", "logger", "message", "course_id")} == {
        "level": "warning",
        "logger": "courseflow.native",
        "message": "seat granted",
        "course_id": 7,
    }


def test_secrets_are_masked_in_messages_fields_and_tracebacks(stream: io.StringIO) -> None:
    logs.configure({"LOG_FORMAT": "json"}, stream)
    log = logging.getLogger("courseflow.test")
    log.warning("header Authorization: Bearer abc.def-123 from %s", "postgresql://app:s3cret@db:5432/app")
    try:
        raise ValueError(f"cannot use {FORGED} with redis://:hunter2@cache:6379/0 or password=pw1 host=x")
    except ValueError:
        log.exception("failed")
    structlog.get_logger("courseflow.native").info("token", token=f"Bearer {FORGED}")
    text = stream.getvalue()
    for secret in ("abc.def-123", "s3cret", FORGED, "hunter2", "pw1"):
        assert secret not in text
    warning, failed, token = lines(text)
    assert warning["message"] == "header Authorization: Bearer *** from postgresql://app:***@db:5432/app"
    assert "ValueError: cannot use *** with redis://:***@cache:6379/0" in failed["exception"]
    assert token["token"] == "Bearer ***"


def test_the_current_trace_id_is_a_field(stream: io.StringIO) -> None:
    logs.configure({"LOG_FORMAT": "json"}, stream)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("decide") as span:
        logging.getLogger("courseflow.test").info("inside")
    (line,) = lines(stream.getvalue())
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert len(line["trace_id"]) == 32


def test_console_format_is_for_people_and_bad_values_are_refused(stream: io.StringIO) -> None:
    logs.configure({"LOG_FORMAT": "console"}, stream)
    logging.getLogger("courseflow.test").info("hello %s", "there")
    assert "hello there" in stream.getvalue() and not stream.getvalue().startswith("{")
    with pytest.raises(SystemExit, match="LOG_FORMAT"):
        logs.configure({"LOG_FORMAT": "xml"})
    with pytest.raises(SystemExit, match="LOG_LEVEL"):
        logs.configure({"LOG_LEVEL": "chatty"})


def test_the_api_process_logs_json_with_access_fields_and_no_secret(
    servers: Servers, settings: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        store.create_course(conn, 1, "Logged course", 10, None, None)
    student = bearer(secured(settings), "student", 7)
    token = student["Authorization"].removeprefix("Bearer ")
    with serving_api(servers, tmp_path, LOG_FORMAT="json", ACCESS_LOG="on", AUTH_JWT_SECRET=SECRET) as base:
        accepted = httpx.post(
            f"{base}/api/v1/enrollments", json={"course_id": 1, "idempotency_key": "logs-1"}, headers=student, timeout=5
        )
        assert accepted.status_code == 202, accepted.text
        refused = httpx.get(f"{base}/api/v1/courses/1", headers={"Authorization": f"Bearer {FORGED}"}, timeout=5)
        assert refused.status_code == 401
    text = (tmp_path / "api.log").read_text()
    records = lines(text)  # every line parses as JSON
    assert all(all(key in r for key in REQUIRED) for r in records), text
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    enroll = next(r for r in access if r["path"] == "/api/v1/enrollments")
    assert (enroll["method"], enroll["status"], enroll["level"]) == ("POST", 202, "info")
    assert enroll["client"].startswith("127.0.0.1:")
    assert enroll["request_id"] == accepted.json()["request_id"]
    assert (enroll["course_id"], enroll["student_id"]) == (1, 7)
    assert any(r["path"] == "/api/v1/courses/1" and r["status"] == 401 for r in access)
    assert any(r["logger"].startswith("uvicorn") and r["level"] == "info" for r in records if r not in access)
    for secret in (token, FORGED, urlsplit(servers.database_url).password, urlsplit(servers.redis_url).password):
        assert secret and secret not in text


def test_a_worker_logs_each_decided_request_with_its_ids_at_debug(
    servers: Servers, settings: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        store.create_course(conn, 1, "Logged course", 10, None, None)
    with serving_api(servers, tmp_path, LOG_FORMAT="json") as base:
        body = {"course_id": 1, "student_id": 7, "idempotency_key": "logs-2"}
        accepted = httpx.post(f"{base}/api/v1/enrollments", json=body, timeout=5)
        assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]
    env = os.environ | {
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "courseflow", "worker", "--name", "logs-1"], env=env, stdout=out, stderr=out
        )
    try:
        wait_until(lambda: f"decided {request_id}" in log_path.read_text(), timeout=30, what="the decision logged")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    records = lines(log_path.read_text())
    assert all(all(key in r for key in REQUIRED) for r in records)
    decided = next(r for r in records if r["message"] == f"logs-1: decided {request_id}")
    assert (decided["level"], decided["logger"]) == ("debug", "courseflow.worker")
    assert (decided["request_id"], decided["course_id"], decided["student_id"]) == (request_id, 1, 7)
    assert any(r["message"] == "worker logs-1 starting" for r in records)
    password = urlsplit(servers.database_url).password
    assert password and password not in log_path.read_text()
