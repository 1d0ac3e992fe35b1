"""The `courseflow` command as a user runs it, in real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import courseflow_local as services
import httpx2 as httpx

from courseflow.platform.config import Settings
from tests.conftest import server_dir
from tests.helpers import Conn, wait_until


def courseflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "courseflow", *args], env=env, capture_output=True, text=True, timeout=120
    )


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    urls = {"DATABASE_URL": settings.postgres.url, "REDIS_URL": settings.redis.url}
    if settings.postgres.migration_url is not None:  # for `migrate` and `rebuild`
        urls["MIGRATION_DATABASE_URL"] = settings.postgres.migration_url
    return os.environ | urls | extra


def test_migrate_twice_applies_nothing_new(settings: Settings) -> None:
    result = courseflow("migrate", env=server_env(settings))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_run_serves_decides_and_stops_cleanly_on_sigterm(settings: Settings, db: Conn, tmp_path: Path) -> None:
    port = services.free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "courseflow", "run"],
        env=server_env(settings, SERVER_PORT=str(port)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/metrics?course_id=1", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=60, what="`courseflow run` to serve the demo course")
        body = {"student_id": 123, "course_id": 1, "idempotency_key": "unique-key-123", "priority": 10}
        accepted = httpx.post(f"{base}/enroll", json=body, timeout=5)
        assert accepted.status_code == 202
        request_id = accepted.json()["request_id"]
        wait_until(
            lambda: httpx.get(f"{base}/api/v1/enrollments/{request_id}", timeout=5).json()["status"] == "granted",
            what="the supervised workers to grant the seat",
        )
        assert httpx.get(f"{base}/metrics?course_id=1", timeout=5).json() == {
            "course_id": 1,
            "queue_depth": 0,
            "seats_taken": 1,
            "capacity": 10,
            "waitlist_length": 0,
            "status": "open",
        }
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "run.log").read_text()
    assert "worker worker-1 stopped" in output and "worker worker-2 stopped" in output, output
    try:
        httpx.get(f"{base}/health", timeout=1)
        raise AssertionError("the API still answers after `courseflow run` stopped")
    except httpx.TransportError:
        pass


def test_services_up_prints_exports_and_down_stops() -> None:
    with server_dir() as data_dir:
        check_services_cli(data_dir)


def check_services_cli(data_dir: Path) -> None:
    env = os.environ | {
        "COURSEFLOW_POSTGRES_PORT": str(services.free_port()),
        "COURSEFLOW_REDIS_PORT": str(services.free_port()),
    }
    try:
        up = courseflow("services", "up", "--data-dir", str(data_dir), env=env)
        assert up.returncode == 0, up.stderr
        lines = up.stdout.splitlines()
        assert lines[0].startswith("export DATABASE_URL=postgresql://")
        assert lines[1].startswith("export REDIS_URL=redis://courseflow:")
        assert courseflow("services", "up", "--data-dir", str(data_dir), env=env).stdout == up.stdout
        status = courseflow("services", "status", "--data-dir", str(data_dir), env=env).stdout
        assert "postgres: running" in status and "redis: running" in status
    finally:
        courseflow("services", "down", "--data-dir", str(data_dir), env=env)
    status = courseflow("services", "status", "--data-dir", str(data_dir), env=env).stdout
    assert "running" not in status, status
