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

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwt.algorithms import HMACAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from courseflow.domain import MAX_ID
from courseflow.http import claims
from courseflow.http.claims import ROLES as ROLES
from courseflow.http.claims import Role as Role
from courseflow.http.payloads import is_id
from courseflow.http.problems import Forbidden, Unauthorized
from courseflow.platform.config import Settings
from courseflow.platform.memo import Memo

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


class Authenticator:
    """Verifies bearer tokens against one pinned algorithm and key; remembers tokens it has verified."""

    def __init__(self, settings: Settings) -> None:
        self.algorithm, key = _verification_key(settings)
        # Read once into a key bound to its algorithm: a token naming another `alg` is refused by PyJWT itself.
        self._key = None if key is None else _bound(self.algorithm, key)
        self._audience = settings.auth.jwt_audience
        self._issuer = settings.auth.jwt_issuer
        self._leeway = settings.auth.leeway_s
        self._longest = {role: longest_lifetime(settings, role) for role in ROLES}
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
            raise _invalid("it must be three parts of unpadded base64url, separated by dots")
        try:
            self._jwt.decode(
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
            raise _invalid(self._reason(token, exc)) from None
        except (ValueError, TypeError, OverflowError):  # e.g. an `exp` of 10**400
            raise _invalid("its claims cannot be read") from None
        try:
            said = claims.read(token)  # verified by now: read again, strictly
        except claims.Refused as refused:
            raise _invalid(str(refused)) from None
        return self._principal(said), said.exp

    def _principal(self, said: claims.Claims) -> Principal:
        fault = claims.subject_fault(said.sub)
        if fault is not None:
            raise _invalid(f"its sub {fault}")
        sub = said.sub
        if said.role == "student":
            if not is_id(sub):
                raise _invalid(f"a student token's sub must be the student id (a whole number from 1 to {MAX_ID})")
            sub = str(int(sub))  # "007" and "7" are one student, with one set of rate-limit counters
        longest = self._longest[said.role]
        # Without `iat` the lifetime left is judged, with the clocks' leeway.
        lifetime = said.exp - said.iat if said.iat is not None else said.exp - time.time() - self._leeway
        if lifetime > longest:
            raise _invalid(f"it is meant to live longer than the {longest} s allowed for a {said.role} token")
        expires = said.exp
        return Principal(role=said.role, sub=sub, valid_until=expires + self._leeway, expires_at=expires)

    @staticmethod
    def _reason(token: str, exc: jwt.InvalidTokenError) -> str:
        """PyJWT's refusal in plain words, never its class name (nor its message, which may quote the token)."""
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"it has no {_printable(exc.claim)}"
        if type(exc) is jwt.DecodeError:
            # Also raised, after the signature checked out, for an `exp` or `nbf` that `int()` refuses.
            try:
                claims.read(token)
            except claims.Refused as refused:
                return str(refused)
        return next((words for kind, words in _REASONS if isinstance(exc, kind)), "it cannot be accepted")


_REASONS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.InvalidSignatureError, "its signature does not match this server's key"),
    (jwt.InvalidAlgorithmError, "it is not signed with this server's algorithm"),
    (jwt.InvalidAudienceError, "it is meant for another audience (aud)"),
    (jwt.InvalidIssuerError, "it comes from another issuer (iss)"),
    (jwt.ImmatureSignatureError, "it is not valid yet (its nbf or iat lies ahead)"),
    (jwt.InvalidIssuedAtError, "its iat must be a number of seconds since 1970"),
    (InvalidSubjectError, "its sub must be a string"),
    (InvalidJTIError, "its jti must be a string"),
    (jwt.DecodeError, "it cannot be read as a signed JSON Web Token"),
)


def _invalid(reason: str) -> Unauthorized:
    return Unauthorized(f"the token is not valid: {reason}", token_given=True)


def longest_lifetime(settings: Settings, role: Role) -> int:
    """How long a token of `role` may live: AUTH_MAX_TOKEN_TTL, or for services AUTH_MAX_SERVICE_TOKEN_TTL if set."""
    if role == "service" and settings.auth.max_service_token_ttl_s is not None:
        return settings.auth.max_service_token_ttl_s
    return settings.auth.max_token_ttl_s


def canonical(token: str) -> bool:
    """Three segments, each the one base64url spelling of its bytes, without `=` padding (RFC 7515 §2).

    A second spelling of the same signature (padding, other trailing bits, characters outside the URL-safe
    alphabet) would be a second token for the same claims; refused here, whatever the PyJWT version does."""
    segments = token.encode("ascii", "replace").split(b".")
    return len(segments) == 3 and all(_canonical_segment(segment) for segment in segments)


def _canonical_segment(segment: bytes) -> bool:
    # `bytes.translate` deletes the alphabet in C: anything left (`=` included) is a stray character.
    if len(segment) % 4 == 1 or segment.translate(None, _BASE64URL_ALPHABET):
        return False
    decoded = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    return base64.urlsafe_b64encode(decoded).rstrip(b"=") == segment


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


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isascii() and c.isprintable())[:64]


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
