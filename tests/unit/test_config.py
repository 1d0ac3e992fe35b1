"""Configuration from the environment, including the seed's variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from courseflow_local import credentials, with_saved_passwords

from courseflow.platform import config
from courseflow.platform.config import (
    LOCAL_POSTGRES_PORT,
    LOCAL_REDIS_PORT,
    AuthSettings,
    PostgresSettings,
    RedisSettings,
    Settings,
)
from tests import containers

README = Path(__file__).resolve().parents[2] / "README.md"
# Read by a library from the environment itself, neither by Settings nor by a call of ours.
READ_BY_LIBRARIES = {"OTEL_EXPORTER_OTLP_ENDPOINT"}


def test_defaults_point_at_the_local_servers(tmp_path: Path) -> None:
    settings = Settings.from_env({"COURSEFLOW_DATA_DIR": str(tmp_path)})
    assert settings.postgres.url.endswith(f"127.0.0.1:{LOCAL_POSTGRES_PORT}/courseflow")
    assert settings.redis.url == f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/0"
    assert not settings.local.external_servers
    assert (settings.http.port, settings.worker.count) == (8000, 2)


def test_local_urls_carry_the_saved_application_passwords(tmp_path: Path) -> None:
    saved = credentials.load_or_create(tmp_path)
    settings = with_saved_passwords(Settings.from_env({"COURSEFLOW_DATA_DIR": str(tmp_path)}))
    assert settings.postgres.url == (
        f"postgresql://courseflow:{saved.postgres_app_password}@127.0.0.1:{LOCAL_POSTGRES_PORT}/courseflow"
    )
    assert settings.redis.url == f"redis://courseflow:{saved.redis_app_password}@127.0.0.1:{LOCAL_REDIS_PORT}/0"
    assert saved.postgres_admin_password not in settings.postgres.url + settings.redis.url
    assert not settings.local.external_servers


def test_an_unreadable_credentials_file_names_it(tmp_path: Path) -> None:
    credentials.path(tmp_path).write_text("{not json")
    with pytest.raises(SystemExit, match=r"credentials\.json"):
        with_saved_passwords(Settings.from_env({"COURSEFLOW_DATA_DIR": str(tmp_path)}))
    given = {"DATABASE_URL": "postgresql://u@db/x", "REDIS_URL": "redis://cache:6379/0"}
    external = Settings.from_env({**given, "COURSEFLOW_DATA_DIR": str(tmp_path)})
    assert with_saved_passwords(external) is external


def test_seed_variables_keep_working() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://u@db/x", "REDIS_HOST": "cache", "REDIS_PORT": "6380", "SERVER_PORT": "9000"}
    )
    assert settings.postgres.url == "postgresql://u@db/x"
    assert settings.redis.url == "redis://cache:6380/0"
    assert settings.http.port == 9000
    assert settings.local.external_servers


def test_redis_url_wins_over_host_and_port() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://a:1/2", "REDIS_HOST": "b"})
    assert settings.redis.url == "redis://a:1/2"


def test_a_bad_number_names_the_variable() -> None:
    with pytest.raises(SystemExit, match="SERVER_PORT"):
        Settings.from_env({"SERVER_PORT": "eighty"})


def test_settings_never_show_secrets() -> None:
    settings = Settings(
        auth=AuthSettings(jwt_secret="k" * 40),
        postgres=PostgresSettings(url="postgresql://courseflow:db-password@127.0.0.1:5432/courseflow"),
        redis=RedisSettings(url="redis://courseflow:redis-password@127.0.0.1:6379/0"),
    )
    shown = repr(settings)
    assert "k" * 40 not in shown and "db-password" not in shown and "redis-password" not in shown
    assert "postgresql://courseflow:***@127.0.0.1:5432/courseflow" in shown


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BATCH_SIZE", "0"),
        ("PARTITIONS", "1025"),
        ("LEASE_MS", "99"),
        ("SERVER_PORT", "65536"),
        ("REDIS_CLUSTER_NODES", "cache:6379,cache"),
        ("REDIS_CLUSTER_NODES", "cache:0"),
        ("LOG_FORMAT", "xml"),
        ("ACCESS_LOG", "sometimes"),
        ("AUTH_LEEWAY", "-1"),
    ],
)
def test_a_value_out_of_bounds_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SystemExit, match=f"^configuration error: {variable}="):
        Settings.from_env({"DATABASE_URL": "postgresql://u@db/x", "REDIS_URL": "redis://cache/0", variable: value})


def test_values_reach_their_sections() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@db/x",
            "REDIS_CLUSTER_NODES": "a:7001, b:7002,",
            "ACCESS_LOG": "on",
            "BATCH_SIZE": "100000",
            "AUTH_JWT_PUBLIC_KEY_FILE": "/keys/public.pem",
            "RATE_LIMIT_ANONYMOUS": "off",
            "LOG_FORMAT": "json",
            "IDEMPOTENCY_TTL": "0",
        }
    )
    assert settings.redis.cluster_nodes == ("a:7001", "b:7002")
    assert settings.http.access_log and settings.worker.batch_size == 100_000
    assert settings.auth.jwt_public_key_file == Path("/keys/public.pem")
    assert (settings.limits.anonymous, settings.logs.format, settings.queue.idempotency_ttl_s) == ("off", "json", 0)


def test_a_lease_must_run_out_before_its_entries_are_reclaimed() -> None:
    with pytest.raises(SystemExit, match=r"LEASE_MS \(15000\) must be below CLAIM_IDLE_MS \(15000\)"):
        Settings.from_env({"LEASE_MS": "15000", "DATABASE_URL": "postgresql://u@db/x", "REDIS_URL": "redis://c/0"})


def test_an_empty_variable_keeps_the_default() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u@db/x", "REDIS_URL": "redis://c/0", "WORKERS": ""})
    assert settings.worker.count == config.default("WORKERS") == 2


def _documented() -> dict[str, str]:
    """The README's configuration table: each row's variable and its default column."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    found: dict[str, str] = {}
    for name_cell, default_cell, *_ in rows:
        names = re.findall(r"`([A-Z0-9_]+)`", name_cell)
        assert len(names) == 1, f"one variable a row, so its default is unambiguous: {name_cell}"
        assert names[0] not in found, f"{names[0]} appears twice"
        found[names[0]] = default_cell.strip()
    return found


def _shown(value: object) -> str:
    if value is None or value == ():
        return "—"
    if isinstance(value, bool):
        return "`on`" if value else "`off`"
    return f"`{value}`"


def test_the_readme_lists_every_variable_read_with_its_default() -> None:
    documented = _documented()
    read = set(config.VARIABLES) | containers.environ_reads() | READ_BY_LIBRARIES
    assert set(documented) == read
    wrong = {
        name: (documented[name], _shown(config.default(name)))
        for name in config.VARIABLES
        if not documented[name].startswith(_shown(config.default(name)))
    }
    assert wrong == {}
