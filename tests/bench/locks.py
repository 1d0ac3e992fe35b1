"""Sampling pg_stat_activity while workers decide: how often one worker waits for a lock another holds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import psycopg

from courseflow.decisions.worker import APPLICATION_NAME

# Worker backends waiting for a lock that another worker's backend holds: a row, a transaction id, an advisory
# lock (what partitions must never share), and apart from those, the events table's extension lock (two COPYs
# growing the table's file at once: physical, not a lock on anything either decides).
_WAITING_ON_A_WORKER = f"""
WITH blocked AS (
  SELECT w.wait_event FROM pg_stat_activity w
  WHERE w.application_name LIKE '{APPLICATION_NAME} %%' AND w.wait_event_type = 'Lock'
    AND EXISTS (SELECT 1 FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(w.pid))
                AND b.application_name LIKE '{APPLICATION_NAME} %%'))
SELECT (SELECT count(*) FROM blocked WHERE wait_event <> 'extend'),
       (SELECT count(*) FROM blocked WHERE wait_event = 'extend')
"""
INTERVAL_S = 0.02


class LockWaits(msgspec.Struct):
    samples: int = 0
    # Samples in which some worker waited for a lock held by another worker.
    waiting: int = 0
    # Samples in which a worker waited for another to finish extending the events table.
    extending: int = 0


@contextmanager
def sampled(database_url: str) -> Iterator[LockWaits]:
    """Samples every INTERVAL_S until the block ends; yields the tally, filled as it goes."""
    tally = LockWaits()
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not done.wait(INTERVAL_S):
                row = conn.execute(_WAITING_ON_A_WORKER).fetchone()
                if row is None:
                    continue
                tally.samples += 1
                tally.waiting += int(row[0] > 0)
                tally.extending += int(row[1] > 0)

    thread = threading.Thread(target=sample, name="lock-sampler", daemon=True)
    thread.start()
    try:
        yield tally
    finally:
        done.set()
        thread.join(timeout=10)
