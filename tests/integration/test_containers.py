"""The health checks the Dockerfile and compose.yaml declare, run as a container would against a real API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import courseflow_local as local_servers
import yaml

from tests import containers
from tests.conftest import Servers, serving_api
from tests.containers import ROOT
from tests.helpers import CLOSED_PORT_REDIS

DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = (ROOT / "compose.yaml").read_text()


def _probe(command: list[str], port: int) -> subprocess.CompletedProcess[str]:
    """Run a health check's command here as the container would (its `python` is this interpreter)."""
    assert command[:1] == ["python"], command
    env = os.environ | {"SERVER_PORT": str(port)}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30)


def _image_check() -> list[str]:
    found = [
        containers.healthcheck(i.arguments) for i in containers.instructions(DOCKERFILE) if i.keyword == "HEALTHCHECK"
    ]
    assert found and found[-1] is not None
    return found[-1]


def _compose_api_check() -> list[str]:
    test = yaml.safe_load(COMPOSE)["services"]["api"]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    return list(test[1:])


def test_both_health_checks_pass_on_a_serving_api_and_fail_without_one(api_server: str) -> None:
    port = int(api_server.rsplit(":", 1)[1])
    assert _probe(_image_check(), port).returncode == 0
    assert _probe(_compose_api_check(), port).returncode == 0
    closed = local_servers.free_port()
    assert "Connection refused" in _probe(_image_check(), closed).stderr
    assert "Connection refused" in _probe(_compose_api_check(), closed).stderr


def test_compose_calls_the_api_healthy_only_when_ready(servers: Servers, tmp_path: Path) -> None:
    with serving_api(servers, tmp_path, REDIS_URL=CLOSED_PORT_REDIS) as base:
        port = int(base.rsplit(":", 1)[1])
        # Alive, so an orchestrator leaves it be; not ready, so compose does not call it healthy.
        assert _probe(_image_check(), port).returncode == 0
        not_ready = _probe(_compose_api_check(), port)
        assert not_ready.returncode != 0
        assert "HTTP Error 503" in not_ready.stderr
