"""The documentation pages load everything from this server and nothing from any other host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from courseflow.http import docs
from courseflow.http.problems import MEDIA_TYPE, Problem, respond

PAGES = ["/docs", "/redoc"]
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


async def problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return respond(exc)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = Starlette(routes=docs.routes(), exception_handlers={Problem: problem})
    with TestClient(app) as client:
        yield client


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value or "" for name, value in attrs if name in {"src", "href"}]


def links(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return parser.found


def directives(policy: str) -> dict[str, set[str]]:
    parts = (part.split() for part in policy.split(";") if part.strip())
    return {name: set(sources) for name, *sources in parts}


@pytest.mark.parametrize("path", PAGES)
def test_page_is_html_held_to_self(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = directives(response.headers["content-security-policy"])
    assert policy["default-src"] == {"'self'"}
    assert policy["connect-src"] == {"'self'"}
    assert policy["script-src"] == {"'self'"}  # the start-up scripts are files: no 'unsafe-inline'
    assert policy["frame-ancestors"] == {"'none'"}
    # Nothing names a host: every source is a keyword or a scheme confined to this page.
    for sources in policy.values():
        assert sources <= {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}


@pytest.mark.parametrize("path", PAGES)
def test_page_names_no_other_host(client: TestClient, path: str) -> None:
    html = client.get(path).text
    assert "http://" not in html
    assert "https://" not in html
    assert "fonts.googleapis" not in html


@pytest.mark.parametrize("path", PAGES)
def test_every_link_is_served_here(client: TestClient, path: str) -> None:
    found = links(client.get(path).text)
    assert len(found) >= 2  # the UI's bundle and our start-up script at least
    for link in found:
        assert re.fullmatch(r"/docs/assets/[\w.-]+\?v=[0-9a-f]+", link), link
        response = client.get(link)
        assert response.status_code == 200, link
        expected = MEDIA_TYPES[link[link.rindex(".") : link.index("?")]]
        assert response.headers["content-type"].split(";")[0] == expected
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.content


def test_swagger_is_started_safely(client: TestClient) -> None:
    script = client.get("/docs/assets/swagger-init.js").text
    assert 'url: "/openapi.json"' in script
    assert "validatorUrl: null" in script  # else the document goes to validator.swagger.io
    assert "persistAuthorization: false" in script  # the bearer token stays out of localStorage
    assert "http" not in script


def test_redoc_is_started_on_our_document(client: TestClient) -> None:
    script = client.get("/docs/assets/redoc-init.js").text
    assert 'Redoc.init(\n  "/openapi.json"' in script
    assert "http" not in script


@pytest.mark.parametrize(
    ("name", "marker"),
    [("swagger-ui-bundle.js", b"SwaggerUIBundle"), ("redoc.standalone.js", b"Redoc")],
)
def test_bundles_are_javascript(client: TestClient, name: str, marker: bytes) -> None:
    response = client.get(f"/docs/assets/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert len(response.content) > 100_000
    assert marker in response.content


def test_unversioned_asset_is_revalidated(client: TestClient) -> None:
    assert client.get("/docs/assets/redoc-init.js").headers["cache-control"] == "no-cache"
    assert client.get("/docs/assets/redoc-init.js?v=stale").headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "name",
    [
        "nope.js",
        "swagger-initializer.js",  # in the package folder, but not on the list
        "oauth2-redirect.html",
        "LICENSE.redoc",
        "docs.py",
        "%2E%2E",  # the server sees ".." (a bare ".." the client itself folds away)
    ],
)
def test_unknown_asset_is_a_problem(client: TestClient, name: str) -> None:
    response = client.get(f"/docs/assets/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"] == MEDIA_TYPE
    assert response.json()["field"] == "name"


@pytest.mark.parametrize(
    "path",
    [
        # Percent-encoded so the client sends them as they are; the server decodes them to "../".
        "/docs/assets/..%2Fdocs.py",
        "/docs/assets/..%2F..%2F..%2Fpyproject.toml",
        "/docs/assets/%2E%2E/%2E%2E/pyproject.toml",
        "/docs/assets/swagger_ui/static/swagger-ui.js",
    ],
)
def test_no_path_leaves_the_list(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404
