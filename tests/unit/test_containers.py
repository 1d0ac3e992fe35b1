"""The Dockerfile and compose.yaml, checked without a Docker engine; each check shown to catch what it guards."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests import containers
from tests.container_checks import compose_problems, dockerfile_problems
from tests.containers import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
DOCKERIGNORE = (ROOT / ".dockerignore").read_text()
COMPOSE = (ROOT / "compose.yaml").read_text()


def edit(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} is not in the file: update this test's edit"
    return text.replace(old, new)


def edit_services(change: Callable[[dict[str, Any]], object]) -> str:
    """compose.yaml with its services changed (YAML anchors resolved; the meaning is unchanged)."""
    compose = yaml.safe_load(COMPOSE)
    change(compose["services"])
    return yaml.safe_dump(compose, sort_keys=False)


def test_the_dockerfile_and_its_context_pass_every_check() -> None:
    assert dockerfile_problems(DOCKERFILE, DOCKERIGNORE) == []


def test_compose_passes_every_check() -> None:
    assert compose_problems(COMPOSE) == []


def test_the_variables_courseflow_reads_are_found_where_they_are_read() -> None:
    assert {"DATABASE_URL", "REDIS_URL", "AUTH_JWT_SECRET", "REDIS_HOST"} <= containers.settings_variables()
    # Read outside Settings: which proxy may name the client, and where the metrics of several processes go.
    assert {"FORWARDED_ALLOW_IPS", "PROMETHEUS_MULTIPROC_DIR"} <= containers.environ_reads()


HEALTHCHECK = re.compile(r"^HEALTHCHECK .*?\n(?=\S)", re.M | re.S)


@pytest.mark.parametrize(
    ("dockerfile", "dockerignore", "problem"),
    [
        pytest.param(edit(DOCKERFILE, "USER 10001:10001\n", ""), DOCKERIGNORE, "runs as root", id="no USER"),
        pytest.param(edit(DOCKERFILE, "USER 10001:10001", "USER root"), DOCKERIGNORE, "runs as root", id="root"),
        pytest.param(HEALTHCHECK.sub("", DOCKERFILE), DOCKERIGNORE, "no HEALTHCHECK", id="no HEALTHCHECK"),
        pytest.param(
            edit(DOCKERFILE, "FROM python:3.11-slim\n", "FROM python:3.11\n"), DOCKERIGNORE, "slim", id="full image"
        ),
        pytest.param(
            edit(DOCKERFILE, "COPY --from=build /opt/venv /opt/venv\n", ""),
            DOCKERIGNORE,
            "nothing from a build stage",
            id="single stage",
        ),
        pytest.param(
            edit(DOCKERFILE, "COPY sql ", "ADD https://example.org/courseflow.tar.gz /tmp/\nCOPY sql "),
            DOCKERIGNORE,
            "remote download",
            id="ADD of a URL",
        ),
        pytest.param(
            edit(DOCKERFILE, "    SERVER_HOST=0.0.0.0", "    SERVER_HOST=0.0.0.0 AUTH_JWT_SECRET=built-in"),
            DOCKERIGNORE,
            "bakes a secret",
            id="secret in ENV",
        ),
        pytest.param(
            edit(DOCKERFILE, "ENV PIP_", "ARG DB_PASSWORD\nENV PIP_"), DOCKERIGNORE, "bakes a secret", id="secret ARG"
        ),
        pytest.param(
            edit(DOCKERFILE, "    SERVER_HOST=0.0.0.0", "    SERVER_HOST=0.0.0.0 SERVER_HOSTNAME=x"),
            DOCKERIGNORE,
            "reads no such variable",
            id="unknown ENV",
        ),
        pytest.param(edit(DOCKERFILE, 'CMD ["api"]', 'CMD ["serve"]'), DOCKERIGNORE, "is refused", id="bad CMD"),
        pytest.param(
            edit(DOCKERFILE, 'ENTRYPOINT ["courseflow"]', 'ENTRYPOINT ["python", "-m", "courseflow"]'),
            DOCKERIGNORE,
            "ENTRYPOINT",
            id="other entrypoint",
        ),
        pytest.param(
            edit(DOCKERFILE, "COPY sql sql\n", ""), DOCKERIGNORE, "would find no migrations", id="wheel without sql"
        ),
        pytest.param(
            edit(DOCKERFILE, "COPY sql sql\n", "").replace("COPY --from=build", "COPY sql /opt/sql\nCOPY --from=build"),
            DOCKERIGNORE,
            "would find no migrations",
            id="sql beside the wheel",
        ),
        pytest.param(DOCKERFILE, edit(DOCKERIGNORE, "\n*\n", "\n"), ".git/config would enter", id="open context"),
        pytest.param(
            DOCKERFILE, DOCKERIGNORE + "sql/00*\n", "sql/001_event_store.sql is left out", id="ignored source"
        ),
    ],
)
def test_the_dockerfile_check_catches(dockerfile: str, dockerignore: str, problem: str) -> None:
    found = dockerfile_problems(dockerfile, dockerignore)
    assert any(problem in p for p in found), found


def _set(service: str, key: str, value: object) -> Callable[[dict[str, Any]], object]:
    return lambda services: services[service].__setitem__(key, value)


def _drop(service: str, *path: str) -> Callable[[dict[str, Any]], object]:
    def change(services: dict[str, Any]) -> None:
        node, key = services, service
        for step in path:
            node, key = node[key], step
        del node[key]

    return change


@pytest.mark.parametrize(
    ("compose", "problem"),
    [
        pytest.param(edit_services(_drop("projector")), "expected", id="no projector"),
        pytest.param(edit_services(_set("worker", "command", ["wrker"])), "is refused", id="unknown command"),
        pytest.param(edit_services(_set("worker", "command", ["api"])), "not `courseflow worker`", id="wrong command"),
        pytest.param(
            edit_services(_set("worker", "command", ["worker", "--nmae", "w"])), "is refused", id="unknown flag"
        ),
        pytest.param(edit_services(_drop("redis", "healthcheck")), "redis: no health check", id="redis unchecked"),
        pytest.param(edit_services(_drop("postgres", "healthcheck")), "postgres: no health check", id="pg unchecked"),
        pytest.param(edit_services(_drop("api", "healthcheck")), "api: no health check", id="api unchecked"),
        pytest.param(edit_services(_drop("worker", "healthcheck")), "serves no HTTP", id="worker probed over HTTP"),
        pytest.param(edit_services(_set("worker", "container_name", "worker")), "--scale", id="container_name"),
        pytest.param(edit_services(_set("worker", "ports", ["9100:9100"])), "--scale", id="worker ports"),
        pytest.param(edit_services(_set("worker", "hostname", "worker")), "--scale", id="worker hostname"),
        pytest.param(
            edit_services(_set("api", "depends_on", {"postgres": {"condition": "service_healthy"}})),
            "api: must wait for migrate (service_completed_successfully)",
            id="api before migrations",
        ),
        pytest.param(
            edit_services(_drop("worker", "depends_on", "redis")),
            "worker: must wait for redis (service_healthy)",
            id="worker before redis",
        ),
        pytest.param(
            edit_services(_drop("migrate", "depends_on")),
            "migrate: must wait for postgres",
            id="migrate before postgres",
        ),
        pytest.param(
            edit(COMPOSE, "--appendfsync always", "--appendfsync everysec"), "--appendfsync always", id="fsync"
        ),
        pytest.param(
            edit(edit(COMPOSE, "redis-server --appendonly", "redis-server - --appendonly"), " - <<END", " <<END"),
            "last argument",
            id="stdin config first",
        ),
        pytest.param(edit(COMPOSE, "        user default off\n", ""), "default user", id="default user on"),
        pytest.param(edit(COMPOSE, " -@admin -@dangerous", ""), "rights", id="app user is admin"),
        pytest.param(edit(COMPOSE, " --maxmemory-policy noeviction", ""), "noeviction missing", id="evicting Redis"),
        pytest.param(
            edit(COMPOSE, "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}", "POSTGRES_PASSWORD: x1"),
            "written in the file",
            id="literal password",
        ),
        pytest.param(
            edit(COMPOSE, "${AUTH_JWT_SECRET:?set AUTH_JWT_SECRET (32 bytes or more)}", "${AUTH_JWT_SECRET:-changeme}"),
            "must be required",
            id="default secret",
        ),
        pytest.param(
            edit(
                COMPOSE,
                "courseflow:${COURSEFLOW_REDIS_PASSWORD:?set COURSEFLOW_REDIS_PASSWORD}@redis",
                "courseflow:x@redis",
            ),
            "password written in the file",
            id="password in a URL",
        ),
        pytest.param(
            edit(COMPOSE, "postgresql://courseflow:", "postgresql://postgres:"),
            "connects as 'postgres'",
            id="superuser",
        ),
        pytest.param(edit(COMPOSE, "NOSUPERUSER ", ""), "superuser", id="superuser role"),
        pytest.param(
            edit_services(
                lambda s: s["api"]["environment"].update(
                    MIGRATION_DATABASE_URL="postgresql://courseflow_owner:${COURSEFLOW_OWNER_PASSWORD}@postgres:5432/x"
                )
            ),
            "api: connects as 'courseflow_owner'",
            id="the schema owner's URL in the API",
        ),
        pytest.param(edit(COMPOSE, 'SERVER_PORT: "8000"', 'SERVER_PORT: "9000"'), "listens on 9000", id="port"),
        pytest.param(
            edit_services(lambda s: s["api"]["environment"].update(DATABSE_URL="x")),
            "reads no variable DATABSE_URL",
            id="unknown app variable",
        ),
        pytest.param(edit(COMPOSE, "${LOG_LEVEL:-INFO}", "${LOGLEVEL:-INFO}"), "${LOGLEVEL}", id="unknown variable"),
        pytest.param(
            edit_services(lambda s: s["redis"]["environment"].update(REDIS_PASSWORD="${REDIS_PASSWORD:?x}")),
            "neither the image nor its command reads REDIS_PASSWORD",
            id="unread server variable",
        ),
    ],
)
def test_the_compose_check_catches(compose: str, problem: str) -> None:
    found = compose_problems(compose)
    assert any(problem in p for p in found), found
