"""The OpenAPI 3.1 document, generated from the route table and each endpoint's declared Structs.

Nothing here is written per endpoint: paths and methods come from the routes, parameters, bodies and
answers from `@operation`, schemas from msgspec. Errors every operation may give are added by rule.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route

from courseflow.domain import MAX_ID
from courseflow.http.operations import Operation, declared
from courseflow.http.problems import MEDIA_TYPE, ProblemDetails

_REF = "#/components/schemas/{name}"
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted: queued durably",
    400: "The request cannot be read (malformed JSON, a header given twice, …)",
    401: "No valid bearer token",
    403: "Not allowed for this caller",
    404: "Not found (or not this caller's)",
    406: "None of the media types `Accept` names can be answered",
    409: "Conflicts with the current state",
    413: "Body too large",
    415: "Not JSON, or compressed",
    422: "A field breaks a rule: `field` and `errors` name it",
    429: "Over a rate limit (`Retry-After` says when to retry), or, enrolling, a student's requests waiting for a "
    "decision at PENDING_PER_STUDENT (`pending_limit`, no `Retry-After`: one must be decided first)",
    503: "A dependency is down or the server is shutting down: retry after `Retry-After` seconds",
}
_DESCRIPTION = """Course enrollment for flash crowds. An enrollment is accepted durably at once (202) and
decided by workers in priority-then-arrival order; follow it with `GET /api/v1/enrollments/{request_id}`,
or live with Server-Sent Events (`Accept: text/event-stream` on `.../events`) or the WebSocket at
`/api/v1/ws?request_id=…` (same messages, as JSON).

Every error is RFC 9457 problem details (`application/problem+json`): `type`, `title`, `status`, `detail`,
and where one input is at fault its `field` and `errors` (each with `field`, `in` and, for body fields,
a JSON `pointer`).

Authentication: a bearer JWT whose `role` is `student`, `registrar` or `service`. Without a configured
key the server runs in development mode and treats every caller as a registrar."""


def document(routes: Iterable[BaseRoute], version: str) -> dict[str, Any]:
    operations = [(route, op) for route in routes if isinstance(route, Route) and (op := declared(route.endpoint))]
    kinds = sorted(_types(op for _, op in operations), key=lambda t: getattr(t, "__name__", str(t)))
    schemas, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    schema_of = dict(zip(kinds, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route, op in operations:
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, method, op, schema_of, components)
    # Parameter Structs became parameters; they are not bodies anyone sends.
    for _, op in operations:
        for params in (op.path, op.query):
            if params is not None:
                components.pop(params.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {"title": "CourseFlow", "version": version, "description": _DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


def _types(operations: Iterable[Operation]) -> set[Any]:
    found: set[Any] = {ProblemDetails}
    for op in operations:
        found.update(t for t in (op.path, op.query, op.body) if t is not None)
        found.update(member for kind in op.answers.values() for member in _members(kind))
        if op.streams is not None:
            found.add(op.streams)
    return found


def _operation(
    route: Route, method: str, op: Operation, schema_of: dict[Any, Any], components: dict[str, Any]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        # Module and route name: `courses_show` and `enrollments_show` are both `show` in their modules.
        "operationId": f"{route.endpoint.__module__.rpartition('.')[2]}_{route.name}",
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _parameters(op, components),
        "responses": _answers(op, schema_of),
    }
    if op.description:
        spec["description"] = op.description
    if op.public:
        spec["security"] = []
    if op.body is not None:
        media: dict[str, Any] = {"schema": schema_of[op.body]}
        if op.example is not None:
            media["example"] = msgspec.to_builtins(op.example)
        spec["requestBody"] = {"required": True, "content": {"application/json": media}}
    return spec


def _members(kind: Any) -> tuple[Any, ...]:
    """The Structs of an untagged union answered by one status (msgspec documents tagged unions itself)."""
    return typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)


def _schema(kind: Any, schema_of: dict[Any, Any]) -> dict[str, Any]:
    members = _members(kind)
    return schema_of[kind] if len(members) == 1 else {"anyOf": [schema_of[m] for m in members]}


# Streams resume after the last id a client got, as SSE clients send it on reconnection.
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "With `Accept: text/event-stream`: resume after this log position (the last `id:` received)",
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
}


def _parameters(op: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [_LAST_EVENT_ID] if op.streams is not None else []
    for where, kind in (("path", op.path), ("query", op.query)):
        if kind is None:
            continue
        schema = components[kind.__name__]
        required = set(schema.get("required", ()))
        for name, field in schema["properties"].items():
            field = dict(field)
            description = field.pop("description", None)
            parameter = {"name": name, "in": where, "required": where == "path" or name in required, "schema": field}
            if description:
                parameter["description"] = description
            found.append(parameter)
    return found


def _answers(op: Operation, schema_of: dict[Any, Any]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status, kind in sorted(op.answers.items()):
        content: dict[str, Any] = {"application/json": {"schema": _schema(kind, schema_of)}}
        if op.streams is not None:
            content["text/event-stream"] = {
                "schema": {"type": "string", "description": "Server-Sent Events; each `data:` is one of these"},
                "x-messages": schema_of[op.streams],
            }
        if op.text is not None:
            content[op.text] = {"schema": {"type": "string"}}
        answers[str(status)] = {"description": _STATUS_TEXT.get(status, "OK"), "content": content}
    problem = {MEDIA_TYPE: {"schema": schema_of[ProblemDetails]}}
    for status in _problem_statuses(op):
        # A status that is also an answer (/ready's 503 report) may be either; the media type tells them apart.
        answer = answers.setdefault(str(status), {"description": _STATUS_TEXT[status], "content": {}})
        answer["content"] = answer["content"] | problem
        if status in (429, 503):
            answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    answers["default"] = {"description": "An unexpected error, as problem details", "content": problem}
    return answers


def _problem_statuses(op: Operation) -> Sequence[int]:
    statuses = set(op.problems) | {429}
    if op.body is not None:
        statuses |= {400, 413, 415, 422}
    if op.path is not None or op.query is not None:
        statuses |= {400, 422}
    if not op.public:
        statuses.add(401)
    return sorted(statuses | {503})
