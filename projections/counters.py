"""The counters behind /metrics: how many requests each course saw, and what became of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
from psycopg import sql

from courseflow.domain import Tally, evolve
from courseflow.events import CourseCreated, CourseEvent
from courseflow.eventstore.store import Cursor
from projections.base import Projection, Recorded

_COLUMNS = Tally.__struct_fields__


class RequestCounters(Projection):
    name = "counters"
    tables = ("enrollment_counters",)

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        self.apply_all(cur, [recorded], table)

    def apply_all(self, cur: Cursor, batch: Sequence[Recorded], table: Mapping[str, sql.Identifier]) -> None:
        """Each course's tally of the run of events (`domain.evolve` from zero) is added in one UPDATE; a new
        course's row is inserted in between."""
        t = table["enrollment_counters"]
        tallies: dict[int, Tally] = {}
        for recorded in batch:
            e = recorded.event
            if isinstance(e, CourseCreated):
                self._add(cur, t, tallies)
                tallies = {}
                self.run(cur, "INSERT INTO {table} (course_id) VALUES (%(c)s)", t, {"c": e.course_id})
            elif isinstance(e, CourseEvent):
                tally = tallies.get(e.course_id, _ZERO)
                if (after := evolve(tally, e)) is not tally:
                    tallies[e.course_id] = after
        self._add(cur, t, tallies)

    def _add(self, cur: Cursor, table: sql.Identifier, tallies: Mapping[int, Tally]) -> None:
        if not tallies:
            return
        columns = sql.SQL(", ").join(sql.SQL("{c} = t.{c} + u.{c}").format(c=sql.Identifier(c)) for c in _COLUMNS)
        names = sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS)
        arrays = sql.SQL(", ").join(sql.SQL("%s::int[]") for _ in _COLUMNS)
        rows = [msgspec.structs.astuple(tally) for tally in tallies.values()]
        cur.execute(
            sql.SQL(
                "UPDATE {table} t SET {columns} FROM unnest(%s::bigint[], {arrays}) AS u(course_id, {names})"
                " WHERE t.course_id = u.course_id"
            ).format(table=table, columns=columns, arrays=arrays, names=names),
            [list(tallies), *(list(column) for column in zip(*rows, strict=True))],
        )


_ZERO = Tally()
