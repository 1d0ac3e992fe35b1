"""Settings read once from the environment into a frozen struct."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import msgspec

# Local servers started by `courseflow services up` use ports that do not clash with system ones.
LOCAL_POSTGRES_PORT = 55432
LOCAL_REDIS_PORT = 56379
# The local Redis Cluster's first node; nodes take it and the next five, their cluster bus ports are 10000 higher.
# Both ranges sit below Linux's ephemeral ports (32768 up), so no outgoing connection can take one meanwhile.
LOCAL_REDIS_CLUSTER_PORT = 17001
LOCAL_POSTGRES_REPLICA_PORT = 55433
# The role and Redis user the application connects to the local servers as, also its database: the name
# courseflow_local.credentials gives them when it creates them.
LOCAL_APP_USER = "courseflow"


def local_database_url(port: int = LOCAL_POSTGRES_PORT, password: str | None = None) -> str:
    """The application's URL for the local PostgreSQL; without the password its server refuses it."""
    user = LOCAL_APP_USER if password is None else f"{LOCAL_APP_USER}:{quote(password, safe='')}"
    return f"postgresql://{user}@127.0.0.1:{port}/{LOCAL_APP_USER}"


def local_redis_url(port: int = LOCAL_REDIS_PORT, password: str | None = None) -> str:
    """The application's URL for the local Redis; without the password its server refuses it."""
    user = "" if password is None else f"{LOCAL_APP_USER}:{quote(password, safe='')}@"
    return f"redis://{user}127.0.0.1:{port}/0"


DEFAULT_PARTITIONS = 16

# Default rate limits per principal. A student's writes allow a small burst, then about 10 a second.
RATE_LIMIT_STUDENT_WRITES = "20 per 2 seconds"
RATE_LIMIT_STUDENT_READS = "50 per second"
RATE_LIMIT_REGISTRAR = "1000 per second"
RATE_LIMIT_SERVICE = "5000 per second"
# Per client address: the public probes, and every request whose token is refused.
RATE_LIMIT_ANONYMOUS = "100 per second"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = local_database_url()
    redis_url: str = local_redis_url()
    # A streaming replica the API reads from (see courseflow.http.replica); None: every read goes to database_url.
    database_replica_url: str | None = None
    # True when the URLs came from the environment, so `courseflow run` must not start servers.
    external_servers: bool = False
    data_dir: Path = Path(".courseflow")
    postgres_port: int = LOCAL_POSTGRES_PORT
    redis_port: int = LOCAL_REDIS_PORT
    redis_cluster_port: int = LOCAL_REDIS_CLUSTER_PORT
    postgres_replica_port: int = LOCAL_POSTGRES_REPLICA_PORT
    server_host: str = "127.0.0.1"
    server_port: int = 8000
    api_processes: int = 1
    workers: int = 2
    # Stream entries a worker reads at once, across all its partitions: with ROUND_BATCHES (courseflow.worker), what
    # bounds a worker's memory however deep the backlog.
    batch_size: int = 2000
    # XREADGROUP BLOCK stays well below the socket timeout (redis-py #2807).
    block_ms: int = 1000
    # A pending entry idle this long belongs to a consumer presumed dead and is reclaimed.
    claim_idle_ms: int = 15000
    max_deliveries: int = 5
    # A replay inside this window answers the same request; after it the key is forgotten (bounded state).
    idempotency_ttl_s: int = 86_400
    # How often each API process re-applies recent priority grants to intake (see api._keep_priorities_applied).
    priority_sync_s: float = 5.0
    stream_prefix: str = "courseflow"
    # The request queue's partitions: fixed when the deployment is first migrated (see courseflow.partitions).
    partitions: int = DEFAULT_PARTITIONS
    # host:port of some Redis Cluster nodes: every component then uses the cluster client (REDIS_URL gives the user).
    redis_cluster_nodes: tuple[str, ...] = ()
    # Intake answers 202 only once this many replicas have the request (WAIT): it survives a master's failover.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    # A dead worker's partitions go to the others once its leases, renewed every third of this (or every second),
    # run out.
    lease_ms: int = 5000
    # Authentication: HS256 with a shared secret, or RS256 with a PEM public key; neither = development mode.
    auth_jwt_secret: str | None = None
    auth_jwt_public_key_file: Path | None = None
    # Only `courseflow token` signs, and only with RS256 deployments that keep a private key at hand.
    auth_jwt_private_key_file: Path | None = None
    auth_jwt_audience: str = "courseflow"
    auth_jwt_issuer: str | None = None
    auth_leeway_s: int = 30
    # Rate limits per principal, in the `limits` notation ("20/2 seconds", "10/second;100/minute"), or "off".
    rate_limit_student_writes: str = RATE_LIMIT_STUDENT_WRITES
    rate_limit_student_reads: str = RATE_LIMIT_STUDENT_READS
    rate_limit_registrar: str = RATE_LIMIT_REGISTRAR
    rate_limit_service: str = RATE_LIMIT_SERVICE
    rate_limit_anonymous: str = RATE_LIMIT_ANONYMOUS
    # How long a read waits for the replica to replay what the API has already written or shown, before the
    # primary answers it instead.
    replica_wait_ms: int = 100
    # The replica answers only once it has replayed what the primary had this long ago (more behind: the primary).
    replica_max_lag_ms: int = 1000
    # Live streams (SSE and WebSocket) one student may hold open at once on one API process; registrars and
    # services (and development mode's one caller) may hold `live_streams_per_privileged`.
    live_streams_per_student: int = 10
    live_streams_per_privileged: int = 10_000
    # LOG_FORMAT: "json" or "console"; None picks console on a terminal, JSON otherwise (see courseflow.logs).
    log_format: str | None = None
    log_level: str = "INFO"
    # One line per HTTP request: off by default, as it costs the intake path a log record per request.
    access_log: bool = False
    # /metrics exports per-course gauges for this many courses only (deepest queue, then most seats taken).
    metrics_top_courses: int = 20
    # Where `worker --metrics-port` and `projector --metrics-port` listen; loopback unless a scraper is elsewhere.
    metrics_host: str = "127.0.0.1"

    def __repr__(self) -> str:
        # Settings end up in tracebacks and test reports: never with the key or the servers' passwords.
        shown = {name: _redacted(name, getattr(self, name)) for name in self.__struct_fields__}
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        pg_port = _int(env, "COURSEFLOW_POSTGRES_PORT", LOCAL_POSTGRES_PORT)
        redis_port = _int(env, "COURSEFLOW_REDIS_PORT", LOCAL_REDIS_PORT)
        database_url = env.get("DATABASE_URL")
        redis_url = env.get("REDIS_URL")
        if not redis_url and ("REDIS_HOST" in env or "REDIS_PORT" in env):
            redis_url = f"redis://{env.get('REDIS_HOST', '127.0.0.1')}:{_int(env, 'REDIS_PORT', 6379)}/0"
        data_dir = Path(env.get("COURSEFLOW_DATA_DIR", ".courseflow"))
        local = None
        if not (database_url and redis_url):
            try:
                # The local servers' tooling (devtools/): absent from a production install, which sets both URLs.
                from courseflow_local import credentials
            except ImportError:
                raise SystemExit(
                    "configuration error: set DATABASE_URL and REDIS_URL (or install the local servers: make install)"
                ) from None
            try:
                # Servers of `courseflow services up` accept only the passwords it saved in their data dir.
                local = credentials.load(data_dir)
            except credentials.CredentialsError as exc:
                raise SystemExit(f"configuration error: {exc}") from None
        lease_ms = _bounded(env, "LEASE_MS", 5000, 100, 3_600_000)
        claim_idle_ms = _int(env, "CLAIM_IDLE_MS", 15000)
        if lease_ms >= claim_idle_ms:
            # A dead worker's entries are reclaimed by whoever takes its partitions: its lease must run out first.
            raise SystemExit(
                f"configuration error: LEASE_MS ({lease_ms}) must be below CLAIM_IDLE_MS ({claim_idle_ms})"
            )
        return cls(
            database_url=database_url or local_database_url(pg_port, local.postgres_app_password if local else None),
            redis_url=redis_url or local_redis_url(redis_port, local.redis_app_password if local else None),
            database_replica_url=env.get("DATABASE_REPLICA_URL") or None,
            external_servers=bool(database_url or redis_url),
            data_dir=data_dir,
            postgres_port=pg_port,
            redis_port=redis_port,
            redis_cluster_port=_int(env, "COURSEFLOW_REDIS_CLUSTER_PORT", LOCAL_REDIS_CLUSTER_PORT),
            postgres_replica_port=_int(env, "COURSEFLOW_POSTGRES_REPLICA_PORT", LOCAL_POSTGRES_REPLICA_PORT),
            server_host=env.get("SERVER_HOST", "127.0.0.1"),
            server_port=_int(env, "SERVER_PORT", 8000),
            api_processes=_int(env, "API_PROCESSES", 1),
            workers=_int(env, "WORKERS", 2),
            batch_size=_bounded(env, "BATCH_SIZE", 2000, 1, 100_000),
            block_ms=_int(env, "BLOCK_MS", 1000),
            claim_idle_ms=claim_idle_ms,
            max_deliveries=_int(env, "MAX_DELIVERIES", 5),
            idempotency_ttl_s=_int(env, "IDEMPOTENCY_TTL", 86_400),
            replica_wait_ms=_int(env, "REPLICA_WAIT_MS", 100),
            replica_max_lag_ms=_int(env, "REPLICA_MAX_LAG_MS", 1000),
            stream_prefix=env.get("COURSEFLOW_STREAM_PREFIX", "courseflow"),
            partitions=_bounded(env, "PARTITIONS", DEFAULT_PARTITIONS, 1, 1024),
            redis_cluster_nodes=_nodes(env, "REDIS_CLUSTER_NODES"),
            redis_wait_replicas=_bounded(env, "REDIS_WAIT_REPLICAS", 0, 0, 16),
            redis_wait_timeout_ms=_bounded(env, "REDIS_WAIT_TIMEOUT_MS", 1000, 1, 60_000),
            lease_ms=lease_ms,
            auth_jwt_secret=env.get("AUTH_JWT_SECRET") or None,
            auth_jwt_public_key_file=_path(env, "AUTH_JWT_PUBLIC_KEY_FILE"),
            auth_jwt_private_key_file=_path(env, "AUTH_JWT_PRIVATE_KEY_FILE"),
            auth_jwt_audience=env.get("AUTH_JWT_AUDIENCE") or "courseflow",
            auth_jwt_issuer=env.get("AUTH_JWT_ISSUER") or None,
            auth_leeway_s=_int(env, "AUTH_LEEWAY", 30),
            rate_limit_student_writes=env.get("RATE_LIMIT_STUDENT_WRITES") or RATE_LIMIT_STUDENT_WRITES,
            rate_limit_student_reads=env.get("RATE_LIMIT_STUDENT_READS") or RATE_LIMIT_STUDENT_READS,
            rate_limit_registrar=env.get("RATE_LIMIT_REGISTRAR") or RATE_LIMIT_REGISTRAR,
            rate_limit_service=env.get("RATE_LIMIT_SERVICE") or RATE_LIMIT_SERVICE,
            rate_limit_anonymous=env.get("RATE_LIMIT_ANONYMOUS") or RATE_LIMIT_ANONYMOUS,
            live_streams_per_student=_int(env, "LIVE_STREAMS_PER_STUDENT", 10),
            live_streams_per_privileged=_int(env, "LIVE_STREAMS_PER_PRIVILEGED", 10_000),
            log_format=env.get("LOG_FORMAT") or None,
            log_level=env.get("LOG_LEVEL") or "INFO",
            access_log=_switch(env, "ACCESS_LOG", False),
            metrics_top_courses=_int(env, "METRICS_TOP_COURSES", 20),
            metrics_host=env.get("METRICS_HOST") or "127.0.0.1",
        )


def _redacted(name: str, value: object) -> object:
    if name == "auth_jwt_secret" and value:
        return "***"
    if name in ("database_url", "database_replica_url", "redis_url") and isinstance(value, str):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", value)
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"configuration error: {name} must be an integer, got {raw!r}") from None


def _bounded(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _int(env, name, default)
    if not low <= value <= high:
        raise SystemExit(f"configuration error: {name} must be between {low} and {high}, got {value}")
    return value


def _nodes(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    nodes = tuple(node.strip() for node in (env.get(name) or "").split(",") if node.strip())
    for node in nodes:
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SystemExit(f"configuration error: {name} must be host:port,host:port,..., got {node!r}")
    return nodes


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in ("on", "off", "true", "false", "1", "0"):
        raise SystemExit(f"configuration error: {name} must be on or off, got {raw!r}")
    return raw in ("on", "true", "1")
