"""The OpenAPI document generated from the declarations: valid OpenAPI 3.1, every route documented with its answers."""

from __future__ import annotations

from openapi_spec_validator import validate
from starlette.routing import Route

from courseflow.domain import MAX_ID
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


def _integers(schema: object, name: str = "") -> list[tuple[str, dict[str, object]]]:
    """Every integer schema in `schema`, with the name of the property or parameter it belongs to."""
    found: list[tuple[str, dict[str, object]]] = []
    if isinstance(schema, dict):
        if schema.get("type") == "integer":
            found.append((name, schema))
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                for prop, sub in value.items():
                    found += _integers(sub, prop)
            elif key == "parameters" and isinstance(value, list):
                found += [hit for parameter in value for hit in _integers(parameter["schema"], parameter["name"])]
            else:
                found += _integers(value, name)
    elif isinstance(schema, list):
        found += [hit for item in schema for hit in _integers(item, name)]
    return found


def test_every_id_and_position_is_documented_as_a_safe_integer() -> None:
    """Ids, positions and paging cursors reach browsers as JSON numbers: each says it stays within 2^53 - 1."""
    named = [
        (name, schema)
        for name, schema in _integers(DOCUMENT)
        if name.endswith("_id") or name in {"id", "after", "next_after", "position", "Last-Event-ID"}
    ]
    assert {"course_id", "student_id", "after", "next_after", "position", "id", "Last-Event-ID"} <= {
        n for n, _ in named
    }
    for name, schema in named:
        assert schema.get("maximum") == MAX_ID, (name, schema)
