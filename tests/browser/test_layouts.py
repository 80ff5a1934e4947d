"""Pages that read at a glance: each role's main page at a phone's and a desktop's size, in
English and Chinese, screenshotted into var/screenshots/ and checked for what a reader came
for being inside the window (the map filling it, its legend, the evaluation's on-time rate and
score, the dashboard's charts, the first case of every role's list, the report form's map, the
setup check's verdict), plus the map's filter panel, its empty state and the
evaluation's sorting and column groups, driven as a user would (clicks and keys).

The screenshots are the window as a user first sees it (not the full page): what is in them
is what reads "at a glance"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Locator, Page, expect
from sqlalchemy.engine import URL

from gridmgmt.kernel.db import db
from maps.evaluation import refresh_rollup
from tests.browser import conftest as browser_tests
from tests.browser.conftest import ContextFor
from tests.browser.test_accessibility import AXE, describe, violations
from tests.conftest import demo_clone

# The browser tests' fixtures (the app served live, signed-in contexts) on a clone of the demo
# city with its year of replayed history: pages with something in them to read.
live_app = browser_tests.live_app
live_server = browser_tests.live_server
context_for = browser_tests.context_for

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
LOCALES = {"en": "en-US", "zh": "zh-CN"}
SIZES: dict[str, dict[str, Any]] = {
    "phone": {"viewport": {"width": 390, "height": 844}},
    "desktop": {"viewport": {"width": 1366, "height": 900}, "is_mobile": False, "has_touch": False},
}
YEAR = f"start={(datetime.now(UTC).date() - timedelta(days=364)).isoformat()}"
PAGES = {  # name: (login, address, an element that says the page is drawn)
    "leader-map": ("leader", f"/maps?{YEAR}", "iframe.supervisor-map"),
    "leader-evaluation": ("leader", f"/evaluation?{YEAR}", "table.evaluation"),
    "leader-dashboard": ("leader", "/dashboard", "svg.chart"),
    "dispatcher-board": ("dispatcher", "/board", "main h1"),
    "operator-inbox": ("operator", "/inbox", "main h1"),
    "inspector-tasks": ("inspector", "/tasks", "main h1"),
    "inspector-report": ("inspector", "/report", "#picker.leaflet-container"),
    "staff-queue": ("staff", "/queue", "main h1"),
    "water-queue": ("water", "/queue", "main h1"),
    "citizen-cases": ("citizen", "/cases/mine", "main h1"),
    "admin-setup": ("admin", "/admin/setup", "main h1"),
}
NOTHING = "start=1990-01-01&end=1990-01-31&kind=event"  # a period with no case in it


@pytest.fixture(scope="session")
def browser_db(history_database_url: URL) -> Iterator[URL]:
    """This module's clone of the demo city with its history."""
    with demo_clone("layouts", history_database_url) as url:
        yield url


@pytest.fixture(scope="module", autouse=True)
def rolled_up(live_app: Flask) -> None:
    """The rollups filled, as the scheduler keeps them."""
    with live_app.app_context(), db.transaction() as session:
        refresh_rollup(session)


@pytest.fixture(scope="module")
def pages(context_for: ContextFor) -> Iterator[Any]:
    """One page per (login, size, language), signed in once for the module."""
    opened: dict[tuple[str, str, str], Page] = {}

    def get(role: str, size: str, lang: str) -> Page:
        key = (role, size, lang)
        if key not in opened:
            opened[key] = context_for(role, locale=LOCALES[lang], **SIZES[size]).new_page()
        return opened[key]

    yield get


def shoot(page: Page, name: str) -> None:
    """Keep the window as it is now as var/screenshots/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def box_of(locator: Locator) -> dict[str, float]:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not drawn"
    return box


def inside_window(page: Page, locator: Locator, what: str) -> None:
    """The element is drawn wholly inside the window (no scrolling needed to see it)."""
    box = box_of(locator)
    size = page.viewport_size
    assert size is not None
    assert box["x"] >= 0 and box["y"] >= 0, f"{what} starts outside the window: {box}"
    assert box["x"] + box["width"] <= size["width"] + 0.5, f"{what} is cut on the right: {box}"
    assert box["y"] + box["height"] <= size["height"] + 0.5, f"{what} is below the fold: {box}"


def open_page(page: Page, path: str, ready: str) -> None:
    answer = page.goto(path)
    assert answer is not None and answer.status == 200, f"{path}: {answer and answer.status}"
    page.wait_for_selector(ready, state="attached")
    if page.locator("iframe").count():
        page.wait_for_load_state("networkidle")


@pytest.mark.parametrize("lang", LOCALES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", PAGES)
def test_page_reads_at_a_glance(pages: Any, name: str, size: str, lang: str) -> None:
    role, path, ready = PAGES[name]
    page = pages(role, size, lang)
    errors: list[str] = []

    def keep(error: Any) -> None:
        errors.append(str(error))

    page.on("pageerror", keep)  # the map frame's scripts' errors too
    try:
        open_page(page, path, ready)
    finally:
        page.remove_listener("pageerror", keep)

    assert page.evaluate("document.documentElement.lang").startswith(lang)
    sideways = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert sideways <= 1, f"{name} scrolls {sideways}px sideways"
    shoot(page, f"{name}-{size}-{lang}")
    assert not errors, f"{name}: script errors {errors}"
    inside_window(page, page.locator("main h1").first, "the page's title")
    CHECKS.get(name, lambda page, size: None)(page, size)
    if role == "leader":  # axe again (test_accessibility's city is empty): ranked rows, charts
        found = violations(page, AXE.read_text(encoding="utf-8"))
        assert not found, f"{name} ({size}, {lang}):\n{describe(found)}"


def check_map(page: Page, size: str) -> None:
    """The map fills most of the window, its legend is in view with real class ranges, and the
    filters are one button away (open beside the map on a desktop, a closed drawer on a phone)."""
    window = page.viewport_size
    assert window is not None
    area = window["width"] * window["height"]
    frame = box_of(page.locator("iframe.supervisor-map"))
    share = frame["width"] * frame["height"] / area
    assert share >= (0.6 if size == "desktop" else 0.7), f"the map fills {share:.0%}"
    assert frame["y"] + frame["height"] <= window["height"] + 0.5  # no scrolling to its bottom
    toggle = page.locator("button.map-toggle")
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true" if size == "desktop" else "false")
    expect(page.locator("#map-panel")).to_be_visible() if size == "desktop" else expect(
        page.locator("#map-panel")
    ).to_be_hidden()
    inside = page.frame_locator("iframe.supervisor-map")
    expect(inside.locator(".leaflet-control-layers")).to_be_visible()
    legend = inside.locator(".gm-legend")
    expect(legend).to_be_visible()
    text = legend.inner_text()
    assert "≤" not in text, text
    legend_box = box_of(legend)  # in the page's coordinates, as the frame's
    assert legend_box["x"] + legend_box["width"] <= frame["x"] + frame["width"] + 0.5
    assert legend_box["y"] + legend_box["height"] <= frame["y"] + frame["height"] + 0.5


def check_evaluation(page: Page, size: str) -> None:
    """At 1366 × 900 the units' on-time rate and score, header and first row, are on screen
    and the units' table needs no sideways scrolling; the best and worst rows are marked."""
    table = page.locator("table[data-table=units]")
    if size == "desktop":
        for key in ("on_time_rate", "score", "closure_rate"):
            inside_window(page, table.locator(f"thead th[data-key={key}]"), f"the {key} header")
            cell = table.locator("tbody tr").first.locator(f"td:nth-child({column(table, key)})")
            inside_window(page, cell, f"the first {key} cell")
        wrap = page.locator("table[data-table=units]").locator("xpath=..")
        over = wrap.evaluate("el => el.scrollWidth - el.clientWidth")
        assert over <= 1, f"the units' table scrolls {over}px sideways"
    ranked = [r for r in table.locator("tbody td.rank").all_inner_texts() if r.strip().isdigit()]
    if len(ranked) >= 2:
        expect(table.locator("tbody tr").first).to_have_class(re.compile(r"\bbest\b"))
        expect(table.locator("tbody tr.worst")).not_to_have_count(0)


def column(table: Locator, key: str) -> int:
    """The 1-based position of a column among the header row's cells."""
    keys = (
        table.locator("thead tr")
        .last.locator("th")
        .evaluate_all("ths => ths.map(th => th.dataset.key || '')")
    )
    return int(keys.index(key)) + 1


def check_dashboard(page: Page, size: str) -> None:
    """The period's key figures and the first chart are in view; each chart has axes."""
    inside_window(page, page.locator(".dash-figures"), "the key figures")
    charts = page.locator("svg.chart")
    expect(charts).to_have_count(6)  # new cases, on time; the four rates: response, resolution,
    # satisfaction, follow-up
    first = box_of(charts.first)
    window = page.viewport_size
    assert window is not None
    assert first["y"] < window["height"], "the first chart starts below the fold"
    for i in range(4):
        assert charts.nth(i).locator("line").count() >= 2  # the axis and grid lines
        assert charts.nth(i).locator("text").count() >= 3  # tick values and x labels


def check_first_case(page: Page, size: str) -> None:
    """A list of cases: the first case is on screen without scrolling, the whole row on a
    desktop (number, class, status, place, deadline), its number on a phone (the table
    scrolls sideways inside its own box there)."""
    row = page.locator("table.cases tbody tr").first
    expect(row).to_be_visible()
    if size == "desktop":
        inside_window(page, row, "the first case's row")
    else:
        inside_window(page, row.locator("td").first.locator("a"), "the first case's number")


def check_my_cases(page: Page, size: str) -> None:
    """A reporter's list: the first case's number is on screen, and on a desktop its whole
    row, deadline included (long addresses and class names wrap in their cells)."""
    row = page.locator("table.cases tbody tr").first
    inside_window(page, row.locator("td").first.locator("a"), "the first case's number")
    if size == "desktop":
        inside_window(page, row.locator("td .badge[class*=status-]"), "the first case's status")
        wrap = page.locator("table.cases").first.locator("xpath=..")
        over = wrap.evaluate("el => el.scrollWidth - el.clientWidth")
        assert over <= 1, f"the list scrolls {over}px sideways: its deadlines are cut"


def check_dispatch_board(page: Page, size: str) -> None:
    """The board's first case (a card to dispatch, or the first of its lists) is in view."""
    first = page.locator("main [data-case], main table.cases tbody tr").first
    expect(first).to_be_visible()
    if size == "phone":
        first = first.locator("a").first
    inside_window(page, first, "the board's first case")


def check_report(page: Page, size: str) -> None:
    """The place picker's map starts in view, fills the width and shows most of itself, with
    "Use my location" beside it."""
    window = page.viewport_size
    assert window is not None
    picker = box_of(page.locator("#picker"))
    assert picker["x"] >= 0 and picker["x"] + picker["width"] <= window["width"] + 0.5
    shown = min(picker["y"] + picker["height"], window["height"]) - picker["y"]
    assert shown >= min(240, 0.8 * picker["height"]), f"{shown:.0f}px of the map in view"
    expect(page.locator("#picker .leaflet-control-zoom")).to_be_visible()
    inside_window(page, page.locator("#locate"), "the button 'Use my location'")


def check_setup(page: Page, size: str) -> None:
    """The verdict (what blocks dispatch, or nothing) and the first check are in view."""
    inside_window(page, page.locator(".setup-summary"), "the setup verdict")
    inside_window(page, page.locator("li.setup-check .setup-name").first, "the first check")


CHECKS = {
    "leader-map": check_map,
    "leader-evaluation": check_evaluation,
    "leader-dashboard": check_dashboard,
    "dispatcher-board": check_dispatch_board,
    "operator-inbox": check_dispatch_board,
    "inspector-tasks": check_first_case,
    "inspector-report": check_report,
    "staff-queue": check_first_case,
    "water-queue": check_first_case,
    "citizen-cases": check_my_cases,
    "admin-setup": check_setup,
}


@pytest.mark.parametrize("size", SIZES)
def test_map_filters_open_and_close_by_keyboard(pages: Any, size: str) -> None:
    """The filter panel's button works from the keyboard: on a phone it opens the drawer with
    the focus inside, Escape closes it and gives the focus back; on a desktop it folds the
    panel away and the map grows."""
    page = pages("leader", size, "en")
    open_page(page, "/maps", "iframe.supervisor-map")
    toggle = page.locator("button.map-toggle")
    panel = page.locator("#map-panel")
    before = box_of(page.locator("iframe.supervisor-map"))["width"]
    toggle.focus()
    page.keyboard.press("Enter")
    if size == "phone":
        expect(toggle).to_have_attribute("aria-expanded", "true")
        expect(panel).to_be_visible()
        assert panel.evaluate("el => el.contains(document.activeElement)")  # focus inside
        inside_window(page, panel.locator("input[name=start]"), "the first filter")
        shoot(page, "leader-map-drawer-phone-en")
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        expect(toggle).to_be_focused()
    else:
        expect(toggle).to_have_attribute("aria-expanded", "false")
        expect(panel).to_be_hidden()
        assert box_of(page.locator("iframe.supervisor-map"))["width"] > before + 200
        page.keyboard.press("Enter")
        expect(panel).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true" if size == "desktop" else "false")


@pytest.mark.parametrize("lang", LOCALES)
def test_map_says_when_nothing_matches(pages: Any, lang: str) -> None:
    """Filters that leave no case: a message over the map and a link that clears them."""
    page = pages("leader", "desktop", lang)
    open_page(page, f"/maps?{NOTHING}", "iframe.supervisor-map")
    empty = page.frame_locator("iframe.supervisor-map").locator(".gm-empty")
    expect(empty).to_be_visible()
    if lang == "en":
        expect(empty).to_contain_text("No cases match these filters")
    shoot(page, f"leader-map-empty-desktop-{lang}")
    expect(page.locator(".map-bar a.map-clear")).to_be_visible()
    with page.expect_navigation():
        empty.locator("a").click()
    assert "kind=" not in page.url and "start=1990-01-01" in page.url, page.url  # period kept
    page.wait_for_load_state("networkidle")
    expect(page.locator(".map-bar a.map-clear")).to_have_count(0)
    if lang == "en":
        expect(empty).to_contain_text("No cases in this period")
    with page.expect_navigation():
        empty.locator("a").click()  # the last 12 months
    assert "start=1990" not in page.url, page.url


def test_evaluation_sorts_by_any_column(pages: Any) -> None:
    """A click on a header sorts the rows by it (highest first for figures, empty last) and
    says so with aria-sort; a second click turns the order round."""
    page = pages("leader", "desktop", "en")
    open_page(page, f"/evaluation?{YEAR}", "table.evaluation")
    table = page.locator("table[data-table=communities]")
    header = table.locator("thead th[data-key=due]")
    index = column(table, "due")

    def values() -> list[float]:
        cells = table.locator(f"tbody tr td:nth-child({index})")
        raw = cells.evaluate_all("tds => tds.map(td => td.dataset.value)")
        return [float(v) for v in raw if v]

    header.locator("button").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    assert values() == sorted(values(), reverse=True)
    header.locator("button").press("Enter")
    expect(header).to_have_attribute("aria-sort", "ascending")
    assert values() == sorted(values())
    assert table.locator("thead th[aria-sort]").count() == 1
    name = table.locator("thead tr").last.locator("th").nth(1)
    name.locator("button").click()
    expect(name).to_have_attribute("aria-sort", "ascending")


def test_evaluation_details_on_demand(pages: Any) -> None:
    """The details' columns are hidden at first and shown by their switch (and by ?show=)."""
    page = pages("leader", "desktop", "en")
    open_page(page, f"/evaluation?{YEAR}", "table.evaluation")
    hidden = page.locator("table[data-table=units] thead th[data-key=handled]")
    expect(hidden).to_be_hidden()
    page.locator("input[data-column-group=details]").check()
    expect(hidden).to_be_visible()
    assert "show=details" in page.url
    shoot(page, "leader-evaluation-details-desktop-en")
    open_page(page, f"/evaluation?{YEAR}&show=details", "table.evaluation")
    expect(hidden).to_be_visible()
    page.locator("details.formulas summary").click()
    formulas = page.locator("details.formulas dl")
    expect(formulas).to_contain_text("Closed on time / (due − suspended)")


@pytest.mark.parametrize(("period", "points"), [("30d", 30), ("13w", 13), ("12m", 12)])
def test_dashboard_period_is_chosen(pages: Any, period: str, points: int) -> None:
    """Each period is a link (the current one marked); the cases chart has a point per day,
    week or month of it; an unknown period is a 400, not a 500."""
    page = pages("leader", "desktop", "en")
    open_page(page, f"/dashboard?period={period}", "svg.chart")
    current = page.locator(".dash-periods a[aria-current=page]")
    expect(current).to_have_count(1)
    assert f"period={period}" in (current.get_attribute("href") or "")
    figures = page.locator("#h-cases").locator("xpath=..").locator("details tbody tr")
    expect(figures).to_have_count(points)
    answer = page.goto("/dashboard?period=forever")
    assert answer is not None and answer.status == 400


@pytest.mark.parametrize("login", ["staff", "water"])
def test_unit_queue_deadline_in_view_on_a_desktop(pages: Any, login: str) -> None:
    """A unit's queue at 1366 × 900: the first case's deadline (and whether it is overdue)
    is on screen, not clipped by the table's sideways scrolling."""
    page = pages(login, "desktop", "en")
    open_page(page, "/queue", "main h1")
    wrap = page.locator("table.cases").first.locator("xpath=..")
    over = wrap.evaluate("el => el.scrollWidth - el.clientWidth")
    assert over <= 1, f"the queue scrolls {over}px sideways"


def test_default_periods_show_the_lived_in_city(pages: Any) -> None:
    """Opened as a leader first sees them, without a period: the map (the last 30 days) has a
    legend of real class ranges; the evaluation (this month so far) ranks units apart, once
    a week of the month has passed (on its first days a month has few deadlines yet)."""
    page = pages("leader", "desktop", "en")
    open_page(page, "/maps", "iframe.supervisor-map")
    shoot(page, "leader-map-default-desktop-en")
    check_map(page, "desktop")
    open_page(page, "/evaluation", "table.evaluation")
    shoot(page, "leader-evaluation-default-desktop-en")
    table = page.locator("table[data-table=units]")
    ranks = [r for r in table.locator("tbody td.rank").all_inner_texts() if r.strip().isdigit()]
    if datetime.now(UTC).day >= 8:
        assert len(ranks) >= 2, ranks
        scores = table.locator(f"tbody td:nth-child({column(table, 'score')})")
        values = {v for v in scores.evaluate_all("tds => tds.map(td => td.dataset.value)") if v}
        assert len(values) >= 2, values  # different scores
