"""The satisfaction follow-up (回访): tokenised links for the reporter and the reporters of
merged duplicates, the anonymous reporter's code on the tracking page, one answer per
person per round, expiry, phone follow-ups recorded by operators, every bad input a clear
4xx leaving nothing written; and the demo's mailbox."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cases import jobs
from cases.followup import Fixed, FollowupAnswer, Satisfaction, needs_review, parse_answer
from cases.lifecycle import CaseContext
from cases.models import Case, Photo
from cases.notices import Notice, Subscription
from gridmgmt.kernel.auth import create_api_key
from gridmgmt.kernel.clock import now_utc
from gridmgmt.kernel.errors import InvalidInput
from gridmgmt.kernel.models import Unit
from tests.public.conftest import (
    PUBLIC_URL,
    City,
    People,
    SmsGateway,
    SmtpServer,
    advance,
    report,
    step,
)
from tests.support import browser, fresh_request_globals, jpeg

CODE = re.compile(r"follow-up code is ([A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4})")


def answers(session: Session) -> list[FollowupAnswer]:
    session.expire_all()
    return list(session.scalars(select(FollowupAnswer).order_by(FollowupAnswer.id)))


def followup_links(smtp: SmtpServer) -> dict[str, str]:
    """The follow-up link of each recipient's closing mail (path only)."""
    found = {}
    for mail in smtp.messages:
        text = mail.get_content()
        match = re.search(re.escape(PUBLIC_URL) + r"(/followup/\S+)", text)
        if match:
            found[mail["To"]] = urlsplit(match.group(1)).path
    return found


# ---------------------------------------------------------------- rules


def test_the_answer_rules() -> None:
    assert parse_answer("no", "dissatisfied", "  smells ") == (
        Fixed.NO,
        Satisfaction.DISSATISFIED,
        "smells",
    )
    assert parse_answer("unknown", "", None) == (Fixed.UNKNOWN, None, "")
    for bad in (("", "", ""), ("maybe", "", ""), ("yes", "happy", ""), ("yes", "", "x" * 2001)):
        with pytest.raises(InvalidInput):
            parse_answer(*bad)
    assert needs_review(Fixed.NO, None, "still there")
    assert needs_review(Fixed.YES, Satisfaction.DISSATISFIED, "slow")
    assert not needs_review(Fixed.NO, None, "  ")  # a complaint without a reason
    assert not needs_review(Fixed.YES, Satisfaction.BASICALLY_SATISFIED, "ok")


# ---------------------------------------------------------------- duplicates and rounds


def test_reporters_of_merged_duplicates_answer_once_each_and_rounds_start_again(
    app: Flask,
    session: Session,
    ctx: CaseContext,
    city: City,
    people: People,
    smtp: SmtpServer,
) -> None:
    first = report(session, ctx, city, None, contact={"email": "first@example.org"}, notify=True)
    second = report(session, ctx, city, None, contact={"email": "dup@example.org"}, notify=True)
    step(session, ctx, second, "merge", people.operator, merge_into=first.number)
    first = advance(session, ctx, people, session.get(Case, first.id), "closed")
    jobs.send_due_notices()
    link = followup_links(smtp)
    assert set(link) == {"first@example.org", "dup@example.org"}
    unit_name = session.get(Unit, first.unit_id).name  # type: ignore[union-attr]
    told = [m["Subject"] for m in smtp.messages if m["To"] == "dup@example.org"]
    assert told == [
        f"Report {second.number} was received",
        f"Report {second.number} was not accepted",  # merged: already reported
        f"Report {first.number} was accepted as a case",  # then hears of the case it is in
        f"Case {first.number} was sent to {unit_name}",
        f"Case {first.number} was reported fixed",
        f"Case {first.number} is closed",
    ]
    session.commit()
    web = browser(app)
    for who in link:
        done = web.post(link[who], {"fixed": "yes", "satisfaction": "basically_satisfied"})
        assert done.status_code == 200, done.get_data(as_text=True)[:1000]
    rows = answers(session)
    assert [(r.case_id, r.round, r.channel) for r in rows] == [(first.id, 1, "link")] * 2
    assert len({r.respondent_key for r in rows}) == 2
    assert all(r.review_state == "none" for r in rows)

    # Reopened: the old link says the round is over; closed again: round 2 asks again.
    first = step(session, ctx, session.get(Case, first.id), "reopen", people.operator,
                 reason="the reporter called: not done")  # fmt: skip
    session.commit()
    assert web.get(link["first@example.org"]).status_code == 409  # not closed now
    first = advance_from_dispatched(session, ctx, people, first)
    session.commit()
    assert web.get(link["first@example.org"]).status_code == 410  # an earlier round's link
    smtp.received.clear()
    jobs.send_due_notices()
    session.commit()
    second_round = followup_links(smtp)["first@example.org"]
    assert web.post(second_round, {"fixed": "no", "comment": "still broken"}).status_code == 200
    last = answers(session)[-1]
    assert (last.round, last.fixed, last.satisfaction, last.review_state) == (
        2,
        "no",
        None,
        "pending",
    )


def advance_from_dispatched(session: Session, ctx: CaseContext, people: People, case: Case) -> Case:
    for action, who in (("accept", "staff"), ("report_done", "staff"),
                        ("assign_check", "operator"), ("check_pass", "inspector"),
                        ("close", "operator")):  # fmt: skip
        fields = {"note": "again", "photos": _photo()} if action == "report_done" else {}
        case = step(session, ctx, case, action, getattr(people, who), **fields)
    return case


def _photo():  # type: ignore[no-untyped-def]
    from cases.photos import Upload

    return [Upload("after.jpg", jpeg((10, 200, 10)))]


# ---------------------------------------------------------------- the anonymous reporter


def test_an_anonymous_reporter_answers_on_the_tracking_page_with_the_code(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    web = browser(app)
    made = web.post("/report", {"category": "E0102", "lon": city.lon, "lat": city.lat,
                                "description": "anonymous"})  # fmt: skip
    assert made.status_code == 302
    page = web.get(made.headers["Location"]).get_data(as_text=True)
    code = CODE.search(page)
    assert code, page[:3000]
    number = urlsplit(made.headers["Location"]).path.rsplit("/", 1)[-1]
    case = session.scalars(select(Case).where(Case.number == number)).one()
    assert web.get(f"/track/{number}/followup").status_code == 409  # not closed yet
    advance(session, ctx, people, case, "closed")
    session.commit()
    tracking = web.get(f"/track/{number}").get_data(as_text=True)
    assert f"/track/{number}/followup" in tracking
    form = web.get(f"/track/{number}/followup")
    assert form.status_code == 200 and 'name="code"' in form.get_data(as_text=True)
    wrong = web.post(f"/track/{number}/followup", {"code": "AAAA-BBBB-CCCC", "fixed": "yes"})
    assert wrong.status_code == 403
    assert answers(session) == []
    photo = (io.BytesIO(jpeg((90, 90, 200))), "after.jpg")
    right = web.post(f"/track/{number}/followup",
                     {"code": code.group(1).lower().replace("-", " "), "fixed": "yes",
                      "satisfaction": "satisfied", "photos": photo})  # fmt: skip
    assert right.status_code == 200, right.get_data(as_text=True)[:1000]
    (row,) = answers(session)
    assert (row.channel, row.respondent, row.fixed) == ("tracking", "reporter", "yes")
    assert row.photo_id is not None
    assert session.get(Photo, row.photo_id).case_id == case.id  # type: ignore[union-attr]
    again = web.post(f"/track/{number}/followup", {"code": code.group(1), "fixed": "no"})
    assert again.status_code == 409 and len(answers(session)) == 1
    # The follow-up ends FOLLOWUP_LINK_DAYS after the close.
    session.execute(
        update(Case).where(Case.id == case.id).values(closed_at=now_utc() - timedelta(days=15))
    )
    session.commit()
    assert web.get(f"/track/{number}/followup").status_code == 410
    late = web.post(f"/track/{number}/followup", {"code": code.group(1), "fixed": "no"})
    assert late.status_code == 410 and len(answers(session)) == 1


# ---------------------------------------------------------------- bad input


def test_bad_answers_are_clear_4xx_and_write_nothing(
    app: Flask,
    session: Session,
    ctx: CaseContext,
    city: City,
    people: People,
    smtp: SmtpServer,
) -> None:
    case = report(session, ctx, city, None, contact={"email": "bad@example.org"}, notify=True)
    advance(session, ctx, people, case, "closed")
    jobs.send_due_notices()
    path = followup_links(smtp)["bad@example.org"]
    session.commit()
    photos_before = session.scalar(select(func.count()).select_from(Photo))
    web = browser(app)
    for form in (
        {},
        {"fixed": "maybe"},
        {"fixed": "yes", "satisfaction": "ecstatic"},
        {"fixed": "no", "comment": "x" * 2001},
        {"fixed": "no", "photos": (io.BytesIO(b"not an image"), "x.jpg")},
    ):
        answer = web.post(path, form)
        assert answer.status_code == 400, (form, answer.status_code)
        assert 'class="flash flash-error"' in answer.get_data(as_text=True)
    assert answers(session) == []
    assert session.scalar(select(func.count()).select_from(Photo)) == photos_before
    assert web.get(path[:-4] + "AAAA").status_code == 404  # a damaged link
    assert web.get("/followup/nonsense").status_code == 404
    with_no_csrf = app.test_client().post(path, data={"fixed": "yes"})
    assert with_no_csrf.status_code == 400 and answers(session) == []
    fresh_request_globals()


def test_an_expired_link_is_410(
    app: Flask,
    session: Session,
    ctx: CaseContext,
    city: City,
    people: People,
    smtp: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = report(session, ctx, city, None, contact={"email": "late@example.org"}, notify=True)
    advance(session, ctx, people, case, "closed")
    jobs.send_due_notices()
    path = followup_links(smtp)["late@example.org"]
    session.commit()
    import itsdangerous.timed

    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() + 15 * 86400)
    page = browser(app).get(path)
    assert page.status_code == 410 and "expired" in page.get_data(as_text=True)


# ---------------------------------------------------------------- by phone


def test_operators_record_a_phone_followup(
    app: Flask,
    session: Session,
    ctx: CaseContext,
    city: City,
    people: People,
    smtp: SmtpServer,
) -> None:
    case = report(session, ctx, city, None, contact={"email": "call@example.org"}, notify=True)
    open_case = report(session, ctx, city, None)
    advance(session, ctx, people, case, "closed")
    jobs.send_due_notices()
    link = followup_links(smtp)["call@example.org"]
    session.commit()
    operator = browser(app, "operator")
    page = operator.get(f"/cases/{case.id}/followup")
    assert page.status_code == 200 and "phone-followup" in page.get_data(as_text=True)
    bad = operator.post(f"/cases/{case.id}/followup", {"fixed": ""})
    assert bad.status_code == 400 and answers(session) == []
    done = operator.post(f"/cases/{case.id}/followup",
                         {"fixed": "no", "satisfaction": "dissatisfied",
                          "comment": "the reporter says the bags are back"})  # fmt: skip
    assert done.status_code == 302
    (row,) = answers(session)
    assert (row.channel, row.recorded_by, row.review_state) == (
        "phone",
        people.operator.id,
        "pending",
    )
    # The same person by the mailed link: already answered this round.
    assert browser(app).get(link).status_code == 409
    twice = operator.post(f"/cases/{case.id}/followup", {"fixed": "yes"})
    assert twice.status_code == 409 and len(answers(session)) == 1
    # Only operators record, and only for a closed case.
    dispatcher = browser(app, "dispatcher")
    assert dispatcher.get(f"/cases/{case.id}/followup").status_code == 200
    assert dispatcher.post(f"/cases/{case.id}/followup", {"fixed": "yes"}).status_code == 403
    assert operator.post(f"/cases/{open_case.id}/followup", {"fixed": "yes"}).status_code == 403
    assert browser(app, "citizen").get(f"/cases/{case.id}/followup").status_code == 403
    assert len(answers(session)) == 1


# ---------------------------------------------------------------- Open311 and the mailbox


def test_open311_email_hears_back(app: Flask, session: Session, city: City) -> None:
    key = create_api_key(session, "hear-back-app")
    session.commit()
    client = app.test_client()
    base = {"api_key": key.secret, "service_code": "E0102", "lat": city.lat, "long": city.lon}
    made = client.post("/open311/v2/requests.json", data={**base, "email": "o@example.org"},
                       headers={"Accept-Language": "zh-CN"})  # fmt: skip
    assert made.status_code == 201, made.get_data(as_text=True)
    (row,) = session.scalars(select(Subscription)).all()
    assert (row.address, row.language, row.kind) == ("o@example.org", "zh", "reporter")
    bad = client.post("/open311/v2/requests.json", data={**base, "email": "not-mail"})
    assert bad.status_code == 400
    assert session.scalar(select(func.count()).select_from(Subscription)) == 1
    plain = client.post("/open311/v2/requests.json", data=base)  # no contact: no message
    assert plain.status_code == 201
    assert session.scalar(select(func.count()).select_from(Notice)) == 1


def test_open311_phone_hears_back_by_sms(
    app: Flask, session: Session, city: City, sms_gateway: SmsGateway
) -> None:
    key = create_api_key(session, "hear-back-sms-app")
    session.commit()
    client = app.test_client()
    made = client.post(
        "/open311/v2/requests.json",
        data={"api_key": key.secret, "service_code": "E0102", "lat": city.lat,
              "long": city.lon, "phone": "+1 (213) 555-0170"},
    )  # fmt: skip
    assert made.status_code == 201, made.get_data(as_text=True)
    (row,) = session.scalars(select(Subscription)).all()
    assert (row.channel, row.address, row.kind) == ("sms", "+12135550170", "reporter")
    assert jobs.send_due_notices() == {"sent": 1}
    (sent,) = sms_gateway.requests
    number = made.get_json()[0]["service_request_id"]
    assert sent["json"]["to"] == "+12135550170"
    assert f"{PUBLIC_URL}/track/{number}" in sent["json"]["text"]


def test_the_demo_mailbox_keeps_sent_messages_to_read(
    app: Flask,
    session: Session,
    ctx: CaseContext,
    city: City,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config, "MAIL_MODE", "mailbox")
    case = report(session, ctx, city, None, contact={"email": "demo@example.org"}, notify=True)
    assert jobs.send_due_notices() == {"sent": 1}
    session.commit()
    (notice,) = session.scalars(select(Notice)).all()
    operator = browser(app, "operator")
    listing = operator.get("/mailbox").get_data(as_text=True)
    assert f"Report {case.number} was received" in listing
    one = operator.get(f"/mailbox/{notice.id}").get_data(as_text=True)
    assert f"{PUBLIC_URL}/track/{case.number}" in one
    assert browser(app, "citizen").get("/mailbox").status_code == 403
    assert browser(app).get("/mailbox").status_code == 302  # sign in first
    monkeypatch.setitem(app.config, "DEMO", True)
    assert browser(app).get("/mailbox").status_code == 200  # `make run`
    assert jobs.mail_mode({"DEMO": True}) == "mailbox"
    assert jobs.mail_mode({"DEMO": False}) == "smtp"
