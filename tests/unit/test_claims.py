"""A token's claims read strictly: times are numbers, each key once, a subject that names one principal."""

from __future__ import annotations

import base64
import json

import pytest

from courseflow.http import claims
from courseflow.http.claims import MAX_SUB_CHARS, Claims, Refused, subject_fault

HEADER = '{"alg":"HS256","typ":"JWT"}'
GOOD = {"sub": "7", "role": "student", "aud": "courseflow", "exp": 2_000_000_000, "iat": 1_999_990_000}


def _segment(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _token(payload: str, header: str = HEADER) -> str:
    return f"{_segment(header)}.{_segment(payload)}.c2ln"


def test_a_good_payload_reads_as_its_claims() -> None:
    assert claims.read(_token(json.dumps(GOOD))) == Claims(sub="7", role="student", exp=2e9, iat=1_999_990_000)


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
def test_a_time_given_as_a_digit_string_is_refused(name: str) -> None:
    with pytest.raises(Refused, match=f"its {name} must be a number of seconds since 1970, not text"):
        claims.read(_token(json.dumps(GOOD | {name: "2000000000"})))


@pytest.mark.parametrize("value", ["true", "null", "[1]", "1e400", "1" + "0" * 400])
def test_an_exp_that_is_no_time_is_refused(value: str) -> None:
    payload = json.dumps({k: v for k, v in GOOD.items() if k != "exp"})[:-1] + f', "exp": {value}}}'
    with pytest.raises(Refused, match="its exp"):
        claims.read(_token(payload))


@pytest.mark.parametrize("key", ["role", "sub", "exp"])
def test_a_payload_giving_a_key_twice_is_refused(key: str) -> None:
    # The last would win in PyJWT's own reading: a `role` of "student" then "registrar" is a registrar there.
    payload = json.dumps(GOOD)[:-1] + f', "{key}": {json.dumps(GOOD[key])}}}'
    with pytest.raises(Refused, match=f"its payload gives '{key}' more than once"):
        claims.read(_token(payload))


def test_a_header_giving_a_key_twice_is_refused() -> None:
    with pytest.raises(Refused, match="its header gives 'alg' more than once"):
        claims.read(_token(json.dumps(GOOD), header='{"alg":"none","alg":"HS256"}'))


def test_a_duplicate_key_is_named_in_ascii_only() -> None:
    """The reason is repeated in the WWW-Authenticate header, which carries ASCII only."""
    payload = json.dumps(GOOD)[:-1] + ', "\\u20ac\\n": 1, "\\u20ac\\n": 2}'
    with pytest.raises(Refused) as refused:
        claims.read(_token(payload))
    assert str(refused.value).isascii() and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"role": "student", "exp": 1}, "its sub must be a string"),
        (GOOD | {"sub": 7}, "its sub must be a string"),
        (GOOD | {"role": "root"}, "its role must be one of student, registrar, service"),
        ({"sub": "7", "role": "student"}, "it has no exp"),
    ],
)
def test_a_claim_of_the_wrong_kind_is_refused_in_plain_words(payload: dict[str, object], reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        claims.read(_token(json.dumps(payload)))


@pytest.mark.parametrize("payload", ["[1]", "not json", "NaN", '{"exp": NaN}'])
def test_a_payload_that_is_no_json_object_is_refused(payload: str) -> None:
    with pytest.raises(Refused, match="its payload"):
        claims.read(_token(payload))


@pytest.mark.parametrize(
    ("sub", "fault"),
    [
        ("", "is empty or blank"),
        (" ", "is empty or blank"),
        (" registrar", "has whitespace around it"),
        ("sis\n", "has whitespace around it"),
        ("r" * (MAX_SUB_CHARS + 1), f"is longer than {MAX_SUB_CHARS} characters"),
        ("r" * 5000, f"is longer than {MAX_SUB_CHARS} characters"),
        ("a\x00b", "holds control characters"),
        ("a\x1bb", "holds control characters"),
        ("a\u2028b", "holds control characters"),
    ],
)
def test_a_subject_that_names_no_one_is_refused(sub: str, fault: str) -> None:
    assert subject_fault(sub) == fault


@pytest.mark.parametrize("sub", ["7", "registrar-1", "Jane Doe", "r" * MAX_SUB_CHARS, "sis@campus.example"])
def test_a_plain_subject_is_taken(sub: str) -> None:
    assert subject_fault(sub) is None
