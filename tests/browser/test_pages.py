"""The student's page and the registrar's board, end to end in Debian's Chromium against a real API process,
real workers and the projector: two students, one seat, decided and handed on live, without a reload.

Each page may reach no host but the server; each is checked by axe-core at phone width, and a screenshot of it
at 375 px is kept in build/test-artifacts/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
import redis
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Locator, Page, ViewportSize, expect

from courseflow.http import auth
from courseflow.intake import queue
from courseflow.platform.config import Settings
from courseflow.platform.keys import Keys
from tests.browsing import artifact, chromium, offline
from tests.conftest import Servers, StartWorkers, serving_api
from tests.trust import SECRET, secured

DECIDED_MS = 20_000
PHONE: ViewportSize = {"width": 375, "height": 812}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def pipeline(settings: Settings, projector: object, start_workers: StartWorkers) -> Settings:
    """Emptied servers with a worker deciding and the projector projecting, for the API process to front."""
    start_workers(1)
    return settings


@pytest.fixture
def secured_api(pipeline: Settings, servers: Servers, tmp_path: Path) -> Iterator[str]:
    with serving_api(servers, tmp_path, AUTH_JWT_SECRET=SECRET) as base:
        yield base


@pytest.fixture
def strict_api(pipeline: Settings, servers: Servers, tmp_path: Path) -> Iterator[str]:
    with serving_api(servers, tmp_path, AUTH_JWT_SECRET=SECRET, RATE_LIMIT_STUDENT_WRITES="1 per minute") as base:
        yield base


@pytest.fixture
def open_api(pipeline: Settings, servers: Servers, tmp_path: Path) -> Iterator[str]:
    with serving_api(servers, tmp_path) as base:
        yield base


def _token(role: auth.Role, sub: str) -> str:
    return auth.issue(secured(Settings()), role, sub, 600)


class Tab:
    """One visitor's tab, held to the server's origin."""

    def __init__(self, browser: Browser, base: str, phone: bool = False) -> None:
        self.context: BrowserContext = browser.new_context(viewport=PHONE if phone else None)
        self.page: Page = self.context.new_page()
        self.elsewhere = offline(self.page, base)
        self.base = base

    def open(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page

    def close(self) -> None:
        assert self.elsewhere == [], f"the page reached other hosts: {self.elsewhere}"
        self.context.close()


@pytest.fixture
def tabs(browser: Browser) -> Iterator[list[Tab]]:
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        tab.close()


def _sign_in(page: Page, label: str, value: str) -> None:
    page.get_by_label(label).fill(value)
    page.get_by_role("button", name="Sign in").click()


def _registrar_board(browser: Browser, base: str, tabs: list[Tab]) -> Page:
    registrar = Tab(browser, base)
    tabs.append(registrar)
    board = registrar.open("/board")
    _sign_in(board, "Token", _token("registrar", "registrar"))
    return board


def _create_course(board: Page, course_id: str, title: str, capacity: str) -> None:
    form = board.get_by_role("region", name="Create a course")
    form.get_by_label("Course ID").fill(course_id)
    form.get_by_label("Title").fill(title)
    form.get_by_label("Capacity").fill(capacity)
    form.get_by_role("button", name="Create course").click()


def _request_status(page: Page, course: str) -> Locator:
    return page.locator(".request", has_text=course).get_by_role("status")


def test_two_students_one_seat_decided_and_handed_on_live(browser: Browser, secured_api: str, tabs: list[Tab]) -> None:
    board = _registrar_board(browser, secured_api, tabs)
    _create_course(board, "101", "Distributed Systems", "1")
    expect(board.get_by_text("Created 101 · Distributed Systems with 1 seat.")).to_be_visible()
    row = board.get_by_role("row", name=re.compile(r"^101 · Distributed Systems"))
    expect(row.locator("td.seats")).to_have_text("0")

    first = Tab(browser, secured_api)
    second = Tab(browser, secured_api)
    tabs.extend([first, second])
    alice = first.open("/")
    _sign_in(alice, "Token", _token("student", "1"))
    expect(alice.get_by_text("Student 1")).to_be_visible()
    expect(alice.locator(".course", has_text="101 · Distributed Systems")).to_contain_text("1 of 1")
    alice.get_by_label("Course").fill("101")
    alice.get_by_role("button", name="Enroll").click()
    expect(_request_status(alice, "101 · Distributed Systems")).to_have_text(
        "Granted: the seat is yours", timeout=DECIDED_MS
    )

    bob = second.open("/")
    _sign_in(bob, "Token", _token("student", "2"))
    bob.get_by_label("Course").fill("101")
    bob.get_by_role("button", name="Enroll").click()
    expect(_request_status(bob, "101")).to_have_text("Waitlisted: place 1 on the waitlist", timeout=DECIDED_MS)

    # The board follows without a reload.
    expect(row.locator("td.seats")).to_have_text("1", timeout=DECIDED_MS)
    expect(row.locator("td.waitlist")).to_have_text("1", timeout=DECIDED_MS)

    alice.get_by_role("button", name="Drop").click()
    dialog = alice.get_by_role("dialog")
    expect(dialog).to_contain_text("Drop your seat in 101 · Distributed Systems?")
    dialog.get_by_role("button", name="Drop seat").click()
    expect(_request_status(alice, "101")).to_have_text("Dropped: you gave the seat up", timeout=DECIDED_MS)

    # Bob's page was never reloaded: the seat reaches him over the live stream.
    expect(_request_status(bob, "101")).to_have_text(
        "Promoted from the waitlist: the seat is yours", timeout=DECIDED_MS
    )
    expect(bob.get_by_role("button", name="Drop")).to_be_visible()
    expect(row.locator("td.waitlist")).to_have_text("0", timeout=DECIDED_MS)
    expect(row.locator("td.seats")).to_have_text("1")


def test_each_page_at_phone_width_passes_axe_and_is_photographed(
    browser: Browser, secured_api: str, tabs: list[Tab]
) -> None:
    registrar = Tab(browser, secured_api, phone=True)
    tabs.append(registrar)
    board = registrar.open("/board")
    _sign_in(board, "Token", _token("registrar", "registrar"))
    for course_id, title, capacity in ((101, "Distributed Systems", 2), (102, "Compilers", 1)):
        _create_course(board, str(course_id), title, str(capacity))
        expect(board.get_by_text(f"Created {course_id} · {title}")).to_be_visible()

    student = Tab(browser, secured_api, phone=True)
    tabs.append(student)
    page = student.open("/")
    _sign_in(page, "Token", _token("student", "7"))
    for course in ("102", "101"):
        page.get_by_label("Course").fill(course)
        page.get_by_role("button", name="Enroll").click()
        expect(_request_status(page, f"{course} ·")).to_have_text(re.compile("^Granted"), timeout=DECIDED_MS)
    expect(board.get_by_role("row", name=re.compile(r"^102 ·")).locator("td.seats")).to_have_text("1")

    for name, shown in (("student", page), ("board", board)):
        shown.screenshot(path=artifact(f"{name}-375px.png"), full_page=True)
        assert shown.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], f"{name} scrolls sideways"
        _assert_accessible(shown, name)


def _assert_accessible(page: Page, name: str) -> None:
    results = Axe().run(page, options={"resultTypes": ["violations"]})
    violations = results.response["violations"]
    artifact(f"{name}-axe.json").write_text(json.dumps(violations, indent=2))
    serious = [v["id"] for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], f"{name}: {results.generate_report()}"


def test_development_mode_signs_in_by_student_id_and_opens_the_board(
    browser: Browser, open_api: str, pipeline: Settings, tabs: list[Tab]
) -> None:
    registrar = Tab(browser, open_api)
    tabs.append(registrar)
    board = registrar.open("/board")
    expect(board.get_by_text("Development mode: no sign-in")).to_be_visible()
    expect(board.get_by_label("Token")).to_be_hidden()
    _create_course(board, "101", "Databases", "5")
    expect(board.get_by_role("row", name=re.compile(r"^101 · Databases"))).to_be_visible()

    student = Tab(browser, open_api)
    tabs.append(student)
    page = student.open("/")
    expect(page.get_by_label("Token")).to_be_hidden()
    # By keyboard alone: the field has focus after signing in, Enter sends the form, focus is always drawn.
    page.get_by_label("Student ID").fill("42")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Student 42 (development mode)")).to_be_visible()
    expect(page.get_by_label("Course")).to_be_focused()
    page.keyboard.type("101")
    page.keyboard.press("Enter")
    expect(_request_status(page, "101")).to_have_text("Granted: the seat is yours", timeout=DECIDED_MS)
    page.keyboard.press("Shift+Tab")
    ring = page.evaluate("(s => `${s.outlineStyle} ${s.outlineWidth}`)(getComputedStyle(document.activeElement))")
    assert ring == "solid 3px"  # the page's own ring, not the browser's faint default

    # A course that opens later counts down to it, and holds requests in its queue until then.
    opens = (datetime.now() + timedelta(hours=2, minutes=5)).strftime("%Y-%m-%dT%H:%M")
    board.get_by_role("region", name="Create a course").get_by_label("Opens at").fill(opens)
    _create_course(board, "102", "Compilers", "5")
    registration = page.locator(".course", has_text="102 · Compilers").locator(".registration")
    expect(registration).to_have_text(re.compile(r"^Opens in 2 h 0[34] min \d\d s"), timeout=10_000)
    shown = registration.inner_text()
    expect(registration).not_to_have_text(shown)  # it ticks
    page.get_by_label("Course").fill("102")
    page.get_by_role("button", name="Enroll").click()
    expect(_request_status(page, "102")).to_have_text("Pending: number 1 in the queue")

    # A dead letter shows on the board, counted, with its reason one link away.
    keys = Keys(pipeline.queue.prefix, pipeline.queue.partitions)
    with redis.Redis.from_url(pipeline.redis.url) as client:
        client.xadd(keys.partition(0).dead_letters, {"reason": "undecodable", queue.REQUEST_FIELD: b"\xff{not json"})
    expect(board.locator("#dead-count")).to_have_text("1", timeout=10_000)
    board.get_by_role("link", name="see their reasons").click()
    expect(board.get_by_role("region", name="Dead letters").get_by_role("row", name=re.compile("^0:"))).to_contain_text(
        "undecodable"
    )

    # The token or id stays in this tab's sessionStorage: a reload keeps the student signed in, with the request.
    page.reload()
    expect(_request_status(page, "101")).to_have_text("Granted: the seat is yours", timeout=DECIDED_MS)
    assert urlsplit(page.url).path == "/" and not urlsplit(page.url).query


def test_the_pages_say_what_went_wrong(browser: Browser, strict_api: str, tabs: list[Tab]) -> None:
    registrar = Tab(browser, strict_api)
    tabs.append(registrar)
    board = registrar.open("/board")
    _sign_in(board, "Token", _token("student", "3"))
    expect(board.get_by_role("alert").filter(has_text="the board needs a registrar's")).to_be_visible()
    _sign_in(board, "Token", _token("registrar", "registrar"))
    # The form's limits are the API's, from /openapi.json: a capacity's range, a title's length, a title needed.
    _create_course(board, "101", "Networks", "many")
    capacity_range = "Capacity must be a whole number from 0 to 1,000,000."
    expect(board.get_by_role("status").filter(has_text=capacity_range)).to_be_visible()
    expect(board.locator("#new-capacity")).to_have_attribute("aria-invalid", "true")
    expect(board.locator("#new-capacity")).to_be_focused()
    expect(board.locator("#new-title")).to_have_attribute("maxlength", "200")
    expect(board.locator("#new-capacity")).to_have_attribute("required", "")
    expect(board.locator("#new-title")).to_have_attribute("required", "")
    _create_course(board, "102", "   ", "3")
    expect(board.get_by_role("status").filter(has_text="Give the course a Title.")).to_be_visible()
    expect(board.locator("#new-title")).to_have_attribute("aria-invalid", "true")
    _create_course(board, "101", "Networks", "3")
    expect(board.get_by_text("Created 101 · Networks")).to_be_visible()
    _create_course(board, "101", "Networks again", "3")
    expect(board.get_by_role("status").filter(has_text="course 101 already exists")).to_be_visible()

    tab = Tab(browser, strict_api)
    tabs.append(tab)
    page = tab.open("/")
    expect(page.get_by_label("Token")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()  # nobody to sign out yet
    _sign_in(page, "Token", "not-a-token")
    expect(page.get_by_role("alert").filter(has_text="sign-in was not accepted")).to_be_visible()
    _sign_in(page, "Token", _token("student", "3"))
    page.get_by_label("Course").fill("999")
    page.get_by_role("button", name="Enroll").click()
    expect(page.get_by_role("alert").filter(has_text="no course 999")).to_be_visible()
    # One enrollment a minute on this server, and the unknown course took it: the next waits, and says so.
    page.get_by_label("Course").fill("101")
    page.get_by_role("button", name="Enroll").click()
    expect(page.get_by_role("alert").filter(has_text=re.compile(r"Too many requests: wait \d+ s"))).to_be_visible()
    expect(page.get_by_role("button", name="Enroll")).to_be_disabled()


def test_a_busy_service_is_retried_with_the_same_key(
    browser: Browser, secured_api: str, servers: Servers, tabs: list[Tab]
) -> None:
    board = _registrar_board(browser, secured_api, tabs)
    _create_course(board, "101", "Networks", "3")
    expect(board.get_by_text("Created 101 · Networks")).to_be_visible()

    tab = Tab(browser, secured_api)
    tabs.append(tab)
    page = tab.open("/")
    _sign_in(page, "Token", _token("student", "3"))
    keys: list[str | None] = []
    page.on(
        "request",
        lambda sent: keys.append(sent.headers.get("idempotency-key")) if sent.method == "POST" else None,
    )
    # Redis out of memory refuses every write: intake answers 503, and the page keeps the visitor informed.
    with redis.Redis.from_url(servers.admin_redis_url) as admin:
        before = admin.config_get("maxmemory")["maxmemory"]
        admin.config_set("maxmemory", 1)
        try:
            page.get_by_label("Course").fill("101")
            page.get_by_role("button", name="Enroll").click()
            expect(page.get_by_role("alert").filter(has_text="Retrying in")).to_be_visible()
        finally:
            admin.config_set("maxmemory", before)
    expect(_request_status(page, "101")).to_have_text("Granted: the seat is yours", timeout=DECIDED_MS)
    assert len(keys) >= 2 and keys[0] is not None and set(keys) == {keys[0]}


def _prepare(base: str, titles: dict[int, str], enrolled: range) -> None:
    """Courses of 5 seats under these titles, created through the API, and student 7's requests for `enrolled`."""
    registrar = {"Authorization": f"Bearer {_token('registrar', 'registrar')}"}
    seven = {"Authorization": f"Bearer {_token('student', '7')}"}
    with httpx.Client(base_url=base, timeout=10) as api:
        for course_id, title in titles.items():
            created = api.post(
                "/api/v1/courses", json={"course_id": course_id, "title": title, "capacity": 5}, headers=registrar
            )
            assert created.status_code == 201, created.text
        for course_id in enrolled:
            answer = api.post(
                "/api/v1/enrollments",
                json={"course_id": course_id},
                headers=seven | {"Idempotency-Key": f"k{course_id}"},
            )
            assert answer.status_code == 202, answer.text


def _student_page(browser: Browser, base: str, tabs: list[Tab], student: str) -> Page:
    tab = Tab(browser, base)
    tabs.append(tab)
    page = tab.open("/")
    _sign_in(page, "Token", _token("student", student))
    return page


def _enroll_in(page: Page, course: str) -> None:
    page.get_by_label("Course").fill(course)
    page.get_by_role("button", name="Enroll").click()


def test_markup_in_a_course_title_stays_text(browser: Browser, secured_api: str, tabs: list[Tab]) -> None:
    hostile = '<img src=x onerror="document.title=1"><script>document.title=2</script>'
    _prepare(secured_api, {210: hostile}, range(0))
    page = _student_page(browser, secured_api, tabs, "7")
    _enroll_in(page, "210")
    expect(page.locator(".request", has_text="210 · <img").get_by_role("status")).to_have_text(
        "Granted: the seat is yours", timeout=DECIDED_MS
    )
    expect(page.locator(".course", has_text="210 · ")).to_contain_text(hostile)
    assert page.locator(".course img, .request img, .course script").count() == 0
    assert page.title() == "CourseFlow · Enroll"


def test_a_student_with_a_full_term_sees_a_new_request_decided_live(
    browser: Browser, secured_api: str, tabs: list[Tab]
) -> None:
    _prepare(secured_api, {course_id: f"Seminar {course_id}" for course_id in range(201, 211)}, range(201, 210))
    page = _student_page(browser, secured_api, tabs, "7")
    expect(page.locator(".request .status.granted")).to_have_count(9, timeout=DECIDED_MS)
    _enroll_in(page, "210")
    expect(_request_status(page, "210 · Seminar 210")).to_have_text("Granted: the seat is yours", timeout=DECIDED_MS)


def test_the_next_student_in_a_shared_tab_sees_nothing_of_the_last(
    browser: Browser, secured_api: str, tabs: list[Tab]
) -> None:
    _prepare(secured_api, {201: "Seminar 201"}, range(201, 202))
    page = _student_page(browser, secured_api, tabs, "7")
    expect(page.locator(".request")).to_have_count(1, timeout=DECIDED_MS)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("Student 7", exact=True)).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    _sign_in(page, "Token", _token("student", "8"))
    expect(page.get_by_text("Student 8")).to_be_visible()
    expect(page.get_by_text("You have not asked for a seat yet.")).to_be_visible()
    assert page.locator(".request").count() == 0


def test_a_saved_token_the_server_refuses_asks_to_sign_in_again(
    browser: Browser, secured_api: str, tabs: list[Tab]
) -> None:
    """A token kept from before that the server no longer takes: the page says why and asks to sign in."""
    page = _student_page(browser, secured_api, tabs, "8")
    expect(page.get_by_text("Student 8")).to_be_visible()
    page.evaluate(
        "sessionStorage.setItem('courseflow.student', JSON.stringify({token: 'eyJ.not.valid', studentId: 8}))"
    )
    page.reload()
    expect(page.get_by_role("alert").filter(has_text="sign-in was not accepted")).to_be_visible()
    expect(page.get_by_label("Token")).to_be_visible()
