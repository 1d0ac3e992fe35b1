"""Structured logs: one JSON object a line for every logger, context fields, access logs, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import psycopg

from courseflow.eventstore import store
from courseflow.platform.config import Settings
from tests.conftest import Servers, serving_api
from tests.helpers import wait_until
from tests.trust import SECRET, bearer, secured
from tests.unit.test_logs import FORGED, REQUIRED, lines


def test_the_api_process_logs_json_with_access_fields_and_no_secret(
    servers: Servers, settings: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(settings.postgres.url, autocommit=True) as conn:
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
    with psycopg.connect(settings.postgres.url, autocommit=True) as conn:
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
