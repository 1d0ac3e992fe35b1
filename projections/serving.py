"""What the read side needs from the process serving it: its servers and who is reading.

The API passes its own connections and caller; the read side names only what it uses of them, so it
never imports the HTTP layer (its refusals: `projections.refusals`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from courseflow.eventstore.store import Conn
from courseflow.intake.accept import PendingPlace
from courseflow.platform.config import Settings

P = ParamSpec("P")
T = TypeVar("T")


class Queue(Protocol):
    """What the read side asks the request queue: where pending requests stand."""

    async def pending_position(self, request_id: str) -> PendingPlace | None: ...

    async def pending_positions(self, request_ids: list[str]) -> dict[str, PendingPlace]: ...

    async def queue_depths(self, course_ids: list[int]) -> list[int]: ...


class Sources(Protocol):
    """The servers one process reads from: the database (primary, or a replica where it may) and the queue."""

    settings: Settings

    @property
    def intake(self) -> Queue: ...

    async def db(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """On the primary: reads that must see the newest state."""
        ...

    async def read(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A read a replica may answer, never older than what was shown."""
        ...

    async def upkeep(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """On the primary, for what no client reads back."""
        ...

    async def shown_now(self) -> None:
        """What was just read on the primary is shown: replica reads must reach at least it."""
        ...


class Viewer(Protocol):
    """Who reads: what they may see, and how long their live streams may last."""

    @property
    def role(self) -> str: ...

    @property
    def sub(self) -> str: ...

    @property
    def student_id(self) -> int | None: ...

    @property
    def sees_everyone(self) -> bool: ...

    @property
    def valid_until(self) -> float | None: ...

    def may_act_for(self, student_id: int) -> bool: ...
