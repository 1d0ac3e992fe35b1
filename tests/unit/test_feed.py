"""The feed's fan-out: a subscriber that falls behind is ended and the others keep receiving."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from courseflow.events import CapacityChanged
from courseflow.eventstore import store
from courseflow.eventstore.eventlog import Checkpoint, Recorded, Tail
from projections.feed import Ended, Feed
from projections.refusals import FeedClosing


def _changed(position: int, course_id: int = 1) -> Recorded:
    event = CapacityChanged(course_id=course_id, capacity=position, previous=position - 1)
    return Recorded(position, position, store.course_stream(course_id), position, datetime.now(UTC), event)


async def _nothing_read(after: Checkpoint, limit: int) -> Tail:
    raise AssertionError("the fan-out reads nothing itself")


def test_a_subscriber_that_falls_behind_is_ended_while_the_others_keep_receiving() -> None:
    async def scenario() -> None:
        feed = Feed("postgresql://unused", _nothing_read, buffer=3)
        slow, fast, elsewhere = feed.subscribe(course_id=1), feed.subscribe(course_id=1), feed.subscribe(course_id=2)
        received = []
        for position in range(1, 11):
            feed.dispatch([_changed(position)])
            item = await asyncio.wait_for(fast.next(), 5)
            assert isinstance(item, Recorded)
            received.append(item.position)
        assert received == list(range(1, 11))
        # Three items behind was still fine; the fourth ended it, and what it had buffered is dropped.
        assert await asyncio.wait_for(slow.next(), 5) == Ended("overflow")
        assert slow not in feed.subscriptions() and {fast, elsewhere} <= set(feed.subscriptions())
        feed.dispatch([_changed(11, course_id=2)])
        assert feed.position == Checkpoint(11, 11)
        # Shutdown, from another thread as a signal handler would: every stream ends, none may start.
        closer = threading.Thread(target=feed.close)
        closer.start()
        closer.join(timeout=5)
        assert await asyncio.wait_for(fast.next(), 5) == Ended("shutdown")
        assert await asyncio.wait_for(elsewhere.next(), 5) == Ended("shutdown")
        assert feed.subscriptions() == []
        with pytest.raises(FeedClosing):
            feed.subscribe(course_id=1)

    asyncio.run(scenario())
