"""The queue's partition count, fixed in PostgreSQL at the deployment's first migrate.

Every component checks it before reading or writing the queue: with another count, requests would go to
partitions nobody reads, and status look-ups would miss them.
"""

from __future__ import annotations

from courseflow.eventstore.store import Conn


class PartitionCountMismatch(Exception):
    """PARTITIONS differs from the count the deployment was created with."""


def record(conn: Conn, partitions: int) -> int:
    """Record the partition count at the deployment's first migrate, and a lease row for each partition;
    refuses a different count later. Returns the recorded count."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO queue_partitions (partitions) VALUES (%s) ON CONFLICT (singleton) DO NOTHING", (partitions,)
        )
        recorded = recorded_count(conn)
        if recorded != partitions:
            raise PartitionCountMismatch(mismatch(partitions, recorded))
        conn.execute(
            "INSERT INTO partition_leases (partition) SELECT generate_series(0, %s - 1) ON CONFLICT DO NOTHING",
            (partitions,),
        )
    return partitions


def recorded_count(conn: Conn) -> int | None:
    row = conn.execute("SELECT partitions FROM queue_partitions").fetchone()
    return None if row is None else int(row[0])


def verify(conn: Conn, partitions: int) -> None:
    """Refuse to run with a partition count other than the deployment's."""
    recorded = recorded_count(conn)
    if recorded is not None and recorded != partitions:
        raise PartitionCountMismatch(mismatch(partitions, recorded))


def mismatch(configured: int, recorded: int | None) -> str:
    return (
        f"PARTITIONS is {configured}, but this deployment was created with {recorded} partitions;"
        f" set PARTITIONS={recorded} (the count is fixed once requests have been queued)"
    )
