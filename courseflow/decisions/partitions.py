"""Partitions of the request queue: which worker decides which (how many there are: eventstore.partition_count).

A worker holds a lease on each partition it reads, renews it while alive and gives partitions up
when more workers join, so the partitions stay shared out evenly among the live workers; a dead
worker's leases expire and the others take its partitions over.
"""

from __future__ import annotations

import logging
import time

import msgspec
import psycopg

from courseflow.eventstore.partition_count import recorded_count
from courseflow.eventstore.store import Conn

log = logging.getLogger("courseflow.worker")

# How often a worker renews its leases and rebalances at most: a joining worker gets its share within a few
# rounds, however long the leases last.
LEASE_ROUND_S = 1.0


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


class Leases:
    """One worker's leases: the partitions it holds, and when to renew them."""

    def __init__(self, worker: str, lease_s: float) -> None:
        self.worker, self.lease_s = worker, lease_s
        self.held: tuple[int, ...] = ()
        self.renew_at = 0.0

    def renew(self, conn: Conn) -> list[int]:
        """Renew the leases, if due, and take or give up partitions to hold a fair share; returns the partitions
        new to this process, whether just taken or still leased to its name (a restart under the same name)."""
        if time.monotonic() < self.renew_at:
            return []
        shares = balance(conn, self.worker, self.lease_s)
        self.renew_at = time.monotonic() + min(self.lease_s / 3, LEASE_ROUND_S)
        new = sorted(set(shares.held) - set(self.held))
        if new or shares.released:
            log.info("%s: decides partitions %s", self.worker, ",".join(map(str, shares.held)) or "none")
        self.held = shares.held
        return new

    def forget(self) -> None:
        """Lease again from scratch at the next renewal: every partition then counts as new."""
        self.held, self.renew_at = (), 0.0

    def give_back(self, conn: Conn) -> None:
        """Give the partitions back, so the other workers need not wait for the leases to expire."""
        try:
            leave(conn, self.worker)
            self.held = ()
        except psycopg.Error as exc:  # the leases then expire by themselves
            log.warning("%s: could not give back its partitions: %s", self.worker, exc)
