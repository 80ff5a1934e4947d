"""The follow-up in a real browser: a demo case closed through the lifecycle services on a
committed database, the outbox drained to a real SMTP server, and the link of the received
mail opened in headless Chromium against a live server: the answer (with a photo) is
recorded once; the anonymous reporter's code works on the tracking page."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser
from sqlalchemy import select
from sqlalchemy.engine import URL

from cases import jobs, notices
from cases.followup import FollowupAnswer
from cases.lifecycle import CaseContext
from cases.models import Case
from gridmgmt.app.demo import DEMO_PASSWORD
from gridmgmt.kernel.calendar_store import get_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import User
from tests.conftest import demo_clone
from tests.public.conftest import ROAD, SmtpServer, advance, report
from tests.support import free_port, jpeg, point_in, real_app, serving

pytestmark = pytest.mark.browser
COMMUNITY = "990100006046"
SHOTS = Path(os.environ.get("GRIDMGMT_SCREENSHOTS") or "/tmp")  # the pages looked at


@pytest.fixture(scope="module")
def mail_server() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live(
    demo_database_url: URL,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    mail_server: SmtpServer,
) -> Iterator[tuple[Flask, str]]:
    """The real app on a clone of the committed demo city, sending to the real SMTP server,
    served on a free port; links in messages point at that server."""
    with demo_clone("public", demo_database_url) as url:
        settings = {"MAIL_MODE": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": mail_server.port,
                    "SMTP_STARTTLS": False, "MAIL_FROM": "city@example.test"}  # fmt: skip
        photos = tmp_path_factory.mktemp("photos")
        with real_app(url, redis_url, photos, **settings) as app, serving(app) as base:
            app.config["PUBLIC_URL"] = base
            yield app, base


def closed_case(app: Flask, photo_dir: Path, **fields: object) -> Case:
    """A citizen's report (with `fields`) moved to closed through the services, committed."""
    with app.app_context():
        session = db.session()
        ctx = CaseContext(calendar=get_calendar(session, "us_la"), photo_root=photo_dir)
        lon, lat = point_in(session, COMMUNITY)

        class Here:
            pass

        city = Here()
        city.lon, city.lat = lon, lat  # type: ignore[attr-defined]
        users = {u.username: u for u in session.scalars(select(User))}
        people = type("P", (), {who: users[who] for _, who, _ in ROAD})()
        case = report(session, ctx, city, None, **fields)  # type: ignore[arg-type]
        case = advance(session, ctx, people, case, "closed")  # type: ignore[arg-type]
        session.commit()
        session.expunge(case)
        db.session.remove()
        return case


def test_the_mailed_link_records_one_answer_in_a_browser(
    live: tuple[Flask, str],
    mail_server: SmtpServer,
    browser: Browser,
    tmp_path: Path,
) -> None:
    app, base = live
    case = closed_case(app, tmp_path, contact={"email": "browser@example.org"}, notify=True,
                       language="en")  # fmt: skip
    with app.app_context():
        assert jobs.drain_notices().get("sent") == 5
    closing = [m for m in mail_server.messages if m["Subject"].endswith("is closed")]
    assert len(closing) == 1
    link = re.search(re.escape(base) + r"/followup/\S+", closing[0].get_content())
    assert link
    photo = tmp_path / "fixed.jpg"
    photo.write_bytes(jpeg((20, 20, 220)))

    context = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(link.group(0))
    assert page.locator("h1").inner_text() == f"Case {case.number}: was it fixed?"
    page.check("input[name=fixed][value=no]")
    page.check("input[name=satisfaction][value=dissatisfied]")
    page.fill("textarea[name=comment]", "The bags were back the next day.")
    page.set_input_files("input[name=photos]", str(photo))
    page.screenshot(path=str(SHOTS / "followup.png"), full_page=True)
    with page.expect_navigation():
        page.click("form.followup-form button[type=submit]")
    assert page.locator(".answer-recorded").is_visible()
    page.goto(link.group(0))  # the same link again
    assert page.locator(".already-answered").is_visible()
    context.close()

    with app.app_context():
        rows = list(
            db.session().scalars(select(FollowupAnswer).where(FollowupAnswer.case_id == case.id))
        )
        assert [(r.fixed, r.satisfaction, r.review_state, r.photo_id is not None)
                for r in rows] == [("no", "dissatisfied", "pending", True)]  # fmt: skip
        db.session.remove()


def test_the_anonymous_code_on_the_tracking_page_in_a_browser(
    live: tuple[Flask, str], browser: Browser, tmp_path: Path
) -> None:
    app, base = live
    case = closed_case(app, tmp_path)
    code = notices.reporter_code("x", case.id)  # real_app's SECRET_KEY
    context = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{base}/track/{case.number}")
    page.click(".hear-back a[href$='/followup']")
    page.fill("input[name=code]", "WRONG-CODE-0000")
    page.check("input[name=fixed][value=yes]")
    with page.expect_navigation():
        page.click("form.followup-form button[type=submit]")
    assert page.locator(".flash-error").is_visible()
    page.fill("input[name=code]", code)
    page.check("input[name=fixed][value=yes]")
    page.check("input[name=satisfaction][value=satisfied]")
    with page.expect_navigation():
        page.click("form.followup-form button[type=submit]")
    assert page.locator(".answer-recorded").is_visible()
    page.screenshot(path=str(SHOTS / "thanks-zh.png"), full_page=True)
    context.close()
    with app.app_context():
        row = (
            db.session()
            .scalars(select(FollowupAnswer).where(FollowupAnswer.case_id == case.id))
            .one()
        )
        assert (row.channel, row.fixed, row.satisfaction) == ("tracking", "yes", "satisfied")
        db.session.remove()


def test_operators_read_the_mailbox_and_record_a_phone_followup_in_a_browser(
    live: tuple[Flask, str], browser: Browser, tmp_path: Path
) -> None:
    app, base = live
    app.config["MAIL_MODE"] = "mailbox"  # as in `make run`: kept to read, not sent
    try:
        case = closed_case(app, tmp_path, contact={"email": "mbox@example.org"}, notify=True)
        with app.app_context():
            assert jobs.drain_notices().get("sent") == 5
    finally:
        app.config["MAIL_MODE"] = "smtp"
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", DEMO_PASSWORD)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    page.goto(f"{base}/mailbox")
    page.click(f"text=Case {case.number} is closed")
    assert page.locator("pre.body").inner_text().count("/followup/") == 1
    page.screenshot(path=str(SHOTS / "mailbox.png"), full_page=True)
    page.goto(f"{base}/cases/{case.id}")
    page.click(".followup-link a")
    page.check("form.phone-followup input[name=fixed][value=unknown]")
    page.check("form.phone-followup input[name=satisfaction][value=basically_satisfied]")
    page.fill("form.phone-followup textarea[name=comment]", "called at 10:00")
    with page.expect_navigation():
        page.click("form.phone-followup button[type=submit]")
    assert page.locator("[data-count=reporter]").inner_text() == "1"
    assert page.locator("tr[data-answer] td[data-fixed=unknown]").count() == 1
    page.screenshot(path=str(SHOTS / "followup-staff.png"), full_page=True)
    context.close()
