"""The dead letters: stream entries set aside undecided, for a registrar to look into."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from courseflow.decisions import deadletters
from courseflow.http.common import JSON, services
from courseflow.http.gate import principal
from courseflow.http.operations import operation, query
from courseflow.http.payloads import DeadLetterQuery
from courseflow.http.views import DeadLetter, DeadLetters


@operation(
    summary="The newest dead letters, and how many there are",
    tag="monitoring",
    description="Registrars only. Entries set aside undecided, newest first across partitions, each with its "
    "reason and what its request says (null where it cannot be read: a dead letter may be garbage). `count` is "
    "every dead letter. `courseflow dlq retry|drop <id>` acts on one.",
    query=DeadLetterQuery,
    answers={200: DeadLetters},
    problems=(403,),
)
async def index(request: Request) -> Response:
    principal(request).require("registrar")
    limit = query(request, DeadLetterQuery).limit
    svc = services(request)
    letters = await deadletters.newest(svc.redis, svc.keys, limit)
    count = await svc.intake.dead_letter_count()
    listed = [msgspec.convert(letter, DeadLetter, from_attributes=True) for letter in letters]
    return JSON(DeadLetters(count=count, dead_letters=listed))
