"""A bounded memo for hot per-caller work (verified tokens, rate-limit key names)."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Remembers up to `size` entries; when full it starts afresh, so a flood of new keys costs memory
    no longer than one generation and the crowd's hot keys are back after one more use each."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> V:
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[key] = value
        return value
