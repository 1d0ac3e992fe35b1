"""The gate every API request passes: who asks (401, one Authorization header), how often (429), and which
paths need no token."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import msgspec
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from courseflow.http.app import create_app
from courseflow.platform.config import Settings
from projections.projector import Projector
from tests.trust import bearer, secured


@pytest.fixture
def secure(settings: Settings, projector: Projector) -> Iterator[tuple[TestClient, Settings]]:
    configured = secured(settings)
    with TestClient(create_app(configured)) as client:
        yield client, configured


def test_a_valid_token_passes_and_probes_need_none(secure: tuple[TestClient, Settings]) -> None:
    client, configured = secure
    created = client.post(
        "/api/v1/courses",
        json={"course_id": 1, "capacity": 1, "title": "Course"},
        headers=bearer(configured, "registrar"),
    )
    assert created.status_code == 201
    assert client.get("/api/v1/courses/1", headers=bearer(configured, "student", 7)).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/ready").json()["auth"] == "on"
    assert client.get("/metrics").status_code == 200


def test_two_authorization_headers_are_refused(secure: tuple[TestClient, Settings]) -> None:
    client, configured = secure
    headers = [("Authorization", bearer(configured, "student", n)["Authorization"]) for n in (43, 42)]
    response = client.get("/api/v1/students/42/enrollments", headers=headers)
    assert response.status_code == 400 and response.json()["field"] == "Authorization"
    assert response.json()["errors"][0]["in"] == "header" and "pointer" not in response.json()["errors"][0]


def test_refused_tokens_and_probes_are_limited_per_address(settings: Settings) -> None:
    configured = secured(
        msgspec.structs.replace(settings, limits=msgspec.structs.replace(settings.limits, anonymous="3 per 30 seconds"))
    )
    with (
        TestClient(create_app(configured), client=("192.0.2.1", 5000)) as guesser,
        TestClient(create_app(configured), client=("192.0.2.2", 5000)) as other,
    ):
        wrong = {"Authorization": "Bearer not-a-token"}
        assert [guesser.get("/api/v1/courses/1", headers=wrong).status_code for _ in range(4)] == [401] * 3 + [429]
        assert guesser.get("/health").status_code == 429
        assert other.get("/health").status_code == 200
        limited = guesser.get("/api/v1/courses/1", headers=bearer(configured, "registrar"))
        assert limited.status_code == 404  # a valid token is counted as its principal, not as the address


def test_development_mode_limits_each_client_address(settings: Settings) -> None:
    configured = msgspec.structs.replace(
        settings, limits=msgspec.structs.replace(settings.limits, registrar="2 per 30 seconds")
    )
    with (
        TestClient(create_app(configured), client=("192.0.2.1", 5000)) as one,
        TestClient(create_app(configured), client=("192.0.2.2", 5000)) as other,
    ):
        assert [one.get("/api/v1/courses/1").status_code for _ in range(3)] == [404, 404, 429]
        assert other.get("/api/v1/courses/1").status_code == 404
        assert one.get("/health").status_code == 200  # probes have a limit of their own


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize("path", ["/board/", "/nope", "/api/v1/nothing-here", "/api/v1/courses/1/nope", "/static"])
def test_an_unknown_path_is_404_before_any_token_is_asked_for(secure: tuple[TestClient, Settings], path: str) -> None:
    client, _ = secure
    for method in ("GET", "POST", "DELETE"):
        response = client.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert "www-authenticate" not in response.headers
        assert response.headers["content-type"] == "application/problem+json"
        assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS


def test_a_known_path_still_asks_for_a_token_and_says_so_safely(secure: tuple[TestClient, Settings]) -> None:
    client, _ = secure
    for path in ("/api/v1/courses/1", "/api/v1/courses/99999/waitlist", "/api/v1/me"):
        response = client.get(path)
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer ")
        assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    # A known path with a method it does not take: who asks is still checked first.
    assert client.put("/api/v1/courses/1").status_code == 401


def test_an_unknown_websocket_path_is_refused_before_any_token(secure: tuple[TestClient, Settings]) -> None:
    client, _ = secure
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/api/v1/nope"):
        pass
    assert denied.value.status_code == 404


def _raw(base: str, request: bytes) -> bytes:
    """One request as sent, the answer's status line back."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        return conn.makefile("rb").readline()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /health HTTP/1.1\r\nHost: a\r\n", b"200"),
        (b"GET /health HTTP/1.1\r\n", b"400"),  # no Host
        (b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n", b"400"),  # two
        (b"GET /health HTTP/1.0\r\n", b"200"),  # HTTP/1.0 has no Host to require
    ],
)
def test_an_http_1_1_request_names_exactly_one_host(api_server: str, head: bytes, status: bytes) -> None:
    assert _raw(api_server, head + b"Connection: close\r\n\r\n").split()[1] == status
