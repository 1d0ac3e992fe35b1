"""Real PostgreSQL and Redis for every test that asks: given URLs, else containers, else local servers.

Each folder of tests is a tier, marked by its name (`pytest -m unit`); the servers are session fixtures
started only when a test of another tier first asks for them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import courseflow_local as services
import msgspec
import psycopg
import pytest
import redis
from starlette.testclient import TestClient

from courseflow.decisions.worker import Worker
from courseflow.eventstore import migrations
from courseflow.http.app import create_app
from courseflow.platform.config import LocalSettings, PostgresSettings, RedisSettings, Settings, WorkerSettings
from projections.projector import Projector
from tests.helpers import wait_until

TIERS = ("unit", "integration", "browser", "fault", "cluster", "abuse")
# Fixtures that start a server: a unit test that asks for one is a mistake found at collection.
SERVER_FIXTURES = frozenset({"servers", "redis_cluster", "replica", "api_server"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its folder's tier; a test outside every tier folder is an integration test."""
    root = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(root).parts[0]
        tier = folder if folder in TIERS else "integration"
        item.add_marker(tier)
        if tier == "unit" and SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            raise pytest.UsageError(f"{item.nodeid} asks for a server: it belongs in tests/integration")


class Servers(msgspec.Struct, frozen=True, kw_only=True):
    """The application's URLs, the schema owner's (migrations, emptying tables) and an admin's for what neither may
    do (FLUSHDB, CREATE DATABASE)."""

    database_url: str
    redis_url: str
    owner_database_url: str
    admin_database_url: str
    admin_redis_url: str
    # Where the servers keep their data, when this session started them itself (see `replica`).
    data_dir: Path | None = None

    @classmethod
    def of(cls, local: services.LocalServers) -> Servers:
        return cls(
            database_url=local.database_url,
            redis_url=local.redis_url,
            owner_database_url=local.owner_database_url,
            admin_database_url=local.admin_database_url,
            admin_redis_url=local.admin_redis_url,
            data_dir=local.data_dir,
        )


class Replica(msgspec.Struct, frozen=True, kw_only=True):
    """A streaming replica of the session's PostgreSQL: the application's URL on it, and the superuser's
    (to pause its replay), and how to stop and start it again."""

    database_url: str
    admin_database_url: str
    data_dir: Path
    port: int

    def stop(self) -> None:
        services.down(self.data_dir, only="replica")

    def start(self) -> None:
        services.up(self.data_dir, services.free_port(), services.free_port(), self.port)


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextmanager
def server_dir() -> Iterator[Path]:
    """A data dir the unprivileged PostgreSQL user can reach (pytest's temp root is 0700), removed after."""
    data_dir = Path(tempfile.mkdtemp(prefix="courseflow-test-", dir="/var/tmp"))
    data_dir.chmod(0o755)
    try:
        yield data_dir
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Servers owned by this test session."""
    given = os.environ.get("TEST_DATABASE_URL"), os.environ.get("TEST_REDIS_URL")
    if given[0] and given[1]:
        owner = os.environ.get("TEST_DATABASE_OWNER_URL") or given[0]
        migrations.migrate(owner, application_url=given[0])
        yield Servers(
            database_url=given[0],
            redis_url=given[1],
            owner_database_url=owner,
            admin_database_url=os.environ.get("TEST_DATABASE_ADMIN_URL") or given[0],
            admin_redis_url=os.environ.get("TEST_REDIS_ADMIN_URL") or given[1],
        )
    elif _docker_engine():
        from testcontainers.community.postgres import PostgresContainer
        from testcontainers.community.redis import RedisContainer

        pg = PostgresContainer(
            "postgres:15", username="courseflow", password="courseflow", dbname="courseflow", driver=None
        )
        rd = RedisContainer("redis:7").with_command(
            "redis-server --appendonly yes --appendfsync always --maxmemory 1gb --maxmemory-policy noeviction"
        )
        with pg, rd:
            database_url = pg.get_connection_url()
            redis_url = f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0"
            migrations.migrate(database_url)
            # The container's users are its superusers: the application's URLs are the admin's too.
            yield Servers(
                database_url=database_url,
                redis_url=redis_url,
                owner_database_url=database_url,
                admin_database_url=database_url,
                admin_redis_url=redis_url,
            )
    else:
        with server_dir() as data_dir:
            local = services.up(data_dir, services.free_port(), services.free_port())
            try:
                migrations.migrate(local.owner_database_url, application_url=local.database_url)
                yield Servers.of(local)
            finally:
                services.down(data_dir)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[services.LocalCluster]:
    """A local Redis Cluster of 3 masters and 3 replicas owned by this test session (see tests.failover)."""
    with server_dir() as data_dir:
        try:
            yield services.up_cluster(data_dir, services.free_cluster_port())
        finally:
            services.down(data_dir)


@pytest.fixture(scope="session")
def replica(servers: Servers) -> Iterator[Replica]:
    """A hot standby of the session's local PostgreSQL, made as `courseflow services up --replica` makes one;
    stopped at the end of the session."""
    if servers.data_dir is None:
        pytest.skip("a replica is made only of the servers this session starts itself, not of given ones")
    # The primary and Redis are running: `up` keeps their ports and starts only the replica.
    local = services.up(servers.data_dir, services.free_port(), services.free_port(), services.free_port())
    assert local.replica_port is not None and local.replica_database_url is not None
    try:
        admin = urlsplit(local.admin_database_url)
        yield Replica(
            database_url=local.replica_database_url,
            admin_database_url=admin._replace(netloc=f"{admin.netloc.rsplit(':', 1)[0]}:{local.replica_port}").geturl(),
            data_dir=servers.data_dir,
            port=local.replica_port,
        )
    finally:
        services.down(servers.data_dir, only="replica")


def reset(servers: Servers) -> None:
    # TRUNCATE is the owner's: the application's role may not empty the event log.
    reset_database(servers.owner_database_url)
    # FLUSHDB is the admin's: the application's Redis user may not run it.
    with redis.Redis.from_url(servers.admin_redis_url) as client:
        client.flushdb()


def reset_database(database_url: str) -> None:
    """No events, requests, courses or read-model rows; no worker holding a partition."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE events, enrollment_requests, courses, course_seats, waitlist_entries, enrollments,"
            " enrollment_counters, student_priorities RESTART IDENTITY CASCADE"
        )
        conn.execute("UPDATE projection_checkpoints SET txid = '0', position = 0")
        # Leases of workers an earlier test killed would keep their partitions from this test's workers.
        conn.execute("UPDATE partition_leases SET owner = NULL, expires_at = '-infinity'")
        conn.execute("DELETE FROM workers")


@pytest.fixture
def settings(servers: Servers) -> Settings:
    """Settings for one test, on emptied servers; short timeouts keep the suite quick."""
    reset(servers)
    return Settings(
        postgres=PostgresSettings(url=servers.database_url, migration_url=servers.owner_database_url),
        redis=RedisSettings(url=servers.redis_url),
        local=LocalSettings(external_servers=True),
        worker=WorkerSettings(block_ms=100, batch_size=50, claim_idle_ms=60_000),
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection[psycopg.rows.TupleRow]]:
    with psycopg.connect(settings.postgres.url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def rds(settings: Settings) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(settings.redis.url) as client:
        yield client


@pytest.fixture
def projector(settings: Settings) -> Iterator[Projector]:
    """The projector, following the event log in a thread for the length of the test."""
    running = Projector(settings.postgres.url)
    thread = threading.Thread(target=running.run, kwargs={"idle_wait_s": 0.2}, name="projector", daemon=True)
    thread.start()
    yield running
    running.stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the projector did not stop"


@pytest.fixture
def client(settings: Settings, projector: Projector) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


StartWorkers = Callable[..., list[Worker]]


@pytest.fixture
def start_workers(settings: Settings) -> Iterator[StartWorkers]:
    """Start consumer-group workers in threads; each stops, and must have stopped, at teardown."""
    running: list[tuple[Worker, threading.Thread]] = []

    def start(count: int = 1, **overrides: object) -> list[Worker]:
        configured = msgspec.structs.replace(settings, worker=msgspec.structs.replace(settings.worker, **overrides))
        workers = []
        for _ in range(count):
            worker = Worker(configured, f"test-worker-{len(running) + 1}")
            thread = threading.Thread(target=worker.run, name=worker.name, daemon=True)
            thread.start()
            running.append((worker, thread))
            workers.append(worker)
        return workers

    yield start
    for worker, _ in running:
        worker.stop.set()
    for worker, thread in running:
        thread.join(timeout=30)
        assert not thread.is_alive(), f"{worker.name} did not stop"


@pytest.fixture(scope="session")
def api_server(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `courseflow api` process on a loopback port, in development mode; yields its base URL."""
    # Crowd tests send thousands of requests from one address in development mode: one principal. Nor does a
    # test that floods a WebSocket cool that principal down for the tests after it.
    with serving_api(
        servers, tmp_path_factory.mktemp("api"), RATE_LIMIT_REGISTRAR="off", WS_FLOOD_COOLDOWN="0"
    ) as base:
        yield base


@contextmanager
def serving_api(servers: Servers, log_dir: Path, **env: str) -> Iterator[str]:
    """Run `courseflow api` on a free loopback port with `env` added; yields its base URL, stops it after."""
    port = services.free_port()
    env = (
        os.environ
        | {
            "DATABASE_URL": servers.database_url,
            "REDIS_URL": servers.redis_url,
            "SERVER_PORT": str(port),
            "RATE_LIMIT_ANONYMOUS": "off",
        }
        | env
    )
    log_path = log_dir / "api.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "courseflow", "api"], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(base) or proc.poll() is not None, timeout=30, what="the API to start")
        assert proc.poll() is None, log_path.read_text()
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(base: str) -> bool:
    import httpx2 as httpx

    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
