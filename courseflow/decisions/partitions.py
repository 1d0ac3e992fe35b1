"""Partitions of the request queue: which worker decides which (how many there are: eventstore.partition_count).

A worker holds a lease on each partition it reads, renews it while alive and gives partitions up
when more workers join, so the partitions stay shared out evenly among the live workers; a dead
worker's leases expire and the others take its partitions over.
"""

from __future__ import annotations

import msgspec

from courseflow.eventstore.partition_count import recorded_count
from courseflow.eventstore.store import Conn


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
