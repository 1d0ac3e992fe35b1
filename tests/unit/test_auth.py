"""Only the one canonical base64url spelling of each token segment reaches PyJWT."""

from __future__ import annotations

import base64
import random

import pytest

from courseflow.http.auth import canonical

SEGMENT = base64.urlsafe_b64encode(b"payload!").rstrip(b"=").decode()  # "cGF5bG9hZCE"


def _token(*segments: str) -> str:
    return ".".join(segments)


@pytest.mark.parametrize("length", range(13))
def test_every_length_encoded_canonically_passes_unpadded_only(length: int) -> None:
    raw = random.Random(length).randbytes(length)
    padded = base64.urlsafe_b64encode(raw).decode()
    assert canonical(_token(padded.rstrip("="), padded.rstrip("="), SEGMENT))
    if padded.endswith("="):  # RFC 7515 §2: base64url without padding; `=` would be a second spelling
        assert not canonical(_token(SEGMENT, SEGMENT, padded))


@pytest.mark.parametrize(
    "segment",
    [
        "cGF5bG9hZCF",  # the same bytes with other trailing bits: a second spelling of one value
        "cGF5bG9hZCE=",  # padding, even where it would fit
        "cGF5bG9hZCE===",  # three `=`
        "cGF5bG9hZCE==",  # `=` beyond the last quantum
        "cG=F5bG9hZCE",  # `=` inside
        "cGF5bG9hZCE+",  # the standard alphabet's characters
        "cGF5bG9h/CE",
        "cGF5bG9hZ CE",
        "cGF5bG9hZé",
        "Q",  # one character left over encodes no byte
        "cGF5b",
    ],
)
def test_a_segment_spelled_otherwise_is_refused(segment: str) -> None:
    assert canonical(_token(SEGMENT, SEGMENT, SEGMENT))
    assert not canonical(_token(segment, SEGMENT, SEGMENT))
    assert not canonical(_token(SEGMENT, segment, SEGMENT))
    assert not canonical(_token(SEGMENT, SEGMENT, segment))


@pytest.mark.parametrize("token", ["", SEGMENT, _token(SEGMENT, SEGMENT), _token(*[SEGMENT] * 4)])
def test_a_token_has_three_segments(token: str) -> None:
    assert not canonical(token)
