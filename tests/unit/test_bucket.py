"""The token bucket behind a WebSocket client's message limit, on a clock the test turns."""

from __future__ import annotations

from courseflow.platform.bucket import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=5, burst=10, clock=clock)
    assert [bucket.take() for _ in range(11)] == [True] * 10 + [False]
    clock.now += 0.2  # one token back
    assert [bucket.take(), bucket.take()] == [True, False]


def test_an_idle_client_gets_its_burst_back_and_no_more() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=5, burst=3, clock=clock)
    assert all(bucket.take() for _ in range(3))
    clock.now += 3600
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
