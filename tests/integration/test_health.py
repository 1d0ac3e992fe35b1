"""Readiness: ready once PostgreSQL and Redis answer, and each failing dependency named."""

from __future__ import annotations

import msgspec
import psycopg
import redis
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.intake.queue import GROUP
from courseflow.platform.config import DEFAULT_PARTITIONS, Settings
from courseflow.platform.keys import Keys
from tests.conftest import Servers
from tests.helpers import (
    CLOSED_PORT_REDIS,
)

KEYS = Keys(partitions=DEFAULT_PARTITIONS).of_course(1)  # the keys of course 1's partition


def test_ready_at_once_with_no_worker_run_the_api_creating_the_consumer_group(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["auth"] == "off"
        with redis.Redis.from_url(settings.redis.url) as rds:
            assert [g["name"] for g in rds.xinfo_groups(KEYS.requests)] == [GROUP.encode()]


def test_not_ready_names_an_unreachable_redis(settings: Settings) -> None:
    with TestClient(
        create_app(
            msgspec.structs.replace(settings, redis=msgspec.structs.replace(settings.redis, url=CLOSED_PORT_REDIS))
        )
    ) as client:
        down = client.get("/ready")
        assert down.status_code == 503
        assert down.json()["failing"] == ["redis"] and down.json()["checks"]["redis"].startswith("unreachable")


def test_not_ready_names_a_database_without_the_migrations(settings: Settings, servers: Servers) -> None:
    # The application's role may not create databases: the admin does.
    with psycopg.connect(servers.admin_database_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS courseflow_unmigrated")
        conn.execute("CREATE DATABASE courseflow_unmigrated")
    unmigrated = settings.postgres.url.rsplit("/", 1)[0] + "/courseflow_unmigrated"
    with TestClient(
        create_app(
            msgspec.structs.replace(settings, postgres=msgspec.structs.replace(settings.postgres, url=unmigrated))
        )
    ) as client:
        body = client.get("/ready").json()
        assert body["failing"] == ["migrations"] and "001_event_store" in body["checks"]["migrations"]
