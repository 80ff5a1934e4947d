"""The units and routing pages (`dispatch.admin`) on a clone of the demo city of their own:
through the app (test client) for who may see them, bad input and the JSON tester, and in
headless Chromium as the admin on a phone and a desktop, in English and Chinese: the forms
change units and rules, each change lands in the audit log, and "who gets this?" answers a
click on the map as the dispatcher would.

Changes commit in the clone, so each test uses codes of its own."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from cases.models import Category
from dispatch.administration import who_gets
from dispatch.models import RoutingRule
from gridmgmt.kernel.audit import AdminAudit
from gridmgmt.kernel.models import Unit
from tests.admin.conftest import DESKTOP, PHONE, TIMEOUT_MS, sign_in
from tests.admin.test_admin_browser import LOCALES, no_sideways_scroll
from tests.conftest import demo_clone
from tests.support import Web, point_in, real_app, serving
from tests.support import browser as client_for

PAGES = {
    "units": "/admin/units",
    "routing": "/admin/routing",
    "rule": "/admin/routing/1",
    "tester": "/admin/routing/test",
}
OTHERS = ["inspector", "operator", "dispatcher", "staff", "leader", "citizen"]
COMMUNITY = "990100006076"  # PICO UNION NC
ROUTED_CLASS = "C0101"  # → DEPT-WATER city-wide (a demo rule)
ContextFor = Callable[..., BrowserContext]


@pytest.fixture(scope="module")
def units_db(demo_database_url: URL) -> Iterator[URL]:
    """A database of its own: a clone of the demo city."""
    with demo_clone("units", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def units_engine(units_db: URL) -> Iterator[Engine]:
    engine = create_engine(units_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def units_app(
    units_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """The real app on that database."""
    with real_app(units_db, redis_url, tmp_path_factory.mktemp("photos")) as app:
        yield app


@pytest.fixture(scope="module")
def units_server(units_app: Flask) -> Iterator[str]:
    with serving(units_app) as url:
        yield url


@pytest.fixture(scope="module")
def context_for(browser: Browser, units_server: str) -> Iterator[ContextFor]:
    """`context_for(username, **options)`: a signed-in context (phone-sized by default)."""
    opened: list[BrowserContext] = []

    def make(username: str | None, **options: Any) -> BrowserContext:
        context = browser.new_context(base_url=units_server, **{**PHONE, **options})
        context.set_default_timeout(TIMEOUT_MS)
        opened.append(context)
        if username is not None:
            page = context.new_page()
            sign_in(page, units_server, username)
            page.close()
        return context

    yield make
    for context in opened:
        context.close()


def web(app: Flask, username: str | None = "admin") -> Web:
    with app.app_context():
        return client_for(app, username)


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def unit_of(engine: Engine, code: str) -> Unit | None:
    with Session(engine) as session:
        return session.scalar(select(Unit).where(Unit.code == code))


def audit_of(engine: Engine, target_type: str, target_id: int) -> list[AdminAudit]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(AdminAudit)
                .where(AdminAudit.target_type == target_type)
                .where(AdminAudit.target_id == str(target_id))
                .order_by(AdminAudit.id)
            )
        )


def flashed_error(html: str) -> str:
    found = re.search(r'<p class="flash flash-error" role="alert">([^<]*)</p>', html)
    assert found, "no error flashed"
    return found.group(1)


# ---------------------------------------------------------------- who may see the pages


@pytest.mark.parametrize("path", list(PAGES.values()))
def test_admin_sees_the_page(units_app: Flask, path: str) -> None:
    answer = web(units_app).get(path)

    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_are_refused(units_app: Flask, units_engine: Engine, role: str) -> None:
    client = web(units_app, role)
    units, rules = count(units_engine, Unit), count(units_engine, RoutingRule)

    for path in [*PAGES.values(), "/admin/routing/test.json?category=C0101&lon=1&lat=1"]:
        assert client.get(path).status_code == 403, (role, path)
    posts = {
        "/admin/units/department": {"code": "INTRUDER", "name": "x", "unit_type": "water"},
        "/admin/units/1": {"name": "Taken over"},
        "/admin/units/1/active": {"active": "0"},
        "/admin/routing": {"category": "C0101", "unit": "DEPT-GAS", "priority": "999"},
        "/admin/routing/1": {"category": "C0101", "unit": "DEPT-GAS", "priority": "999"},
        "/admin/routing/1/active": {"active": "0"},
    }
    for path, form in posts.items():
        assert client.post(path, form).status_code == 403, (role, path)
    assert (count(units_engine, Unit), count(units_engine, RoutingRule)) == (units, rules)
    first = unit_of(units_engine, "990100006076")
    assert first is not None and first.active and first.name == "PICO UNION NC"


def test_anonymous_goes_to_login(units_app: Flask) -> None:
    client = web(units_app, None)

    for path in PAGES.values():
        answer = client.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"], path


def test_a_form_without_its_csrf_token_is_refused(units_app: Flask, units_engine: Engine) -> None:
    client = web(units_app)

    answer = client.post(
        "/admin/units/department",
        {"csrf_token": "forged", "code": "CSRF-X", "name": "x", "unit_type": "water"},
    )

    assert answer.status_code == 400
    assert unit_of(units_engine, "CSRF-X") is None


# ---------------------------------------------------------------- bad input: 4xx, nothing written


@pytest.mark.parametrize(
    ("form", "status", "words"),
    [
        ({"code": "", "name": "Parks", "unit_type": "greenery"}, 400, "unit code"),
        ({"code": "has space", "name": "Parks", "unit_type": "greenery"}, 400, "unit code"),
        ({"code": "PARKS-X", "name": "", "unit_type": "greenery"}, 400, "name"),
        ({"code": "PARKS-X", "name": "Parks", "unit_type": "bakery"}, 400, "unit type"),
        ({"code": "DEPT-WATER", "name": "Again", "unit_type": "water"}, 409, "taken"),
    ],
)
def test_bad_department_is_refused(
    units_app: Flask, units_engine: Engine, form: dict[str, str], status: int, words: str
) -> None:
    units = count(units_engine, Unit)

    answer = web(units_app).post("/admin/units/department", form)

    assert answer.status_code == status
    html = answer.get_data(as_text=True)
    assert words in flashed_error(html)
    assert '<details class="admin-create" open>' in html  # the form again, filled
    assert count(units_engine, Unit) == units


def test_bad_unit_changes_are_refused(units_app: Flask, units_engine: Engine) -> None:
    client = web(units_app)
    pico = unit_of(units_engine, COMMUNITY)
    assert pico is not None
    audit = count(units_engine, AdminAudit)

    blank = client.post(f"/admin/units/{pico.id}", {"name": "  "})
    typed = client.post(f"/admin/units/{pico.id}", {"name": "Pico", "unit_type": "water"})
    missing = client.post("/admin/units/999999", {"name": "Ghost"})
    community = client.post("/admin/units/community", {"community": COMMUNITY})

    assert blank.status_code == 400 and "name" in flashed_error(blank.get_data(as_text=True))
    assert typed.status_code == 400
    assert missing.status_code == 404
    assert community.status_code == 409
    assert count(units_engine, AdminAudit) == audit
    after = unit_of(units_engine, COMMUNITY)
    assert after is not None and (after.name, after.unit_type) == ("PICO UNION NC", "community")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"category": "X9999"}, "no class"),
        ({"area": "nowhere"}, "no area"),
        ({"unit": "NOPE"}, "no unit"),
        ({"priority": "lots"}, "priority"),
        ({"priority": "5000"}, "priority"),
        ({"note": "n" * 501}, "note"),
    ],
)
def test_bad_rules_are_refused(
    units_app: Flask, units_engine: Engine, changes: dict[str, str], words: str
) -> None:
    client = web(units_app)
    form = {"category": ROUTED_CLASS, "area": "", "unit": "DEPT-GAS", "priority": "150"}
    rules, audit = count(units_engine, RoutingRule), count(units_engine, AdminAudit)

    created = client.post("/admin/routing", {**form, **changes})
    edited = client.post("/admin/routing/1", {**form, **changes})

    for answer in (created, edited):
        assert answer.status_code == 400
        assert words in flashed_error(answer.get_data(as_text=True))
    assert (count(units_engine, RoutingRule), count(units_engine, AdminAudit)) == (rules, audit)
    with Session(units_engine) as session:
        first = session.get(RoutingRule, 1)
        assert first is not None and first.priority == 100


def test_missing_rule_is_404(units_app: Flask) -> None:
    client = web(units_app)

    assert client.get("/admin/routing/999999").status_code == 404
    assert client.post("/admin/routing/999999/active", {"active": "0"}).status_code == 404


# ---------------------------------------------------------------- the tester as JSON


def test_tester_json_answers_as_the_dispatcher(units_app: Flask, units_engine: Engine) -> None:
    with Session(units_engine) as session:
        lon, lat = point_in(session, COMMUNITY)
        expected = who_gets(session, ROUTED_CLASS, lon, lat)

    answer = web(units_app).get(
        f"/admin/routing/test.json?category={ROUTED_CLASS}&lon={lon}&lat={lat}"
    )

    assert answer.status_code == 200
    body = answer.get_json()
    assert body["routable"] is True and body["decided_by"] == "rule"
    assert body["unit"]["code"] == expected.unit.code  # type: ignore[union-attr]
    assert body["community"]["code"] == COMMUNITY
    assert body["cell"] == expected.location.cell_code
    assert body["reason"] == expected.route.reason


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("category=C0101&lon=0&lat=0", 422, "outside_territory"),
        ("category=C0101&lon=abc&lat=1", 400, "invalid_input"),
        ("category=C0101&lon=500&lat=1", 400, "invalid_input"),
        ("category=NOPE&lon=-118.28&lat=34.05", 400, "invalid_input"),
        ("", 400, "invalid_input"),
    ],
)
def test_tester_json_errors(units_app: Flask, query: str, status: int, code: str) -> None:
    answer = web(units_app).get(f"/admin/routing/test.json?{query}")

    assert answer.status_code == status
    assert answer.get_json()["error"]["code"] == code


def test_tester_page_outside_the_territory(units_app: Flask) -> None:
    answer = web(units_app).get("/admin/routing/test?category=C0101&lon=0&lat=0")

    assert answer.status_code == 422
    assert "outside the territory" in flashed_error(answer.get_data(as_text=True))


# ---------------------------------------------------------------- in Chromium


def options_for(size: str, lang: str = "en") -> dict[str, Any]:
    options = {**(PHONE if size == "phone" else DESKTOP), "locale": LOCALES[lang]}
    if size == "desktop":
        options |= {"is_mobile": False, "has_touch": False}
    return options


@pytest.mark.browser
@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
@pytest.mark.parametrize("name", list(PAGES))
def test_pages_render(
    context_for: ContextFor,
    screenshot: Callable[[Page, str], None],
    units_engine: Engine,
    name: str,
    size: str,
    lang: str,
) -> None:
    page = context_for("admin", **options_for(size, lang)).new_page()
    path = PAGES[name]
    if name == "tester":
        with Session(units_engine) as session:
            lon, lat = point_in(session, COMMUNITY)
        path += f"?category={ROUTED_CLASS}&lon={lon:.6f}&lat={lat:.6f}"

    answer = page.goto(path)

    assert answer is not None and answer.status == 200
    assert page.locator("html").get_attribute("lang") == lang
    if name == "tester":
        page.wait_for_selector("#tester-map .leaflet-marker-icon")
        page.wait_for_selector("#tester-map .leaflet-overlay-pane path", state="attached")
    no_sideways_scroll(page)
    screenshot(page, f"admin-{name}-{size}-{lang}")


@pytest.mark.browser
@pytest.mark.parametrize("role", ["operator", "dispatcher", "citizen"])
def test_other_roles_are_refused_in_the_browser(context_for: ContextFor, role: str) -> None:
    page = context_for(role).new_page()

    for path in PAGES.values():
        answer = page.goto(path)
        assert answer is not None and answer.status == 403, (role, path)


@pytest.mark.browser
def test_unit_forms_change_and_audit(
    context_for: ContextFor, units_engine: Engine, screenshot: Callable[[Page, str], None]
) -> None:
    page = context_for("admin").new_page()
    page.goto("/admin/units")
    page.click("summary:has-text('Add a department')")
    page.fill("#dept-code", "DEPT-PARKS")
    page.fill("#dept-name", "Parks department")
    page.select_option("#dept-type", "greenery")
    with page.expect_navigation():
        page.click("button:has-text('Add the department')")
    assert "was created" in page.locator(".flash-ok").inner_text()
    row = page.locator("[data-unit=DEPT-PARKS]")
    assert row.count() == 1

    row.locator("summary").click()
    row.locator("input[name=name]").fill("Parks and gardens")
    row.locator("select[name=unit_type]").select_option("sanitation")
    with page.expect_navigation():
        row.locator("button:has-text('Save')").click()
    assert page.locator("[data-unit=DEPT-PARKS] .unit-name").inner_text() == "Parks and gardens"

    # A unit with rules: the page says what deactivating it means, before and after.
    page.goto("/admin/units?q=DEPT-WATER")
    water = page.locator("[data-unit=DEPT-WATER]")
    water.locator("summary").click()
    assert "skips its" in water.locator(".unit-warning").inner_text()
    screenshot(page, "admin-units-warning-phone-en")
    with page.expect_navigation():
        water.locator("button:has-text('Deactivate')").click()
    assert "the dispatcher skips them" in page.locator(".flash-warning").first.inner_text()
    assert page.locator("[data-unit=DEPT-WATER] [data-state=inactive]").count() == 1
    no_sideways_scroll(page)
    screenshot(page, "admin-units-deactivated-phone-en")
    water = page.locator("[data-unit=DEPT-WATER]")
    water.locator("summary").click()
    with page.expect_navigation():
        water.locator("button:has-text('Reactivate')").click()

    parks, water_unit = unit_of(units_engine, "DEPT-PARKS"), unit_of(units_engine, "DEPT-WATER")
    assert parks is not None and (parks.name, parks.unit_type) == (
        "Parks and gardens",
        "sanitation",
    )
    assert water_unit is not None and water_unit.active
    assert [(r.action, r.actor) for r in audit_of(units_engine, "unit", parks.id)] == [
        ("unit_created", "admin"),
        ("unit_changed", "admin"),
    ]
    changes = audit_of(units_engine, "unit", water_unit.id)
    assert [(r.before or {}).get("active") for r in changes[-2:]] == [True, False]
    assert [(r.after or {}).get("active") for r in changes[-2:]] == [False, True]

    page.goto("/admin/audit?who=Parks")
    actions = page.locator("[data-action]").evaluate_all("els => els.map(e => e.dataset.action)")
    assert actions == ["unit_changed", "unit_created"]


@pytest.mark.browser
def test_rule_forms_change_and_audit(
    context_for: ContextFor, units_engine: Engine, screenshot: Callable[[Page, str], None]
) -> None:
    page = context_for("admin", **options_for("desktop")).new_page()
    page.goto("/admin/routing")
    page.click("summary:has-text('Add a rule')")
    page.select_option("#new-rule-category", ROUTED_CLASS)
    page.select_option("#new-rule-area", COMMUNITY)
    page.select_option("#new-rule-unit", "DEPT-DRAINAGE")
    page.fill("#new-rule-priority", "300")
    page.fill("#new-rule-note", "browser rule")
    with page.expect_navigation():
        page.click("button:has-text('Add the rule')")
    assert "was added" in page.locator(".flash-ok").inner_text()
    with Session(units_engine) as session:
        rule = session.scalar(select(RoutingRule).where(RoutingRule.note == "browser rule"))
        assert rule is not None and rule.priority == 300
        rule_id = rule.id
    assert page.locator(f"[data-rule='{rule_id}'] [data-fact=priority]").inner_text() == "300"
    screenshot(page, "admin-routing-added-desktop-en")

    page.click(f"[data-rule='{rule_id}'] a.rule-link")
    page.fill("#rule-priority", "250")
    page.select_option("#rule-area", "")
    with page.expect_navigation():
        page.click("form.rule-form button:has-text('Save')")
    assert page.locator("[data-fact=priority]").inner_text() == "250"
    assert page.locator("[data-fact=area]").inner_text() == "Everywhere"
    page.fill("#rule-priority", "99999")  # refused by the server: the form again, a reason
    page.eval_on_selector("#rule-priority", "el => el.removeAttribute('max')")
    answer_status: list[int] = []
    page.on(
        "response", lambda r: answer_status.append(r.status) if r.request.method == "POST" else None
    )
    with page.expect_navigation():
        page.click("form.rule-form button:has-text('Save')")
    assert answer_status == [400]
    assert "priority" in page.locator(".flash-error").inner_text()
    with page.expect_navigation():
        page.click("button:has-text('Deactivate')")
    assert page.locator("[data-fact=active]").inner_text() == "Inactive"
    history = page.locator(".rule-history [data-action]")
    assert history.evaluate_all("els => els.map(e => e.dataset.action)") == [
        "rule_changed",
        "rule_changed",
        "rule_created",
    ]
    no_sideways_scroll(page)
    screenshot(page, "admin-rule-deactivated-desktop-en")

    facts = [(r.action, r.before, r.after) for r in audit_of(units_engine, "rule", rule_id)]
    assert [action for action, _b, _a in facts] == ["rule_created", "rule_changed", "rule_changed"]
    assert facts[1][1]["priority"] == 300 and facts[1][2]["priority"] == 250  # type: ignore[index]
    assert facts[1][2]["area"] is None  # type: ignore[index]
    assert facts[2][2]["active"] is False  # type: ignore[index]


@pytest.mark.browser
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_tester_answers_a_click_on_the_map(
    context_for: ContextFor,
    units_engine: Engine,
    screenshot: Callable[[Page, str], None],
    size: str,
) -> None:
    with Session(units_engine) as session:
        lon, lat = point_in(session, COMMUNITY)
    page = context_for("admin", **options_for(size)).new_page()
    page.goto("/admin/routing/test")

    # Typed: the class and the coordinates.
    page.select_option("#t-category", ROUTED_CLASS)
    page.fill("#t-lon", f"{lon:.6f}")
    page.fill("#t-lat", f"{lat:.6f}")
    with page.expect_navigation():
        page.click("#tester-form button[type=submit]")
    assert page.locator("[data-answer=community]").inner_text().startswith(COMMUNITY)

    # Clicked: the map is centred on the point; a click a little off it tests that point.
    box = page.locator("#tester-map").bounding_box()
    assert box is not None
    with page.expect_navigation():
        page.mouse.click(box["x"] + box["width"] / 2 + 12, box["y"] + box["height"] / 2 + 8)
    clicked_lon = float(page.input_value("#t-lon"))
    clicked_lat = float(page.input_value("#t-lat"))
    assert (clicked_lon, clicked_lat) != (round(lon, 6), round(lat, 6))
    with Session(units_engine) as session:
        expected = who_gets(session, ROUTED_CLASS, clicked_lon, clicked_lat)
    assert expected.unit is not None
    assert page.locator("[data-answer=unit]").inner_text() == expected.unit.code
    assert page.locator("[data-answer=cell]").inner_text() == expected.location.cell_code
    assert page.locator("[data-answer=dispatcher-reason]").inner_text() == expected.route.reason
    page.wait_for_selector("#tester-map .leaflet-marker-icon")
    no_sideways_scroll(page)
    screenshot(page, f"admin-tester-clicked-{size}-en")

    # Another class: the answer follows the choice (here the community's own unit).
    with Session(units_engine) as session:
        unruled = session.scalar(
            select(Category.code)
            .where(~select(RoutingRule.id).where(RoutingRule.category_id == Category.id).exists())
            .order_by(Category.code)
            .limit(1)
        )
    assert unruled is not None
    with page.expect_navigation():
        page.select_option("#t-category", unruled)
    assert page.locator(".answer-verdict").get_attribute("data-why") == "community"
    assert page.locator("[data-answer=unit]").inner_text() == expected.community.code
