"""Who the caller is, as the API sees them: for pages that show a student their own things."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from courseflow.http.common import JSON, services
from courseflow.http.gate import principal
from courseflow.http.operations import operation
from courseflow.http.views import Me


@operation(
    summary="The caller: role, subject, and whether authentication is on",
    tag="identity",
    description="The verified token's `role` and `sub` (with `student_id` for a student) and when it expires. "
    "In development mode (`auth` off) every caller is the developer, a registrar, with no expiry. "
    "With authentication on, a call without a token is a 401: a page can learn from it that it needs one.",
    answers={200: Me},
)
async def me(request: Request) -> Response:
    caller = principal(request)
    return JSON(
        Me(
            role=caller.role,
            sub=caller.sub,
            student_id=caller.student_id,
            auth="on" if services(request).authenticator.enabled else "off",
            expires_at=None if caller.expires_at is None else _instant(caller.expires_at),
        )
    )


def _instant(epoch_s: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(epoch_s, UTC)
    except (OverflowError, ValueError, OSError):  # a signed `exp` beyond year 9999: no expiry worth showing
        return None
