"""The fairness order's encodings, without servers: the Redis encoding sorts as the Python key does."""

from __future__ import annotations

import re
from pathlib import Path

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
    assert (
        fairness.ahead("o", "r")
        == "(-o.priority, o.arrival_ms, o.arrival_seq) < (-r.priority, r.arrival_ms, r.arrival_seq)"
    )


def test_a_priority_a_double_cannot_hold_exactly_is_refused() -> None:
    assert fairness.score(fairness.MAX_PRIORITY) == -float(fairness.MAX_PRIORITY)
    with pytest.raises(ValueError, match="outside"):
        fairness.score(fairness.MAX_PRIORITY + 1)


_ROOT = Path(__file__).resolve().parents[2]


def test_the_rank_holds_the_terms_in_their_order() -> None:
    """`sort_key` reads a Rank positionally, by the terms: its fields must be the terms, in order."""
    assert fairness.Rank._fields == tuple(column for column, _ in fairness.TERMS)


def test_the_python_key_negates_exactly_the_descending_terms() -> None:
    assert fairness.sort_key(fairness.Rank(3, 5, 7)) == tuple(
        -v if descending else v for v, (_, descending) in zip((3, 5, 7), fairness.TERMS, strict=True)
    )


@pytest.mark.parametrize(
    ("migration", "index"),
    [("002_write_model.sql", "enrollment_requests_waitlist"), ("003_read_models.sql", "waitlist_entries_order")],
)
def test_the_waitlist_indexes_follow_the_fairness_terms(migration: str, index: str) -> None:
    """An index that restates the order in another way would leave every waitlist query to sort."""
    text = (_ROOT / "sql" / migration).read_text()
    found = re.search(rf"CREATE INDEX {index} ON \w+\s*\(([^)]*)\)", text)
    assert found is not None, f"{index} not found in {migration}"
    columns = [c.strip() for c in found.group(1).split(",")]
    assert columns[0] == "course_id"
    assert ", ".join(columns[1:]) == fairness.order_by()


def test_the_lua_member_pads_to_the_fairness_widths() -> None:
    """The Lua function writes the widths as numbers: they must be fairness.py's."""
    lua = (_ROOT / "courseflow" / "platform" / "lua" / "courseflow.lua").read_text()
    widths = dict((part, int(n)) for n, part in re.findall(r"string\.rep\('0', (\d+) - #(\w+)\)", lua))
    assert widths == {"ms": fairness.MS_DIGITS, "seq": fairness.SEQ_DIGITS}
    assert re.search(r"return -tonumber\(priority\)", lua), "the score is no longer the negated priority"


def test_no_module_writes_the_fairness_order_by_hand() -> None:
    """The SQL order is produced by fairness.order_by/row/ahead; a hand-written copy would drift from it."""
    hand_written = re.compile(r"priority DESC|-\w+\.priority\b|\(-priority\b")
    offenders = [
        f"{path.relative_to(_ROOT)}:{n}"
        for folder in ("courseflow", "projections")
        for path in (_ROOT / folder).rglob("*.py")
        if path.name != "fairness.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if hand_written.search(line)
    ]
    assert not offenders
