"""The bounded memo behind verified tokens and rate-limit key names."""

from __future__ import annotations

from courseflow.platform.memo import Memo


def test_remembers_up_to_its_size_then_starts_afresh() -> None:
    memo: Memo[str, int] = Memo(size=3)
    for n, key in enumerate("abc"):
        assert memo.put(key, n) == n
    assert [memo.get(k) for k in "abc"] == [0, 1, 2]
    memo.put("d", 3)  # full: a new generation begins, so memory never grows past the size
    assert [memo.get(k) for k in "abcd"] == [None, None, None, 3]
