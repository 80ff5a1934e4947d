"""Task actions and reports sent later from a phone's outbox, through the real app on a seeded
demo city rolled back after each test: an action carries the phone's UUID, so that a resend
after a lost reply is answered with the case (200), not refused as a stale version (409), and
the UUID cannot be reused for another action; a report sent from the outbox in the background
leaves no "Case N reported" for the next page, unless the sending page asks (`X-Flash: 1`)."""

from __future__ import annotations

import uuid

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cases.models import CaseEvent
from tests.support import Web, browser

CATEGORY = "E0102"  # exposed garbage


def citizen_report(app: Flask, here: tuple[float, float]) -> dict[str, object]:
    """A citizen's report: a case waiting for the inspector's verification."""
    made = browser(app).api("/api/reports", {"category": CATEGORY, "lon": here[0], "lat": here[1]})
    assert made.status_code == 201, made.get_json()
    body: dict[str, object] = made.get_json()
    assert body["status"] == "reported", body
    return body


def events(session: Session, case_id: object, action: str) -> int:
    session.expire_all()
    return int(
        session.scalar(
            select(func.count())
            .select_from(CaseEvent)
            .where(CaseEvent.case_id == case_id, CaseEvent.action == action)
        )
        or 0
    )


def test_an_action_sent_again_with_its_uuid_is_answered_not_done_twice(
    app: Flask, inspector: Web, session: Session, here: tuple[float, float]
) -> None:
    case = citizen_report(app, here)
    url = f"/api/cases/{case['id']}/actions/verify"
    action_uuid = str(uuid.uuid4())
    body = {"version": case["version"], "action_uuid": action_uuid.upper()}
    first = inspector.api(url, body)
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["status"] == "verified"
    # The reply was lost: the phone sends the same action again, with the version it saw.
    again = inspector.api(url, body)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["version"] == first.get_json()["version"]  # the case as it is now
    assert events(session, case["id"], "verify") == 1
    (data,) = session.scalars(
        select(CaseEvent.data).where(CaseEvent.case_id == case["id"], CaseEvent.action == "verify")
    )
    assert data["action_uuid"] == action_uuid  # kept in the event, lower case
    # Without its UUID the same resend is what it always was: a stale version, 409.
    stale = inspector.api(url, {"version": case["version"]})
    assert stale.status_code == 409, stale.get_json()


def test_an_action_uuid_is_not_reused_for_another_action(
    app: Flask, inspector: Web, session: Session, here: tuple[float, float]
) -> None:
    case = citizen_report(app, here)
    action_uuid = str(uuid.uuid4())
    verified = inspector.api(
        f"/api/cases/{case['id']}/actions/verify", {"action_uuid": action_uuid}
    )
    assert verified.status_code == 200, verified.get_json()
    other = inspector.api(
        f"/api/cases/{case['id']}/actions/invalidate",
        {"action_uuid": action_uuid, "reason": "not there"},
    )
    assert other.status_code == 409, other.get_json()
    error = other.get_json()["error"]
    assert error["reason"] == "action_uuid_taken", error
    assert f"action {action_uuid} was already sent on case {case['number']}" in error["message"]
    assert events(session, case["id"], "invalidate") == 0
    bad = inspector.api(f"/api/cases/{case['id']}/actions/verify", {"action_uuid": "nope"})
    assert bad.status_code == 400, bad.get_json()
    assert bad.get_json()["error"]["field"] == "action_uuid"


def test_a_report_flashes_only_when_the_sending_page_asks(
    inspector: Web, session: Session, here: tuple[float, float]
) -> None:
    fields = {"category": CATEGORY, "lon": here[0], "lat": here[1]}
    quiet = [inspector.api("/api/reports", fields) for _ in range(3)]  # the outbox's way
    assert [r.status_code for r in quiet] == [201] * 3
    page = inspector.get("/tasks").get_data(as_text=True)
    assert "reported." not in page
    asked = inspector.client.post(
        "/api/reports",
        json=fields,
        headers={"X-CSRFToken": inspector.token, "X-Flash": "1"},
    )
    assert asked.status_code == 201, asked.get_json()
    page = inspector.get(f"/cases/{asked.get_json()['id']}").get_data(as_text=True)
    assert page.count(" reported.") == 1
    assert f"Case {asked.get_json()['number']} reported." in page
