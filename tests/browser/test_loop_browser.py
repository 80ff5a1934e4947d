"""The closed loop in headless Chromium, through the real pages: report → file → dispatch →
accept → report done → check → close, the rework loop, an offline retry, the Chinese page."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Locator, Page, Request, Response, Route, expect
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.browser.conftest import ContextFor

pytestmark = pytest.mark.browser

COMMUNITY = "990100006046"  # the demo `staff` login's community
MAJOR = "event-01"  # Event · City appearance and environment
CATEGORY = "E0102"  # exposed garbage: a community-type class, routed to the community unit
CASE_URL = re.compile(r"/cases/(\d+)$")
FULL_LOOP = [
    "report",
    "verify",
    "file",
    "dispatch",
    "accept",
    "report_done",
    "assign_check",
    "check_pass",
    "close",
]

PageOf = Callable[[str], Page]


def make_jpeg(path: Path, colour: tuple[int, int, int]) -> Path:
    """A real 640×480 JPEG (a coloured frame with a cross) written by Pillow."""
    image = Image.new("RGB", (640, 480), colour)
    draw = ImageDraw.Draw(image)
    draw.line((0, 0, 639, 479), fill=(255, 255, 255), width=12)
    draw.line((0, 479, 639, 0), fill=(0, 0, 0), width=12)
    image.save(path, "JPEG", quality=85)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    return {
        "before": make_jpeg(folder / "before.jpg", (160, 90, 40)),
        "after": make_jpeg(folder / "after.jpg", (40, 140, 70)),
    }


@pytest.fixture(scope="module")
def page_of(context_for: ContextFor, community_point: tuple[float, float]) -> PageOf:
    """One signed-in phone page per role, kept for the module; the inspector's phone is
    standing inside community 990100006046 with location permission granted."""
    lon, lat = community_point
    pages: dict[str, Page] = {}

    def get(role: str) -> Page:
        if role not in pages:
            options = (
                {"geolocation": {"latitude": lat, "longitude": lon}, "permissions": ["geolocation"]}
                if role == "inspector"
                else {}
            )
            pages[role] = context_for(role, **options).new_page()
        return pages[role]

    return get


# --- steps -------------------------------------------------------------------------------------


def no_error(page: Page) -> None:
    errors = page.locator(".flash-error").all_inner_texts()
    assert not errors, f"{page.url}: {errors}"


def fill_report(
    page: Page, description: str, photo: Path, where: tuple[float, float] | None
) -> None:
    """Fill the report form; `where` types the coordinates, None taps "Use my location"."""
    page.goto("/report")
    if where is None:
        page.get_by_role("button", name="Use my location").click()
    else:
        page.fill("#lon", str(where[0]))
        page.fill("#lat", str(where[1]))
    page.select_option("#major", MAJOR)
    # The major class hides the other majors' minor classes.
    expect(page.locator('#category optgroup[data-major="component-01"]')).to_be_hidden()
    page.select_option("#category", CATEGORY)
    page.fill("textarea[name=description]", description)
    page.set_input_files("#report-form input[name=photos]", photo)


def submit_report(page: Page) -> tuple[int, str]:
    """Submit the filled report; wait for the case page; return (case id, case number)."""
    page.click("#report-form button[type=submit]")
    page.wait_for_url(CASE_URL)
    match = CASE_URL.search(page.url)
    assert match is not None
    return int(match.group(1)), page.locator(".case-number").inner_text()


def press(page: Page, button: Locator) -> None:
    """Click a form's submit button and wait for the page it leads to (after the redirect)."""
    with page.expect_navigation() as navigation:
        button.click()
    response = navigation.value
    assert response is not None and response.ok, f"{page.url}: {response and response.status}"
    no_error(page)


def act(page: Page, action: str, note: str | None = None, photo: Path | None = None) -> None:
    """Use an action's form on the current case page: its button reads e.g. "Report done"."""
    form = page.locator(f"form.action-{action}")
    expect(form).to_have_count(1)
    if note is not None:
        form.locator("input[name=note]").fill(note)
    if photo is not None:
        form.locator("input[name=photos]").set_input_files(photo)
    label = action.replace("_", " ").capitalize()
    press(page, form.get_by_role("button", name=label, exact=True))


def open_case(page: Page, case_id: int) -> None:
    page.goto(f"/cases/{case_id}")
    no_error(page)


def open_from_list(page: Page, path: str, number: str) -> None:
    """Open a case from a list page (/queue, /tasks) by its row."""
    page.goto(path)
    row = page.locator(f'tr[data-case="{number}"]')
    expect(row).to_have_count(1)
    with page.expect_navigation():
        row.get_by_role("link", name=number).click()
    no_error(page)


def expect_status(page: Page, label: str) -> None:
    expect(page.locator("h1 .badge")).to_have_text(label)


def file_and_dispatch(page_of: PageOf, number: str) -> None:
    """The operator files the report from the inbox; the dispatcher dispatches it by routing."""
    operator = page_of("operator")
    operator.goto("/inbox")
    card = operator.locator(f'li.card[data-case="{number}"]')
    expect(card).to_have_count(1)
    press(operator, card.get_by_role("button", name="File", exact=True))
    expect(operator.locator(f'li.card[data-case="{number}"]')).to_have_count(0)

    dispatcher = page_of("dispatcher")
    dispatcher.goto("/board")
    card = dispatcher.locator(f'[data-case="{number}"]')
    expect(card).to_have_count(1)
    expect(card).not_to_have_class(re.compile("unroutable"))
    # A routed case names its unit and goes there (another unit is chosen on its page).
    expect(card.locator(".route")).to_contain_text("Routes to")
    expect(card.locator("select[name=unit_id]")).to_have_count(0)
    press(dispatcher, card.get_by_role("button", name="Dispatch", exact=True))
    expect(dispatcher.locator(f'[data-case="{number}"]')).to_have_count(0)


def handle(page_of: PageOf, number: str, note: str, photo: Path) -> None:
    """Unit staff open the case from their queue, accept it and report it done with a photo."""
    staff = page_of("staff")
    open_from_list(staff, "/queue", number)
    expect_status(staff, "Dispatched")
    act(staff, "accept")
    expect_status(staff, "In progress")
    act(staff, "report_done", note=note, photo=photo)
    expect_status(staff, "Handled")


def check(page_of: PageOf, case_id: int, number: str, action: str, note: str | None = None) -> None:
    """The operator sends an inspector; the inspector finds it in /tasks and checks it."""
    operator = page_of("operator")
    open_case(operator, case_id)
    act(operator, "assign_check")
    expect_status(operator, "Checking")
    inspector = page_of("inspector")
    open_from_list(inspector, "/tasks", number)
    act(inspector, action, note=note)


def close(page_of: PageOf, case_id: int) -> None:
    operator = page_of("operator")
    open_case(operator, case_id)
    expect_status(operator, "Checked")
    act(operator, "close")
    expect_status(operator, "Closed")


def timeline(page: Page) -> list[str]:
    return [li.get_attribute("data-action") or "" for li in page.locator("ol.timeline > li").all()]


def image_loaded(page: Page, selector: str) -> None:
    """The image is on the page and decoded (naturalWidth > 0)."""
    expect(page.locator(selector)).to_have_count(1)
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i.complete && i.naturalWidth > 0 }",
        arg=selector,
    )


def cases_described(engine: Engine, description: str) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT number, status, idempotency_key FROM cases"
                " WHERE description = :d ORDER BY id"
            ),
            {"d": description},
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


# --- tests -------------------------------------------------------------------------------------


def test_whole_loop(
    page_of: PageOf,
    context_for: ContextFor,
    community_point: tuple[float, float],
    photos: dict[str, Path],
    browser_engine: Engine,
    screenshot: Callable[[Page, str], None],
) -> None:
    lon, lat = community_point
    inspector = page_of("inspector")
    description = f"Garbage bags left on the sidewalk {uuid.uuid4().hex[:8]}"
    fill_report(inspector, description, photos["before"], where=None)
    expect(inspector.locator("#lon")).not_to_have_value("")
    assert float(inspector.input_value("#lon")) == pytest.approx(lon, abs=1e-6)
    assert float(inspector.input_value("#lat")) == pytest.approx(lat, abs=1e-6)
    expect(inspector.locator("#position")).to_contain_text("Position:")
    screenshot(inspector, "report")

    case_id, number = submit_report(inspector)
    expect_status(inspector, "Verified")  # an inspector's own report needs no verification

    file_and_dispatch(page_of, number)
    handle(page_of, number, "Bags collected, sidewalk swept", photos["after"])
    check(page_of, case_id, number, "check_pass")
    close(page_of, case_id)

    operator = page_of("operator")
    assert timeline(operator) == FULL_LOOP
    with browser_engine.connect() as conn:
        unit = conn.execute(
            text(
                "SELECT u.name FROM cases c JOIN units u ON u.id = c.unit_id"
                " JOIN areas a ON a.id = u.community_id WHERE c.id = :id AND a.code = :code"
            ),
            {"id": case_id, "code": COMMUNITY},
        ).scalar()
    assert unit is not None, "the case was not routed to the community unit"
    expect(operator.locator("dd.unit")).to_have_text(unit)
    image_loaded(operator, "img[data-kind=before]")
    image_loaded(operator, "img[data-kind=after]")
    screenshot(operator, "case-closed")

    anonymous = context_for(None).new_page()
    anonymous.goto(f"/track/{number}")
    expect(anonymous.locator(".public-status .public-closed")).to_have_text("Closed")


def test_rework_loop(
    page_of: PageOf, community_point: tuple[float, float], photos: dict[str, Path]
) -> None:
    inspector = page_of("inspector")
    description = f"Garbage dumped by the bus stop {uuid.uuid4().hex[:8]}"
    fill_report(inspector, description, photos["before"], where=community_point)
    case_id, number = submit_report(inspector)
    expect_status(inspector, "Verified")

    file_and_dispatch(page_of, number)
    handle(page_of, number, "Cleared", photos["after"])
    check(page_of, case_id, number, "check_fail", note="Half of the bags are still there")
    expect_status(inspector, "Dispatched")

    staff = page_of("staff")
    staff.goto("/queue")
    row = staff.locator(f'tr[data-case="{number}"]')
    expect(row).to_have_class(re.compile(r"\brework\b"))
    expect(row.locator(".badge.rework")).to_have_text("Rework ×1")
    handle(page_of, number, "All bags removed this time", photos["after"])
    expect(staff.locator("dd.rework-count")).to_have_text("1")
    check(page_of, case_id, number, "check_pass")
    close(page_of, case_id)

    operator = page_of("operator")
    assert timeline(operator) == [
        "report",
        "verify",
        "file",
        "dispatch",
        "accept",
        "report_done",
        "assign_check",
        "check_fail",
        "accept",
        "report_done",
        "assign_check",
        "check_pass",
        "close",
    ]
    expect(operator.locator("img[data-kind=after]")).to_have_count(2)


def test_offline_retry_makes_one_case(
    context_for: ContextFor,
    community_point: tuple[float, float],
    photos: dict[str, Path],
    browser_engine: Engine,
) -> None:
    """The first POST reaches the server but its answer is lost (the phone drops off the
    network): the report stays in the phone's outbox, is sent again with the same submission
    UUID when the network returns, and the server answers with the same case (200), once."""
    page = context_for("inspector").new_page()
    description = f"Garbage by the school gate {uuid.uuid4().hex[:8]}"
    fill_report(page, description, photos["before"], where=community_point)

    calls: list[str] = []  # the submission UUID of each attempt
    lost: list[int] = []  # what the server said to the attempt whose answer was lost
    answers: list[int] = []  # what the page heard

    def lose_first_answer(route: Route, request: Request) -> None:
        calls.append(json.loads(request.post_data or "{}").get("submission_uuid", ""))
        if len(calls) == 1:
            # The server gets the report and makes the case...
            lost.append(route.fetch().status)
            route.abort("internetdisconnected")  # ...but the phone never hears back
        else:
            route.continue_()

    def answered(response: Response) -> None:
        if response.url.endswith("/api/reports"):
            answers.append(response.status)

    page.route("**/api/reports", lose_first_answer)
    page.on("response", answered)
    page.click("#report-form button[type=submit]")
    status = page.locator("#report-status")
    expect(status).to_have_class(re.compile(r"\boffline\b"))
    expect(status).to_contain_text("Saved on this phone")
    expect(page.locator("#outbox li.outbox-item")).to_have_attribute("data-state", "waiting")
    page.evaluate("window.dispatchEvent(new Event('online'))")  # the network is back
    item = page.locator("#outbox li.outbox-item")
    expect(item).to_have_attribute("data-state", "sent")

    assert lost == [201], lost  # the first attempt did make the case
    assert len(calls) == 2 and calls[0] and calls[0] == calls[1], calls
    assert answers == [200], answers  # 200: the retry found the first case (201 would be new)
    rows = cases_described(browser_engine, description)
    assert len(rows) == 1, rows
    item.get_by_role("link", name=f"Open case {rows[0][0]}").click()
    page.wait_for_url(CASE_URL)
    expect_status(page, "Verified")
    with browser_engine.connect() as conn:  # the phone's UUID is the case's
        kept = conn.scalar(
            text("SELECT submission_uuid::text FROM cases WHERE number = :n"), {"n": rows[0][0]}
        )
    assert kept == calls[0]
    expect(page.locator("img[data-kind=before]")).to_have_count(1)  # the photo kept once


def test_report_page_in_chinese(context_for: ContextFor) -> None:
    page = context_for(None, locale="zh-CN").new_page()
    page.goto("/report")
    expect(page.locator("html")).to_have_attribute("lang", "zh")
    expect(page.locator("h1")).to_have_text("上报问题")
    expect(page.locator("#locate")).to_have_text("使用我的位置")
    expect(page.locator(f'#major option[value="{MAJOR}"]')).to_contain_text("市容环境")
    expect(page.locator(f'#category option[value="{CATEGORY}"]')).to_have_text(
        f"{CATEGORY} 暴露垃圾"
    )
