"""The fairness order's encodings, without servers: the Redis encoding sorts as the Python key does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from courseflow import fairness

_ranks = st.lists(
    st.builds(
        fairness.Rank,
        priority=st.integers(-5, 105),
        arrival_ms=st.integers(0, 10**fairness.MS_DIGITS - 1),
        arrival_seq=st.integers(0, 10**fairness.SEQ_DIGITS - 1),
    ),
    max_size=30,
)


@given(_ranks)
def test_score_then_member_bytes_sort_as_the_python_key(ranks: list[fairness.Rank]) -> None:
    """A sorted set orders by score, then by member bytes: the encoding must give the Python key's order."""

    def in_redis(r: fairness.Rank) -> tuple[float, bytes]:
        return fairness.score(r.priority), fairness.member_prefix(r.arrival_ms, r.arrival_seq)

    encoded = sorted(ranks, key=in_redis)
    assert [fairness.sort_key(r) for r in encoded] == sorted(fairness.sort_key(r) for r in ranks)


def test_a_member_prefix_reads_back_as_its_arrival() -> None:
    head = fairness.member_prefix(1_767_225_600_000, 42)
    assert head == b"001767225600000-0000000042|"
    assert fairness.parse_member_prefix(head[:-1]) == (1_767_225_600_000, 42)


def test_the_sql_comes_from_the_one_list_of_terms() -> None:
    assert fairness.order_by() == "priority DESC, arrival_ms, arrival_seq"
    assert fairness.order_by("w") == "w.priority DESC, w.arrival_ms, w.arrival_seq"
    assert fairness.row("o") == "(-o.priority, o.arrival_ms, o.arrival_seq)"


def test_a_priority_a_double_cannot_hold_exactly_is_refused() -> None:
    assert fairness.score(fairness.MAX_PRIORITY) == -float(fairness.MAX_PRIORITY)
    with pytest.raises(ValueError, match="outside"):
        fairness.score(fairness.MAX_PRIORITY + 1)
