"""What a projection is: named tables, and how one recorded event changes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import msgspec
from psycopg import sql

from courseflow.eventstore.eventlog import Recorded
from courseflow.eventstore.store import Cursor


class Projection:
    """Maintains its tables from events. `apply` touches only the tables named in `tables`, through the
    physical names it is given, so a rebuild can fill fresh copies while the live ones keep serving."""

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]

    def apply(self, cur: Cursor, recorded: Recorded, table: Mapping[str, sql.Identifier]) -> None:
        raise NotImplementedError

    def apply_all(self, cur: Cursor, batch: Sequence[Recorded], table: Mapping[str, sql.Identifier]) -> None:
        """Apply events in order; a projection may fold a run of them into fewer statements."""
        for recorded in batch:
            self.apply(cur, recorded, table)

    @staticmethod
    def run(cur: Cursor, statement: str, table: sql.Identifier, params: Mapping[str, Any]) -> None:
        """Execute `statement` with `{table}` replaced by the physical table name."""
        cur.execute(sql.SQL(statement).format(table=table), params)


_encoder = msgspec.json.Encoder()


def recordset(rows: Sequence[Mapping[str, Any]]) -> str:
    """A batch's rows as one JSON parameter for `json_to_recordset`: encoded at once in C, where an array per column
    would be adapted element by element in Python."""
    return _encoder.encode(rows).decode()


def live_tables(projection: Projection) -> dict[str, sql.Identifier]:
    return {name: sql.Identifier(name) for name in projection.tables}


__all__ = ["Projection", "Recorded", "live_tables", "recordset"]
