"""Read models built from the event log: seats, waitlists, enrollments and counters."""

from __future__ import annotations

from projections.base import Projection
from projections.counters import RequestCounters
from projections.enrollments import Enrollments
from projections.seats import CourseSeats
from projections.waitlists import Waitlists

PROJECTIONS: dict[str, Projection] = {p.name: p for p in (CourseSeats(), Waitlists(), Enrollments(), RequestCounters())}

__all__ = ["PROJECTIONS", "Projection"]
