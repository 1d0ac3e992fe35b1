"""The rules a request is held to at the door, without a server: ids, timestamps, titles, headers, JSON text."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request
from starlette.types import Message

from courseflow.domain import MAX_ID
from courseflow.http.payloads import Enrollment, NewCourse, decode, is_id, read, timestamp
from courseflow.http.problems import InvalidInput


def _refused(body: bytes, kind: type[Enrollment] | type[NewCourse] = NewCourse) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        decode(body, kind)
    return refused.value


# ---- ids: safe integers (RFC 7493), the largest a browser holds exactly ----------------------------------------


def test_the_largest_id_is_javascripts_largest_exact_integer() -> None:
    assert MAX_ID == 2**53 - 1 == 9007199254740991


@pytest.mark.parametrize(
    ("field", "body"), [("course_id", b'{"course_id":%d}'), ("student_id", b'{"course_id":1,"student_id":%d}')]
)
def test_an_id_beyond_the_bound_is_a_422_naming_it(field: str, body: bytes) -> None:
    assert decode(body % MAX_ID, Enrollment) is not None
    for beyond in (MAX_ID + 1, MAX_ID + 2, 2**63 - 1):
        refused = _refused(body % beyond, Enrollment)
        assert (refused.status_code, refused.field) == (422, field)
        assert str(MAX_ID) in refused.detail


def test_an_id_as_text_is_held_to_the_same_bound() -> None:
    """Student tokens' `sub` and the command line read ids as text."""
    assert is_id(str(MAX_ID)) and not is_id(str(MAX_ID + 1)) and not is_id("0")


# ---- timestamps: RFC 3339 only -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2027-W01-1T00:00:00Z",  # ISO 8601 week date
        "20270101T000000Z",  # basic format
        "2027-01-01T00:00:00,5Z",  # comma fraction
        "2027-01-01T00:00Z",  # no seconds
        "2027-001T00:00:00Z",  # ordinal date
        "2027-01-01T00:00:00+0100",  # offset without its colon
    ],
)
def test_a_timestamp_that_is_not_rfc_3339_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        timestamp(value, "opens_at")
    assert (refused.value.status_code, refused.value.field) == (422, "opens_at")
    assert "RFC 3339" in refused.value.detail


@pytest.mark.parametrize(
    "value",
    ["2027-01-01T09:00:00Z", "2027-01-01T09:00:00.5+01:00", "2027-01-01t09:00:00z", "2027-01-01T09:00:00-00:00"],
)
def test_an_rfc_3339_timestamp_is_taken(value: str) -> None:
    assert timestamp(value, "opens_at") is not None


def test_a_timestamp_without_a_zone_says_so() -> None:
    with pytest.raises(InvalidInput, match="must include a time zone"):
        timestamp("2027-01-01T09:00:00", "opens_at")


# ---- course titles: required and not blank -------------------------------------------------------------------


def test_a_course_title_is_required() -> None:
    refused = _refused(b'{"course_id":1,"capacity":5}')
    assert (refused.field, refused.detail) == ("title", "title is required")


@pytest.mark.parametrize("title", ["", " ", "   ", "\\t\\u00a0", "\\u3000"])
def test_a_blank_course_title_is_refused(title: str) -> None:
    refused = _refused(b'{"course_id":1,"capacity":5,"title":"%s"}' % title.encode())
    assert (refused.status_code, refused.field, refused.detail) == (422, "title", "title must not be blank")


def test_a_title_with_words_around_spaces_is_taken() -> None:
    assert decode(b'{"course_id":1,"capacity":5,"title":" Databases "}', NewCourse).title == " Databases "


# ---- JSON text: said as it is --------------------------------------------------------------------------------


def test_a_lone_surrogate_is_not_called_truncated() -> None:
    refused = _refused(b'{"course_id":1,"capacity":5,"title":"\\ud800"}')
    assert (refused.status_code, refused.field) == (400, "body")
    assert "lone UTF-16 surrogate" in refused.detail and "truncated" not in refused.detail


def test_a_field_name_with_a_backtick_is_named_whole() -> None:
    refused = _refused(b'{"course_id":1,"capacity":5,"title":"T","ti`tle":"x"}')
    assert (refused.field, refused.detail) == ("ti`tle", "ti`tle is not a known field")


# ---- headers: said once --------------------------------------------------------------------------------------


def _request(headers: list[tuple[bytes, bytes]], body: bytes) -> Request:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


@pytest.mark.parametrize(
    "second", [b"application/json", b"text/plain", b"application/json; charset=utf-8"], ids=["same", "other", "charset"]
)
def test_two_content_types_are_a_400(second: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-type", second)]
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(read(_request(headers, b'{"course_id":1}'), Enrollment))
    assert (refused.value.status_code, refused.value.field) == (400, "Content-Type")
    assert refused.value.errors is not None and refused.value.errors[0].location == "header"


def test_two_content_encodings_are_a_400() -> None:
    headers = [(b"content-type", b"application/json"), (b"content-encoding", b"identity")] * 2
    headers = headers[:2] + headers[3:]
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(read(_request(headers, b'{"course_id":1}'), Enrollment))
    assert (refused.value.status_code, refused.value.field) == (400, "Content-Encoding")
