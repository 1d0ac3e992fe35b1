"""/metrics's content negotiation without servers: what each `Accept` is answered with."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import choose_encoder

from courseflow.http.scrape import JSON, negotiate


@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        ("", JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        ("text/plain", "text/plain"),
        ("TEXT/PLAIN; Version=0.0.4", "text/plain; version=0.0.4"),
        ("text/plain; version=1.0.0; escaping=allow-utf-8", "text/plain; version=1.0.0; escaping=allow-utf-8"),
        ("text/plain; version=1.0.0; escaping=nonsense", "text/plain; version=1.0.0"),
        ('application/openmetrics-text; version="1.0.0"', "application/openmetrics-text; version=1.0.0"),
        ("application/json; q=0.1, text/plain; q=0.9", "text/plain"),
        ("text/plain; q=0.5, application/json; q=0.5", "text/plain"),  # equal quality: the order given
        ("text/plain; version=abc, application/json; q=0.1", JSON),
        ("application/openmetrics-text; version=1.x", None),
        ("text/plain; version=abc", None),
        ("text/html", None),
        ("application/json; q=0", None),
        ("application/json; q=nope", None),
        (", ".join(["image/png"] * 40) + ", */*", None),  # past the ranges read
    ],
)
def test_each_accept_gets_json_one_written_exposition_or_nothing(accept: str, answer: str | None) -> None:
    assert negotiate(accept) == answer


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain",
        "text/plain; version=0.0.4",
        "text/plain; version=1.0.0; escaping=allow-utf-8",
        "application/openmetrics-text",
        "application/openmetrics-text; version=1.0.0; escaping=underscores",
    ],
)
def test_what_prometheus_client_is_handed_it_reads_as_that_exposition(accept: str) -> None:
    chosen = negotiate(accept)
    assert chosen is not None
    _, content_type = choose_encoder(chosen)
    assert content_type.startswith(chosen.split(";")[0])
