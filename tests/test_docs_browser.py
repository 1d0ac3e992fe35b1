"""The documentation pages render in a real browser that can reach no host but this server.

Debian's Chromium, driven by Playwright: every request the pages make is checked against the
server's own origin and anything else is refused and recorded, so a page that needed the internet
would show nothing and fail here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: `make install` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def _offline(page: Page, origin: str) -> list[str]:
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
    return elsewhere


def test_swagger_ui_renders_every_operation_offline(browser: Browser, api_server: str) -> None:
    page = browser.new_page()
    try:
        elsewhere = _offline(page, api_server)
        page.goto(f"{api_server}/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        assert page.locator(".opblock").count() >= 15
        assert page.get_by_role("button", name="Authorize").count() == 1
        assert elsewhere == []
    finally:
        page.close()


def test_redoc_renders_the_reference_offline(browser: Browser, api_server: str) -> None:
    page = browser.new_page()
    try:
        elsewhere = _offline(page, api_server)
        page.goto(f"{api_server}/redoc")
        page.get_by_role("heading", name="Ask for a seat").first.wait_for(timeout=20_000)
        assert page.get_by_role("heading", name="CourseFlow").count() >= 1
        assert page.get_by_role("heading", name="Follow a request").count() >= 1
        assert elsewhere == []
    finally:
        page.close()
