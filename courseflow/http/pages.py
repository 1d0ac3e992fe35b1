"""The web pages: the student's enrollment page at `/` and the registrar's live board at `/board`.

Static HTML, CSS and JavaScript modules shipped in the package (`courseflow/http/web/`); the pages call only the
public v1 API, with the caller's own token, so they meet the same authentication, roles and rate limits as any
other client. Nothing comes from another host: each page's Content-Security-Policy holds the browser to 'self'.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from courseflow.http.problems import NotFound

_WEB = Path(__file__).with_name("web")
_STATIC = _WEB / "static"
PAGES = frozenset({"/", "/board"})
STATIC_PREFIX = "/static/"

_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # The sparklines are inline SVG; nothing else is an image.
        "img-src 'self' data:",
        # The API and its WebSocket, on this origin only.
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        # A page holding a bearer token is not to be framed by another site.
        "frame-ancestors 'none'",
    )
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    # The token lives in sessionStorage; no URL of these pages may leak to another site.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # A new release's files are fetched at once; unchanged ones answer 304 to their ETag, at no cost.
    "Cache-Control": "no-cache",
}


@cache
def _assets() -> dict[str, Path]:
    """The only names /static/ answers for: a fixed map, so no path from the client reaches the file system."""
    return {path.name: path for path in _STATIC.iterdir() if path.suffix in _MEDIA_TYPES}


@cache
def _etag(path: Path) -> str:
    # The content's hash: the files change only with a release, which restarts the server.
    return '"' + hashlib.sha256(path.read_bytes()).hexdigest()[:32] + '"'


def _send(request: Request, path: Path, media_type: str) -> Response:
    etag = _etag(path)
    if etag in (tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=_HEADERS | {"ETag": etag})
    return FileResponse(path, media_type=media_type, headers=_HEADERS | {"ETag": etag})


async def student(request: Request) -> Response:
    return _send(request, _WEB / "student.html", "text/html; charset=utf-8")


async def board(request: Request) -> Response:
    return _send(request, _WEB / "board.html", "text/html; charset=utf-8")


async def asset(request: Request) -> Response:
    name: str = request.path_params["name"]
    path = _assets().get(name)
    if path is None:
        raise NotFound("no such asset", "name")
    return _send(request, path, _MEDIA_TYPES[path.suffix])


def routes() -> list[BaseRoute]:
    return [
        Route("/", student, methods=["GET"]),
        Route("/board", board, methods=["GET"]),
        Route(STATIC_PREFIX + "{name}", asset, methods=["GET"]),
    ]
