"""Retrying an unreachable server: exponential backoff with full jitter."""

from __future__ import annotations

import random


class Backoff:
    """Waits grow exponentially up to `cap`; full jitter keeps restarted processes from retrying in lockstep."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap_s, self.base_s * 2**self.failures))

    def reset(self) -> None:
        self.failures = 0
