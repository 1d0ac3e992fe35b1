"""A real browser for the tests: Debian's Chromium driven by Playwright, held to the server under test.

Every request a page makes is checked against the server's own origin; anything else is refused and
recorded, so a page that needed the internet would show nothing and fail its test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the networking flags Chromium reaches out to Google's services on its own.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Screenshots and other artifacts of the browser tests (CI keeps this folder).
ARTIFACTS = Path(os.environ.get("COURSEFLOW_TEST_ARTIFACTS", Path(__file__).parent.parent / "build" / "test-artifacts"))


@contextmanager
def chromium() -> Iterator[Browser]:
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: `make install` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def offline(page: Page, origin: str) -> list[str]:
    """Refuse every request to another origin, and keep a list of them."""
    elsewhere: list[str] = []

    def check(route: Route) -> None:
        url = route.request.url
        if url.startswith(origin) or urlsplit(url).scheme in ("data", "blob"):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    page.route("**/*", check)
    # WebSockets pass no route: they are only recorded, which fails the test just the same.
    page.on("websocket", lambda socket: None if _same_host(socket.url, origin) else elsewhere.append(socket.url))
    return elsewhere


def _same_host(url: str, origin: str) -> bool:
    return urlsplit(url).netloc == urlsplit(origin).netloc


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
