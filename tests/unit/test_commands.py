"""`courseflow token` prints only tokens the API would accept."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from courseflow import commands
from courseflow.domain import MAX_ID
from courseflow.http.auth import Authenticator
from courseflow.platform.config import Settings

SECRET = "unit-test-secret-of-at-least-thirty-two-bytes"


def _settings(**auth: object) -> Settings:
    settings = Settings.from_env({})
    return replace(settings, auth=replace(settings.auth, jwt_secret=SECRET, **auth))


def test_a_student_beyond_the_safe_bound_gets_no_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.token(_settings(), MAX_ID + 1, False, None, 60) == 2
    assert capsys.readouterr().out == ""
    assert commands.token(_settings(), MAX_ID, False, None, 60) == 0
    printed = capsys.readouterr().out.strip()
    assert Authenticator(_settings()).authenticate(f"Bearer {printed}").student_id == MAX_ID


def test_a_token_meant_to_outlive_the_limit_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.token(_settings(), None, True, None, 86_401) == 2
    assert "between 1 and 86400 seconds for a registrar" in capsys.readouterr().err
    # Services may be allowed longer, and only they.
    lenient = _settings(max_service_token_ttl_s=7 * 86_400)
    assert commands.token(lenient, None, False, "sis", 7 * 86_400) == 0
    printed = capsys.readouterr().out.strip()
    assert Authenticator(lenient).authenticate(f"Bearer {printed}").role == "service"
    assert commands.token(lenient, None, True, None, 7 * 86_400) == 2


@pytest.mark.parametrize("sub", ["", " sis", "s" * 129, "sis\x00"])
def test_a_sub_the_api_would_refuse_is_not_signed(capsys: pytest.CaptureFixture[str], sub: str) -> None:
    assert commands.token(_settings(), None, False, sub, 60) == 2
    assert "--sub" in capsys.readouterr().err
