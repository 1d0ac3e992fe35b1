"""The read side's refusals, answered as problem details like every other error."""

from __future__ import annotations

from courseflow.http.problems import NotFound, Problem, RateLimited, ShuttingDown, Unavailable
from projections.refusals import FeedClosing, FeedNotReady, Refused, TooManyStreams, Unknown


def refusal(exc: Refused) -> Problem:
    """The read side's refusals, answered as problem details."""
    if isinstance(exc, Unknown):
        return NotFound(exc.detail, exc.field)
    if isinstance(exc, TooManyStreams):
        return RateLimited(exc.detail, headers={"Retry-After": "5"})
    if isinstance(exc, FeedClosing):
        return ShuttingDown(exc.detail)
    if isinstance(exc, FeedNotReady):
        return Unavailable(exc.detail)
    return Problem(exc.detail, exc.field)
