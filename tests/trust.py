"""Settings with authentication on, and bearer headers for each role."""

from __future__ import annotations

import msgspec

from courseflow.http import auth
from courseflow.platform.config import Settings

SECRET = "test-secret-of-at-least-thirty-two-bytes-0123456789"


def secured(settings: Settings, **auth: object) -> Settings:
    """`settings` with HS256 tokens signed with SECRET; `auth` changes other fields of the auth section."""
    return msgspec.structs.replace(settings, auth=msgspec.structs.replace(settings.auth, jwt_secret=SECRET, **auth))


def bearer(settings: Settings, role: auth.Role, sub: str | int | None = None, ttl_s: int = 600) -> dict[str, str]:
    token = auth.issue(settings, role, str(sub if sub is not None else role), ttl_s)
    return {"Authorization": f"Bearer {token}"}
