"""The intake ceiling: a Starlette endpoint that only reads the body and answers 202, served like the API.

Run as `python -m tests.bench.bare` with the API's environment (SERVER_PORT, API_PROCESSES): uvicorn gets
exactly the arguments `courseflow api` gives it, so loop (uvloop), HTTP parser (httptools), process count
and logging match, and the difference to CourseFlow is CourseFlow's own work.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from courseflow.platform.config import Settings

_QUEUED = b'{"request_id":"00000000-0000-0000-0000-000000000000","status":"queued","queue_position":1}'


async def enroll(request: Request) -> Response:
    await request.body()
    return Response(_QUEUED, status_code=202, media_type="application/json")


app = Starlette(routes=[Route("/enroll", enroll, methods=["POST"])])


def main() -> None:
    import uvicorn

    settings = Settings.from_env()
    # Same call as courseflow.commands.api, with the app swapped.
    uvicorn.run(
        "tests.bench.bare:app",
        host=settings.http.host,
        port=settings.http.port,
        workers=settings.http.processes if settings.http.processes > 1 else None,
        access_log=False,
        log_level="info",
    )


if __name__ == "__main__":
    main()
