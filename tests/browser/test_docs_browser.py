"""The documentation pages render in a real browser that can reach no host but this server.

Debian's Chromium, driven by Playwright: every request the pages make is checked against the
server's own origin and anything else is refused and recorded, so a page that needed the internet
would show nothing and fail here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.browsing import chromium, offline


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_swagger_ui_renders_every_operation_offline(browser: Browser, api_server: str) -> None:
    page = browser.new_page()
    try:
        elsewhere = offline(page, api_server)
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
        elsewhere = offline(page, api_server)
        page.goto(f"{api_server}/redoc")
        page.get_by_role("heading", name="Ask for a seat").first.wait_for(timeout=20_000)
        assert page.get_by_role("heading", name="CourseFlow").count() >= 1
        assert page.get_by_role("heading", name="Follow a request").count() >= 1
        assert elsewhere == []
    finally:
        page.close()
