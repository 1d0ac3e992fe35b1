"""The published contract: a server that serves the generated OpenAPI document and keeps it.

schemathesis fuzzes every operation from the document served by a real API process with
authentication on (seeded, bounded): no 5xx, and every answer has a documented status, media type,
headers and schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import hypothesis
import pytest
import schemathesis
from openapi_spec_validator import validate
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from courseflow.http import auth, openapi
from courseflow.http.app import create_app
from courseflow.platform.config import Settings
from tests.conftest import Servers, serving_api
from tests.trust import SECRET, secured

_APP = create_app(Settings.from_env())
DOCUMENT = openapi.document(_APP.routes, "test")
OPERATIONS = sorted((method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item)
EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def secured_api(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `courseflow api` process with authentication on; yields its base URL."""
    log_dir = tmp_path_factory.mktemp("contract")
    # The fuzzer is one registrar sending hundreds of requests a second.
    with serving_api(servers, log_dir, AUTH_JWT_SECRET=SECRET, RATE_LIMIT_REGISTRAR="off") as base:
        yield base
    log = (log_dir / "api.log").read_text()
    assert "Traceback" not in log, log


def _registrar(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.issue(settings, 'registrar', 'fuzzer', 3600)}"}


def test_the_served_document_is_the_generated_one(secured_api: str) -> None:
    served = httpx.get(f"{secured_api}/openapi.json", timeout=5)
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    document: dict[str, Any] = served.json()
    validate(document)
    assert document["paths"] == DOCUMENT["paths"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_fuzzed_operations_never_fail_and_match_the_document(
    secured_api: str, settings: Settings, method: str, path: str
) -> None:
    schema = schemathesis.openapi.from_url(f"{secured_api}/openapi.json")
    schema.config.update(base_url=secured_api)
    operation = schema[path][method]
    headers = _registrar(secured(settings))
    checks = [status_code_conformance, content_type_conformance, response_headers_conformance]
    seen: set[int] = set()

    # Valid inputs and invalid ones alike: a 5xx caused by input is a bug, and a refusal is documented too.
    cases = operation.as_strategy() | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)

    @hypothesis.given(case=cases)
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    def fuzz(case: schemathesis.Case[Any]) -> None:
        response = case.call(headers=headers, timeout=10)
        seen.add(response.status_code)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
        case.validate_response(response, checks=[*checks, response_schema_conformance], headers=headers)

    fuzz()
    # The token works: the fuzzer reached the operation itself, not only the door.
    assert seen - {401, 429}, seen


def test_the_description_and_its_pages_need_no_token(secured_api: str) -> None:
    for path in ("/openapi.json", "/docs", "/redoc", "/health", "/metrics", "/api/v1/metrics"):
        assert httpx.get(f"{secured_api}{path}", timeout=5).status_code == 200, path
    refused = httpx.get(f"{secured_api}/api/v1/courses/1", timeout=5)
    assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
