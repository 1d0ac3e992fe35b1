"""What an event does lives in `domain.evolve`: the check and the read side apply it rather than restate it."""

from __future__ import annotations

import re
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]

# An event's effect restated: a status table read directly, per-type counts in SQL, a stream name rebuilt.
_RESTATED = re.compile(r"STATUS_AFTER|_SEAT_CHANGES|FILTER \(WHERE \w+\.type|'course-' \|\||type IN \('")


def test_the_check_and_the_read_side_restate_no_event_effect() -> None:
    files = [_ROOT / "courseflow" / "check.py", *(_ROOT / "projections").rglob("*.py")]
    offenders = [
        f"{path.relative_to(_ROOT)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _RESTATED.search(line)
    ]
    assert not offenders
