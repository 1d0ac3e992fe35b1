"""What the live feed refuses, and why: `courseflow.http` answers each as problem details, like every domain error."""

from __future__ import annotations

from courseflow.errors import DomainError


class TooManyStreams(DomainError):
    """The viewer holds as many live streams as they may."""


class FeedClosing(DomainError):
    """This process is shutting down: its live streams end and it opens none."""


class FeedNotReady(DomainError):
    """This process's feed has not reached the event log yet."""
