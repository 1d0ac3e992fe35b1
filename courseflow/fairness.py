"""The fairness order, defined once: priority (higher first), then arrival (stream id, earlier first).

From this one definition come the three forms every reader uses:
- `sort_key`, the Python key (domain.decide sorts by it);
- the Redis priority-set encoding (`score`, `member_prefix`), which the library's Lua function
  `fairness_member`/`fairness_score` (courseflow/platform/lua/courseflow.lua) implements exactly;
- `order_by` and `row`, the SQL for every query that orders pending or waitlisted requests.
tests/integration/test_fairness_order.py proves the three order random requests alike.

Redis scores are doubles, exact for integers up to 2**53: the score carries only small fields (priority now;
phase and wave when the opening lottery comes, as `(priority * PHASES + phase) * WAVES + wave`, negated),
and the member carries the long tie-breakers (arrival now; the lottery key before it for draw entrants).
"""

from __future__ import annotations

from typing import NamedTuple

# Zero-padded widths of a stream id's two parts in a priority-set member, so that byte order is numeric order.
# A millisecond time has 13 digits until the year 2286; a sequence number stays far below 10**10.
MS_DIGITS = 15
SEQ_DIGITS = 10
MAX_PRIORITY = 2**31 - 1  # an SQL integer; far inside a double's exact range

_DESCENDING = True
# The order's terms, as (column, descending), most significant first: the one list the SQL is produced from.
TERMS: tuple[tuple[str, bool], ...] = (
    ("priority", _DESCENDING),
    ("arrival_ms", not _DESCENDING),
    ("arrival_seq", not _DESCENDING),
)


class Rank(NamedTuple):
    """What orders one request: its priority and its arrival (the stream id's two parts), in TERMS' order."""

    priority: int
    arrival_ms: int
    arrival_seq: int


# Each term's sign in the Python key: a descending term sorts ascending once negated, as in `row`.
_SIGNS = tuple(-1 if descending else 1 for _, descending in TERMS)


def sort_key(rank: Rank) -> tuple[int, ...]:
    """The Python key: sorting ascending by it gives the fairness order."""
    return tuple(sign * value for sign, value in zip(_SIGNS, rank, strict=True))


def score(priority: int) -> float:
    """A request's priority-set score: lower sorts first, so higher priority first."""
    if abs(priority) > MAX_PRIORITY:
        raise ValueError(f"priority {priority} is outside the fairness order's range")
    return float(-priority)


def member_prefix(arrival_ms: int, arrival_seq: int) -> bytes:
    """The start of a priority-set member: the arrival, zero-padded so that members of one score sort by it."""
    return f"{arrival_ms:0{MS_DIGITS}d}-{arrival_seq:0{SEQ_DIGITS}d}|".encode()


def parse_member_prefix(head: bytes) -> tuple[int, int]:
    """The arrival (ms, seq) that `member_prefix` encoded (without its `|`)."""
    ms, _, seq = head.partition(b"-")
    return int(ms), int(seq or 0)


def order_by(alias: str = "") -> str:
    """The SQL ORDER BY list (without the keywords), over columns named as the table names them."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{column}{' DESC' if descending else ''}" for column, descending in TERMS)


def ahead(alias: str, of: str) -> str:
    """A SQL condition: the request `alias` goes before the request `of` in the fairness order."""
    return f"{row(alias)} < {row(of)}"


def row(alias: str) -> str:
    """A SQL row value that compares ascending in the fairness order: `row('a') < row('b')` when a goes first."""
    return "(" + ", ".join(f"{'-' if descending else ''}{alias}.{column}" for column, descending in TERMS) + ")"
