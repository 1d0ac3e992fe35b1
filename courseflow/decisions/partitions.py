"""Partitions of the request queue: how many a deployment has, and which worker decides which.

A worker holds a lease on each partition it reads, renews it while alive and gives partitions up
when more workers join, so the partitions stay shared out evenly among the live workers; a dead
worker's leases expire and the others take its partitions over.
"""

from __future__ import annotations

import msgspec

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
    """Refuse to run with a partition count other than the deployment's: requests would go to partitions
    nobody reads, and status look-ups would miss them."""
    recorded = recorded_count(conn)
    if recorded is not None and recorded != partitions:
        raise PartitionCountMismatch(mismatch(partitions, recorded))


def mismatch(configured: int, recorded: int | None) -> str:
    return (
        f"PARTITIONS is {configured}, but this deployment was created with {recorded} partitions;"
        f" set PARTITIONS={recorded} (the count is fixed once requests have been queued)"
    )


class Shares(msgspec.Struct, frozen=True):
    """What a worker holds after a lease round: its partitions, in order."""

    held: tuple[int, ...]
    acquired: tuple[int, ...]
    released: tuple[int, ...]


def balance(conn: Conn, worker: str, lease_s: float) -> Shares:
    """One lease round for `worker`: say it is alive, renew its leases, and give up or take partitions so that
    every live worker holds its even share. Free and expired partitions go first come, first served."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO workers (name, expires_at) VALUES (%(w)s, now() + make_interval(secs => %(s)s))"
            " ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at",
            {"w": worker, "s": lease_s},
        )
        conn.execute("DELETE FROM workers WHERE expires_at < now() - interval '1 hour'")
        live = [row[0] for row in conn.execute("SELECT name FROM workers WHERE expires_at > now() ORDER BY name")]
        total = recorded_count(conn) or 0
        rank = live.index(worker) if worker in live else 0
        share = total // max(1, len(live)) + (1 if rank < total % max(1, len(live)) else 0)
        held = [
            row[0]
            for row in conn.execute(
                "UPDATE partition_leases SET expires_at = now() + make_interval(secs => %s)"
                " WHERE owner = %s RETURNING partition",
                (lease_s, worker),
            )
        ]
        held.sort()
        released: list[int] = []
        acquired: list[int] = []
        if len(held) > share:
            # Give back the last ones: the next round of the others picks them up.
            released = held[share:]
            held = held[:share]
            conn.execute(
                "UPDATE partition_leases SET owner = NULL, expires_at = '-infinity' WHERE partition = ANY(%s)",
                (released,),
            )
        elif len(held) < share:
            acquired = [
                row[0]
                for row in conn.execute(
                    "UPDATE partition_leases SET owner = %(w)s, expires_at = now() + make_interval(secs => %(s)s)"
                    " WHERE partition IN (SELECT partition FROM partition_leases"
                    "  WHERE owner IS NULL OR expires_at < now() ORDER BY partition LIMIT %(n)s FOR UPDATE SKIP LOCKED)"
                    " RETURNING partition",
                    {"w": worker, "s": lease_s, "n": share - len(held)},
                )
            ]
            held = sorted(held + acquired)
    return Shares(tuple(held), tuple(sorted(acquired)), tuple(released))


def leave(conn: Conn, worker: str) -> None:
    """A worker stopping gives its partitions back at once, so the others need not wait for the leases to expire."""
    with conn.transaction():
        conn.execute("UPDATE partition_leases SET owner = NULL, expires_at = '-infinity' WHERE owner = %s", (worker,))
        conn.execute("DELETE FROM workers WHERE name = %s", (worker,))


def owners(conn: Conn) -> dict[int, str | None]:
    """partition -> the worker whose lease on it is live, or None."""
    rows = conn.execute(
        "SELECT partition, CASE WHEN expires_at > now() THEN owner END FROM partition_leases ORDER BY partition"
    )
    return {partition: owner for partition, owner in rows}
