"""Headless Chromium through the real pages: the report page's "this may already be reported"
panel (a passer-by adds their support instead of filing a duplicate), the public's reports near
me with their map, and the operators' review queue of follow-up complaints (not reasonable
needs a reason; reasonable sends the case back to its unit).

A database of its own (a clone of the committed demo city), the app on a live server, the
cases inserted and committed before the pages are opened."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from geoalchemy2.shape import from_shape
from playwright.sync_api import Browser, BrowserContext, Page, expect
from shapely.geometry import Point
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from cases.followup import FollowupAnswer
from cases.models import Case, CaseEvent, Category
from cases.notices import Subscription
from cases.support import CaseSupporter
from gridmgmt.kernel.models import Unit
from grids.services import locate
from tests.browser.conftest import PHONE, TIMEOUT_MS
from tests.browser.test_accessibility import AXE, describe, violations
from tests.conftest import demo_clone
from tests.support import point_in, real_app, screenshot_keeper, serving, signed_in_contexts

pytestmark = pytest.mark.browser

COMMUNITY = "990100006046"
GARBAGE = "E0102"


@pytest.fixture(scope="module")
def part_db(demo_database_url: URL) -> Iterator[URL]:
    with demo_clone("participation_browser", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def part_engine(part_db: URL) -> Iterator[Engine]:
    engine = create_engine(part_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def part_server(
    part_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    # Every client of this server is on loopback, as the other modules' are: generous limits.
    generous = {
        f"RATE_{what}_PER_{who}": 10_000
        for what in ("REPORTS", "READS", "SUPPORT")
        for who in ("CLIENT", "ACCOUNT")
    }
    with real_app(part_db, redis_url, tmp_path_factory.mktemp("photos"), **generous) as app:
        live: Flask = app
        with serving(live) as url:
            yield url


@pytest.fixture(scope="module")
def context_of(browser: Browser, part_server: str) -> Iterator[Callable[..., BrowserContext]]:
    with signed_in_contexts(browser, part_server, PHONE, TIMEOUT_MS) as make:
        yield make


@pytest.fixture(scope="module")
def screenshot() -> Callable[[Page, str], None]:
    return screenshot_keeper()


def no_axe_violation(page: Page) -> None:
    """axe-core finds no serious or critical WCAG 2 A/AA violation on the page as it is."""
    found = violations(page, AXE.read_text(encoding="utf-8"))
    assert not found, describe(found)


def insert_case(engine: Engine, status: str, where: tuple[float, float], **columns: Any) -> Case:
    """A committed case of exposed garbage in the `staff` unit's community."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        category = session.scalar(select(Category).where(Category.code == GARBAGE))
        unit = session.scalar(select(Unit).where(Unit.code == COMMUNITY))
        found = locate(session, *where)
        now = datetime.now(UTC)
        case = Case(
            source="citizen",
            status=status,
            category_id=category.id,
            description="garbage",
            location=from_shape(Point(*where), srid=4326),
            cell_id=found.cell_id,
            community_id=found.community_id,
            unit_id=unit.id,
            reported_at=now - timedelta(hours=3),
            filed_at=now - timedelta(hours=3),
            **columns,
        )
        session.add(case)
        session.flush()
        return case


def complaint(engine: Engine, comment: str) -> tuple[Case, int]:
    """A case closed yesterday and its reporter's pending complaint."""
    with Session(engine) as session:
        where = point_in(session, COMMUNITY)
    closed_at = datetime.now(UTC) - timedelta(days=1)
    case = insert_case(engine, "closed", where, closed_at=closed_at, rework_count=1)
    with Session(engine) as session, session.begin():
        session.add(
            CaseEvent(case_id=case.id, action="close", from_status="checked",
                      to_status="closed", actor_role="operator", created_at=closed_at)
        )  # fmt: skip
        answer = FollowupAnswer(
            case_id=case.id, round=1, respondent="reporter", channel="link", fixed="no",
            satisfaction="dissatisfied", comment=comment, answered_at=closed_at
            + timedelta(hours=4), respondent_key=uuid.uuid4().hex, review_state="pending",
        )  # fmt: skip
        session.add(answer)
        session.flush()
        return case, answer.id


def test_add_your_support_instead_of_a_duplicate(
    context_of: Callable[..., BrowserContext],
    part_engine: Engine,
    screenshot: Callable[[Page, str], None],
) -> None:
    with Session(part_engine) as session:
        lon, lat = point_in(session, COMMUNITY)
    open_case = insert_case(part_engine, "dispatched", (lon + 0.0001, lat))
    page = context_of(None).new_page()

    page.goto("/report")
    expect(page.locator("#already-reported")).to_be_hidden()
    page.fill("#lon", f"{lon:.6f}")
    page.fill("#lat", f"{lat:.6f}")
    page.select_option("#category", GARBAGE)
    item = page.locator(f'#already-list li[data-case="{open_case.number}"]')
    expect(item).to_be_visible()
    expect(page.locator("#already-reported h2")).to_have_text("This may already be reported")
    expect(item).to_contain_text("Supporters: 0")

    item.get_by_role("button", name="Add your support").click()  # no contact yet
    expect(page.locator("#already-status")).to_contain_text("e-mail")
    page.fill("input[name=email]", "passer.by@example.org")
    item.get_by_role("button", name="Add your support").click()
    expect(page.locator("#already-status")).to_have_text("Thank you: your support is recorded.")
    expect(item).to_contain_text("Supporters: 1")
    screenshot(page, "participation-report-support")
    no_axe_violation(page)

    with Session(part_engine) as session:
        count = session.scalar(
            select(func.count())
            .select_from(CaseSupporter)
            .where(CaseSupporter.case_id == open_case.id)
        )
        cases = session.scalar(select(func.count()).select_from(Case))
    assert count == 1
    page.reload()  # a second time from the same address counts once
    page.fill("#lon", f"{lon:.6f}")
    page.fill("#lat", f"{lat:.6f}")
    page.select_option("#category", GARBAGE)
    page.fill("input[name=email]", "Passer.By@example.org")
    page.locator(f'#already-list li[data-case="{open_case.number}"] button').click()
    expect(page.locator("#already-status")).to_have_text("You already support this report.")
    with Session(part_engine) as session:
        assert session.scalar(select(func.count()).select_from(Case)) == cases  # no duplicate


def test_a_signed_in_citizen_is_asked_for_a_contact_to_hear_back(
    context_of: Callable[..., BrowserContext], part_engine: Engine
) -> None:
    """Accounts have no address: the support is counted, and the panel says how to hear back;
    adding it again with a phone number subscribes the phone (SMS, no confirmation round)."""
    with Session(part_engine) as session:
        lon, lat = point_in(session, COMMUNITY)
    open_case = insert_case(part_engine, "dispatched", (lon - 0.0001, lat))
    page = context_of("citizen").new_page()

    page.goto("/report")
    expect(page.locator("#already-contact")).to_contain_text("under Contact first")
    page.fill("#lon", f"{lon:.6f}")
    page.fill("#lat", f"{lat:.6f}")
    page.select_option("#category", GARBAGE)
    button = page.locator(f'#already-list li[data-case="{open_case.number}"] button')
    button.click()
    status = page.locator("#already-status")
    expect(status).to_contain_text("Thank you: your support is recorded.")
    expect(status).to_contain_text("give an e-mail address or a phone number under Contact")
    page.fill("input[name=phone]", "+1 213 555 0188")
    button.click()
    expect(status).to_have_text("You already support this report.")
    with Session(part_engine) as session:
        follows = session.execute(
            select(Subscription.kind, Subscription.channel, Subscription.address).where(
                Subscription.case_id == open_case.id, Subscription.confirmed_at.isnot(None)
            )
        ).all()
    assert [tuple(f) for f in follows] == [("case", "sms", "+12135550188")]


def test_reports_near_me_page(
    context_of: Callable[..., BrowserContext],
    part_engine: Engine,
    screenshot: Callable[[Page, str], None],
) -> None:
    with Session(part_engine) as session:
        lon, lat = point_in(session, COMMUNITY)
    shown = insert_case(part_engine, "in_progress", (lon, lat + 0.0005))
    page = context_of(None).new_page()

    page.goto(f"/nearby?lon={lon}&lat={lat}&radius=250")

    expect(page.locator(f'li.nearby-item[data-case="{shown.number}"]')).to_be_visible()
    expect(page.locator("#nearby-map .leaflet-interactive").first).to_be_attached()
    screenshot(page, "participation-nearby")
    no_axe_violation(page)
    expect(page.locator("#nearby-follow")).to_have_count(0)  # near a point: no community

    page.goto(f"/nearby?community={COMMUNITY}")
    follow = page.get_by_role("link", name="Follow new cases here")
    expect(follow).to_be_visible()
    no_axe_violation(page)
    follow.click()
    expect(page.locator("h1")).to_contain_text("Follow new cases in")


def test_the_review_queue(
    context_of: Callable[..., BrowserContext],
    part_engine: Engine,
    screenshot: Callable[[Page, str], None],
) -> None:
    dismissed, dismissed_answer = complaint(part_engine, "Nobody came, the bags are still there")
    rehandled, rehandled_answer = complaint(part_engine, "The broken glass is still on the path")
    page = context_of("operator").new_page()

    page.goto("/followup/review")
    card = page.locator(f'li.review-item[data-answer="{dismissed_answer}"]')
    expect(card).to_contain_text("Nobody came, the bags are still there")
    screenshot(page, "participation-review-queue")
    no_axe_violation(page)
    card.get_by_label("Not reasonable", exact=True).check()
    with page.expect_navigation():
        card.get_by_role("button", name="Record the judgement").click()
    expect(page.locator(".flash-error")).to_contain_text("not reasonable")
    card = page.locator(f'li.review-item[data-answer="{dismissed_answer}"]')
    card.get_by_label("Not reasonable", exact=True).check()
    card.locator("textarea[name=reason]").fill("Photos of the closing show the place clean")
    with page.expect_navigation():
        card.get_by_role("button", name="Record the judgement").click()
    expect(page.locator(".flash-ok")).to_contain_text(dismissed.number)

    card = page.locator(f'li.review-item[data-answer="{rehandled_answer}"]')
    card.get_by_label("Reasonable: re-handle by the same unit", exact=True).check()
    with page.expect_navigation():
        card.get_by_role("button", name="Record the judgement").click()
    expect(page.locator(".flash-ok")).to_contain_text("re-handling")
    expect(page.locator(f'li.review-item[data-answer="{rehandled_answer}"]')).to_have_count(0)

    with Session(part_engine) as session:
        back = session.get(Case, rehandled.id)
        kept = session.get(Case, dismissed.id)
        assert (back.status, back.rehandle_count, back.rework_count) == ("dispatched", 1, 1)
        assert kept.status == "closed"
        answer = session.get(FollowupAnswer, dismissed_answer)
        assert answer.review_state == "unreasonable"
    page.goto(f"/cases/{dismissed.id}")
    expect(page.locator('[data-review="unreasonable"]')).to_contain_text("place clean")
