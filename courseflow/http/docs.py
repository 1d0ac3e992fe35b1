"""Interactive API documentation served from this process alone: Swagger UI at /docs, ReDoc at /redoc.

Nothing comes from another host. Swagger UI 5 ships in the swagger-ui-py wheel; ReDoc is vendored in
`assets/` with our two start-up scripts; each page's Content-Security-Policy holds the browser to 'self'.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from courseflow.http.problems import NotFound

# Vendored: ReDoc 2.5.4, npm `redoc` bundles/redoc.standalone.js (MIT, assets/LICENSE.redoc).
_OURS = Path(__file__).with_name("assets")


def _swagger_static() -> Path:
    # Found without importing swagger_ui, which would pull in its Jinja templates and framework handlers.
    spec = find_spec("swagger_ui")
    if spec is None or spec.origin is None:
        raise RuntimeError("swagger-ui-py is not installed: /docs has no Swagger UI to serve")
    return Path(spec.origin).with_name("static")


_SWAGGER = _swagger_static()
_JS = "text/javascript"
# The only names /docs/assets/ answers for: a fixed map, so no path from the client reaches the file system.
_ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (_SWAGGER, _JS),
    "swagger-ui.css": (_SWAGGER, "text/css"),
    "favicon-32x32.png": (_SWAGGER, "image/png"),
    "favicon-16x16.png": (_SWAGGER, "image/png"),
    "swagger-init.js": (_OURS, _JS),
    "redoc.standalone.js": (_OURS, _JS),
    "redoc-init.js": (_OURS, _JS),
}
_FOREVER = "public, max-age=31536000, immutable"

_COMMON_CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    # Both UIs set styles at run time, and ReDoc injects <style> elements (styled-components).
    "style-src": "'self' 'unsafe-inline'",
    # The stylesheets' icons are data: URLs.
    "img-src": "'self' data:",
    "font-src": "'self' data:",
    # The document and "Try it out" requests: this API only.
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    # A page holding a bearer token is not to be framed by another site.
    "frame-ancestors": "'none'",
}


def _policy(**extra: str) -> str:
    return "; ".join(f"{name} {sources}" for name, sources in (_COMMON_CSP | extra).items())


Page = Literal["swagger", "redoc"]
# ReDoc's search index runs in a Worker it builds from a blob: URL.
_CSP: dict[Page, str] = {"swagger": _policy(), "redoc": _policy(**{"worker-src": "'self' blob:"})}


@cache
def _version(name: str) -> str:
    folder, _ = _ASSETS[name]
    return hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16]


def _url(name: str) -> str:
    # The content hash in the URL lets the browser keep the file for a year and still see a new one at once.
    return f"/docs/assets/{name}?v={_version(name)}"


@cache
def _page(which: Page) -> str:
    if which == "swagger":
        title, head, body = (
            "Swagger UI",
            f'<link rel="stylesheet" href="{_url("swagger-ui.css")}">\n'
            f'<link rel="icon" type="image/png" sizes="32x32" href="{_url("favicon-32x32.png")}">\n'
            f'<link rel="icon" type="image/png" sizes="16x16" href="{_url("favicon-16x16.png")}">',
            '<div id="swagger-ui"></div>\n'
            f'<script src="{_url("swagger-ui-bundle.js")}"></script>\n'
            f'<script src="{_url("swagger-init.js")}"></script>',
        )
    else:
        title, head, body = (
            "ReDoc",
            "",
            '<div id="redoc"></div>\n'
            f'<script src="{_url("redoc.standalone.js")}"></script>\n'
            f'<script src="{_url("redoc-init.js")}"></script>',
        )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>CourseFlow API · {title}</title>\n{head}\n</head>\n"
        f'<body style="margin:0">\n{body}\n</body>\n</html>\n'
    )


def _html(which: Page) -> Response:
    # no-cache: a new release's page names new asset versions, so it must be revalidated.
    headers = {"Content-Security-Policy": _CSP[which], "Cache-Control": "no-cache"}
    return HTMLResponse(_page(which), headers=headers)


async def swagger(_: Request) -> Response:
    return _html("swagger")


async def redoc(_: Request) -> Response:
    return _html("redoc")


async def asset(request: Request) -> Response:
    name: str = request.path_params["name"]
    if name not in _ASSETS:
        raise NotFound("no such asset", "name")
    folder, media_type = _ASSETS[name]
    # Only the URL naming the current content may be kept for good; any other is revalidated.
    cache_control = _FOREVER if request.query_params.get("v") == _version(name) else "no-cache"
    headers = {"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"}
    return FileResponse(folder / name, media_type=media_type, headers=headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/docs", swagger, methods=["GET"]),
        Route("/redoc", redoc, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
    ]
