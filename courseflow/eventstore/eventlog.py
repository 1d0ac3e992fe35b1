"""The event log's one reader: projections, rebuilds, histories and live streams all read through it.

Appends do not wait for each other, so positions (taken from a sequence at insert) do not become
visible in order: a transaction may commit position 7 after a reader has seen 8. Each event therefore
records the transaction that appended it (`txid`), and the log is read in (txid, position) order and
only below pg_snapshot_xmin(pg_current_snapshot()), the oldest transaction still open: whatever commits
later has a higher txid than everything read, so a reader's place, its Checkpoint, never skips an event.

Transaction ids are taken at a transaction's first write or row lock, not at COMMIT, so this is not commit
order. A transaction that waits for a course row takes its id after the one it waited for has committed
(registrar actions lock their one course first): a request's events, and every change that depends on
another transaction's, come after what they depend on. Only a decision round over several courses, which
took its id at its first course's row, may sort before changes on a later course that it waited for; it
only decides new requests there, which the read models add up in any order.

The price: an event is not readable while any older transaction is open, even one that appends nothing
and so sends no NOTIFY when it ends. A follower that knows of unread events (`Tail.unread`, `unread_after`)
looks again soon instead of waiting for one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from courseflow import events
from courseflow.events import Event
from courseflow.eventstore.store import Cursor


class Checkpoint(msgspec.Struct, frozen=True, order=True):
    """A place in the log: everything up to and including the event at (txid, position) has been read."""

    txid: int
    position: int


START = Checkpoint(0, 0)


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: its global position, the transaction that appended it, its stream and when (never in a
    cycle: untracked by the collector)."""

    position: int
    txid: int
    stream: str
    stream_version: int
    recorded_at: datetime
    event: Event

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.txid, self.position)


class Tail(msgspec.Struct, frozen=True):
    """What a follower reads: the next events, where the readable log ends, and whether more is committed."""

    events: list[Recorded]
    end: Checkpoint
    # Committed events follow these, held back by an older transaction still open or committed since the read:
    # look again soon, as that transaction may end without a NOTIFY.
    unread: bool


# What no transaction still open can add to: only txids below the oldest one running.
_READABLE = "txid < pg_snapshot_xmin(pg_current_snapshot())"
_AFTER = "(txid, position) > (%(txid)s::xid8, %(position)s)"
# Qualified: a bare `txid` would sort by the `txid::text` output column, putting 1000 before 999.
_LOG_ORDER = "events.txid, events.position"
_LOG_ORDER_DESC = "events.txid DESC, events.position DESC"


def _after(checkpoint: Checkpoint) -> dict[str, Any]:
    # xid8 has no cast from bigint: sent as text, which it parses.
    return {"txid": str(checkpoint.txid), "position": checkpoint.position}


class EventLog:
    """Reads the log in (txid, position) order through a cursor, never skipping an event committed late."""

    def __init__(self, cur: Cursor) -> None:
        self._cur = cur

    def read(
        self,
        after: Checkpoint,
        limit: int,
        *,
        stream: str | None = None,
        student_id: int | None = None,
        request_id: str | None = None,
    ) -> list[Recorded]:
        """Events after a checkpoint, in log order; optionally of one stream, one student or one request only.

        A request's events are found among its student's (the `events_by_student` index): give both ids.
        """
        if request_id is not None and student_id is None:
            raise ValueError("a request's events are read with its student's id")
        # Only the filters given, so each combination is its own statement with its own plan (no `IS NULL OR`);
        # each filter leads an index that continues in log order (txid, position).
        where = [_AFTER, _READABLE]
        if stream is not None:
            where.append("stream = %(stream)s")
        if student_id is not None:
            where.append("data ? 'student_id' AND (data ->> 'student_id')::bigint = %(student)s")
        if request_id is not None:
            where.append("data ->> 'request_id' = %(request)s")
        params = _after(after) | {"stream": stream, "student": student_id, "request": request_id}
        statement = (
            "SELECT position, txid::text, stream, stream_version, recorded_at, data::text FROM events"
            f" WHERE {' AND '.join(where)} ORDER BY {_LOG_ORDER} LIMIT %(limit)s"
        )
        # A request recorded beside its decision (before sql/007) is one event with it: read a row beyond the
        # last, so a pair is never cut, and more rows while pairs leave the page short.
        fetch = limit + 1
        while True:
            rows = self._cur.execute(statement, params | {"limit": fetch}).fetchall()
            more = len(rows) == fetch
            decoded = events.decode_log([row[5] for row in rows])
            page = [
                Recorded(pos, int(tx), s, v, at, event)
                for (pos, tx, s, v, at, _), event in zip(rows[: fetch - 1 if more else fetch], decoded, strict=False)
                if event is not None
            ][:limit]
            if len(page) == limit or not more:
                return page
            fetch += limit - len(page) + 1

    def follow(self, after: Checkpoint, limit: int) -> Tail:
        """The next events of the whole log, for a follower that then waits for more.

        `limit` 0 reads no event: where the readable log ends, and whether more is committed after that end.
        """
        if limit == 0:
            end = self.end()
            return Tail([], end, self.unread_after(end))
        read = self.read(after, limit)
        return Tail(read, self.end(), self.unread_after(read[-1].checkpoint if read else after))

    def end(self) -> Checkpoint:
        """The place of the last readable event (START for an empty log): a follower starting now starts here."""
        row = self._cur.execute(
            f"SELECT txid::text, position FROM events WHERE {_READABLE} ORDER BY {_LOG_ORDER_DESC} LIMIT 1"
        ).fetchone()
        return START if row is None else Checkpoint(int(row[0]), row[1])

    def unread_after(self, checkpoint: Checkpoint) -> bool:
        """Are there committed events after a checkpoint, readable or held back by an older transaction?"""
        # The first event in log order, not EXISTS: on a log grown since its statistics (a fresh one, within the
        # first autovacuum's minute) the planner takes EXISTS for a scan that stops early, and it reads it all.
        found = self._cur.execute(
            f"SELECT 1 FROM events WHERE {_AFTER} ORDER BY {_LOG_ORDER} LIMIT 1", _after(checkpoint)
        ).fetchone()
        return found is not None

    def behind(self, checkpoint: Checkpoint) -> int:
        """How many committed events come after a checkpoint (readable or held back)."""
        row = self._cur.execute(f"SELECT count(*) FROM events WHERE {_AFTER}", _after(checkpoint)).fetchone()
        return int(row[0]) if row else 0

    def checkpoint_after(self, position: int) -> Checkpoint | None:
        """Where reading after an event id resumes (the API's ids are positions): after that event's place.

        0 is the start. None for a position beyond every event (a log restored from an older backup, or
        emptied). A number that is no readable event's is taken as the readable event before it.
        """
        if position <= 0:
            return START
        row = self._cur.execute(
            f"SELECT txid::text, position FROM events WHERE position <= %s AND {_READABLE}"
            " ORDER BY position DESC LIMIT 1",
            (position,),
        ).fetchone()
        if row is not None and row[1] == position:
            return Checkpoint(int(row[0]), row[1])
        # Ordered by the primary key, for the same reason as in unread_after.
        beyond = self._cur.execute("SELECT 1 FROM events WHERE position >= %s ORDER BY position LIMIT 1", (position,))
        if beyond.fetchone() is None:
            return None
        return START if row is None else Checkpoint(int(row[0]), row[1])
