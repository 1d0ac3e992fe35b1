"""Authentication: every way a token can be wrong is a 401 with a Bearer challenge; roles are the token's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from courseflow.http import auth
from courseflow.http.app import create_app
from courseflow.http.problems import Unauthorized
from courseflow.platform.config import Settings
from projections.projector import Projector
from tests.helpers import wait_until
from tests.trust import SECRET, bearer, secured

ENROLL = {"course_id": 1, "idempotency_key": "k1"}


@pytest.fixture
def secure(settings: Settings, projector: Projector) -> Iterator[tuple[TestClient, Settings]]:
    configured = secured(settings)
    with TestClient(create_app(configured)) as client:
        yield client, configured


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "7", "role": "student", "aud": "courseflow", "exp": now + 60, "iat": now} | overrides


def _token(claims: dict[str, object], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _none_token() -> str:
    # alg "none": a token with no signature that a careless verifier would accept.
    return jwt.encode(_claims(), "", algorithm="none")


@pytest.mark.parametrize(
    ("header", "given"),
    [
        (None, False),
        ("Basic dXNlcjpwYXNz", False),
        ("Bearer", False),
        ("Bearer not-a-jwt", True),
        ("Bearer " + _token(_claims(exp=int(time.time()) - 3600)), True),
        ("Bearer " + _token(_claims(), key="another-secret-of-at-least-thirty-two-bytes!!"), True),
        ("Bearer " + _token(_claims(aud="someone-else")), True),
        ("Bearer " + _token({k: v for k, v in _claims().items() if k != "exp"}), True),
        ("Bearer " + _token({k: v for k, v in _claims().items() if k != "aud"}), True),
        ("Bearer " + _token(_claims(role="superuser")), True),
        ("Bearer " + _token(_claims(sub="alice")), True),
        ("Bearer " + _token(_claims(sub="0")), True),
        ("Bearer " + _none_token(), True),
    ],
    ids=[
        "missing",
        "not-bearer",
        "empty",
        "malformed",
        "expired",
        "wrong-signature",
        "wrong-audience",
        "no-exp",
        "no-aud",
        "unknown-role",
        "student-sub-not-an-id",
        "student-sub-zero",
        "alg-none",
    ],
)
def test_bad_tokens_are_401_with_a_bearer_challenge(
    secure: tuple[TestClient, Settings], header: str | None, given: bool
) -> None:
    client, _ = secure
    headers = {} if header is None else {"Authorization": header}
    response = client.post("/enroll", json=ENROLL, headers=headers)
    assert response.status_code == 401, response.text
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert ('error="invalid_token"' in challenge) == given
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401
    # Plain words, never a library's class name (such as DecodeError).
    assert not re.search(r"Error|Exception|[a-z][A-Z]", response.json()["detail"]), response.json()["detail"]
    assert client.get("/api/v1/courses/1", headers=headers).status_code == 401


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.AAAA"


@pytest.mark.parametrize(
    "token",
    [
        _unsigned({"alg": "HS256", "crit": ["x\ny"]}, {}),
        _unsigned({"alg": "HS256", "crit": ["\u20ac\\"]}, {}),
        _unsigned({"alg": "HS256", "crit": ["\r\nSet-Cookie: pwned=1"]}, {}),
        _token(_claims(exp=10**400)),
        _token(_claims(sub="0" * 5000 + "42")),
        "e30." + "A" * 100_000 + ".AA",
    ],
    ids=["crit-newline", "crit-unicode", "crit-header-injection", "huge-exp", "huge-sub", "huge-token"],
)
def test_hostile_tokens_are_a_plain_401(secure: tuple[TestClient, Settings], token: str) -> None:
    client, _ = secure
    response = client.get("/api/v1/courses/1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.isascii() and "\n" not in challenge and "Set-Cookie" not in challenge


def test_a_remembered_token_still_expires(settings: Settings) -> None:
    configured = secured(settings, leeway_s=0)
    with TestClient(create_app(configured)) as client:
        # `exp` is whole seconds: 3 s leaves at least 2 to be verified and remembered before it passes.
        headers = bearer(configured, "registrar", ttl_s=3)
        assert client.get("/api/v1/courses/1", headers=headers).status_code == 404  # verified, remembered
        wait_until(
            lambda: client.get("/api/v1/courses/1", headers=headers).status_code == 401,
            timeout=15,
            what="the remembered token to expire",
        )


def test_issuer_is_checked_when_configured(settings: Settings) -> None:
    configured = secured(settings, jwt_issuer="https://sis.example.edu")
    with TestClient(create_app(configured)) as client:
        assert client.get("/api/v1/courses/1", headers=bearer(configured, "registrar")).status_code == 404
        foreign = _token(_claims(role="registrar", sub="r", iss="https://elsewhere.example"))
        assert client.get("/api/v1/courses/1", headers={"Authorization": f"Bearer {foreign}"}).status_code == 401
        unnamed = _token(_claims(role="registrar", sub="r"))
        assert client.get("/api/v1/courses/1", headers={"Authorization": f"Bearer {unnamed}"}).status_code == 401


@pytest.fixture
def rsa_keys(tmp_path: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "private.pem"
    public = tmp_path / "public.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def test_rs256_with_a_public_key_and_the_algorithm_pinned(settings: Settings, rsa_keys: tuple[Path, Path]) -> None:
    private, public = rsa_keys
    configured = msgspec.structs.replace(
        settings, auth=msgspec.structs.replace(settings.auth, jwt_public_key_file=public, jwt_private_key_file=private)
    )
    with TestClient(create_app(configured)) as client:
        good = bearer(configured, "registrar")
        assert jwt.get_unverified_header(good["Authorization"].split()[1])["alg"] == "RS256"
        assert client.get("/api/v1/courses/1", headers=good).status_code == 404
        # The classic confusion: an HS256 token whose "secret" is the public key must not verify.
        forged = jwt.encode(_claims(role="registrar", sub="r"), "x" * 32, algorithm="HS256")
        hmac_with_public_key = _forge_hs256_with(public.read_bytes())
        for token in (forged, hmac_with_public_key):
            assert client.get("/api/v1/courses/1", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def _forge_hs256_with(public_pem: bytes) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(_claims(role="registrar", sub="r")).encode())
    signature = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def test_misconfigured_keys_stop_the_start(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="at least 32 bytes"):
        create_app(msgspec.structs.replace(settings, auth=msgspec.structs.replace(settings.auth, jwt_secret="short")))
    with pytest.raises(SystemExit, match="not both"):
        create_app(
            msgspec.structs.replace(
                settings, auth=msgspec.structs.replace(settings.auth, jwt_secret=SECRET, jwt_public_key_file=tmp_path)
            )
        )
    with pytest.raises(SystemExit, match="cannot read"):
        create_app(
            msgspec.structs.replace(
                settings, auth=msgspec.structs.replace(settings.auth, jwt_public_key_file=tmp_path / "missing.pem")
            )
        )


def test_an_asymmetric_key_given_as_the_secret_stops_the_start(settings: Settings, rsa_keys: tuple[Path, Path]) -> None:
    public_pem = rsa_keys[1].read_text()
    with pytest.raises(SystemExit, match="cannot be an HMAC secret"):
        create_app(
            msgspec.structs.replace(settings, auth=msgspec.structs.replace(settings.auth, jwt_secret=public_pem))
        )


def test_a_token_sent_again_is_not_verified_again(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crowd re-sends the same token: its signature is checked once, not per request."""
    verified: list[str] = []
    decode = jwt.PyJWT.decode

    def counted(self: jwt.PyJWT, token: str, *args: object, **kwargs: object) -> object:
        verified.append(token)
        return decode(self, token, *args, **kwargs)  # type: ignore[arg-type]

    configured = secured(settings)
    tokens = [auth.issue(configured, "student", str(student), 60) for student in range(1, 6)]
    monkeypatch.setattr(jwt.PyJWT, "decode", counted)
    authenticator = auth.Authenticator(configured)
    for _ in range(3):
        assert [authenticator.authenticate(f"Bearer {token}").sub for token in tokens] == ["1", "2", "3", "4", "5"]
    assert verified == tokens


def test_a_token_whose_segments_are_spelled_otherwise_is_refused(settings: Settings) -> None:
    """Other trailing bits in the signature decode to the same bytes: a second token for the same claims."""
    configured = secured(settings)
    authenticator = auth.Authenticator(configured)
    token = auth.issue(configured, "student", "7", 60)
    head, body, signature = token.split(".")
    assert authenticator.authenticate(f"Bearer {token}").sub == "7"
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(signature[-1])
    respelled = signature[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ 1]
    for other in (f"{head}.{body}.{respelled}", f"{head}.{body}.{signature}==", f"{head}.{body}+.{signature}"):
        with pytest.raises(Unauthorized):
            authenticator.authenticate(f"Bearer {other}")


def test_development_mode_is_a_registrar_and_says_so(
    client: TestClient, caplog: pytest.LogCaptureFixture, settings: Settings
) -> None:
    assert client.post("/api/v1/courses", json={"course_id": 1, "capacity": 1, "title": "Course"}).status_code == 201
    assert client.get("/ready").json()["auth"] == "off"
    with caplog.at_level("WARNING"), TestClient(create_app(settings)):
        pass
    assert any("AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records)


def test_issued_tokens_carry_role_audience_and_expiry(settings: Settings) -> None:
    configured = secured(settings)
    token = auth.issue(configured, "service", "sis", 120)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="courseflow")
    assert claims["role"] == "service" and claims["sub"] == "sis"
    assert 100 < claims["exp"] - time.time() <= 120


def _signed(payload: bytes) -> str:
    """A correctly signed token whose payload is exactly these bytes (PyJWT's own encoder would tidy them)."""
    return jwt.PyJWS().encode(payload, SECRET.encode(), algorithm="HS256")


def _fresh(**overrides: object) -> Callable[[], str]:
    """A token made when the test runs (a collected one may have expired by then), valid ten minutes."""
    return lambda: _token(_claims(exp=int(time.time()) + 600) | overrides)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (_fresh(exp=str(int(time.time()) + 600)), "its exp must be a number of seconds since 1970, not text"),
        (_fresh(nbf=str(int(time.time()) - 10)), "its nbf must be a number of seconds since 1970, not text"),
        (_fresh(exp=10**30), "it is meant to live longer than the 86400 s allowed for a student token"),
        (_fresh(role="registrar", sub=""), "its sub is empty or blank"),
        (_fresh(role="registrar", sub=" "), "its sub is empty or blank"),
        (_fresh(role="service", sub="s" * 5000), "its sub is longer than 128 characters"),
        (_fresh(role="service", sub="sis\x07"), "its sub holds control characters"),
        (
            lambda: _signed(
                b'{"sub":"7","role":"registrar","aud":"courseflow","exp":%d,"role":"student"}' % (time.time() + 600)
            ),
            "its payload gives 'role' more than once",
        ),
        (lambda: _fresh()() + "=", "it must be three parts of unpadded base64url, separated by dots"),
    ],
    ids=[
        "exp-text",
        "nbf-text",
        "exp-1e30",
        "sub-empty",
        "sub-blank",
        "sub-long",
        "sub-control",
        "two-roles",
        "padded",
    ],
)
def test_a_token_read_loosely_elsewhere_is_refused_here(
    secure: tuple[TestClient, Settings], token: Callable[[], str], reason: str
) -> None:
    client, _ = secure
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token()}"})
    assert response.status_code == 401
    assert response.json()["detail"] == f"the token is not valid: {reason}"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
