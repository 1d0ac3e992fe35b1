"""Settings read once from the environment into frozen sections, one per part of the system.

Each field's default and bounds are written once, on its type; `VARIABLES` names the environment variable
behind each field, and `Settings.from_env` converts them all in one call.
"""

from __future__ import annotations

import functools
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
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
# The role that owns the local database and its schema: migrations (and rebuilds) connect as it, the application never.
LOCAL_OWNER_USER = "courseflow_owner"
DEFAULT_PARTITIONS = 16


def local_database_url(port: int = LOCAL_POSTGRES_PORT, password: str | None = None, role: str = LOCAL_APP_USER) -> str:
    """The application's (or `role`'s) URL for the local PostgreSQL; without the password its server refuses it."""
    user = role if password is None else f"{role}:{quote(password, safe='')}"
    return f"postgresql://{user}@127.0.0.1:{port}/{LOCAL_APP_USER}"


def local_redis_url(port: int = LOCAL_REDIS_PORT, password: str | None = None) -> str:
    """The application's URL for the local Redis; without the password its server refuses it."""
    user = "" if password is None else f"{LOCAL_APP_USER}:{quote(password, safe='')}@"
    return f"redis://{user}127.0.0.1:{port}/0"


Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
# host:port with a port of 1 to 65535: what REDIS_CLUSTER_NODES lists, comma-separated.
Node = Annotated[
    str, msgspec.Meta(pattern=r"^\S+:(?:[1-9]\d{0,3}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d{2}|655[0-2]\d|6553[0-5])$")
]
# Shown masked by every section's repr: settings end up in tracebacks and test reports.
SECRET_FIELDS: Final = frozenset({"jwt_secret"})
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


class SettingsSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    def __repr__(self) -> str:
        shown = {name: _redacted(name, getattr(self, name)) for name in self.__struct_fields__}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class HttpSettings(SettingsSection, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 8000
    processes: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    # One line per HTTP request: off by default, as it costs the intake path a log record per request.
    access_log: bool = False
    # What one connection may hold of a server process (see courseflow.http.door): a request line (414) and
    # header fields (431) of bounded size and number, a head complete in time, no long pause inside a body
    # (408), a short idle keep-alive, and a share of the connections an address may open (429) or all may (503).
    max_request_line: Annotated[int, msgspec.Meta(ge=256, le=65_536)] = 8192
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=262_144)] = 16_384
    max_headers: Annotated[int, msgspec.Meta(ge=8, le=1000)] = 100
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    body_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    keep_alive_s: Annotated[int, msgspec.Meta(ge=1, le=300)] = 5
    connections_per_address: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 256
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 4096


class PostgresSettings(SettingsSection, frozen=True):
    url: str = local_database_url()
    # The schema owner's URL, for `migrate` and `rebuild` only; None: they use `url` (a role that owns the schema).
    migration_url: str | None = local_database_url(role=LOCAL_OWNER_USER)
    # A streaming replica the API reads from (see courseflow.http.replica); None: every read goes to `url`.
    replica_url: str | None = None
    # How long a read waits for the replica to replay what the API has already written or shown, before the
    # primary answers it instead.
    replica_wait_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 100
    # The replica answers only once it has replayed what the primary had this long ago (more behind: the primary).
    replica_max_lag_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 1000

    @property
    def owner_url(self) -> str:
        """Where schema changes connect: the owner's URL, or the application's where it owns the schema itself."""
        return self.migration_url or self.url


class RedisSettings(SettingsSection, frozen=True):
    url: str = local_redis_url()
    # The seed's way to name Redis: when either is set and REDIS_URL is not, `url` is redis://host:port/0.
    host: str = "127.0.0.1"
    port: Port = 6379
    # host:port of some Redis Cluster nodes: every component then uses the cluster client (`url` gives the user).
    cluster_nodes: tuple[Node, ...] = ()
    # Intake answers 202 only once this many replicas have the request (WAIT): it survives a master's failover.
    wait_replicas: Annotated[int, msgspec.Meta(ge=0, le=16)] = 0
    wait_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1000


class QueueSettings(SettingsSection, frozen=True):
    """The request queue in Redis: its key names, partitions and remembered idempotency keys."""

    prefix: Annotated[str, msgspec.Meta(min_length=1)] = "courseflow"
    # Fixed when the deployment is first migrated (see courseflow.decisions.partitions).
    partitions: Annotated[int, msgspec.Meta(ge=1, le=1024)] = DEFAULT_PARTITIONS
    # A replay inside this window answers the same request; after it the key is forgotten (bounded state).
    idempotency_ttl_s: Count = 86_400
    # How often each API process re-applies recent priority grants to intake (see http.app).
    priority_sync_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # Requests a student may have waiting for a decision at once (bounded state: one more is a 429).
    pending_per_student: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 50


class WorkerSettings(SettingsSection, frozen=True):
    # Workers `courseflow run` starts.
    count: Annotated[int, msgspec.Meta(ge=0, le=256)] = 2
    # Stream entries a worker reads at once, across all its partitions: with ROUND_BATCHES (decisions.worker),
    # what bounds a worker's memory however deep the backlog.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2000
    # XREADGROUP BLOCK stays well below the socket timeout (redis-py #2807); 0 would block for good.
    block_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1000
    # A pending entry idle this long belongs to a consumer presumed dead and is reclaimed.
    claim_idle_ms: Count = 15000
    max_deliveries: Positive = 5
    # A dead worker's partitions go to the others once its leases, renewed every third of this (or every second),
    # run out.
    lease_ms: Annotated[int, msgspec.Meta(ge=100, le=3_600_000)] = 5000


TokenLifetime = Annotated[int, msgspec.Meta(ge=60, le=366 * 86_400)]


class AuthSettings(SettingsSection, frozen=True):
    # HS256 with a shared secret, or RS256 with a PEM public key; neither = development mode.
    jwt_secret: str | None = None
    jwt_public_key_file: Path | None = None
    # Only `courseflow token` signs, and only with RS256 deployments that keep a private key at hand.
    jwt_private_key_file: Path | None = None
    jwt_audience: Annotated[str, msgspec.Meta(min_length=1)] = "courseflow"
    jwt_issuer: str | None = None
    leeway_s: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 30
    # The longest a token may live (exp - iat, or exp - now without iat): a stolen one is worth a day at most.
    max_token_ttl_s: TokenLifetime = 86_400
    # A service's tokens may live longer, when set; unset, they are held to max_token_ttl_s.
    max_service_token_ttl_s: TokenLifetime | None = None


class LimitsSettings(SettingsSection, frozen=True):
    """Rate limits per principal, in the `limits` notation ("20/2 seconds", "10/second;100/minute") or "off",
    and the live streams one caller may hold open."""

    # A student's writes allow a small burst, then about 10 a second.
    student_writes: str = "20 per 2 seconds"
    student_reads: str = "50 per second"
    registrar: str = "1000 per second"
    service: str = "5000 per second"
    # Per client address: the public probes, and every request whose token is refused.
    anonymous: str = "100 per second"
    # Per API process; registrars and services (and development mode's one caller) may hold the privileged count.
    live_streams_per_student: Positive = 10
    live_streams_per_privileged: Positive = 10_000
    # What a WebSocket client may send: the feed only pushes, so a client has next to nothing to say.
    ws_message_bytes: Annotated[int, msgspec.Meta(ge=125, le=1_048_576)] = 4096
    ws_messages_per_s: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 5.0
    ws_message_burst: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    # After a socket is closed for flooding, its caller's new sockets are refused this long (0: not at all).
    ws_flood_cooldown_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0


class LogsSettings(SettingsSection, frozen=True):
    # None picks console on a terminal, JSON otherwise (see courseflow.platform.logs).
    format: Literal["json", "console"] | None = None
    level: str = "INFO"


class MetricsSettings(SettingsSection, frozen=True):
    # /metrics exports per-course gauges for this many courses only (deepest queue, then most seats taken).
    top_courses: Count = 20
    # Where `worker --metrics-port` and `projector --metrics-port` listen; loopback unless a scraper is elsewhere.
    host: str = "127.0.0.1"


class LocalSettings(SettingsSection, frozen=True):
    """The local servers of `courseflow services` (development and tests)."""

    data_dir: Path = Path(".courseflow")
    postgres_port: Port = LOCAL_POSTGRES_PORT
    redis_port: Port = LOCAL_REDIS_PORT
    # Six nodes take this port and the next five; their cluster bus ports are 10000 higher.
    redis_cluster_port: Annotated[int, msgspec.Meta(ge=1, le=55530)] = LOCAL_REDIS_CLUSTER_PORT
    postgres_replica_port: Port = LOCAL_POSTGRES_REPLICA_PORT
    # The local Redis's maxmemory (noeviction: past it, intake answers 503 and no accepted request is evicted).
    redis_maxmemory: Annotated[str, msgspec.Meta(pattern=r"^[1-9]\d*(?:[kmg]b)?$")] = "1gb"
    # True when the URLs came from the environment, so `courseflow run` must not start servers.
    external_servers: bool = False


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    http: HttpSettings = HttpSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    queue: QueueSettings = QueueSettings()
    worker: WorkerSettings = WorkerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    logs: LogsSettings = LogsSettings()
    metrics: MetricsSettings = MetricsSettings()
    local: LocalSettings = LocalSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        given = {name: raw for name in VARIABLES if (raw := env.get(name, "").strip())}
        sections: dict[str, dict[str, Any]] = {}
        for name, raw in given.items():
            section, field = VARIABLES[name]
            sections.setdefault(section, {})[field] = _prepared(_field_type(section, field), raw)
        try:
            settings = msgspec.convert(sections, cls, strict=False, dec_hook=_decode)
        except msgspec.ValidationError as exc:
            raise SystemExit(_culprit(given) or f"configuration error: {exc}") from None
        return _completed(settings, given)


# Every environment variable read, and the section and field it sets; the README's configuration table lists
# exactly these (tests/unit/test_config.py holds it to them).
VARIABLES: Final[Mapping[str, tuple[str, str]]] = {
    "SERVER_HOST": ("http", "host"),
    "SERVER_PORT": ("http", "port"),
    "API_PROCESSES": ("http", "processes"),
    "ACCESS_LOG": ("http", "access_log"),
    "HTTP_MAX_REQUEST_LINE": ("http", "max_request_line"),
    "HTTP_MAX_HEADER_BYTES": ("http", "max_header_bytes"),
    "HTTP_MAX_HEADERS": ("http", "max_headers"),
    "HTTP_HEADER_TIMEOUT": ("http", "header_timeout_s"),
    "HTTP_BODY_TIMEOUT": ("http", "body_timeout_s"),
    "HTTP_KEEP_ALIVE": ("http", "keep_alive_s"),
    "HTTP_CONNECTIONS_PER_ADDRESS": ("http", "connections_per_address"),
    "HTTP_MAX_CONNECTIONS": ("http", "max_connections"),
    "DATABASE_URL": ("postgres", "url"),
    "MIGRATION_DATABASE_URL": ("postgres", "migration_url"),
    "DATABASE_REPLICA_URL": ("postgres", "replica_url"),
    "REPLICA_WAIT_MS": ("postgres", "replica_wait_ms"),
    "REPLICA_MAX_LAG_MS": ("postgres", "replica_max_lag_ms"),
    "REDIS_URL": ("redis", "url"),
    "REDIS_HOST": ("redis", "host"),
    "REDIS_PORT": ("redis", "port"),
    "REDIS_CLUSTER_NODES": ("redis", "cluster_nodes"),
    "REDIS_WAIT_REPLICAS": ("redis", "wait_replicas"),
    "REDIS_WAIT_TIMEOUT_MS": ("redis", "wait_timeout_ms"),
    "COURSEFLOW_STREAM_PREFIX": ("queue", "prefix"),
    "PARTITIONS": ("queue", "partitions"),
    "IDEMPOTENCY_TTL": ("queue", "idempotency_ttl_s"),
    "PENDING_PER_STUDENT": ("queue", "pending_per_student"),
    "WORKERS": ("worker", "count"),
    "BATCH_SIZE": ("worker", "batch_size"),
    "BLOCK_MS": ("worker", "block_ms"),
    "CLAIM_IDLE_MS": ("worker", "claim_idle_ms"),
    "MAX_DELIVERIES": ("worker", "max_deliveries"),
    "LEASE_MS": ("worker", "lease_ms"),
    "AUTH_JWT_SECRET": ("auth", "jwt_secret"),
    "AUTH_JWT_PUBLIC_KEY_FILE": ("auth", "jwt_public_key_file"),
    "AUTH_JWT_PRIVATE_KEY_FILE": ("auth", "jwt_private_key_file"),
    "AUTH_JWT_AUDIENCE": ("auth", "jwt_audience"),
    "AUTH_JWT_ISSUER": ("auth", "jwt_issuer"),
    "AUTH_LEEWAY": ("auth", "leeway_s"),
    "AUTH_MAX_TOKEN_TTL": ("auth", "max_token_ttl_s"),
    "AUTH_MAX_SERVICE_TOKEN_TTL": ("auth", "max_service_token_ttl_s"),
    "RATE_LIMIT_STUDENT_WRITES": ("limits", "student_writes"),
    "RATE_LIMIT_STUDENT_READS": ("limits", "student_reads"),
    "RATE_LIMIT_REGISTRAR": ("limits", "registrar"),
    "RATE_LIMIT_SERVICE": ("limits", "service"),
    "RATE_LIMIT_ANONYMOUS": ("limits", "anonymous"),
    "LIVE_STREAMS_PER_STUDENT": ("limits", "live_streams_per_student"),
    "LIVE_STREAMS_PER_PRIVILEGED": ("limits", "live_streams_per_privileged"),
    "WS_MAX_MESSAGE_BYTES": ("limits", "ws_message_bytes"),
    "WS_MESSAGES_PER_SECOND": ("limits", "ws_messages_per_s"),
    "WS_MESSAGE_BURST": ("limits", "ws_message_burst"),
    "WS_FLOOD_COOLDOWN": ("limits", "ws_flood_cooldown_s"),
    "LOG_FORMAT": ("logs", "format"),
    "LOG_LEVEL": ("logs", "level"),
    "METRICS_TOP_COURSES": ("metrics", "top_courses"),
    "METRICS_HOST": ("metrics", "host"),
    "COURSEFLOW_DATA_DIR": ("local", "data_dir"),
    "COURSEFLOW_POSTGRES_PORT": ("local", "postgres_port"),
    "COURSEFLOW_REDIS_PORT": ("local", "redis_port"),
    "COURSEFLOW_REDIS_CLUSTER_PORT": ("local", "redis_cluster_port"),
    "COURSEFLOW_POSTGRES_REPLICA_PORT": ("local", "postgres_replica_port"),
    "COURSEFLOW_REDIS_MAXMEMORY": ("local", "redis_maxmemory"),
}
_SWITCH: Final = {"on": "true", "off": "false"}


def default(variable: str) -> object:
    """What the setting behind `variable` is when the environment leaves it out."""
    section, field = VARIABLES[variable]
    return getattr(getattr(Settings(), section), field)


def _completed(settings: Settings, given: Mapping[str, str]) -> Settings:
    """Fill in what depends on other settings: the local servers' URLs, and the seed's REDIS_HOST/REDIS_PORT."""
    pg, rds, local, worker = settings.postgres, settings.redis, settings.local, settings.worker
    if worker.lease_ms >= worker.claim_idle_ms:
        # A dead worker's entries are reclaimed by whoever takes its partitions: its lease must run out first.
        raise SystemExit(
            f"configuration error: LEASE_MS ({worker.lease_ms}) must be below CLAIM_IDLE_MS ({worker.claim_idle_ms})"
        )
    redis_url: str | None = given.get("REDIS_URL")
    if redis_url is None and ("REDIS_HOST" in given or "REDIS_PORT" in given):
        redis_url = f"redis://{rds.host}:{rds.port}/0"
    database_url = given.get("DATABASE_URL")
    external = bool(database_url or redis_url)
    # Without a URL, the local servers' (their passwords are added by the commands that know where they are kept).
    migration_url = given.get("MIGRATION_DATABASE_URL")
    if migration_url is None and database_url is None:
        migration_url = local_database_url(local.postgres_port, role=LOCAL_OWNER_USER)
    database_url = database_url or local_database_url(local.postgres_port)
    redis_url = redis_url or local_redis_url(local.redis_port)
    replace = msgspec.structs.replace
    return replace(
        settings,
        postgres=replace(pg, url=database_url, migration_url=migration_url),
        redis=replace(rds, url=redis_url),
        local=replace(local, external_servers=external),
    )


@functools.cache
def _field_type(section: str, field: str) -> Any:
    section_type = typing.get_type_hints(Settings)[section]
    return typing.get_type_hints(section_type, include_extras=True)[field]


def _prepared(kind: Any, raw: str) -> object:
    """The environment's text in the shape conversion takes: lists split on commas, switches as on/off too."""
    if typing.get_origin(kind) is tuple:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if kind is bool:
        return _SWITCH.get(raw.lower(), raw)
    return raw


def _decode(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


def _culprit(given: Mapping[str, str]) -> str | None:
    """The first variable whose value its field refuses, named in the message (the conversion names the field)."""
    for name, raw in given.items():
        kind = _field_type(*VARIABLES[name])
        try:
            msgspec.convert(_prepared(kind, raw), kind, strict=False, dec_hook=_decode)
        except msgspec.ValidationError as exc:
            return f"configuration error: {name}={raw!r} is refused: {exc}"
    return None


def _redacted(name: str, value: object) -> object:
    if name in SECRET_FIELDS and value:
        return "***"
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value
