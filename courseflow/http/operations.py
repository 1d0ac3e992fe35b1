"""What each endpoint takes and answers, declared once beside it: read by the handler and by the OpenAPI document.

An endpoint is decorated with `@operation(...)` naming its path, query and body Structs and its
answers by status. Handlers read their inputs with `path_params` and `query` (typed, validated,
every failure a 4xx naming the parameter), so the declaration cannot drift from what is enforced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec
import msgspec.inspect
from starlette.requests import HTTPConnection

from courseflow.http.msgspec_errors import culprit
from courseflow.http.problems import InvalidInput, Location

E = TypeVar("E", bound=Callable[..., Any])
S = TypeVar("S", bound=msgspec.Struct)


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    summary: str
    tag: str
    # Status → the Struct (or union of Structs) answered with it.
    answers: Mapping[int, Any]
    description: str = ""
    path: type[msgspec.Struct] | None = None
    query: type[msgspec.Struct] | None = None
    body: type[msgspec.Struct] | None = None
    # An example body, shown in the documentation.
    example: msgspec.Struct | None = None
    # Statuses this operation answers with problem details, besides those every operation may give.
    problems: tuple[int, ...] = ()
    # Answered without a token (probes, the scraper, the documentation).
    public: bool = False
    # Also answers `Accept: text/event-stream` with a stream of these messages (the union, documented).
    streams: Any = None
    # Also answers this text media type when the client asks for it (Prometheus text on /metrics).
    text: str | None = None


_declared: dict[Callable[..., Any], Operation] = {}
_integer_fields: dict[type[Any], frozenset[str]] = {}


def operation(**declaration: Any) -> Callable[[E], E]:
    def declare(endpoint: E) -> E:
        _declared[endpoint] = Operation(**declaration)
        return endpoint

    return declare


def declared(endpoint: Callable[..., Any]) -> Operation | None:
    return _declared.get(endpoint)


def path_params(request: HTTPConnection, kind: type[S]) -> S:
    return _convert(request.path_params, kind, "path")


def query(request: HTTPConnection, kind: type[S]) -> S:
    params = request.query_params
    for name in params:
        if len(params.getlist(name)) > 1:
            raise InvalidInput(name[:64], "is given more than once", status=400, location="query")
    return _convert(dict(params), kind, "query")


def _convert(raw: Mapping[str, str], kind: type[S], location: Location) -> S:
    for name in _integers(kind) & raw.keys():
        plain_digits(raw[name], name, location)
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        at_fault = culprit(exc)
        shown = raw.get(at_fault.field)
        got = "" if shown is None else f", got {shown[:32]!r}"
        raise InvalidInput(at_fault.field, at_fault.detail + got, location=location) from None


def plain_digits(raw: str, name: str, location: Location, status: int = 422) -> str:
    """A whole number as sent: plain ASCII digits only, and no more than 20 of them (msgspec would also read
    "1e3" and "5.0", str.isdigit() takes "³", and int() of thousands of digits is refused)."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20):
        raise InvalidInput(
            name, f"must be a whole number in plain digits, got {raw[:32]!r}", status=status, location=location
        )
    return raw


def _integers(kind: type[msgspec.Struct]) -> frozenset[str]:
    """The names of the parameters that are integers (or optional integers)."""
    if kind not in _integer_fields:
        info = msgspec.inspect.type_info(kind)
        assert isinstance(info, msgspec.inspect.StructType)
        _integer_fields[kind] = frozenset(f.encode_name for f in info.fields if _is_integer(f.type))
    return _integer_fields[kind]


def _is_integer(t: msgspec.inspect.Type) -> bool:
    if isinstance(t, msgspec.inspect.Metadata):
        return _is_integer(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        return any(_is_integer(member) for member in t.types)
    return isinstance(t, msgspec.inspect.IntType)
