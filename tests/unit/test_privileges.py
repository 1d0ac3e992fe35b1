"""Every table the migrations create has the application's privileges written down, and the log is append-only."""

from __future__ import annotations

import re

from courseflow.eventstore import migrations, privileges


def test_every_table_the_migrations_create_is_listed() -> None:
    created = set()
    for path in migrations.migration_files():
        created |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", path.read_text(), re.IGNORECASE))
    created.add("schema_migrations")  # made by migrate itself
    assert created == set(privileges.APPLICATION)


def test_the_application_may_only_read_and_append_events() -> None:
    assert privileges.APPLICATION["events"] == ("SELECT", "INSERT")
