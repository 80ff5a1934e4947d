"""Re-handling (重办) over HTTP on the seeded demo city: the operators' review queue of
follow-up complaints; reasonable → the closed case goes back to the same unit through the
transition table (rehandle_count + 1, rework untouched, a new deadline, an event); not
reasonable → recorded with the operator's required reason, shown to supervisors; wrong roles
403, stale forms 409, nothing half-written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from cases.followup import FollowupAnswer
from cases.models import Case, CaseEvent
from tests.participation.conftest import COMMUNITY_A, City, MakeCase, add_answer, add_event
from tests.support import browser

COMPLAINT = "The bags are still behind the blue door, nobody came"


def closed_with_complaint(session: Session, make_case: MakeCase) -> tuple[Case, FollowupAnswer]:
    """A case closed yesterday after one rework, with a pending complaint from its reporter."""
    closed_at = datetime.now(UTC) - timedelta(days=1)
    case = make_case(
        "closed",
        closed_at=closed_at,
        handled_at=closed_at - timedelta(hours=3),
        dispatched_at=closed_at - timedelta(days=1),
        deadline=closed_at - timedelta(hours=1),
        rework_count=1,
    )
    add_event(session, case, "close", closed_at, "checked", "closed")
    answer = add_answer(
        session,
        case,
        closed_at + timedelta(hours=5),
        fixed="no",
        satisfaction="dissatisfied",
        comment=COMPLAINT,
        review="pending",
    )
    return case, answer


def judge(web, answer_id: int, **form: object):  # type: ignore[no-untyped-def]
    """The review form, posted as JSON (the page's form posts the same fields)."""
    return web.client.post(
        f"/followup/review/{answer_id}",
        json=form,
        headers={"X-CSRFToken": web.token, "Accept": "application/json"},
    )


def test_the_queue_shows_the_case_the_answer_and_the_reason(
    app: Flask, db_session: Session, make_case: MakeCase
) -> None:
    case, answer = closed_with_complaint(db_session, make_case)
    settled = add_answer(db_session, case, datetime.now(UTC), fixed="yes", key="another")

    page = browser(app, "operator").get("/followup/review")

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'data-answer="{answer.id}"' in html and case.number in html
    assert COMPLAINT in html and "Dissatisfied" in html
    assert f'data-answer="{settled.id}"' not in html  # nothing to judge
    assert f'name="version" value="{case.version}"' in html


def test_reasonable_sends_it_back_to_the_same_unit(
    app: Flask, city: City, db_session: Session, make_case: MakeCase
) -> None:
    case, answer = closed_with_complaint(db_session, make_case)
    same_round = add_answer(
        db_session, case, datetime.now(UTC), fixed="no", comment="Still there", who="supporter",
        key="supporter-1", review="pending",
    )  # fmt: skip
    before = datetime.now(UTC)

    answered = judge(
        browser(app, "operator"), answer.id, verdict="reasonable", version=case.version,
        reason="Photo shows the bags",
    )  # fmt: skip

    assert answered.status_code == 200, answered.get_data(as_text=True)
    db_session.expire_all()
    case = db_session.get(Case, case.id)
    assert case.status == "dispatched"
    assert case.unit_id == city.units[COMMUNITY_A]
    assert (case.rehandle_count, case.rework_count) == (1, 1)
    assert case.closed_at is None and case.handled_at is None
    assert case.deadline is not None and case.deadline > before
    event = db_session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id.desc())
    ).first()
    assert (event.action, event.from_status, event.to_status) == (
        "rehandle",
        "closed",
        "dispatched",
    )
    assert event.data["rehandle"] == 1 and event.data["answer"] == answer.id
    assert COMPLAINT in event.note and "Photo shows the bags" in event.note
    assert event.actor_id == city.users["operator"]
    judged = db_session.get(FollowupAnswer, answer.id)
    assert judged.review_state == "reasonable" and judged.reviewed_by == city.users["operator"]
    assert db_session.get(FollowupAnswer, same_round.id).review_state == "reasonable"
    assert answered.get_json()["rehandle_count"] == 1
    # The unit has it back in its queue.
    assert case.number in browser(app, "staff").get("/queue").get_data(as_text=True)


def test_the_page_form_redirects_with_a_message(
    app: Flask, db_session: Session, make_case: MakeCase
) -> None:
    case, answer = closed_with_complaint(db_session, make_case)
    operator = browser(app, "operator")

    answered = operator.post(
        f"/followup/review/{answer.id}", {"verdict": "reasonable", "version": case.version}
    )

    assert answered.status_code == 303
    assert answered.headers["Location"].endswith("/followup/review")
    assert "re-handling" in operator.get("/followup/review").get_data(as_text=True)


def test_unreasonable_needs_a_reason_and_is_shown_to_supervisors(
    app: Flask, db_session: Session, make_case: MakeCase
) -> None:
    case, answer = closed_with_complaint(db_session, make_case)
    operator = browser(app, "operator")

    without = judge(operator, answer.id, verdict="unreasonable", version=case.version)
    blank = judge(operator, answer.id, verdict="unreasonable", reason="   ", version=case.version)
    page_form = operator.post(f"/followup/review/{answer.id}", {"verdict": "unreasonable"})

    assert without.status_code == 400 and blank.status_code == 400
    assert without.get_json()["error"]["field"] == "reason"
    assert page_form.status_code == 400  # the queue again, with the error
    db_session.expire_all()
    assert db_session.get(FollowupAnswer, answer.id).review_state == "pending"

    reason = "The bags were put out after the closing, a new report is needed"
    done = judge(operator, answer.id, verdict="unreasonable", reason=reason, version=case.version)

    assert done.status_code == 200, done.get_data(as_text=True)
    db_session.expire_all()
    judged = db_session.get(FollowupAnswer, answer.id)
    assert (judged.review_state, judged.review_reason) == ("unreasonable", reason)
    kept = db_session.get(Case, case.id)
    assert kept.status == "closed" and kept.rehandle_count == 0
    event = db_session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id.desc())
    ).first()
    assert (event.action, event.note, event.data["answer"]) == (
        "dismiss_complaint",
        reason,
        answer.id,
    )
    for role in ("leader", "dispatcher", "operator"):
        html = browser(app, role).get(f"/cases/{case.id}").get_data(as_text=True)
        assert 'data-review="unreasonable"' in html and reason in html
    unit_page = browser(app, "staff").get(f"/cases/{case.id}").get_data(as_text=True)
    assert 'data-review="unreasonable"' not in unit_page  # the answers are the centre's


@pytest.mark.parametrize("role", ["dispatcher", "staff", "inspector", "leader", "citizen"])
def test_only_operators_judge(
    app: Flask, db_session: Session, make_case: MakeCase, role: str
) -> None:
    case, answer = closed_with_complaint(db_session, make_case)
    web = browser(app, role)

    queue = web.get("/followup/review")
    judged = judge(web, answer.id, verdict="reasonable", version=case.version)

    assert queue.status_code == 403 and judged.status_code == 403
    db_session.expire_all()
    assert db_session.get(Case, case.id).status == "closed"


def test_stale_forms_and_second_judgements_are_409(
    app: Flask, db_session: Session, make_case: MakeCase
) -> None:
    case, answer = closed_with_complaint(db_session, make_case)
    operator = browser(app, "operator")

    stale = judge(operator, answer.id, verdict="reasonable", version=case.version - 1)
    db_session.expire_all()
    assert db_session.get(Case, case.id).status == "closed"
    first = judge(operator, answer.id, verdict="reasonable", version=case.version)
    second = judge(operator, answer.id, verdict="unreasonable", reason="r", version=None)

    assert stale.status_code == 409
    assert first.status_code == 200
    assert second.status_code == 409
    db_session.expire_all()
    assert db_session.get(Case, case.id).rehandle_count == 1


def test_bad_verdicts_and_unknown_answers(
    app: Flask, db_session: Session, make_case: MakeCase
) -> None:
    _case, answer = closed_with_complaint(db_session, make_case)
    operator = browser(app, "operator")

    assert judge(operator, answer.id, verdict="maybe").status_code == 400
    assert judge(operator, answer.id, verdict="reasonable", version="x").status_code == 400
    assert judge(operator, 987654321, verdict="reasonable").status_code == 404


def test_rehandling_is_only_through_the_review(
    app: Flask, db_session: Session, make_case: MakeCase
) -> None:
    """The generic action addresses refuse it: no re-handling without a judged answer."""
    case, _answer = closed_with_complaint(db_session, make_case)
    operator = browser(app, "operator")

    by_api = operator.api(f"/api/cases/{case.id}/actions/rehandle", {"reason": "because"})
    dismiss = operator.api(f"/api/cases/{case.id}/actions/dismiss_complaint", {"reason": "no"})
    page = operator.get(f"/cases/{case.id}").get_data(as_text=True)

    assert by_api.status_code == 400 and dismiss.status_code == 400
    assert "review of a follow-up answer" in by_api.get_json()["error"]["message"]
    assert "/rehandle" not in page  # no button for it
    db_session.expire_all()
    assert db_session.get(Case, case.id).status == "closed"
