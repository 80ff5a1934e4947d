"""Notifications: the outbox written with the case change, drained to a real SMTP server and
a real HTTP SMS gateway, in the reporter's language, with tracking and one-click unsubscribe
links; an outage delays and never loses or doubles; following needs a confirmation first."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cases import jobs, notices
from cases.followup import FollowupAnswer
from cases.lifecycle import CaseContext
from cases.models import Case, Category
from cases.notices import Notice, NoticeState, Subscription
from cases.photos import Upload
from gridmgmt.kernel.clock import now_utc
from gridmgmt.kernel.models import Unit
from tests.public.conftest import (
    INTERNAL_NOTE,
    PUBLIC_URL,
    City,
    People,
    SmsGateway,
    SmtpServer,
    advance,
    report,
    step,
)
from tests.support import browser, jpeg

LINK = re.compile(re.escape(PUBLIC_URL) + r"/\S+")


def links(text: str) -> dict[str, str]:
    """The links of a message by their first path segment (track, followup, unsubscribe...)."""
    found = {}
    for url in LINK.findall(text):
        path = urlsplit(url).path
        first = path.strip("/").split("/")[0]
        found[first if first != "follow" else "confirm"] = path
    return found


def queued(session: Session, case_id: int | None = None) -> list[Notice]:
    query = select(Notice).order_by(Notice.id)
    if case_id is not None:
        query = query.where(Notice.case_id == case_id)
    session.expire_all()
    return list(session.scalars(query))


def body_of(message) -> str:  # type: ignore[no-untyped-def]
    return message.get_content()


# ---------------------------------------------------------------- the end-to-end loop


def test_a_closed_case_sends_a_real_email_whose_link_records_an_answer(
    app: Flask,
    session: Session,
    ctx: CaseContext,
    city: City,
    people: People,
    smtp: SmtpServer,
) -> None:
    case = report(
        session, ctx, city, None, contact={"email": "Resident@Example.org", "name": "R"},
        notify=True, language="zh", description="bags on the corner",
    )  # fmt: skip
    case = advance(session, ctx, people, case, "closed")
    category = session.get(Category, case.category_id)
    unit = session.get(Unit, case.unit_id)
    assert category is not None and unit is not None
    kinds = [n.kind for n in queued(session, case.id)]
    assert kinds == ["received", "filed", "dispatched", "done", "closed"]

    result = jobs.send_due_notices()
    assert result == {"sent": 5}
    assert [n.state for n in queued(session, case.id)] == ["sent"] * 5
    mails = smtp.messages
    assert len(mails) == 5
    assert {m["To"] for m in mails} == {"resident@example.org"}
    for mail in mails:
        text = body_of(mail)
        assert mail["Content-Language"] == "zh"
        assert category.name_zh in text  # the reporter's language
        assert f"{PUBLIC_URL}/track/{case.number}" in text
        unsubscribe = links(text)["unsubscribe"]
        assert mail["List-Unsubscribe"] == f"<{PUBLIC_URL}{unsubscribe}>"
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        # never an internal note, never a staff member's name
        assert INTERNAL_NOTE not in text and "Zebedee" not in text
        for person in (people.operator, people.staff, people.inspector, people.dispatcher):
            assert not re.search(rf"\b{re.escape(person.username)}\b", text)
            if person.display_name:
                assert person.display_name not in text
    dispatched = body_of(mails[2])
    assert unit.name in dispatched and str(case.deadline.year) in dispatched
    closed = body_of(mails[4])
    followup_path = links(closed)["followup"]

    # The link from the real mail, on the real pages (the Flask test client).
    session.commit()  # requests that fail roll back to here
    client = browser(app)
    form = client.get(followup_path)
    assert form.status_code == 200
    assert 'name="fixed"' in form.get_data(as_text=True)
    answered = client.post(
        followup_path,
        {"fixed": "no", "satisfaction": "dissatisfied", "comment": "still a pile of bags"},
    )
    assert answered.status_code == 200, answered.get_data(as_text=True)[:2000]
    assert "answer-recorded" in answered.get_data(as_text=True)
    row = session.scalars(select(FollowupAnswer).where(FollowupAnswer.case_id == case.id)).one()
    assert (row.round, row.respondent, row.channel, row.fixed, row.satisfaction) == (
        1,
        "reporter",
        "link",
        "no",
        "dissatisfied",
    )
    assert row.review_state == "pending" and row.comment == "still a pile of bags"
    # One answer per person per round: a second submit is a clear 409 and writes nothing.
    again = client.post(followup_path, {"fixed": "yes", "satisfaction": "satisfied"})
    assert again.status_code == 409
    assert "already-answered" in again.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(FollowupAnswer)) == 1
    # Drained again: nothing is sent twice.
    assert jobs.send_due_notices() == {}
    assert len(smtp.received) == 5


def test_english_reporter_gets_english_and_rejection_gives_the_public_reason(
    session: Session, ctx: CaseContext, city: City, people: People, smtp: SmtpServer
) -> None:
    case = report(session, ctx, city, None, contact={"email": "a@example.org"}, notify=True,
                  language="en")  # fmt: skip
    step(session, ctx, case, "reject", people.operator, reason="not_city_problem",
         note="the caller is a known prankster")  # fmt: skip
    jobs.send_due_notices()
    mails = smtp.messages
    assert [m["Subject"] for m in mails] == [
        f"Report {case.number} was received",
        f"Report {case.number} was not accepted",
    ]
    rejected = body_of(mails[1])
    assert "Not a problem the city handles" in rejected
    assert "prankster" not in rejected
    (notice,) = [n for n in queued(session, case.id) if n.kind == "rejected"]
    assert notice.data == {"reason": "not_city_problem", "respondent": "reporter"}
    assert session.get(Category, case.category_id).name_en in rejected  # type: ignore[union-attr]


def test_no_message_without_the_reporters_consent(
    session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = report(session, ctx, city, None, contact={"email": "quiet@example.org"})
    advance(session, ctx, people, case, "dispatched")
    assert queued(session, case.id) == []


# ---------------------------------------------------------------- outages and lost jobs


def test_an_smtp_outage_delays_and_a_later_drain_sends_once(
    session: Session,
    ctx: CaseContext,
    city: City,
    smtp: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp.stop()  # the mail server is down
    case = report(session, ctx, city, None, contact={"email": "b@example.org"}, notify=True)
    assert jobs.send_due_notices() == {"retry": 1}
    (notice,) = queued(session, case.id)
    assert notice.state == NoticeState.QUEUED and notice.attempts == 1
    assert "unreachable" in (notice.last_error or "")
    assert notice.next_attempt_at > now_utc()
    assert jobs.send_due_notices() == {}  # not due yet: no hammering
    smtp.start()  # back on the same port
    later = now_utc() + timedelta(minutes=2)
    monkeypatch.setattr(jobs, "now_utc", lambda: later)
    assert jobs.send_due_notices() == {"sent": 1}
    assert jobs.send_due_notices() == {}
    (notice,) = queued(session, case.id)
    assert (notice.state, notice.attempts, notice.last_error) == ("sent", 2, None)
    assert len(smtp.received) == 1


def test_a_resend_after_a_crash_is_recognisably_the_same_message(
    session: Session,
    ctx: CaseContext,
    city: City,
    people: People,
    smtp: SmtpServer,
    sms_gateway: SmsGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At least once: a drain killed between the server's acceptance and its commit sends
    that message again, with the same Message-ID (mail) and Idempotency-Key (SMS), which is
    the row's dedupe key; another message has another Message-ID."""
    contact = {"email": "crash@example.org", "phone": "+1 213 555 0161"}
    case = report(session, ctx, city, None, contact=contact, notify=True)
    session.commit()  # the report, its subscriptions and messages
    real_mark_sent = notices.mark_sent
    crashed: set[int] = set()

    def crash_once(notice: Notice, *args: Any) -> None:
        if notice.id not in crashed:
            crashed.add(notice.id)
            raise RuntimeError("killed after the server accepted the message")
        real_mark_sent(notice, *args)

    monkeypatch.setattr(notices, "mark_sent", crash_once)
    for _ in range(2):  # the mail, then the text: each accepted, then the process dies
        with pytest.raises(RuntimeError):
            jobs.send_due_notices()
    assert jobs.send_due_notices() == {"sent": 1}
    mail, text = queued(session, case.id)
    assert (mail.state, text.state, mail.attempts, text.attempts) == ("sent", "sent", 1, 1)

    first, again = smtp.messages
    assert first["Message-ID"] == again["Message-ID"]
    assert re.fullmatch(r"<[0-9a-f]{40}\.notice@example\.test>", first["Message-ID"])
    sms = [r["idempotency_key"] for r in sms_gateway.requests]
    assert sms == [text.dedupe_key, text.dedupe_key]
    monkeypatch.setattr(notices, "mark_sent", real_mark_sent)
    advance(session, ctx, people, case, "filed")
    assert jobs.send_due_notices() == {"sent": 2}
    assert smtp.messages[2]["Message-ID"] not in (first["Message-ID"], None)
    assert sms_gateway.requests[2]["idempotency_key"] not in (text.dedupe_key, None)


def test_no_server_configured_waits_without_counting(
    session: Session, ctx: CaseContext, city: City
) -> None:
    case = report(session, ctx, city, None, contact={"email": "c@example.org"}, notify=True)
    assert jobs.send_due_notices() == {"waiting": 1}
    (notice,) = queued(session, case.id)
    assert (notice.state, notice.attempts) == ("queued", 0)
    assert "no email server" in (notice.last_error or "")


def test_the_drain_is_rung_after_commit_and_runs_periodically(
    app: Flask, session: Session, ctx: CaseContext, city: City, redis_conn
) -> None:  # type: ignore[no-untyped-def]
    from gridmgmt.kernel.queue import PERIODIC_QUEUE, periodic_jobs, queues

    assert periodic_jobs(app)[notices.DRAIN_JOB] == app.config["NOTICE_DRAIN_SECONDS"]
    report(session, ctx, city, None, contact={"email": "d@example.org"}, notify=True)
    session.commit()  # the test's savepoint: the app's after-commit hook rings
    jobs_waiting = queues.get(PERIODIC_QUEUE).jobs
    assert [j.func_name for j in jobs_waiting] == [notices.DRAIN_JOB]
    # A lost job: the queue is emptied; the message waits in the outbox for the next drain.
    redis_conn.flushdb()
    assert [n.state for n in queued(session)] == ["queued"]


def test_permanent_refusals_fail_and_the_rest_are_retried_with_backoff(
    app: Flask, session: Session, ctx: CaseContext, city: City, sms_gateway: SmsGateway
) -> None:
    case = report(session, ctx, city, None, contact={"phone": "+1 213 555 0100"}, notify=True)
    sms_gateway.status = 503
    assert jobs.send_due_notices() == {"retry": 1}
    (notice,) = queued(session, case.id)
    first_retry = notice.next_attempt_at
    notice.next_attempt_at = now_utc() - timedelta(seconds=1)
    assert jobs.send_due_notices() == {"retry": 1}
    (notice,) = queued(session, case.id)
    assert notice.attempts == 2
    assert notice.next_attempt_at - now_utc() > first_retry - now_utc()  # backs off
    sms_gateway.status = 400  # the gateway refuses the number: trying again will not help
    notice.next_attempt_at = now_utc() - timedelta(seconds=1)
    assert jobs.send_due_notices() == {"failed": 1}
    assert queued(session, case.id)[0].state == "failed"
    # Kept, not lost: `flask notices retry` queues it again (once the number is fixed, say).
    runner = app.test_cli_runner()
    assert "failed: 1" in runner.invoke(args=["notices", "status"]).output
    assert "1 failed messages queued again" in runner.invoke(args=["notices", "retry"]).output
    sms_gateway.status = 200
    assert jobs.send_due_notices() == {"sent": 1}


# ---------------------------------------------------------------- SMS


def test_sms_goes_to_the_http_gateway(
    session: Session, ctx: CaseContext, city: City, people: People, sms_gateway: SmsGateway
) -> None:
    case = report(session, ctx, city, None, contact={"phone": "+1 (213) 555-0101"},
                  notify=True, language="zh")  # fmt: skip
    advance(session, ctx, people, case, "filed")
    assert jobs.send_due_notices() == {"sent": 2}
    assert len(sms_gateway.requests) == 2
    first = sms_gateway.requests[0]
    assert first["authorization"] == "Bearer gw-token-123"
    assert first["content_type"].startswith("application/json")
    assert first["json"]["to"] == "+12135550101"
    assert first["json"]["sender"] == "CITY"
    text = first["json"]["text"]
    assert f"{PUBLIC_URL}/track/{case.number}" in text and f"{PUBLIC_URL}/unsubscribe/" in text
    category = session.get(Category, case.category_id)
    assert category is not None and category.name_zh in text


def test_a_supporter_by_phone_hears_by_sms(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People,
    sms_gateway: SmsGateway,
) -> None:  # fmt: skip
    """ "Add your support" with a phone number: the supporter's phone hears at once where the
    case stands, then each change, through the real gateway; the reporter's own number
    supporting its case is not doubled."""
    reporter_phone = "+1 (213) 555-0131"
    case = report(session, ctx, city, None, contact={"phone": reporter_phone}, notify=True)
    case = advance(session, ctx, people, case, "dispatched")
    assert jobs.send_due_notices() == {"sent": 3}  # the reporter's: received, filed, dispatched
    session.commit()
    sms_gateway.requests.clear()
    web = browser(app)

    supported = web.api(f"/track/{case.number}/support", {"phone": "+1 213 555 0199"})
    mine = web.api(f"/track/{case.number}/support", {"phone": reporter_phone})
    assert supported.status_code == 201 and mine.status_code == 201
    assert jobs.send_due_notices() == {"sent": 1}
    (first,) = sms_gateway.requests
    assert first["json"]["to"] == "+12135550199"
    unit = session.get(Unit, case.unit_id)
    assert unit is not None and unit.name in first["json"]["text"]
    assert f"{PUBLIC_URL}/track/{case.number}" in first["json"]["text"]
    assert f"{PUBLIC_URL}/unsubscribe/" in first["json"]["text"]

    session.refresh(case)
    case = step(session, ctx, case, "accept", people.staff)
    photos = [Upload("after.jpg", jpeg((30, 160, 30)))]
    step(session, ctx, case, "report_done", people.staff, note=INTERNAL_NOTE, photos=photos)
    assert jobs.send_due_notices() == {"sent": 2}  # "reported fixed", to each number once
    assert sorted(r["json"]["to"] for r in sms_gateway.requests[1:]) == [
        "+12135550131",
        "+12135550199",
    ]
    assert INTERNAL_NOTE not in " ".join(r["json"]["text"] for r in sms_gateway.requests)


def test_a_stale_or_refused_action_queues_no_message(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    """The messages are written in the transaction of the change: an action refused (a role
    without it, a status that does not allow it) or answered 409 for a stale version of the
    case queues nothing; the same action on the current version queues its one message."""
    case = report(session, ctx, city, None, contact={"email": "stale@example.org"}, notify=True)
    stale = case.version
    case = advance(session, ctx, people, case, "verified")
    session.commit()
    operator, dispatcher = browser(app, "operator"), browser(app, "dispatcher")

    answers = [
        operator.api(f"/api/cases/{case.id}/actions/file", {"version": stale}),
        dispatcher.api(f"/api/cases/{case.id}/actions/file", {"version": case.version}),
        operator.api(f"/api/cases/{case.id}/actions/close", {"version": case.version}),
    ]

    assert [a.status_code for a in answers] == [409, 403, 409]
    assert [n.kind for n in queued(session, case.id)] == ["received"]
    done = operator.api(f"/api/cases/{case.id}/actions/file", {"version": case.version})
    assert done.status_code == 200, done.get_data(as_text=True)
    assert [n.kind for n in queued(session, case.id)] == ["received", "filed"]


# ---------------------------------------------------------------- unsubscribing


def test_one_click_unsubscribe_stops_messages(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People, smtp: SmtpServer
) -> None:
    case = report(session, ctx, city, None, contact={"email": "e@example.org"}, notify=True)
    jobs.send_due_notices()
    path = links(body_of(smtp.messages[0]))["unsubscribe"]
    client = app.test_client()
    page = client.get(path)  # a link scanner's visit changes nothing
    assert page.status_code == 200
    mine = select(Subscription).where(Subscription.case_id == case.id)
    subscription = session.scalars(mine).one()
    session.refresh(subscription)
    assert subscription.unsubscribed_at is None
    # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click, with no CSRF token.
    done = client.post(path, data="List-Unsubscribe=One-Click",
                       content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert done.status_code == 200 and "unsubscribed" in done.get_data(as_text=True)
    session.refresh(subscription)
    assert subscription.unsubscribed_at is not None
    advance(session, ctx, people, case, "dispatched")
    assert [n.kind for n in queued(session, case.id)] == ["received"]  # nothing more queued
    assert client.post(path[:-3] + "xyz").status_code == 404  # a broken token


# ---------------------------------------------------------------- following


def test_following_a_case_needs_the_confirmation_link_first(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People, smtp: SmtpServer
) -> None:
    case = advance(session, ctx, people, report(session, ctx, city, people.citizen), "filed")
    session.commit()  # requests that fail roll back to here
    web = browser(app)
    assert web.get(f"/track/{case.number}/follow").status_code == 200
    bad = web.post(f"/track/{case.number}/follow", {"email": "not an address"})
    assert bad.status_code == 400
    assert session.scalar(select(func.count()).select_from(Subscription)) == 0
    asked = web.post(f"/track/{case.number}/follow", {"email": "Follower@Example.org"})
    assert asked.status_code == 200
    case = step(session, ctx, session.get(Case, case.id), "dispatch", people.dispatcher)
    jobs.send_due_notices()
    (mail,) = smtp.messages  # only the confirmation: not confirmed, not told of the dispatch
    assert mail["To"] == "follower@example.org"
    confirm = links(body_of(mail))["confirm"]
    assert web.get(confirm).status_code == 200
    assert web.get(confirm).status_code == 200  # twice: the same
    step(session, ctx, case, "accept", people.staff)  # not a public step: no message
    step(session, ctx, session.get(Case, case.id), "report_done", people.staff, note="x",
         photos=[Upload("after.jpg", jpeg())])  # fmt: skip
    jobs.send_due_notices()
    assert [m["Subject"] for m in smtp.messages][1:] == [f"Case {case.number} was reported fixed"]
    # Staff see how many follow, never who.
    operator = browser(app, "operator")
    page = operator.get(f"/cases/{case.id}/followup").get_data(as_text=True)
    assert 'data-count="case">1<' in page and "follower@example.org" not in page


def test_following_a_community_hears_of_new_cases(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People, smtp: SmtpServer
) -> None:
    web = browser(app)
    path = f"/communities/{city.community_area_id}/follow"
    assert web.get(path).status_code == 200
    assert web.post(path, {"email": "n@example.org"}).status_code == 200
    jobs.send_due_notices()
    web.get(links(body_of(smtp.messages[0]))["confirm"])
    case = advance(session, ctx, people, report(session, ctx, city, people.citizen), "filed")
    jobs.send_due_notices()
    assert [m["Subject"].split(" in ")[0] for m in smtp.messages[1:]] == [f"New case {case.number}"]
    assert web.get("/communities/999999999/follow").status_code == 404


def test_a_case_not_public_cannot_be_followed(
    app: Flask, session: Session, ctx: CaseContext, city: City, people: People
) -> None:
    case = report(session, ctx, city, people.citizen)  # reported: not yet public
    session.commit()
    web = browser(app)
    assert web.post(f"/track/{case.number}/follow", {"email": "x@example.org"}).status_code == 404
    assert session.scalar(select(func.count()).select_from(Subscription)) == 0


# ---------------------------------------------------------------- choosing at report time


def test_the_report_form_json_api_and_open311_take_the_choice(
    app: Flask, session: Session, city: City
) -> None:
    web = browser(app)
    form = web.post("/report", {"category": "E0102", "lon": city.lon, "lat": city.lat,
                                "email": "form@example.org", "notify": "1"})  # fmt: skip
    assert form.status_code == 302
    page = web.get(form.headers["Location"]).get_data(as_text=True)
    code = re.search(r"follow-up code is ([A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4})", page)
    assert code, page[:3000]
    api = web.api("/api/reports", {"category": "E0102", "lon": city.lon, "lat": city.lat,
                                   "phone": "+1 213 555 0102", "notify": True,
                                   "language": "zh"})  # fmt: skip
    assert api.status_code == 201
    assert re.fullmatch(r"[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}", api.get_json()["followup_code"])
    session.commit()
    cases_before = session.scalar(select(func.count()).select_from(Case))
    refused = web.api("/api/reports", {"category": "E0102", "lon": city.lon, "lat": city.lat,
                                       "notify": True})  # fmt: skip
    assert refused.status_code == 400 and refused.get_json()["error"]["field"] == "email"
    bad = web.api("/api/reports", {"category": "E0102", "lon": city.lon, "lat": city.lat,
                                   "email": "nope", "notify": True})  # fmt: skip
    assert bad.status_code == 400
    rows = session.execute(
        select(Subscription.channel, Subscription.address, Subscription.language).order_by(
            Subscription.id
        )
    ).all()
    assert [tuple(r) for r in rows] == [
        ("email", "form@example.org", "en"),
        ("sms", "+12135550102", "zh"),
    ]
    assert session.scalar(select(func.count()).select_from(Case)) == cases_before  # no half


def test_follow_requests_are_rate_limited(
    app: Flask,
    session: Session,
    ctx: CaseContext,
    city: City,
    people: People,
    redis_conn,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config, "RATE_FOLLOWS_PER_CLIENT", 2)
    case = advance(session, ctx, people, report(session, ctx, city, people.citizen), "filed")
    session.commit()
    web = browser(app)
    codes = [
        web.post(f"/track/{case.number}/follow", {"email": f"f{n}@example.org"}).status_code
        for n in range(3)
    ]
    assert codes == [200, 200, 429]
    assert session.scalar(select(func.count()).select_from(Subscription)) == 2
