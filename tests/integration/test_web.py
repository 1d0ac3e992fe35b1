"""The web pages as the server sends them: public HTML and modules held to this origin, calling only the public v1
API (their behaviour in a browser is tests/browser/test_pages.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from starlette.testclient import TestClient

from courseflow.http.app import create_app
from courseflow.platform.config import Settings
from tests.trust import secured
from tests.unit.test_docs import directives, links

PAGES = ["/", "/board"]
STATIC = Path(__file__).parents[2] / "courseflow" / "http" / "web" / "static"


@pytest.fixture
def secured_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(secured(settings))) as client:
        yield client


@pytest.mark.parametrize("path", PAGES)
def test_page_opens_without_a_token_held_to_self(secured_client: TestClient, path: str) -> None:
    response = secured_client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = directives(response.headers["content-security-policy"])
    for name in ("default-src", "script-src", "style-src", "connect-src"):
        assert policy[name] == {"'self'"}, name
    assert policy["frame-ancestors"] == {"'none'"}
    assert "http://" not in response.text and "https://" not in response.text


@pytest.mark.parametrize("path", PAGES)
def test_every_file_a_page_names_is_served_here(secured_client: TestClient, path: str) -> None:
    found = [link for link in links(secured_client.get(path).text) if not link.startswith("#")]
    assert {"/static/style.css"} < set(found)
    for link in found:
        if link in PAGES:
            continue
        response = secured_client.get(link)
        assert response.status_code == 200, link
        assert response.headers["x-content-type-options"] == "nosniff"


def test_modules_import_only_files_served_here(secured_client: TestClient) -> None:
    for module in STATIC.glob("*.js"):
        for imported in re.findall(r'from "\./([\w.-]+)"', module.read_text()):
            response = secured_client.get(f"/static/{imported}")
            assert response.status_code == 200, f"{module.name} imports {imported}"
            assert response.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("name", ["nothing.js", "..%2Fstudent.html", "..%2F..%2Fauth.py", "%2Fetc%2Fpasswd", "web"])
def test_only_the_shipped_files_are_served(secured_client: TestClient, name: str) -> None:
    response = secured_client.get(f"/static/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_the_pages_call_only_the_public_v1_api(secured_client: TestClient) -> None:
    """Every API path in the modules is an operation of the OpenAPI document (or the documented WebSocket)."""
    documented = secured_client.get("/openapi.json").json()["paths"]
    patterns = [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$") for path in documented]
    called: set[str] = set()
    for module in STATIC.glob("*.js"):
        for path in re.findall(r"[\"`](/api/[^\"`?]*)", module.read_text()):
            called.add(re.sub(r"\$\{[^}]+\}", "7", path))
    assert {"/api/v1/me", "/api/v1/courses", "/api/v1/enrollments", "/api/v1/ws"} <= called
    for path in called - {"/api/v1/ws"}:
        assert any(pattern.match(path) for pattern in patterns), f"{path} is no public operation"


@pytest.mark.parametrize("path", ["/", "/board", "/static/student.js"])
def test_an_unchanged_file_answers_304(secured_client: TestClient, path: str) -> None:
    first = secured_client.get(path)
    etag = first.headers["etag"]
    again = secured_client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["content-security-policy"] == first.headers["content-security-policy"]
    assert secured_client.get(path, headers={"If-None-Match": '"elsewhere"'}).status_code == 200


def test_the_pages_take_no_rate_limit_their_api_calls_do(settings: Settings) -> None:
    """A campus behind one address loads the pages at once: the files are free, the API calls are counted."""
    strict = secured(
        msgspec.structs.replace(settings, limits=msgspec.structs.replace(settings.limits, anonymous="2 per minute"))
    )
    with TestClient(create_app(strict)) as client:
        for _ in range(5):
            for path in ("/", "/board", "/static/api.js", "/static/style.css"):
                assert client.get(path).status_code == 200, path
        answers = [client.get("/api/v1/me").status_code for _ in range(3)]
    assert answers == [401, 401, 429]
