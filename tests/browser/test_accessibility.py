"""Every role's main pages pass axe-core (vendored in tests/vendor/axe-core) in headless
Chromium with no serious or critical WCAG 2 A/AA violation, on a phone and a desktop, in
English and (for a few pages) Chinese; the report page is usable with the keyboard alone.

axe is evaluated through the DevTools protocol (`page.evaluate`), which the app's
Content-Security-Policy does not govern: a `<script>` tag added to the page would be refused,
as it carries no nonce. One server and one signed-in context per role, size and language are
shared by the whole module."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import select

from cases import intake, jobs, lifecycle, notices
from cases.intake import ReportInput
from cases.lifecycle import ActionInput
from cases.models import CaseSource
from cases.notices import Notice, NoticeKind, NoticeState
from cases.views import case_context
from dispatch.models import RoutingRule
from dispatch.services import dispatch_case
from gridmgmt.kernel import clock
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import User
from grids.models import Area
from tests.browser.conftest import ContextFor
from tests.public.test_followup_browser import closed_case

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa"]
FAILING_IMPACTS = {"serious", "critical"}
SIZES: dict[str, dict[str, Any]] = {
    "phone": {},  # the conftest's default context is a phone
    "desktop": {"viewport": {"width": 1366, "height": 900}, "is_mobile": False, "has_touch": False},
}
LOCALES = {"en": "en-US", "zh": "zh-CN"}
PageOf = Callable[[str | None, str, str], Page]
GARBAGE = "E0102"  # exposed garbage: routed to the community unit of the `staff` login
COMMUNITY = "990100006046"  # the `staff` login's community
# A link of a sent message, by its kind: the follow-up, a follow's confirmation, unsubscribe.
MESSAGE_LINK = re.compile(r"/(followup|follow/confirm|unsubscribe)/([\w.-]+)")

# What the axe run returns: the violations at the failing impacts, each with its nodes.
RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {
    runOnly: {type: "tag", values: tags},
    resultTypes: ["violations"],
  });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map((n) => ({target: n.target.join(" "), summary: n.failureSummary})),
  }));
}"""


@dataclass(frozen=True)
class Screen:
    """A page of one role: its name, the login (None: the public) and its address, which may
    name `{case_id}` or `{number}` (the module's dispatched case), `{closed_id}` or
    `{closed_number}` (its closed case, in its follow-up round), a link's token of that case's
    messages (`{followup_token}`, `{confirm_token}`, `{unsubscribe_token}`) or `{notice_id}`
    (its closing message, sent)."""

    name: str
    role: str | None
    path: str
    xfail: str | None = None
    own_layout: bool = False  # not built on base.html (the map's iframe)

    @property
    def id(self) -> str:
        return f"{self.role or 'public'}-{self.name}"


SCREENS = [
    Screen("home", None, "/"),
    Screen("report", None, "/report"),
    Screen("track", None, "/track"),
    Screen("tracked-case", None, "/track/{number}"),
    Screen("login", None, "/login"),
    Screen("report", "inspector", "/report"),
    Screen("my-cases", "inspector", "/cases/mine"),
    Screen("tasks", "inspector", "/tasks"),
    Screen("inbox", "operator", "/inbox"),
    Screen("case", "operator", "/cases/{case_id}"),
    Screen("search", "operator", "/cases/search"),
    Screen("search-result", "operator", f"/cases/search?category={GARBAGE}"),
    Screen("board", "dispatcher", "/board"),
    Screen("failed", "dispatcher", "/board/failed"),
    Screen("queue", "staff", "/queue"),
    Screen("case", "staff", "/cases/{case_id}"),
    Screen("map", "leader", "/maps"),
    Screen(  # the map page's iframe, checked on its own (axe does not enter frames by itself)
        "map-frame",
        "leader",
        "/maps/frame",
        own_layout=True,
    ),
    Screen(
        "evaluation",
        "leader",
        "/evaluation",
    ),
    Screen(
        "dashboard",
        "leader",
        "/dashboard",
    ),
    Screen("setup", "admin", "/admin/setup"),
    Screen("people", "admin", "/admin/people"),
    Screen("person", "admin", "/admin/people/{admin_id}"),
    Screen("keys", "admin", "/admin/keys"),
    Screen("audit", "admin", "/admin/audit"),
    Screen("security", "admin", "/admin/security"),
    Screen("units", "admin", "/admin/units"),
    Screen("routing", "admin", "/admin/routing"),
    Screen("routing-test", "admin", "/admin/routing/test"),
    Screen("catalogue", "admin", "/admin/catalogue"),
    Screen("category", "admin", f"/admin/catalogue/{GARBAGE}"),
    Screen("calendar", "admin", "/admin/calendar"),
    Screen("territory", "admin", "/admin/territory"),
    Screen("settings", "admin", "/admin/settings"),
    Screen("territory-check", "admin", "/admin/territory/check"),
    Screen("rule", "admin", "/admin/routing/{rule_id}"),
    Screen("mailbox", "admin", "/mailbox"),
    Screen("openapi", None, "/openapi"),
    Screen("follow-case", None, "/track/{number}/follow"),
    Screen("follow-community", None, "/communities/{area_id}/follow"),
    Screen("outbox", "inspector", "/outbox"),
    Screen("followup-review", "operator", "/followup/review"),
    Screen("followup-link", None, "/followup/{followup_token}"),
    Screen("followup-tracking", None, "/track/{closed_number}/followup"),
    Screen("followup-staff", "operator", "/cases/{closed_id}/followup"),
    Screen("confirm-follow", None, "/follow/confirm/{confirm_token}"),
    Screen("unsubscribe", None, "/unsubscribe/{unsubscribe_token}"),
    Screen("mailbox-message", "admin", "/mailbox/{notice_id}"),
    Screen("report", "citizen", "/report"),
    Screen("my-cases", "citizen", "/cases/mine"),
    Screen("nearby", "citizen", "/nearby"),
]
# The HTML pages answering GET that no screen above checks, each with why. Addresses that are
# not pages (JSON, CSV, GeoJSON, Open311's formats, static files, photos, probes, metrics,
# redirects) are left out by rule (`not_a_page`). A new page fails
# `test_every_page_is_checked` until it is a screen or listed here.
NOT_CHECKED: dict[str, str] = {}
# Chinese for a few pages of different kinds: a public form, a list, a case, an admin page.
IN_CHINESE = {"public-home", "public-report", "operator-inbox", "staff-case", "admin-setup"}


def runs() -> list[Any]:
    """The parameters: each screen at each size, in English and, for some, Chinese."""
    params = []
    for screen in SCREENS:
        langs = ["en", "zh"] if screen.id in IN_CHINESE else ["en"]
        for lang in langs:
            for size in SIZES:
                marks = (
                    [pytest.mark.xfail(strict=True, reason=screen.xfail)] if screen.xfail else []
                )
                params.append(
                    pytest.param(screen, size, lang, id=f"{screen.id}-{size}-{lang}", marks=marks)
                )
    return params


@pytest.fixture(scope="module")
def axe_source() -> str:
    return AXE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def heard_back(live_app: Flask) -> dict[str, Any]:
    """A reporter's case closed through the services (its follow-up round open) and followed
    by someone else; their messages drained to the demo's mailbox (kept, not sent), whose
    links give the tokens of the follow-up, confirmation and unsubscribe pages."""
    case = closed_case(live_app, Path(live_app.config["PHOTO_DIR"]), notify=True,
                       contact={"email": "a11y-reporter@example.org"}, language="en")  # fmt: skip
    mode = live_app.config.get("MAIL_MODE")
    live_app.config["MAIL_MODE"] = "mailbox"
    try:
        with live_app.app_context():
            with db.transaction() as session:
                notices.request_follow(
                    session, "a11y-follower@example.org", "en", clock.now_utc(), case_id=case.id
                )
            jobs.drain_notices()
    finally:
        live_app.config["MAIL_MODE"] = mode
    with live_app.app_context():
        sent = {
            notice.kind: notice
            for notice in db.session().scalars(
                select(Notice).where(
                    Notice.case_id == case.id, Notice.state == NoticeState.SENT.value
                )
            )
        }
        db.session.remove()
    closing, confirming = sent[NoticeKind.CLOSED.value], sent[NoticeKind.CONFIRM.value]
    # The closing message's unsubscribe link (the reporter's) is read last, so it is kept.
    tokens = dict(MESSAGE_LINK.findall(f"{confirming.body}\n{closing.body}"))
    return {"closed_id": case.id, "closed_number": case.number, "notice_id": closing.id,
            "followup_token": tokens["followup"], "confirm_token": tokens["follow/confirm"],
            "unsubscribe_token": tokens["unsubscribe"]}  # fmt: skip


@pytest.fixture(scope="module")
def places(
    live_app: Flask, community_point: tuple[float, float], heard_back: dict[str, Any]
) -> dict[str, Any]:
    """A case reported by the inspector in the `staff` login's community and dispatched to
    it, through the services (so the case pages, queues and tracking page have something)."""
    lon, lat = community_point
    with live_app.app_context(), db.transaction() as session:
        users = {user.username: user for user in session.scalars(select(User))}
        context = case_context(session)
        data = ReportInput(
            category_code=GARBAGE,
            lon=lon,
            lat=lat,
            description="Bags of rubbish left on the pavement (accessibility test)",
        )
        reported = [
            intake.report_case(
                session, data, users["inspector"], CaseSource.INSPECTOR, context.photo_root
            ).case
            for _ in range(2)  # one stays in the operator's inbox
        ]
        session.flush()
        case = lifecycle.act(
            session, reported[0].id, "file", users["operator"], ActionInput(version=1), context
        )
        case = dispatch_case(
            session, case.id, users["dispatcher"], ActionInput(version=case.version), context
        )
        rule_id = session.scalar(select(RoutingRule.id).order_by(RoutingRule.id).limit(1))
        area_id = session.scalar(select(Area.id).where(Area.code == COMMUNITY))
        return {"case_id": case.id, "number": case.number, "admin_id": users["admin"].id,
                "rule_id": rule_id, "area_id": area_id} | heard_back  # fmt: skip


@pytest.fixture(scope="module")
def page_of(context_for: ContextFor) -> PageOf:
    """One page per (login, size, language), in a context signed in once, kept for the
    module: each test navigates it to its own address."""
    pages: dict[tuple[str | None, str, str], Page] = {}

    def get(role: str | None, size: str, lang: str) -> Page:
        key = (role, size, lang)
        if key not in pages:
            pages[key] = context_for(role, locale=LOCALES[lang], **SIZES[size]).new_page()
        return pages[key]

    return get


def violations(page: Page, axe_source: str) -> list[dict[str, Any]]:
    """axe's serious and critical WCAG 2 A/AA violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source)
    found = page.evaluate(RUN_AXE, TAGS)
    return [v for v in found if v["impact"] in FAILING_IMPACTS]


def describe(found: list[dict[str, Any]]) -> str:
    """The violations as the failure message: rule, impact, help and offending selectors."""
    lines = []
    for v in found:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"][:8]:
            lines.append(f"    {node['target']}")
        if len(v["nodes"]) > 8:
            lines.append(f"    … and {len(v['nodes']) - 8} more")
    return "\n".join(lines)


@pytest.mark.parametrize(("screen", "size", "lang"), runs())
def test_page_has_no_serious_axe_violation(
    page_of: PageOf,
    places: dict[str, Any],
    axe_source: str,
    screenshot: Callable[[Page, str], None],
    screen: Screen,
    size: str,
    lang: str,
) -> None:
    page = page_of(screen.role, size, lang)
    response = page.goto(screen.path.format(**places), wait_until="load")
    assert response is not None and response.ok, f"{page.url}: {response and response.status}"
    if page.locator(".map, iframe").count():  # maps draw their layers after the load
        page.wait_for_load_state("networkidle")
    if not screen.own_layout:
        assert page.evaluate("document.documentElement.lang").startswith(lang)
    screenshot(page, f"a11y-{screen.id}-{size}-{lang}")
    found = violations(page, axe_source)
    assert not found, f"{page.url} ({size}, {lang}):\n{describe(found)}"


def focused(page: Page) -> dict[str, Any]:
    """Where the keyboard focus is."""
    return page.evaluate(
        """() => {
          const el = document.activeElement;
          return {tag: el.tagName.toLowerCase(), name: el.getAttribute("name"), id: el.id,
                  inMain: !!el.closest("main"), inForm: !!el.closest("#report-form"),
                  type: el.getAttribute("type")};
        }"""
    )


@pytest.mark.parametrize("size", list(SIZES))
def test_report_page_by_keyboard(
    page_of: PageOf, screenshot: Callable[[Page, str], None], size: str
) -> None:
    """The first Tab reaches the skip link, which moves on to the main content; from there
    Tab walks through every control of the report form up to its submit button."""
    page = page_of(None, size, "en")
    page.goto("/report")
    page.keyboard.press("Tab")
    skip = page.locator("a.skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()  # shown when focused, hidden otherwise
    screenshot(page, f"a11y-skip-link-{size}")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#content$"))
    page.keyboard.press("Tab")
    first = focused(page)
    assert first["inMain"], f"after the skip link, Tab went to {first}"
    reached: set[str] = set()
    for _ in range(80):
        now = focused(page)
        if now["inForm"]:
            reached.add(now["name"] or now["id"] or now["tag"])
        if now["tag"] == "button" and now["type"] == "submit" and now["inForm"]:
            break
        page.keyboard.press("Tab")
    else:
        pytest.fail(f"Tab never reached the submit button; reached {sorted(reached)}")
    wanted = {"lon", "lat", "address", "major", "category", "description", "photos", "email"}
    assert wanted <= reached, f"not reached by Tab: {sorted(wanted - reached)}"


@pytest.mark.parametrize("lang", list(LOCALES))
def test_refused_sign_in_has_no_serious_axe_violation(
    page_of: PageOf, axe_source: str, screenshot: Callable[[Page, str], None], lang: str
) -> None:
    """A page in its error state: the login form again, with the refusal flashed."""
    page = page_of(None, "phone", lang)
    page.goto("/login")
    page.fill("input[name=username]", "nobody-here")  # locks no real login out
    page.fill("input[name=password]", "not-the-password")
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    expect(page.locator(".flash-error")).to_be_visible()
    screenshot(page, f"a11y-login-refused-phone-{lang}")
    found = violations(page, axe_source)
    assert not found, f"{page.url} (phone, {lang}):\n{describe(found)}"


NOT_PAGES = re.compile(
    r"\.(json|csv|geojson|webmanifest|js|<fmt>)$|\.<any\(|^/(static|photos|api|lang|metrics"
    r"|healthz|readyz)/?"
)


def not_a_page(rule: str) -> bool:
    """Data, files, probes and redirects: addresses no one reads as a page."""
    return bool(NOT_PAGES.search(rule))


def test_every_page_is_checked(live_app: Flask) -> None:
    """Each HTML page the app answers GET with is an axe screen above, or in NOT_CHECKED
    with its reason: a new page without an axe check fails here."""
    adapter = live_app.url_map.bind("localhost")
    fake = {"case_id": 1, "number": "1", "admin_id": 1, "rule_id": 1, "area_id": 1,
            "closed_id": 1, "closed_number": "1", "notice_id": 1, "followup_token": "t",
            "confirm_token": "t", "unsubscribe_token": "t"}  # fmt: skip
    checked = {adapter.match(s.path.format(**fake).split("?")[0])[0] for s in SCREENS}
    pages = {
        rule.endpoint
        for rule in live_app.url_map.iter_rules()
        if "GET" in (rule.methods or set()) and not not_a_page(rule.rule)
    }
    unchecked = pages - checked - set(NOT_CHECKED)
    assert not unchecked, f"pages without an axe check: {sorted(unchecked)}"
    assert not set(NOT_CHECKED) & checked, "listed as not checked, but checked"
    assert set(NOT_CHECKED) <= pages
