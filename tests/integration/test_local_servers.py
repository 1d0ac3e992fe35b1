"""Real local PostgreSQL and Redis started by `courseflow_local` (no mocks, loopback only)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import courseflow_local as services
import msgspec
import psycopg
import pytest
import redis
from courseflow_local import credentials

from courseflow.eventstore import migrations
from courseflow.platform import config, functions
from courseflow.platform.config import Settings
from courseflow.platform.library import TrimRequests
from tests.integration.test_cli import courseflow

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


class Started(msgspec.Struct, frozen=True):
    data_dir: Path
    servers: services.LocalServers
    pg_port: int
    redis_port: int


def _up(data_dir: Path) -> Started:
    pg_port, redis_port = services.free_port(), services.free_port()
    return Started(data_dir, services.up(data_dir, pg_port, redis_port), pg_port, redis_port)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """Servers up under a 0700 tmp root, shared by the tests that leave them running."""
    data_dir = tmp_path_factory.mktemp("clone") / ".courseflow"
    try:
        yield _up(data_dir)
    finally:
        _stop_and_forget(data_dir)


def test_up_answers_on_the_urls_of_the_saved_credentials(running: Started) -> None:
    saved = running.servers.credentials
    assert running.servers.database_url == config.local_database_url(running.pg_port, saved.postgres_app_password)
    assert running.servers.redis_url == config.local_redis_url(running.redis_port, saved.redis_app_password)
    if os.geteuid() == 0:
        assert (running.data_dir / "postgres").is_symlink(), "0700 parent: expected the /var/tmp fallback"
    with psycopg.connect(running.servers.database_url, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    with redis.Redis.from_url(running.servers.redis_url, decode_responses=True) as client:
        assert client.ping()


def test_redis_keeps_what_an_accepted_request_relies_on(running: Started) -> None:
    with redis.Redis.from_url(running.servers.admin_redis_url, decode_responses=True) as admin:
        # Durability settings an accepted (202) request relies on.
        assert admin.config_get("appendonly") == {"appendonly": "yes"}
        assert admin.config_get("appendfsync") == {"appendfsync": "always"}
        assert admin.config_get("bind") == {"bind": "127.0.0.1"}
        assert admin.config_get("protected-mode") == {"protected-mode": "yes"}
        # Bounded, and full is refused rather than evicting an accepted request.
        assert admin.config_get("maxmemory") == {"maxmemory": str(1024**3)}
        assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    with redis.Redis.from_url(running.servers.redis_url) as app:
        assert int(app.info("memory")["maxmemory"]) == 1024**3  # INFO, for the memory gauge


def test_up_bounds_a_running_redis_to_the_size_asked_for(running: Started) -> None:
    services.up(running.data_dir, running.pg_port, running.redis_port, redis_maxmemory="64mb")
    try:
        with redis.Redis.from_url(running.servers.admin_redis_url, decode_responses=True) as admin:
            assert admin.config_get("maxmemory") == {"maxmemory": str(64 * 1024**2)}
    finally:
        services.up(running.data_dir, running.pg_port, running.redis_port)


def test_up_leaves_running_servers_alone_whatever_ports_are_asked_for(running: Started) -> None:
    assert services.up(running.data_dir, services.free_port(), services.free_port()) == running.servers
    assert services.status(running.data_dir) == {
        "postgres": f"running on 127.0.0.1:{running.pg_port}",
        "redis": f"running on 127.0.0.1:{running.redis_port}",
    }


def test_down_stops_both_servers_and_a_second_down_is_harmless(private_data_dir: Path) -> None:
    servers = _up(private_data_dir).servers
    services.down(private_data_dir)
    assert services.status(private_data_dir) == {"postgres": "stopped", "redis": "stopped"}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(servers.database_url, connect_timeout=2).close()
    with redis.Redis.from_url(servers.redis_url, decode_responses=True) as client, pytest.raises(redis.ConnectionError):
        client.ping()
    services.down(private_data_dir)
    assert services.status(private_data_dir) == {"postgres": "stopped", "redis": "stopped"}


def test_data_survives_a_down_up_cycle_on_the_same_ports(private_data_dir: Path) -> None:
    started = _up(private_data_dir)
    with psycopg.connect(started.servers.owner_database_url, autocommit=True) as conn:
        conn.execute("create table kept (v text)")
        conn.execute("insert into kept values ('before down')")
    with redis.Redis.from_url(started.servers.redis_url, decode_responses=True) as client:
        client.xadd("kept", {"v": "before down"})
    services.down(private_data_dir)

    assert services.up(private_data_dir, started.pg_port, started.redis_port) == started.servers
    with psycopg.connect(started.servers.owner_database_url) as conn:
        assert conn.execute("select v from kept").fetchall() == [("before down",)]
    with redis.Redis.from_url(started.servers.redis_url, decode_responses=True) as client:
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


@pytest.fixture
def no_libpq_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """libpq would otherwise fill in a missing password from the environment or ~/.pgpass."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


@pytest.mark.usefixtures("no_libpq_password")
def test_clients_without_the_credentials_are_refused(open_data_dir: Path) -> None:
    servers = services.up(open_data_dir, services.free_port(), services.free_port())
    for user, dbname in (("courseflow", "courseflow"), ("postgres", "postgres")):
        url = f"postgresql://{user}@127.0.0.1:{servers.postgres_port}/{dbname}"
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(url, connect_timeout=5).close()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(url, password="guessed", connect_timeout=5).close()
    with redis.Redis(host="127.0.0.1", port=servers.redis_port) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    for user in ("default", "courseflow"):
        with (
            redis.Redis(host="127.0.0.1", port=servers.redis_port, username=user, password="guessed") as guesser,
            pytest.raises(redis.AuthenticationError),
        ):
            guesser.ping()


def test_the_owner_role_runs_migrations_and_neither_it_nor_the_application_is_a_superuser(open_data_dir: Path) -> None:
    servers = services.up(open_data_dir, services.free_port(), services.free_port())
    assert migrations.migrate(servers.owner_database_url, application_url=servers.database_url), "none applied"
    for url in (servers.owner_database_url, servers.database_url):
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
            for statement in ("CREATE DATABASE other", "CREATE ROLE intruder", "ALTER SYSTEM SET fsync = off"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO courses (course_id, capacity, title) VALUES (1, 5, 'c')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE events, courses RESTART IDENTITY CASCADE")
    with psycopg.connect(servers.admin_database_url) as admin:
        assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)


def test_up_hands_a_database_the_application_owned_over_to_the_owner(open_data_dir: Path) -> None:
    """A data dir from before the schema had an owner: the next `up` moves the tables, the application keeps its
    grants and can go on appending."""
    servers = services.up(open_data_dir, services.free_port(), services.free_port())
    migrations.migrate(servers.owner_database_url, application_url=servers.database_url)
    admin_url = servers.admin_database_url.rsplit("/", 1)[0] + "/courseflow"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("REASSIGN OWNED BY courseflow_owner TO courseflow")  # as older versions left it
    services.up(open_data_dir, services.free_port(), services.free_port())
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'events'").fetchone() == (
            "courseflow_owner",
        )
        conn.execute("INSERT INTO events (stream, stream_version, type, data) VALUES ('course-1', 1, 'X', '{}')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")


def _uid(pid: int) -> int:
    """The real user id a process runs as, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can leave root-owned data behind")
def test_a_redis_dir_left_by_a_redis_that_ran_as_root_is_handed_over_with_its_data(private_data_dir: Path) -> None:
    started = _up(private_data_dir)
    with redis.Redis.from_url(started.servers.redis_url) as client:
        client.xadd("kept", {"v": "before"})
    services.down(private_data_dir, only="redis")
    # As an older version left it: a directory of root's inside the (here unreachable) data dir.
    link = private_data_dir / "redis"
    moved = link.resolve()
    link.unlink()
    shutil.move(moved, link)
    for path in (link, *link.rglob("*")):
        os.chown(path, 0, 0)
    services.up(private_data_dir, started.pg_port, started.redis_port)
    redis_pid = services.redis_pid(private_data_dir)
    assert redis_pid is not None and _uid(redis_pid) != 0
    with redis.Redis.from_url(started.servers.redis_url) as client:
        assert [fields for _, fields in client.xrange("kept")] == [{b"v": b"before"}]


def test_neither_server_runs_as_root(private_data_dir: Path) -> None:
    """Started by root (as `make run` on a fresh machine may be), both drop to an unprivileged user; under a 0700
    parent their data goes to the /var/tmp fallback."""
    started = _up(private_data_dir)
    redis_pid = services.redis_pid(private_data_dir)
    postmaster = (private_data_dir / "postgres" / "postmaster.pid").read_text().split()[0]
    assert redis_pid is not None
    assert _uid(redis_pid) != 0 and _uid(int(postmaster)) != 0
    assert _uid(redis_pid) == os.stat(private_data_dir / "redis" / "appendonlydir").st_uid
    with redis.Redis.from_url(started.servers.redis_url) as client:
        assert client.set("still", "writable") and client.get("still") == b"writable"


def test_the_application_redis_user_may_not_administer(open_data_dir: Path) -> None:
    servers = services.up(open_data_dir, services.free_port(), services.free_port())
    with redis.Redis.from_url(servers.redis_url) as client:
        # What CourseFlow itself does: functions, streams with a consumer group, sorted sets, hashes, SCAN.
        functions.load(client)
        client.xadd("{cf:0}:requests", {"v": "x"})
        client.xgroup_create("{cf:0}:requests", "deciders", id="0")
        assert client.xreadgroup("deciders", "w1", {"{cf:0}:requests": ">"}, count=1)
        assert client.xautoclaim("{cf:0}:requests", "deciders", "w2", min_idle_time=0)[1]
        assert functions.Functions(client)(TrimRequests("{cf:0}:requests", "deciders")) == 0  # one still pending
        assert client.xinfo_stream("{cf:0}:requests")["length"] == 1
        client.zadd("{cf:0}:priority", {"r1": 1.0})
        client.hset("{cf:0}:pending", "r1", "1")
        assert sorted(client.scan_iter(match="{cf:0}:*")) == [b"{cf:0}:pending", b"{cf:0}:priority", b"{cf:0}:requests"]
        for command in (
            ("CONFIG", "GET", "*"),
            ("FLUSHDB",),
            ("FLUSHALL",),
            ("KEYS", "*"),
            ("SHUTDOWN",),
            ("MONITOR",),
            ("FUNCTION", "FLUSH"),
            ("FUNCTION", "DELETE", "courseflow"),
            ("SCRIPT", "FLUSH"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        with pytest.raises(redis.ResponseError):
            client.execute_command("DEBUG", "SLEEP", "0")
    with redis.Redis.from_url(servers.admin_redis_url) as admin:
        assert admin.config_get("appendonly") == {"appendonly": "yes"}
        admin.flushdb()


def test_credentials_are_private_and_outlive_a_down_up_cycle(private_data_dir: Path) -> None:
    servers = services.up(private_data_dir, services.free_port(), services.free_port())
    saved = servers.credentials
    path = credentials.path(private_data_dir)
    assert servers.credentials_file == path.resolve()
    assert path.stat().st_mode & 0o777 == 0o600
    assert credentials.load(private_data_dir) == saved
    assert len(set(msgspec.structs.astuple(saved))) == len(saved.__struct_fields__) == 6, "every password is its own"
    # Redis reads its passwords from a private file, never from its command line.
    assert (private_data_dir / "redis" / "redis.conf").stat().st_mode & 0o777 == 0o600
    redis_pid = services.redis_pid(private_data_dir)
    assert redis_pid is not None
    assert saved.redis_admin_password.encode() not in Path(f"/proc/{redis_pid}/cmdline").read_bytes()

    services.down(private_data_dir)
    again = services.up(private_data_dir, servers.postgres_port, servers.redis_port)
    assert again.credentials == saved and again == servers
    with psycopg.connect(again.database_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("courseflow",)
    with redis.Redis.from_url(again.redis_url) as client:
        assert client.acl_whoami() == "courseflow"


def test_services_up_prints_the_application_credentials(open_data_dir: Path) -> None:
    ports = {"COURSEFLOW_POSTGRES_PORT": str(services.free_port()), "COURSEFLOW_REDIS_PORT": str(services.free_port())}
    unconfigured = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST", "REDIS_PORT")
    }
    env = unconfigured | ports | {"COURSEFLOW_DATA_DIR": str(open_data_dir)}
    printed = courseflow("services", "up", "--data-dir", str(open_data_dir), env=env)
    assert printed.returncode == 0, printed.stderr
    saved = credentials.load(open_data_dir)
    assert saved is not None
    servers = services.up(open_data_dir, int(ports["COURSEFLOW_POSTGRES_PORT"]), int(ports["COURSEFLOW_REDIS_PORT"]))
    assert printed.stdout.splitlines() == [
        f"export DATABASE_URL={servers.database_url}",
        f"export REDIS_URL={servers.redis_url}",
        f"export MIGRATION_DATABASE_URL={servers.owner_database_url}",
    ]
    assert saved.postgres_app_password in printed.stdout and saved.redis_app_password in printed.stdout
    assert saved.postgres_admin_password not in printed.stdout and saved.redis_admin_password not in printed.stdout
    assert str(credentials.path(open_data_dir)) in printed.stderr
    # With no URL configured, every other command finds the same servers through the data dir.
    local = services.with_saved_passwords(Settings.from_env(env))
    assert (local.postgres.url, local.redis.url) == (servers.database_url, servers.redis_url)
    assert local.postgres.migration_url == servers.owner_database_url
    migrate = courseflow("migrate", env=env)
    assert migrate.returncode == 0, migrate.stderr
    assert "applied 001_event_store" in migrate.stdout


def test_a_data_dir_without_passwords_is_a_clear_error(open_data_dir: Path) -> None:
    # What an older CourseFlow left: a cluster that trusts every local client, and no credentials file.
    (open_data_dir / "postgres").mkdir(parents=True)
    (open_data_dir / "postgres" / "PG_VERSION").write_text("15\n")
    (open_data_dir / "postgres" / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    with pytest.raises(services.ServicesError, match="older CourseFlow without passwords") as raised:
        services.up(open_data_dir, services.free_port(), services.free_port())
    assert f"courseflow services down --data-dir {open_data_dir.resolve()}" in str(raised.value)
    assert not credentials.path(open_data_dir).exists()
    # Credentials alone do not make such a cluster safe: it still trusts everyone.
    credentials.load_or_create(open_data_dir)
    with pytest.raises(services.ServicesError, match="older CourseFlow without passwords"):
        services.up(open_data_dir, services.free_port(), services.free_port())
