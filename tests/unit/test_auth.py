"""Tokens strictly: one canonical spelling, numeric times, a longest lifetime, a plain sub, plain refusals."""

from __future__ import annotations

import base64
import random
import re
import time

import jwt
import pytest
from msgspec.structs import replace

from courseflow.http.auth import Authenticator, canonical
from courseflow.http.problems import Unauthorized
from courseflow.platform.config import Settings

SEGMENT = base64.urlsafe_b64encode(b"payload!").rstrip(b"=").decode()  # "cGF5bG9hZCE"


def _token(*segments: str) -> str:
    return ".".join(segments)


@pytest.mark.parametrize("length", range(13))
def test_every_length_encoded_canonically_passes_unpadded_only(length: int) -> None:
    raw = random.Random(length).randbytes(length)
    padded = base64.urlsafe_b64encode(raw).decode()
    assert canonical(_token(padded.rstrip("="), padded.rstrip("="), SEGMENT))
    if padded.endswith("="):  # RFC 7515 §2: base64url without padding; `=` would be a second spelling
        assert not canonical(_token(SEGMENT, SEGMENT, padded))


@pytest.mark.parametrize(
    "segment",
    [
        "cGF5bG9hZCF",  # the same bytes with other trailing bits: a second spelling of one value
        "cGF5bG9hZCE=",  # padding, even where it would fit
        "cGF5bG9hZCE===",  # three `=`
        "cGF5bG9hZCE==",  # `=` beyond the last quantum
        "cG=F5bG9hZCE",  # `=` inside
        "cGF5bG9hZCE+",  # the standard alphabet's characters
        "cGF5bG9h/CE",
        "cGF5bG9hZ CE",
        "cGF5bG9hZé",
        "Q",  # one character left over encodes no byte
        "cGF5b",
    ],
)
def test_a_segment_spelled_otherwise_is_refused(segment: str) -> None:
    assert canonical(_token(SEGMENT, SEGMENT, SEGMENT))
    assert not canonical(_token(segment, SEGMENT, SEGMENT))
    assert not canonical(_token(SEGMENT, segment, SEGMENT))
    assert not canonical(_token(SEGMENT, SEGMENT, segment))


@pytest.mark.parametrize("token", ["", SEGMENT, _token(SEGMENT, SEGMENT), _token(*[SEGMENT] * 4)])
def test_a_token_has_three_segments(token: str) -> None:
    assert not canonical(token)


# ---- the Authenticator, with a key and no server --------------------------------------------------------------

SECRET = "unit-test-secret-of-at-least-thirty-two-bytes"
DAY = 86_400


def _authenticator(**overrides: object) -> Authenticator:
    settings = Settings.from_env({})
    return Authenticator(replace(settings, auth=replace(settings.auth, jwt_secret=SECRET, **overrides)))


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "7", "role": "student", "aud": "courseflow", "exp": now + 60, "iat": now} | overrides


def _refusal(authenticator: Authenticator, claims: dict[str, object]) -> str:
    with pytest.raises(Unauthorized) as refused:
        authenticator.authenticate("Bearer " + jwt.encode(claims, SECRET, algorithm="HS256"))
    return refused.value.detail


def test_a_token_lives_a_day_at_most_by_default() -> None:
    authenticator, now = _authenticator(), int(time.time())
    assert authenticator.authenticate("Bearer " + jwt.encode(_claims(exp=now + DAY), SECRET)).sub == "7"
    longer = _refusal(authenticator, _claims(exp=now + DAY + 1))
    assert longer == "the token is not valid: it is meant to live longer than the 86400 s allowed for a student token"
    # A token that never expires in practice.
    assert "live longer" in _refusal(authenticator, _claims(exp=10**30))


def test_without_iat_the_lifetime_left_is_judged() -> None:
    authenticator, now = _authenticator(max_token_ttl_s=3600), int(time.time())
    unstamped = {k: v for k, v in _claims().items() if k != "iat"}
    assert authenticator.authenticate("Bearer " + jwt.encode(unstamped | {"exp": now + 3000}, SECRET)).sub == "7"
    assert "live longer than the 3600 s" in _refusal(authenticator, unstamped | {"exp": now + 7200})


def test_an_old_iat_counts_against_the_lifetime() -> None:
    """Issued two days ago, valid for another hour: it was meant to live more than a day."""
    now = int(time.time())
    assert "live longer" in _refusal(_authenticator(), _claims(iat=now - 2 * DAY, exp=now + 3600))


def test_services_may_live_longer_only_when_configured() -> None:
    now = int(time.time())
    week = _claims(role="service", sub="sis", exp=now + 7 * DAY)
    assert "allowed for a service token" in _refusal(_authenticator(), week)
    lenient = _authenticator(max_service_token_ttl_s=30 * DAY)
    assert lenient.authenticate("Bearer " + jwt.encode(week, SECRET)).sub == "sis"
    # Only services: a registrar is still held to a day.
    assert "allowed for a registrar token" in _refusal(lenient, week | {"role": "registrar", "sub": "r"})


@pytest.mark.parametrize("role", ["student", "registrar", "service"])
@pytest.mark.parametrize("sub", ["", " ", " r", "r" * 5000, "r\x00", "r\n"])
def test_every_role_needs_a_plain_sub(role: str, sub: str) -> None:
    detail = _refusal(_authenticator(), _claims(role=role, sub=sub))
    assert detail.startswith("the token is not valid: ") and "sub" in detail


def test_two_roles_in_one_payload_are_refused() -> None:
    now = int(time.time())
    raw = b'{"sub":"r","role":"registrar","aud":"courseflow","exp":%d,"iat":%d,"role":"student"}' % (now + 60, now)
    token = jwt.PyJWS().encode(raw, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="its payload gives 'role' more than once"):
        _authenticator().authenticate(f"Bearer {token}")


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_a_time_as_a_digit_string_is_refused(claim: str) -> None:
    now = int(time.time())
    detail = _refusal(_authenticator(), _claims(**{claim: str(now - 10 if claim != "exp" else now + 60)}))
    assert detail == f"the token is not valid: its {claim} must be a number of seconds since 1970, not text"


_LIBRARY_WORDS = re.compile(r"Error|Exception|[a-z][A-Z]")  # a class name, e.g. DecodeError


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        jwt.encode(_claims(), "another-secret-of-at-least-thirty-two-bytes"),
        jwt.encode(_claims(aud="elsewhere"), SECRET),
        jwt.encode(_claims(nbf=int(time.time()) + 3600), SECRET),
        jwt.encode(_claims(iat="yesterday"), SECRET),
        jwt.encode({k: v for k, v in _claims().items() if k != "exp"}, SECRET),
        jwt.encode(_claims(), SECRET * 2, algorithm="HS512"),
        jwt.encode(_claims(), "", algorithm="none"),
        jwt.encode(_claims(jti=5), SECRET),
        jwt.encode(_claims(sub=7), SECRET),
        jwt.encode(_claims(), SECRET) + "=",
    ],
)
def test_every_refusal_is_said_in_plain_words(token: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        _authenticator().authenticate(f"Bearer {token}")
    detail = refused.value.detail
    assert detail.startswith("the token ") and not _LIBRARY_WORDS.search(detail), detail
