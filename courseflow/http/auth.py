"""Who is asking: principals from verified bearer tokens (PyJWT), never from a body field.

Roles: a `student` acts for the student id in `sub`; a `registrar` manages courses and priorities
and reads everything; a `service` (e.g. the student information system) enrolls any student and
may send a priority. With no key configured, authentication is off and every caller is a registrar.
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Literal, get_args

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwt.algorithms import HMACAlgorithm, RSAAlgorithm

from courseflow.http.payloads import is_id
from courseflow.http.problems import Forbidden, Unauthorized
from courseflow.platform.config import Settings
from courseflow.platform.memo import Memo

Role = Literal["student", "registrar", "service"]
ROLES: tuple[Role, ...] = get_args(Role)
# Identity providers' tokens are a few hundred characters; far longer ones are refused unread.
MAX_TOKEN_CHARS = 8192
# An HMAC key shorter than its hash output is guessable offline from one token (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32
_CACHE_SIZE = 20_000

log = logging.getLogger("courseflow.auth")


class Principal(msgspec.Struct, frozen=True):
    role: Role
    sub: str
    # When its token stops being accepted (epoch seconds, leeway included); None in development mode.
    valid_until: float | None = None
    # The token's own `exp` (epoch seconds, no leeway), as the caller is told it; None in development mode.
    expires_at: float | None = None

    @property
    def student_id(self) -> int | None:
        return int(self.sub) if self.role == "student" else None

    @property
    def sees_everyone(self) -> bool:
        """Other students' ids, request ids and idempotency keys are shown to registrars only."""
        return self.role == "registrar"

    @property
    def privileged(self) -> bool:
        """Registrars and services act for any student and may send a priority."""
        return self.role != "student"

    def may_act_for(self, student_id: int) -> bool:
        return self.privileged or self.student_id == student_id

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise Forbidden(f"this needs the {' or '.join(roles)} role; the token's role is {self.role}")


# Development mode: no key configured, every caller is a registrar.
DEVELOPER = Principal(role="registrar", sub="developer")


class _Claims(msgspec.Struct):
    sub: str
    role: Role


class Authenticator:
    """Verifies bearer tokens against one pinned algorithm and key; remembers tokens it has verified."""

    def __init__(self, settings: Settings) -> None:
        self.algorithm, key = _verification_key(settings)
        # Read once into a key bound to its algorithm: a token naming another `alg` is refused by PyJWT itself.
        self._key = None if key is None else _bound(self.algorithm, key)
        self._audience = settings.auth.jwt_audience
        self._issuer = settings.auth.jwt_issuer
        self._leeway = settings.auth.leeway_s
        # Verified token -> (principal, expiry): a crowd re-sends the same token, and HMAC/RSA checks cost.
        self._verified: Memo[str, tuple[Principal, float]] = Memo(_CACHE_SIZE)
        self._jwt = jwt.PyJWT(options={"require": ["exp", "sub", "role", "aud"]})

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization` header; raises Unauthorized (401) for anything else."""
        if self._key is None:
            return DEVELOPER
        if authorization is None:
            raise Unauthorized("this endpoint needs a bearer token (Authorization: Bearer <token>)", token_given=False)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'", token_given=False)
        if len(token) > MAX_TOKEN_CHARS:
            # Checked before any decoding: a megabyte of token must not cost the event loop a second.
            raise Unauthorized(f"the token is longer than {MAX_TOKEN_CHARS} characters", token_given=True)
        cached = self._verified.get(token)
        if cached is not None and cached[1] + self._leeway > time.time():
            return cached[0]
        principal, expires = self._verify(token)
        self._verified.put(token, (principal, expires))
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        assert self._key is not None
        if not canonical(token):
            raise Unauthorized("the token is not valid (DecodeError)", token_given=True)
        try:
            claims = self._jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", token_given=True) from None
        except jwt.InvalidTokenError as exc:
            # PyJWT's messages may quote the token's own header: keep only a plain, bounded summary.
            raise Unauthorized(f"the token is not valid ({_plain(type(exc).__name__)})", token_given=True) from None
        except (ValueError, TypeError, OverflowError):  # e.g. an `exp` of 10**400
            raise Unauthorized("the token is not valid (its claims cannot be read)", token_given=True) from None
        try:
            parsed = msgspec.convert(claims, _Claims)
        except msgspec.ValidationError:
            raise Unauthorized(f"the token's role must be one of {', '.join(ROLES)}", token_given=True) from None
        sub = parsed.sub
        if parsed.role == "student":
            if not is_id(sub):
                raise Unauthorized(
                    "a student token's sub must be the student id (a positive integer)", token_given=True
                )
            sub = str(int(sub))  # "007" and "7" are one student, with one set of rate-limit counters
        try:
            expires = float(claims["exp"])
        except (TypeError, ValueError, OverflowError):
            raise Unauthorized("the token's exp is not a time", token_given=True) from None
        return Principal(role=parsed.role, sub=sub, valid_until=expires + self._leeway, expires_at=expires), expires


def canonical(token: str) -> bool:
    """Three segments, each the one base64url spelling of its bytes (with or without its `=` padding).

    A second spelling of the same signature (other trailing bits, stray `=`, characters outside the URL-safe
    alphabet) would be a second token for the same claims; refused here, whatever the PyJWT version does."""
    segments = token.encode("ascii", "replace").split(b".")
    return len(segments) == 3 and all(_canonical_segment(segment) for segment in segments)


def _canonical_segment(segment: bytes) -> bool:
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if padding > 2 or (padding and len(segment) % 4) or len(stripped) % 4 == 1:
        return False
    # `bytes.translate` deletes the alphabet in C: anything left is a stray character.
    if stripped.translate(None, _BASE64URL_ALPHABET):
        return False
    decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    return base64.urlsafe_b64encode(decoded).rstrip(b"=") == stripped


_BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _bound(algorithm: str, key: str | RSAPublicKey) -> jwt.PyJWK:
    """The verification key as a PyJWK of its one algorithm; an HMAC secret that reads as a PEM, SSH or DER key
    (someone pasted the public key) stops the start."""
    if isinstance(key, RSAPublicKey):
        return jwt.PyJWK(RSAAlgorithm.to_jwk(key, as_dict=True), algorithm)
    try:
        secret = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)
    except jwt.InvalidKeyError as exc:
        raise SystemExit(f"configuration error: AUTH_JWT_SECRET cannot be an HMAC secret: {exc}") from None
    return jwt.PyJWK({"kty": "oct", "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}, algorithm)


def _plain(text: str) -> str:
    return "".join(c for c in text if c.isascii() and c.isalnum())[:64]


def _verification_key(settings: Settings) -> tuple[str, str | RSAPublicKey | None]:
    """The algorithm is pinned to the kind of key: HS256 for a secret, RS256 for a public key; never `none`."""
    if settings.auth.jwt_secret and settings.auth.jwt_public_key_file:
        raise SystemExit("configuration error: set AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE, not both")
    if settings.auth.jwt_secret:
        if len(settings.auth.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise SystemExit(
                f"configuration error: AUTH_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
                " (e.g. `openssl rand -hex 32`)"
            )
        return "HS256", settings.auth.jwt_secret
    if settings.auth.jwt_public_key_file:
        key = load_pem_public_key(_read(settings.auth.jwt_public_key_file, "AUTH_JWT_PUBLIC_KEY_FILE"))
        if not isinstance(key, RSAPublicKey):
            raise SystemExit("configuration error: AUTH_JWT_PUBLIC_KEY_FILE must hold an RSA public key (PEM)")
        return "RS256", key
    return "none", None


def _read(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"configuration error: cannot read {name} {path}: {exc.strerror}") from None


def issue(settings: Settings, role: Role, sub: str, ttl_s: int) -> str:
    """A signed token for `role`/`sub`, valid for `ttl_s` seconds (for trying the API out, and for tests)."""
    algorithm, key = _verification_key(settings)
    signing_key: str | RSAPrivateKey
    if algorithm == "HS256":
        assert isinstance(key, str)
        signing_key = key
    elif settings.auth.jwt_private_key_file:
        private = load_pem_private_key(_read(settings.auth.jwt_private_key_file, "AUTH_JWT_PRIVATE_KEY_FILE"), None)
        if not isinstance(private, RSAPrivateKey):
            raise SystemExit("configuration error: AUTH_JWT_PRIVATE_KEY_FILE must hold an RSA private key (PEM)")
        signing_key, algorithm = private, "RS256"
    else:
        raise SystemExit(
            "cannot sign: set AUTH_JWT_SECRET, or AUTH_JWT_PRIVATE_KEY_FILE beside AUTH_JWT_PUBLIC_KEY_FILE"
        )
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "role": role, "aud": settings.auth.jwt_audience, "iat": now}
    claims["exp"] = now + ttl_s
    if settings.auth.jwt_issuer:
        claims["iss"] = settings.auth.jwt_issuer
    return jwt.encode(claims, signing_key, algorithm=algorithm)


def warn_if_open(authenticator: Authenticator) -> None:
    if not authenticator.enabled:
        log.warning(
            "AUTHENTICATION IS OFF (development mode): every caller acts as a registrar."
            " Set AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE before letting anyone else reach this server."
        )
