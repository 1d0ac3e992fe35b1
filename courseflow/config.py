"""Settings read once from the environment into a frozen struct."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

# Local servers started by `courseflow services up` use ports that do not clash with system ones.
LOCAL_POSTGRES_PORT = 55432
LOCAL_REDIS_PORT = 56379


def local_database_url(port: int = LOCAL_POSTGRES_PORT) -> str:
    return f"postgresql://courseflow@127.0.0.1:{port}/courseflow"


def local_redis_url(port: int = LOCAL_REDIS_PORT) -> str:
    return f"redis://127.0.0.1:{port}/0"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = local_database_url()
    redis_url: str = local_redis_url()
    # True when the URLs came from the environment, so `courseflow run` must not start servers.
    external_servers: bool = False
    data_dir: Path = Path(".courseflow")
    postgres_port: int = LOCAL_POSTGRES_PORT
    redis_port: int = LOCAL_REDIS_PORT
    server_host: str = "127.0.0.1"
    server_port: int = 8000
    api_processes: int = 1
    workers: int = 2
    batch_size: int = 500
    # XREADGROUP BLOCK stays well below the socket timeout (redis-py #2807).
    block_ms: int = 1000
    # A pending entry idle this long belongs to a consumer presumed dead and is reclaimed.
    claim_idle_ms: int = 15000
    max_deliveries: int = 5
    idempotency_ttl_s: int = 0
    stream_prefix: str = "courseflow"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        pg_port = _int(env, "COURSEFLOW_POSTGRES_PORT", LOCAL_POSTGRES_PORT)
        redis_port = _int(env, "COURSEFLOW_REDIS_PORT", LOCAL_REDIS_PORT)
        database_url = env.get("DATABASE_URL")
        redis_url = env.get("REDIS_URL")
        if not redis_url and ("REDIS_HOST" in env or "REDIS_PORT" in env):
            redis_url = f"redis://{env.get('REDIS_HOST', '127.0.0.1')}:{_int(env, 'REDIS_PORT', 6379)}/0"
        return cls(
            database_url=database_url or local_database_url(pg_port),
            redis_url=redis_url or local_redis_url(redis_port),
            external_servers=bool(database_url or redis_url),
            data_dir=Path(env.get("COURSEFLOW_DATA_DIR", ".courseflow")),
            postgres_port=pg_port,
            redis_port=redis_port,
            server_host=env.get("SERVER_HOST", "127.0.0.1"),
            server_port=_int(env, "SERVER_PORT", 8000),
            api_processes=_int(env, "API_PROCESSES", 1),
            workers=_int(env, "WORKERS", 2),
            batch_size=_int(env, "BATCH_SIZE", 500),
            block_ms=_int(env, "BLOCK_MS", 1000),
            claim_idle_ms=_int(env, "CLAIM_IDLE_MS", 15000),
            max_deliveries=_int(env, "MAX_DELIVERIES", 5),
            idempotency_ttl_s=_int(env, "IDEMPOTENCY_TTL", 0),
            stream_prefix=env.get("COURSEFLOW_STREAM_PREFIX", "courseflow"),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"configuration error: {name} must be an integer, got {raw!r}") from None
