"""The field at fault, read from msgspec's own errors for every shape the API relies on.

These run the installed msgspec: a release that words or places its paths otherwise fails here, not in
a client's 422 that names the wrong field."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from courseflow.http.msgspec_errors import MAX_FIELD_CHARS, NOT_BLANK, Culprit, culprit, lone_surrogate, malformed


class Seat(msgspec.Struct, forbid_unknown_fields=True):
    row: int


class Body(msgspec.Struct, forbid_unknown_fields=True):
    course_id: Annotated[int, msgspec.Meta(ge=1)]
    seats: list[Seat] = []
    seat: Seat | None = None


def _error(raw: bytes, kind: Any = Body) -> msgspec.ValidationError:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.json.decode(raw, type=kind)
    return raised.value


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{}", Culprit("course_id", "is required")),
        (b'{"course_id":1,"seat_count":2}', Culprit("seat_count", "is not a known field")),
        (b'{"course_id":"1"}', Culprit("course_id", "is invalid: expected `int`, got `str`")),
        (b'{"course_id":0}', Culprit("course_id", "is invalid: expected `int` >= 1")),
        (b'{"course_id":1,"seat":{}}', Culprit("seat.row", "is required")),
        (b'{"course_id":1,"seat":{"row":1,"col":2}}', Culprit("seat.col", "is not a known field")),
        (
            b'{"course_id":1,"seats":[{"row":1},{"row":"x"}]}',
            Culprit("seats[1].row", "is invalid: expected `int`, got `str`"),
        ),
        (b"[]", Culprit("body", "is invalid: expected `object`, got `array`")),
    ],
    ids=[
        *("missing", "unknown", "wrong-type", "out-of-range"),
        *("nested-missing", "nested-unknown", "array-index", "whole"),
    ],
)
def test_the_field_at_fault_and_what_is_wrong(raw: bytes, expected: Culprit) -> None:
    assert culprit(_error(raw)) == expected


def test_an_item_of_a_top_level_array_is_named_by_its_index() -> None:
    assert culprit(_error(b'[1,"x"]', list[int])) == Culprit("[1]", "is invalid: expected `int`, got `str`")


def test_a_constraint_on_a_bare_value_names_no_field() -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.convert("", Annotated[str, msgspec.Meta(min_length=1)])
    assert culprit(raised.value) == Culprit("body", "is invalid: expected `str` of length >= 1")


def test_a_field_name_from_the_client_is_cut_short() -> None:
    name = "x" * 500
    found = culprit(_error(b'{"course_id":1,"%s":1}' % name.encode()))
    assert found == Culprit(name[:MAX_FIELD_CHARS], "is not a known field")


@pytest.mark.parametrize("name", ["a`b", "`", "``", "x` - at `$", "a - at `$[0]`"])
def test_a_field_name_with_backticks_is_named_whole(name: str) -> None:
    raw = b'{"course_id":1,%s:1}' % msgspec.json.encode(name)
    assert culprit(_error(raw)) == Culprit(name, "is not a known field")


def test_a_nested_field_name_with_a_backtick_keeps_its_path() -> None:
    assert culprit(_error(b'{"course_id":1,"seat":{"row":1,"c`l":2}}')) == Culprit("seat.c`l", "is not a known field")


def test_a_blank_value_is_said_in_words() -> None:
    class Named(msgspec.Struct):
        title: Annotated[str, msgspec.Meta(pattern=NOT_BLANK)]

    assert culprit(_error(b'{"title":" \\t "}', Named)) == Culprit("title", "must not be blank")
    assert culprit(_error(b'{"title":""}', Named)) == Culprit("title", "must not be blank")


@pytest.mark.parametrize(
    ("raw", "lone"),
    [
        (rb'{"course_id":"\ud800"}', r"\ud800"),  # msgspec says "truncated" of this one
        (rb'{"course_id":"\udc00"}', r"\udc00"),
        (rb'{"course_id":"\ud800x"}', r"\ud800"),
        (rb'{"\ud800":1}', r"\ud800"),
        (rb'{"course_id":"\ud800\ud800\udc00"}', r"\ud800"),
        (rb'{"course_id":"\\\ud800"}', r"\ud800"),  # an escaped backslash, then the escape
    ],
)
def test_a_lone_surrogate_is_named_not_called_truncated(raw: bytes, lone: str) -> None:
    with pytest.raises(msgspec.DecodeError) as raised:
        msgspec.json.decode(raw)
    reason = malformed(raised.value, raw)
    assert lone in reason and "surrogate" in reason and "truncated" not in reason


@pytest.mark.parametrize("raw", [rb'"\\ud800"', rb'"\ud83d\ude00"', rb'"\u00e9"', b'"plain"'])
def test_no_lone_surrogate_where_there_is_none(raw: bytes) -> None:
    assert lone_surrogate(raw) is None


def test_a_body_that_is_cut_off_is_still_called_so() -> None:
    raw = b'{"course_id":'
    with pytest.raises(msgspec.DecodeError) as raised:
        msgspec.json.decode(raw)
    assert malformed(raised.value, raw) == "is not valid JSON (Input data was truncated)"


@pytest.mark.parametrize("raw", [rb'{"k":"\u12"}', rb'{"k":"\uzzzz"}', b'{"k":"\\u', rb'"\u"', rb'"\ud800\u12"'])
def test_a_unicode_escape_without_four_hex_digits_is_malformed_json_not_an_error(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError) as raised:
        msgspec.json.decode(raw)
    assert malformed(raised.value, raw).startswith("is not valid JSON")
