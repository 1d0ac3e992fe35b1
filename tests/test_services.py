"""Real local PostgreSQL and Redis started by `courseflow.services` (no mocks, loopback only)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from courseflow import config, services

_HAVE_BINARIES = shutil.which("redis-server") is not None and (
    any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) or shutil.which("pg_ctl") is not None
)
# In CI a missing binary is a broken setup, not a reason to skip.
pytestmark = pytest.mark.skipif(
    not _HAVE_BINARIES and not os.environ.get("CI"), reason="needs redis-server and PostgreSQL (make install)"
)


def _stop_and_forget(data_dir: Path) -> None:
    link = data_dir / "postgres"
    target = link.resolve().parent if link.is_symlink() else None
    try:
        services.down(data_dir)
    finally:
        # The /var/tmp fallback lives outside pytest's tmp dir: remove it too.
        if target is not None and target.name.startswith("courseflow-"):
            shutil.rmtree(target, ignore_errors=True)


@pytest.fixture
def private_data_dir(tmp_path: Path) -> Iterator[Path]:
    """Under pytest's 0700 tmp root: as root this exercises the /var/tmp fallback for PostgreSQL."""
    data_dir = tmp_path / "clone" / ".courseflow"
    try:
        yield data_dir
    finally:
        _stop_and_forget(data_dir)


@pytest.fixture
def open_data_dir() -> Iterator[Path]:
    """Under a directory every user can traverse: PostgreSQL data stays inside the data dir."""
    parent = Path(tempfile.mkdtemp(prefix="courseflow-test-", dir="/var/tmp"))
    parent.chmod(0o755)
    data_dir = parent / ".courseflow"
    try:
        yield data_dir
    finally:
        try:
            _stop_and_forget(data_dir)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


def test_up_is_idempotent_down_stops_and_data_survives(private_data_dir: Path) -> None:
    pg_port, redis_port = services.free_port(), services.free_port()
    servers = services.up(private_data_dir, pg_port, redis_port)
    assert servers.database_url == config.local_database_url(pg_port)
    assert servers.redis_url == config.local_redis_url(redis_port)
    if os.geteuid() == 0:
        assert (private_data_dir / "postgres").is_symlink(), "0700 parent: expected the /var/tmp fallback"

    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        conn.execute("create table kept (v text)")
        conn.execute("insert into kept values ('before down')")
    with redis.Redis.from_url(servers.redis_url, decode_responses=True) as client:
        assert client.ping()
        # Durability settings an accepted (202) request relies on.
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        client.xadd("kept", {"v": "before down"})

    # Running servers are left alone, whatever ports are asked for.
    assert services.up(private_data_dir, services.free_port(), services.free_port()) == servers
    assert services.status(private_data_dir) == {
        "postgres": f"running on 127.0.0.1:{pg_port}",
        "redis": f"running on 127.0.0.1:{redis_port}",
    }

    services.down(private_data_dir)
    assert services.status(private_data_dir) == {"postgres": "stopped", "redis": "stopped"}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(servers.database_url, connect_timeout=2).close()
    with redis.Redis.from_url(servers.redis_url, decode_responses=True) as client, pytest.raises(redis.ConnectionError):
        client.ping()
    services.down(private_data_dir)  # a second down is harmless

    assert services.up(private_data_dir, pg_port, redis_port) == servers
    with psycopg.connect(servers.database_url) as conn:
        assert conn.execute("select v from kept").fetchall() == [("before down",)]
    with redis.Redis.from_url(servers.redis_url, decode_responses=True) as client:
        assert [fields for _, fields in client.xrange("kept")] == [{"v": "before down"}]


def test_up_in_traversable_dir_keeps_postgres_inside(open_data_dir: Path) -> None:
    servers = services.up(open_data_dir, services.free_port(), services.free_port())
    pgdata = open_data_dir / "postgres"
    assert pgdata.is_dir() and not pgdata.is_symlink()
    assert (pgdata / "PG_VERSION").exists()
    with psycopg.connect(servers.database_url) as conn:
        assert conn.execute("select current_database(), current_user").fetchone() == ("courseflow", "courseflow")
    with redis.Redis.from_url(servers.redis_url, decode_responses=True) as client:
        assert client.ping()


def test_port_in_use_is_a_clear_error(open_data_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(services.ServicesError, match=f"127.0.0.1:{taken} is in use"):
            services.up(open_data_dir, services.free_port(), taken)


def test_missing_binary_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(services.ServicesError, match="apt-get install -y redis-server"):
        services.up(tmp_path / ".courseflow", services.free_port(), services.free_port())


def test_free_port_is_bindable() -> None:
    port = services.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
