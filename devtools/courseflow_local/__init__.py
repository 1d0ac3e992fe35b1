"""Local PostgreSQL and Redis for development and tests, started from the Debian packages.

Everything lives under one data dir; servers listen on 127.0.0.1 only and keep running between
commands: `up` is idempotent, `down` stops them all, data survives a down/up cycle. `up` with a replica
port also starts a streaming read replica of the PostgreSQL (see `replica`). `up_cluster` adds a local
Redis Cluster (see `redis_cluster`), for running on REDIS_CLUSTER_NODES.

Both servers require a password: the data dir's credentials file (see `credentials`) holds an
admin's, used here, the application's, which may not reconfigure, flush or stop a server, and the
PostgreSQL schema owner's, which migrations use (the application may not alter or rewrite its tables).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import msgspec

from courseflow.platform import config
from courseflow_local import credentials, postgres, redis_cluster, redis_server, replica
from courseflow_local.credentials import APP_USER, OWNER_USER, POSTGRES_ADMIN_USER, REDIS_ADMIN_USER, Credentials
from courseflow_local.processes import START_TIMEOUT_S, STOP_TIMEOUT_S, ServicesError, free_port, lock, read_int
from courseflow_local.redis_cluster import free_cluster_port
from courseflow_local.unprivileged import FALLBACK_ROOT

__all__ = [
    "FALLBACK_ROOT",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "LocalCluster",
    "LocalServers",
    "Server",
    "ServicesError",
    "down",
    "free_cluster_port",
    "free_port",
    "redis_pid",
    "status",
    "up",
    "up_cluster",
]

Server = Literal["postgres", "redis", "redis-cluster", "replica"]


class LocalServers(msgspec.Struct, frozen=True):
    data_dir: Path
    postgres_port: int
    redis_port: int
    credentials: Credentials
    # Set when a read replica runs.
    replica_port: int | None = None

    @property
    def credentials_file(self) -> Path:
        return credentials.path(self.data_dir)

    @property
    def database_url(self) -> str:
        return config.local_database_url(self.postgres_port, self.credentials.postgres_app_password)

    @property
    def owner_database_url(self) -> str:
        """The schema owner's URL: for migrations (and rebuilds), which the application's role may not run."""
        assert self.credentials.postgres_owner_password is not None  # added by load_or_create
        return config.local_database_url(self.postgres_port, self.credentials.postgres_owner_password, OWNER_USER)

    @property
    def replica_database_url(self) -> str | None:
        """The application's URL for the read replica: its role and password came over with the copy."""
        if self.replica_port is None:
            return None
        return config.local_database_url(self.replica_port, self.credentials.postgres_app_password)

    @property
    def redis_url(self) -> str:
        return config.local_redis_url(self.redis_port, self.credentials.redis_app_password)

    @property
    def admin_database_url(self) -> str:
        """The superuser, on the `postgres` database: for creating and dropping databases."""
        password = quote(self.credentials.postgres_admin_password, safe="")
        return f"postgresql://{POSTGRES_ADMIN_USER}:{password}@127.0.0.1:{self.postgres_port}/postgres"

    @property
    def admin_redis_url(self) -> str:
        """Redis's admin: for what the application may not do, such as FLUSHDB or CONFIG."""
        password = quote(self.credentials.redis_admin_password, safe="")
        return f"redis://{REDIS_ADMIN_USER}:{password}@127.0.0.1:{self.redis_port}/0"


class LocalCluster(msgspec.Struct, frozen=True):
    """A running local Redis Cluster: where its nodes listen, and who may connect."""

    data_dir: Path
    ports: tuple[int, ...]
    credentials: Credentials

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.ports]

    @property
    def nodes_setting(self) -> str:
        """The value of REDIS_CLUSTER_NODES (no credentials in it)."""
        return ",".join(f"{host}:{port}" for host, port in self.nodes)

    @property
    def app_username(self) -> str:
        return APP_USER

    @property
    def app_password(self) -> str:
        return self.credentials.redis_app_password

    @property
    def admin_username(self) -> str:
        return REDIS_ADMIN_USER

    @property
    def admin_password(self) -> str:
        return self.credentials.redis_admin_password

    def pid(self, port: int) -> int | None:
        """The running node's pid, from its pidfile."""
        return redis_cluster.pid(self.data_dir, port)


def with_saved_passwords(settings: config.Settings) -> config.Settings:
    """Settings whose URLs point at the local servers, with the application's passwords saved in the data dir.

    Those servers accept only these passwords; settings given other URLs come back as they are.
    """
    local = settings.local
    bare_database = config.local_database_url(local.postgres_port)
    bare_redis = config.local_redis_url(local.redis_port)
    if bare_database != settings.postgres.url and bare_redis != settings.redis.url:
        return settings
    try:
        saved = credentials.load(local.data_dir)
    except credentials.CredentialsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    if saved is None:
        return settings
    replace = msgspec.structs.replace
    postgres, redis = settings.postgres, settings.redis
    if postgres.url == bare_database:
        postgres = replace(postgres, url=config.local_database_url(local.postgres_port, saved.postgres_app_password))
    owner = config.local_database_url(local.postgres_port, role=OWNER_USER)
    if postgres.migration_url == owner and saved.postgres_owner_password is not None:
        owner = config.local_database_url(local.postgres_port, saved.postgres_owner_password, OWNER_USER)
        postgres = replace(postgres, migration_url=owner)
    if redis.url == bare_redis:
        redis = replace(redis, url=config.local_redis_url(local.redis_port, saved.redis_app_password))
    return replace(settings, postgres=postgres, redis=redis)


def up(
    data_dir: Path,
    postgres_port: int,
    redis_port: int,
    replica_port: int | None = None,
    redis_maxmemory: str = redis_server.MAXMEMORY,
) -> LocalServers:
    """Start what is not already running for `data_dir`. A running server keeps its port, which is returned.

    With `replica_port`, a read replica too (copied from the primary the first time). Redis is bounded to
    `redis_maxmemory` (COURSEFLOW_REDIS_MAXMEMORY), a running one too."""
    data_dir = data_dir.resolve()
    redis_bin, pg_bin = shutil.which("redis-server"), postgres.find_bindir()  # fail before starting anything
    if redis_bin is None:
        raise ServicesError("redis-server not found on PATH; install it: apt-get install -y redis-server")
    with _locked_credentials(data_dir) as saved:
        actual_redis = redis_server.up(data_dir, redis_bin, redis_port, saved, redis_maxmemory)
        actual_pg = postgres.up(data_dir, pg_bin, postgres_port, saved)
        if replica_port is not None:
            postgres.allow_replication(data_dir, actual_pg, saved)
            actual_replica: int | None = replica.up(data_dir, pg_bin, replica_port, actual_pg, saved)
        else:
            actual_replica = replica.running_port(data_dir)
    return LocalServers(
        data_dir=data_dir,
        postgres_port=actual_pg,
        redis_port=actual_redis,
        credentials=saved,
        replica_port=actual_replica,
    )


@contextmanager
def _locked_credentials(data_dir: Path) -> Iterator[Credentials]:
    """Hold the data dir's lock, with its credentials (made on first use), while servers start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with lock(data_dir):
        _refuse_passwordless(data_dir)
        try:
            saved = credentials.load_or_create(data_dir)
        except credentials.CredentialsError as exc:
            raise ServicesError(str(exc)) from None
        yield saved


def up_cluster(data_dir: Path, first_port: int) -> LocalCluster:
    """Start the local Redis Cluster's nodes on `first_port` and the five after it (or, once created, on the
    ports it was created with), or whichever of its nodes are not running; wait until it serves every slot."""
    data_dir = data_dir.resolve()
    redis_bin, cli_bin = shutil.which("redis-server"), shutil.which("redis-cli")
    if redis_bin is None or cli_bin is None:
        raise ServicesError("redis-server not found on PATH; install it: apt-get install -y redis-server")
    with _locked_credentials(data_dir) as saved:
        ports = redis_cluster.up(data_dir, redis_bin, cli_bin, first_port, saved)
    return LocalCluster(data_dir=data_dir, ports=tuple(ports), credentials=saved)


def down(data_dir: Path, only: Server | tuple[Server, ...] | None = None) -> None:
    """Stop every server, or `only` some (fault tests stop one and bring it back with `up`)."""
    data_dir = data_dir.resolve()
    chosen = (only,) if isinstance(only, str) else only
    if data_dir.is_dir():
        with lock(data_dir):
            if chosen is None or "redis-cluster" in chosen:
                redis_cluster.down(data_dir)
            if chosen is None or "replica" in chosen:
                replica.down(data_dir)
            if chosen is None or "redis" in chosen:
                redis_server.down(data_dir)
            if chosen is None or "postgres" in chosen:
                postgres.down(data_dir)


def redis_pid(data_dir: Path) -> int | None:
    return read_int(data_dir.resolve() / "redis" / "redis.pid")


def status(data_dir: Path) -> dict[str, str]:
    data_dir = data_dir.resolve()
    try:
        saved = credentials.load(data_dir)
    except credentials.CredentialsError:
        saved = None
    result: dict[str, str] = {}
    shown = [
        ("postgres", postgres.running_port(data_dir), postgres.answers),
        ("redis", redis_server.running_port(data_dir), redis_server.answers),
    ]
    if replica.exists(data_dir) or replica.running_port(data_dir) is not None:
        shown.append(("replica", replica.running_port(data_dir), postgres.answers))
    for name, port, answers in shown:
        try:
            note = "" if port is None or answers(port, saved) else " (not answering)"
        except ServicesError:
            note = f" (refuses the credentials in {credentials.path(data_dir)})"
        result[name] = "stopped" if port is None else f"running on 127.0.0.1:{port}{note}"
    if redis_cluster.ports(data_dir):  # shown once this data dir has had a cluster
        try:
            result["redis-cluster"] = redis_cluster.status(data_dir, saved)
        except ServicesError as exc:
            result["redis-cluster"] = f"running ({exc})"
    return result


def _refuse_passwordless(data_dir: Path) -> None:
    """Servers without a credentials file beside them trust every local client: they cannot be locked in place."""
    if credentials.path(data_dir).exists():
        return
    pg_cluster = (data_dir / "postgres" / "PG_VERSION").exists()
    running = postgres.running_port(data_dir) is not None or redis_server.running_port(data_dir) is not None
    if pg_cluster or running or any(redis_cluster.pid(data_dir, port) for port in redis_cluster.ports(data_dir)):
        raise ServicesError(postgres.passwordless(data_dir))
