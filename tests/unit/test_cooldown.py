"""The cool-down of callers whose WebSocket was closed for flooding: as long as set, theirs alone, bounded."""

from __future__ import annotations

from courseflow.http.cooldown import Cooldown
from courseflow.http.limits import Subject

FLOODER = Subject("student", "s-1")
OTHER = Subject("student", "s-2")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flooder_waits_the_cool_down_and_no_one_else_does() -> None:
    clock = Clock()
    flooders = Cooldown(10.0, clock=clock)
    flooders.start(FLOODER)
    clock.now += 4.0
    assert flooders.remaining(FLOODER) == 6.0
    assert flooders.remaining(OTHER) == 0.0
    clock.now += 6.0
    assert flooders.remaining(FLOODER) == 0.0


def test_flooding_again_starts_the_cool_down_again() -> None:
    clock = Clock()
    flooders = Cooldown(10.0, clock=clock)
    flooders.start(FLOODER)
    flooders.start(OTHER)
    clock.now += 8.0
    flooders.start(FLOODER)
    clock.now += 5.0
    assert flooders.remaining(FLOODER) == 5.0
    assert flooders.remaining(OTHER) == 0.0
    flooders.start(Subject("student", "s-3"))
    assert len(flooders) == 2  # the ended one is forgotten


def test_many_callers_hold_at_most_the_bound_and_the_soonest_to_end_go_first() -> None:
    clock = Clock()
    flooders = Cooldown(10.0, most_callers=3, clock=clock)
    for n in range(5):
        flooders.start(Subject("anonymous", f"address:10.0.0.{n}"))
        clock.now += 0.1
    assert len(flooders) == 3
    assert flooders.remaining(Subject("anonymous", "address:10.0.0.1")) == 0.0
    assert flooders.remaining(Subject("anonymous", "address:10.0.0.4")) > 9.0


def test_zero_turns_it_off() -> None:
    flooders = Cooldown(0.0)
    flooders.start(FLOODER)
    assert flooders.remaining(FLOODER) == 0.0
    assert len(flooders) == 0
