"""What the read side refuses, and why: `courseflow.http` answers each as problem details."""

from __future__ import annotations


class Refused(Exception):
    """The read side cannot answer; `field` names the input at fault, when one is."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class Unknown(Refused):
    """No such request or course, or one the viewer may not see: both are answered alike."""


class TooManyStreams(Refused):
    """The viewer holds as many live streams as they may."""


class FeedClosing(Refused):
    """This process is shutting down: its live streams end and it opens none."""


class FeedNotReady(Refused):
    """This process's feed has not reached the event log yet."""
