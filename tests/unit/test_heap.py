"""The collector's settings for crowds: start-up frozen, a young generation that holds the requests in flight."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from courseflow.platform import heap


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_settling_freezes_start_up_and_raises_only_the_young_threshold() -> None:
    _, middle, old = gc.get_threshold()
    alive = [object() for _ in range(10)], {"start-up": "state"}
    heap.settle_for_crowds()
    assert gc.get_freeze_count() > 0 and not any(o is alive[1] for o in gc.get_objects())
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, middle, old)
