"""The OpenAPI document generated from the declarations: valid OpenAPI 3.1, every route documented with its answers."""

from __future__ import annotations

from openapi_spec_validator import validate
from starlette.routing import Route

from courseflow.http import openapi, pages
from courseflow.http.app import create_app
from courseflow.platform.config import Settings

_APP = create_app(Settings.from_env())
DOCUMENT = openapi.document(_APP.routes, "test")


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"] == "3.1.0"


def test_every_route_is_documented_with_its_answers() -> None:
    for route in _APP.routes:
        if not isinstance(route, Route) or route.path.startswith(("/docs", "/redoc", "/openapi", pages.STATIC_PREFIX)):
            continue
        if route.path in pages.PAGES:  # the web pages: HTML for people, not operations
            continue
        for method in (route.methods or set()) - {"HEAD"}:
            spec = DOCUMENT["paths"][route.path][method.lower()]
            assert spec["summary"] and spec["operationId"]
            statuses = set(spec["responses"])
            assert "default" in statuses and "429" in statuses, route.path
            for status, answer in spec["responses"].items():
                media = "application/json" if status < "400" else "application/problem+json"
                assert media in answer["content"], (route.path, method, status)
            if spec.get("security") != []:
                assert "401" in statuses
            if "requestBody" in spec:
                assert {"400", "413", "415", "422"} <= statuses
                assert spec["requestBody"]["content"]["application/json"]["example"]
