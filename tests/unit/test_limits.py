"""Rate-limit policies as declared: each limit named on its own in the headers."""

from __future__ import annotations

import pytest

from courseflow.http.limits import Policy


def test_each_limit_of_a_policy_has_its_own_name_in_the_headers() -> None:
    policy = Policy("student-writes", "10/second;100/minute")
    assert policy.header == '"student-writes-1";q=10;w=1, "student-writes-2";q=100;w=60'
    assert Policy("registrar", "off").items == []
    with pytest.raises(SystemExit, match="RATE_LIMIT_REGISTRAR"):
        Policy("registrar", "lots")
