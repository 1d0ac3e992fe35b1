"""Configuration from the environment, including the seed's variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from courseflow_local import credentials

from courseflow.platform.config import LOCAL_POSTGRES_PORT, LOCAL_REDIS_PORT, Settings


def test_defaults_point_at_the_local_servers(tmp_path: Path) -> None:
    settings = Settings.from_env({"COURSEFLOW_DATA_DIR": str(tmp_path)})
    assert settings.database_url.endswith(f"127.0.0.1:{LOCAL_POSTGRES_PORT}/courseflow")
    assert settings.redis_url == f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/0"
    assert not settings.external_servers
    assert (settings.server_port, settings.workers) == (8000, 2)


def test_local_urls_carry_the_saved_application_passwords(tmp_path: Path) -> None:
    saved = credentials.load_or_create(tmp_path)
    settings = Settings.from_env({"COURSEFLOW_DATA_DIR": str(tmp_path)})
    assert settings.database_url == (
        f"postgresql://courseflow:{saved.postgres_app_password}@127.0.0.1:{LOCAL_POSTGRES_PORT}/courseflow"
    )
    assert settings.redis_url == f"redis://courseflow:{saved.redis_app_password}@127.0.0.1:{LOCAL_REDIS_PORT}/0"
    assert saved.postgres_admin_password not in settings.database_url + settings.redis_url
    assert not settings.external_servers


def test_an_unreadable_credentials_file_names_it(tmp_path: Path) -> None:
    credentials.path(tmp_path).write_text("{not json")
    with pytest.raises(SystemExit, match=r"credentials\.json"):
        Settings.from_env({"COURSEFLOW_DATA_DIR": str(tmp_path)})
    given = {"DATABASE_URL": "postgresql://u@db/x", "REDIS_URL": "redis://cache:6379/0"}
    assert Settings.from_env({**given, "COURSEFLOW_DATA_DIR": str(tmp_path)}).database_url == given["DATABASE_URL"]


def test_seed_variables_keep_working() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://u@db/x", "REDIS_HOST": "cache", "REDIS_PORT": "6380", "SERVER_PORT": "9000"}
    )
    assert settings.database_url == "postgresql://u@db/x"
    assert settings.redis_url == "redis://cache:6380/0"
    assert settings.server_port == 9000
    assert settings.external_servers


def test_redis_url_wins_over_host_and_port() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://a:1/2", "REDIS_HOST": "b"})
    assert settings.redis_url == "redis://a:1/2"


def test_a_bad_number_names_the_variable() -> None:
    with pytest.raises(SystemExit, match="SERVER_PORT"):
        Settings.from_env({"SERVER_PORT": "eighty"})


def test_settings_never_show_secrets() -> None:
    settings = Settings(
        auth_jwt_secret="k" * 40,
        database_url="postgresql://courseflow:db-password@127.0.0.1:5432/courseflow",
        redis_url="redis://courseflow:redis-password@127.0.0.1:6379/0",
    )
    shown = repr(settings)
    assert "k" * 40 not in shown and "db-password" not in shown and "redis-password" not in shown
    assert "postgresql://courseflow:***@127.0.0.1:5432/courseflow" in shown
