"""The city's settings in the database (`/admin/settings`), and what happens while the city's
configuration blocks dispatch: the job ends without burning its retries, the dispatcher's
board says why, `/readyz` answers "not configured", and dispatch resumes once it is fixed.

On a clone of the demo city of their own (changes are committed, as the app's processes see
them), through the real app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL, Engine

from dispatch import readiness
from dispatch.jobs import dispatch_cases
from gridmgmt.kernel import settings
from gridmgmt.kernel.audit import AdminAudit, AuditAction
from gridmgmt.kernel.calendar_store import load_calendar, shipped_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import InvalidInput
from tests.conftest import as_owner, demo_clone
from tests.support import browser, point_in, real_app

GARBAGE = "E0102"  # exposed garbage: a class of the demo catalogue
COMMUNITY = "990100006046"  # a community of the demo city
OTHERS = ["inspector", "operator", "dispatcher", "staff", "leader", "citizen"]
TILES = "https://tiles.example.gov/{z}/{x}/{y}.png"


@pytest.fixture(scope="module")
def city_db(demo_database_url: URL) -> Iterator[URL]:
    with demo_clone("settings", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def owner(city_db: URL) -> Iterator[Engine]:
    engine = create_engine(as_owner(city_db))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def city_app(
    city_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    with real_app(city_db, redis_url, tmp_path_factory.mktemp("photos")) as app:
        yield app


@pytest.fixture
def in_city(city_app: Flask, owner: Engine) -> Iterator[Flask]:
    """The clone's app in context; its settings back to the configuration's afterwards."""
    with city_app.app_context():
        yield city_app
        db.session.remove()
        settings.forget()
        readiness.forget_blocked()
    with owner.begin() as conn:
        conn.execute(text("DELETE FROM city_settings"))


def audit_rows(owner: Engine, action: AuditAction) -> list[AdminAudit]:
    with owner.connect() as conn:
        return list(conn.execute(select(AdminAudit).where(AdminAudit.action == action.value)).all())


# ---------------------------------------------------------------- settings


def test_settings_fall_back_to_the_configuration(in_city: Flask) -> None:
    current = settings.city_settings()

    assert current.name == in_city.config["CITY_NAME"]
    assert current.calendar_code == in_city.config["CALENDAR_CODE"]
    assert current.tile_url == ""


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("calendar_code", "nowhere", "no calendar nowhere is loaded"),
        ("tile_url", "ftp://tiles.example/{z}/{x}/{y}.png", "http(s)"),
        ("tile_url", "https://tiles.example/tile.png", "{z}, {x} and {y}"),
        ("tile_url", "javascript:alert(1)//{z}{x}{y}", "http(s)"),
        ("tile_attribution", "<script>alert(1)</script>", "plain text"),
        ("name", "x" * 201, "longer than"),
        ("colour", "red", "unknown setting"),
    ],
)
def test_a_bad_setting_is_refused_and_nothing_changes(
    in_city: Flask, owner: Engine, field: str, value: str, says: str
) -> None:
    with pytest.raises(InvalidInput) as refused, db.transaction() as session:
        settings.change_settings(session, {"name": "Changed", field: value})

    assert says in refused.value.text.render()
    with owner.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM city_settings")) == 0


def test_the_admin_changes_the_settings_and_every_page_follows(
    in_city: Flask, owner: Engine
) -> None:
    admin = browser(in_city, "admin")

    saved = admin.post(
        "/admin/settings",
        {
            "name": "Springfield",
            "calendar_code": "",
            "tile_url": TILES,
            "tile_attribution": "© Springfield GIS",
        },
    )

    assert saved.status_code == 303
    page = admin.get("/admin/settings")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    body = page.get_data(as_text=True)
    assert 'data-setting="name">Springfield<' in body
    assert "Springfield" in body.split("</header>")[0]  # the city's name in every page's header
    report = browser(in_city, "inspector").get("/report")
    assert TILES in report.get_data(as_text=True)  # the report page's map uses the tiles
    assert "https://tiles.example.gov" in report.headers["Content-Security-Policy"]
    [row] = audit_rows(owner, AuditAction.SETTINGS_CHANGED)
    assert row.before["name"] == in_city.config["CITY_NAME"] and row.before["tile_url"] == ""
    assert row.after["name"] == "Springfield" and row.after["tile_url"] == TILES
    assert row.actor == "admin" and row.target_type == "settings"


def test_the_admin_chooses_another_loaded_calendar(in_city: Flask, owner: Engine) -> None:
    with db.transaction() as session:
        load_calendar(session, shipped_calendar("cn"))
    admin = browser(in_city, "admin")
    try:
        saved = admin.post("/admin/settings", {"name": "", "calendar_code": "cn", "tile_url": ""})

        assert saved.status_code == 303
        assert settings.city_settings().calendar_code == "cn"
        calendar = admin.get("/admin/calendar").get_data(as_text=True)
        assert 'data-calendar="cn"' in calendar  # the page shows the city's calendar now
        setup = admin.get("/admin/setup").get_data(as_text=True)
        assert "calendar cn loaded" in setup
        row = audit_rows(owner, AuditAction.SETTINGS_CHANGED)[-1]  # the log is append-only
        assert (row.before["calendar_code"], row.after["calendar_code"]) == ("us_la", "cn")
    finally:
        with owner.begin() as conn:
            conn.execute(text("DELETE FROM city_settings"))
            cn = "(SELECT id FROM business_calendars WHERE code = 'cn')"
            conn.execute(text(f"DELETE FROM calendar_days WHERE calendar_id IN {cn}"))
            conn.execute(text("DELETE FROM business_calendars WHERE code = 'cn'"))
        settings.forget()


def test_saving_the_same_settings_writes_no_audit_row(in_city: Flask, owner: Engine) -> None:
    admin = browser(in_city, "admin")
    before = len(audit_rows(owner, AuditAction.SETTINGS_CHANGED))

    admin.post("/admin/settings", {"name": "", "calendar_code": "", "tile_url": ""})

    assert len(audit_rows(owner, AuditAction.SETTINGS_CHANGED)) == before


def test_a_bad_form_is_shown_again_with_the_error(in_city: Flask, owner: Engine) -> None:
    admin = browser(in_city, "admin")

    answer = admin.post("/admin/settings", {"name": "Springfield", "tile_url": "not a url"})

    assert answer.status_code == 400
    body = answer.get_data(as_text=True)
    assert "the tile URL must be an http(s) address" in body
    assert 'value="Springfield"' in body  # what was typed is kept
    with owner.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM city_settings")) == 0


@pytest.mark.parametrize("role", OTHERS)
def test_other_roles_cannot_change_the_settings(in_city: Flask, owner: Engine, role: str) -> None:
    web = browser(in_city, role)

    assert web.get("/admin/settings").status_code == 403
    assert web.post("/admin/settings", {"name": "Intruder"}).status_code == 403
    with owner.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM city_settings")) == 0


# ---------------------------------------------------------------- dispatch blocked


def remove_calendar(app: Flask, owner: Engine) -> None:
    """Remove the city's calendar, as from a city that never loaded one."""
    with owner.begin() as conn:
        conn.execute(text("DELETE FROM calendar_days"))
        conn.execute(text("DELETE FROM business_calendars"))
    app.extensions.pop("gridmgmt.kernel.calendar_store", None)
    readiness.forget_blocked()


@pytest.fixture
def calendar_back(in_city: Flask, owner: Engine) -> Iterator[None]:
    """Whatever the test does to the calendar, it is loaded again afterwards."""
    yield
    with owner.connect() as conn:
        there = conn.scalar(text("SELECT count(*) FROM business_calendars"))
    if not there:
        with db.transaction() as session:
            load_calendar(session, shipped_calendar(in_city.config["CALENDAR_CODE"]))
    in_city.extensions.pop("gridmgmt.kernel.calendar_store", None)
    readiness.forget_blocked()


def test_a_missing_calendar_blocks_dispatch_without_burning_retries(
    in_city: Flask, owner: Engine, calendar_back: None
) -> None:
    with db.transaction() as session:
        lon, lat = point_in(session, COMMUNITY)
    operator = browser(in_city, "operator")
    made = operator.api("/api/reports", {"category": GARBAGE, "lon": lon, "lat": lat})
    assert made.status_code == 201, made.get_json()
    case_id, number = made.get_json()["id"], made.get_json()["number"]
    filed = operator.api(f"/api/cases/{case_id}/actions/file", {"note": "seen"})
    assert filed.status_code == 200, filed.get_json()
    dispatch_state = text("UPDATE cases SET dispatch_state = 'queued' WHERE id = :id")
    with owner.begin() as conn:  # filed, and the job that rang for it not yet run
        conn.execute(dispatch_state, {"id": case_id})
    remove_calendar(in_city, owner)
    refused = operator.api(f"/api/cases/{case_id}/actions/dispatch", {})
    assert refused.status_code == 503  # a person's action: the same reason, never a 404 or 500
    assert refused.get_json()["error"]["code"] == "not_configured"
    assert "calendar us_la is not loaded" in refused.get_json()["error"]["message"]

    result = dispatch_cases([case_id])  # no exception: RQ would not retry it

    assert result["blocked"] == 1 and result["dispatched"] == 0
    with owner.connect() as conn:
        state = conn.execute(
            text("SELECT status, dispatch_state FROM cases WHERE id = :id"), {"id": case_id}
        ).one()
    assert tuple(state) == ("filed", "queued")  # still waiting, not lost

    board = browser(in_city, "dispatcher").get("/board").get_data(as_text=True)
    assert 'data-blocked="calendar' in board and "Dispatch is blocked" in board
    assert "flask calendar load" in board  # what fixes it
    card = board.split(f'data-case="{number}"')[1].split("</li>")[0]
    assert "dispatch is blocked" in card

    ready = in_city.test_client().get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "not configured"
    assert "calendar" in ready.get_json()["not_configured"]

    with db.transaction() as session:  # the city loads its calendar: dispatch resumes
        load_calendar(session, shipped_calendar(in_city.config["CALENDAR_CODE"]))
    readiness.forget_blocked()
    assert dispatch_cases([case_id])["dispatched"] >= 1
    with owner.connect() as conn:
        status = conn.scalar(text("SELECT status FROM cases WHERE id = :id"), {"id": case_id})
    assert status == "dispatched"
    assert "Dispatch is blocked" not in browser(in_city, "dispatcher").get("/board").get_data(
        as_text=True
    )


def test_the_board_is_quiet_when_nothing_blocks(in_city: Flask) -> None:
    board = browser(in_city, "dispatcher").get("/board")

    assert board.status_code == 200
    assert "Dispatch is blocked" not in board.get_data(as_text=True)


def test_settings_page_lists_the_loaded_calendars(in_city: Flask) -> None:
    page = browser(in_city, "admin").get("/admin/settings").get_data(as_text=True)

    assert f'<option value="{in_city.config["CALENDAR_CODE"]}"' in page
    assert Path(shipped_calendar(in_city.config["CALENDAR_CODE"])).exists()
