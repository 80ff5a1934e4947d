"""Reports near me and supporters, over HTTP on the seeded demo city: the public view only
(listed cases, rounded positions, no reporter, description or contact), a radius and a
community, paging, the report page's duplicates; support once per person, counted, shown to
operators and first in their duplicate suggestions, rate-limited, every bad input a 4xx."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cases import queries
from cases.notices import Notice, Subscription
from cases.support import CaseSupporter
from gridmgmt.kernel.models import Unit
from tests.participation.conftest import COMMUNITY_A, COMMUNITY_B, City, MakeCase, shifted
from tests.support import browser

CONTACT = {"name": "Wen Qiaoling-4K", "phone": "+1-213-555-0199", "email": "wen.4k@example.org"}
LISTED = ("filed", "dispatched", "in_progress", "suspended", "handled", "checked", "closed")
UNLISTED = ("reported", "verified", "rejected", "invalid", "merged")
PUBLIC_KEYS = {
    "number", "category", "category_name", "status", "status_text", "open", "reported_at",
    "updated_at", "lon", "lat", "distance_m", "supporters", "url",
}  # fmt: skip


def numbers(answer: dict) -> list[str]:
    return [item["number"] for item in answer["items"]]


def test_near_a_point_only_the_public_view(
    app: Flask, city: City, make_case: MakeCase, limits: Redis
) -> None:
    near = shifted(city.a, 40.0000371, 10.0000123)  # more decimals than the policy keeps
    listed = {s: make_case(s, near, contact=CONTACT, description=f"SECRET-{s}") for s in LISTED}
    unlisted = {s: make_case(s, near, contact=CONTACT) for s in UNLISTED}
    far = make_case("dispatched", city.b, unit=COMMUNITY_B)

    web = browser(app)
    answer = web.get(f"/nearby.json?lon={city.a[0]}&lat={city.a[1]}&radius=300&page_size=100")

    assert answer.status_code == 200
    found = answer.get_json()
    got = set(numbers(found))
    assert {c.number for c in listed.values()} <= got
    assert not {c.number for c in unlisted.values()} & got
    assert far.number not in got
    text = answer.get_data(as_text=True)
    for secret in (*CONTACT.values(), "SECRET-", "description", "reporter", "contact"):
        assert secret not in text
    mine = next(i for i in found["items"] if i["number"] == listed["dispatched"].number)
    assert set(mine) == PUBLIC_KEYS
    assert (mine["lon"], mine["lat"]) == (round(near[0], 4), round(near[1], 4))
    assert mine["status"] == "with_unit" and mine["open"] is True
    assert 30 <= mine["distance_m"] <= 50 and mine["distance_m"] % 10 == 0
    closed = next(i for i in found["items"] if i["number"] == listed["closed"].number)
    assert closed["status"] == "closed" and closed["open"] is False
    assert found["radius_m"] == 300


def test_the_radius_decides(app: Flask, city: City, make_case: MakeCase, limits: Redis) -> None:
    at_200 = make_case("dispatched", shifted(city.a, 0, 200))
    web = browser(app)

    wide = web.get(f"/nearby.json?lon={city.a[0]}&lat={city.a[1]}&radius=300").get_json()
    narrow = web.get(f"/nearby.json?lon={city.a[0]}&lat={city.a[1]}&radius=150").get_json()

    assert at_200.number in numbers(wide)
    assert at_200.number not in numbers(narrow)


def test_in_a_community_and_open_or_closed(
    app: Flask, city: City, make_case: MakeCase, limits: Redis
) -> None:
    in_a = make_case("in_progress", city.a)
    closed_a = make_case("closed", city.a)
    in_b = make_case("dispatched", city.b, unit=COMMUNITY_B)
    web = browser(app)

    everything = web.get(f"/nearby.json?community={COMMUNITY_A}&page_size=100").get_json()
    open_only = web.get(f"/nearby.json?community={COMMUNITY_A}&state=open&page_size=100")
    closed_only = web.get(f"/nearby.json?community={COMMUNITY_A}&state=closed&page_size=100")

    assert {in_a.number, closed_a.number} <= set(numbers(everything))
    assert in_b.number not in numbers(everything)
    assert everything["radius_m"] is None
    assert in_a.number in numbers(open_only.get_json())
    assert closed_a.number not in numbers(open_only.get_json())
    assert numbers(closed_only.get_json()) and closed_a.number in numbers(closed_only.get_json())
    assert in_a.number not in numbers(closed_only.get_json())


def test_paged_newest_first(app: Flask, city: City, make_case: MakeCase, limits: Redis) -> None:
    base = datetime.now(UTC) + timedelta(days=1)  # newer than anything else in the city
    newest = make_case("filed", city.a, reported=base)
    older = make_case("filed", city.a, reported=base - timedelta(minutes=5))
    web = browser(app)

    first = web.get(f"/nearby.json?community={COMMUNITY_A}&page_size=1").get_json()
    second = web.get(f"/nearby.json?community={COMMUNITY_A}&page_size=1&page=2").get_json()

    assert numbers(first) == [newest.number] and first["has_more"] is True
    assert numbers(second) == [older.number]


def test_duplicates_of_a_class_within_its_radius(
    app: Flask, city: City, make_case: MakeCase, limits: Redis
) -> None:
    """E0102's duplicate radius is 30 m and window 72 h: the panel of the report page."""
    close = make_case("dispatched", shifted(city.a, 10))
    too_far = make_case("dispatched", shifted(city.a, 90))
    other_class = make_case("dispatched", shifted(city.a, 10), category="E0108")
    closed = make_case("closed", shifted(city.a, 5))
    too_old = make_case("filed", shifted(city.a, 5), reported=datetime.now(UTC) - timedelta(days=5))
    web = browser(app)

    answer = web.get(f"/nearby.json?duplicates=1&category=E0102&lon={city.a[0]}&lat={city.a[1]}")

    got = numbers(answer.get_json())
    assert close.number in got
    for case in (too_far, other_class, closed, too_old):
        assert case.number not in got
    assert answer.get_json()["radius_m"] == 30


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),
        ("lon=-118.2", 400),
        ("lon=200&lat=34", 400),
        ("lon=abc&lat=34", 400),
        ("lon=-118.2&lat=34&radius=5000", 400),
        ("lon=-118.2&lat=34&radius=-1", 400),
        ("lon=-118.2&lat=34&state=everything", 400),
        ("lon=-118.2&lat=34&page=0", 400),
        ("duplicates=1&lon=-118.2&lat=34", 400),
        ("community=999999999999", 404),
        ("lon=-118.2&lat=34&category=Z9999", 404),
    ],
)
def test_bad_queries_are_4xx(app: Flask, city: City, query: str, status: int) -> None:
    answer = browser(app).get(f"/nearby.json?{query}")

    assert answer.status_code == status
    assert answer.get_json()["error"]["message"]


def test_the_page_lists_and_maps_them(
    app: Flask, city: City, make_case: MakeCase, limits: Redis
) -> None:
    shown = make_case("dispatched", city.a)
    hidden = make_case("reported", city.a)
    web = browser(app)

    empty = web.get("/nearby")
    page = web.get(f"/nearby?lon={city.a[0]}&lat={city.a[1]}&radius=250")
    by_community = web.get(f"/nearby?community={COMMUNITY_A}")
    bad = web.get("/nearby?lon=1000&lat=1")

    assert empty.status_code == 200 and b'id="nearby-map"' in empty.data
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'data-case="{shown.number}"' in html and hidden.number not in html
    assert "nearby-markers" in html and "leaflet.js" in html
    assert shown.number in by_community.get_data(as_text=True)
    assert bad.status_code == 400


def test_a_community_is_followed_from_its_own_page(
    app: Flask, city: City, db_session: Session, make_case: MakeCase, limits: Redis
) -> None:
    """The community's near-me page links to its follow (confirmed by a link first, as from
    a case's page); a page near a point has no community to follow."""
    make_case("dispatched", city.a)
    web = browser(app)

    page = web.get(f"/nearby?community={COMMUNITY_A}").get_data(as_text=True)
    near = web.get(f"/nearby?lon={city.a[0]}&lat={city.a[1]}&radius=250").get_data(as_text=True)

    link = re.search(r'<a id="nearby-follow"[^>]* href="([^"]+)"', page)
    assert link is not None and "Follow new cases here" in page
    area_id = city.communities[COMMUNITY_A]
    assert link.group(1) == f"/communities/{area_id}/follow"
    assert 'id="nearby-follow"' not in near
    form = web.get(link.group(1))
    assert form.status_code == 200
    sent = web.post(link.group(1), {"email": "Near.Me@Example.org"})
    assert sent.status_code == 200
    (follow,) = db_session.scalars(
        select(Subscription).where(Subscription.community_id == area_id)
    ).all()
    assert (follow.kind, follow.address, follow.confirmed_at) == (
        "community", "near.me@example.org", None,
    )  # fmt: skip
    (confirm,) = db_session.scalars(select(Notice).where(Notice.subscription_id == follow.id)).all()
    assert confirm.kind == "confirm"


# ---------------------------------------------------------------- support


def support(web, number: str, **body: str):  # type: ignore[no-untyped-def]
    return web.api(f"/track/{number}/support", body)


def supporters(session: Session, case_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(CaseSupporter).where(CaseSupporter.case_id == case_id)
    )


def test_one_support_per_person(
    app: Flask, db_session: Session, make_case: MakeCase, limits: Redis
) -> None:
    case = make_case("dispatched")
    anonymous, other, citizen = browser(app), browser(app), browser(app, "citizen")

    first = support(anonymous, case.number, email="Wen.4K@Example.org", name="Wen")
    again = support(anonymous, case.number, email="wen.4k@example.org")
    by_phone = support(other, case.number, phone="+1 (213) 555-0101")
    signed = support(citizen, case.number)
    signed_again = support(citizen, case.number)

    assert (first.status_code, first.get_json()["created"]) == (201, True)
    assert first.get_json()["supporters"] == 1
    assert (again.status_code, again.get_json()["created"]) == (200, False)
    assert again.get_json()["supporters"] == 1
    assert by_phone.status_code == 201 and signed.status_code == 201
    assert signed_again.status_code == 200 and signed_again.get_json()["supporters"] == 3
    assert supporters(db_session, case.id) == 3
    row = db_session.scalar(select(CaseSupporter).where(CaseSupporter.user_id.isnot(None)))
    assert row is not None and row.contact == {}


def test_a_supporter_with_an_email_is_asked_to_confirm_a_follow(
    app: Flask, db_session: Session, make_case: MakeCase, limits: Redis
) -> None:
    """Supported, then told what happens: the follow of the case by e-mail waits for its
    confirmation (double opt-in), whose message is queued; a phone hears at once, as a
    reporter's does, starting with where the case stands (its unit and deadline)."""
    deadline = datetime.now(UTC) + timedelta(days=3)
    case = make_case("dispatched", deadline=deadline)
    assert support(browser(app), case.number, email="Ana@Example.org").status_code == 201
    assert support(browser(app), case.number, phone="+1 213 555 0102").status_code == 201
    follows = db_session.scalars(
        select(Subscription).where(Subscription.case_id == case.id).order_by(Subscription.id)
    ).all()
    assert [(f.kind, f.channel, f.address, f.confirmed_at is not None) for f in follows] == [
        ("case", "email", "ana@example.org", False),
        ("case", "sms", "+12135550102", True),
    ]
    sent = db_session.scalars(select(Notice).where(Notice.case_id == case.id).order_by(Notice.id))
    assert [(n.kind, n.recipient, n.channel) for n in sent] == [
        ("confirm", "ana@example.org", "email"),
        ("dispatched", "+12135550102", "sms"),
    ]
    unit = db_session.get(Unit, case.unit_id)
    assert unit is not None
    stands = db_session.scalars(
        select(Notice).where(Notice.case_id == case.id, Notice.kind == "dispatched")
    ).one()
    assert stands.data == {"unit": unit.name, "deadline": deadline.isoformat()}


def test_a_signed_in_supporter_hears_back_by_the_contact_given(
    app: Flask, city: City, db_session: Session, make_case: MakeCase, limits: Redis
) -> None:
    """Accounts have no address: a citizen who gives one on the form hears back (supporting
    again with one, after a first support without, starts it); none given, counted only."""
    case = make_case("handled")
    citizen = browser(app, "citizen")

    bare = support(citizen, case.number)
    assert bare.status_code == 201
    assert not db_session.scalars(select(Notice).where(Notice.case_id == case.id)).all()
    again = support(citizen, case.number, email="citizen.mail@example.org", phone="2135550177")
    twice = support(citizen, case.number, email="citizen.mail@example.org", phone="2135550177")

    assert again.status_code == 200 and again.get_json()["supporters"] == 1
    assert twice.status_code == 200
    sent = db_session.scalars(select(Notice).where(Notice.case_id == case.id).order_by(Notice.id))
    assert [(n.kind, n.recipient) for n in sent] == [
        ("confirm", "citizen.mail@example.org"),
        ("done", "2135550177"),  # reported fixed, being checked: where it stands
    ]
    row = db_session.scalar(select(CaseSupporter).where(CaseSupporter.case_id == case.id))
    assert row is not None and row.user_id == city.users["citizen"]


def test_a_merged_report_supports_the_case_it_joined(
    app: Flask, db_session: Session, make_case: MakeCase, limits: Redis
) -> None:
    target = make_case("in_progress")
    merged = make_case("merged", merged_into_id=target.id)

    answer = support(browser(app), merged.number, email="x.merge@example.org")

    assert answer.status_code == 201 and answer.get_json()["number"] == target.number
    assert supporters(db_session, target.id) == 1 and supporters(db_session, merged.id) == 0


@pytest.mark.parametrize(
    ("status", "user", "body", "expected"),
    [
        ("dispatched", None, {}, 400),  # nobody to count or tell
        ("dispatched", None, {"email": "not-an-address"}, 400),
        ("dispatched", None, {"phone": "12"}, 400),
        ("dispatched", None, {"email": "a@b.org" + "x" * 300}, 400),
        ("closed", None, {"email": "late@example.org"}, 409),
        ("reported", None, {"email": "early@example.org"}, 404),  # not public yet
        ("rejected", None, {"email": "no@example.org"}, 404),
        ("dispatched", "operator", {}, 403),
        ("dispatched", "staff", {}, 403),
    ],
)
def test_support_refusals(
    app: Flask,
    db_session: Session,
    make_case: MakeCase,
    limits: Redis,
    status: str,
    user: str | None,
    body: dict[str, str],
    expected: int,
) -> None:
    case = make_case(status)

    answer = support(browser(app, user), case.number, **body)

    assert answer.status_code == expected, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["message"]
    assert supporters(db_session, case.id) == 0


def test_support_of_an_unknown_case(app: Flask, city: City, limits: Redis) -> None:
    answer = support(browser(app), "NO-SUCH-CASE", email="a@example.org")

    assert answer.status_code == 404


def test_support_is_rate_limited(
    app: Flask,
    db_session: Session,
    make_case: MakeCase,
    limits: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config, "RATE_SUPPORT_PER_CLIENT", 2)
    case = make_case("dispatched")
    web = browser(app)

    answers = [support(web, case.number, email=f"p{i}@example.org") for i in range(3)]

    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].headers["Retry-After"]
    assert supporters(db_session, case.id) == 2


def test_a_form_without_javascript_goes_to_the_tracking_page(
    app: Flask, make_case: MakeCase, limits: Redis
) -> None:
    case = make_case("dispatched")

    answer = browser(app).post(f"/track/{case.number}/support", {"email": "form@example.org"})

    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"/track/{case.number}")


def test_operators_see_the_count_and_suggestions_rank_by_it(
    app: Flask, city: City, db_session: Session, make_case: MakeCase, limits: Redis
) -> None:
    """Two open cases within E0102's 30 m of a new report: the farther one, supported by two
    people, is suggested first."""
    nearest = make_case("dispatched", shifted(city.a, 5))
    supported = make_case("dispatched", shifted(city.a, 20))
    new = make_case("reported", city.a)
    before = [c.id for c, _ in queries.duplicates_of(db_session, [new.id])[new.id]]
    for email in ("one@example.org", "two@example.org"):
        assert support(browser(app), supported.number, email=email).status_code == 201

    after = [c.id for c, _ in queries.duplicates_of(db_session, [new.id])[new.id]]
    page = browser(app, "operator").get(f"/cases/{supported.id}")
    plain = browser(app, "operator").get(f"/cases/{nearest.id}")

    assert before.index(nearest.id) < before.index(supported.id)
    assert after.index(supported.id) < after.index(nearest.id)
    assert '<dd class="supporters">2</dd>' in page.get_data(as_text=True)
    assert 'class="supporters"' not in plain.get_data(as_text=True)


def test_the_report_page_has_the_panel(app: Flask, city: City) -> None:
    page = browser(app).get("/report").get_data(as_text=True)

    assert 'id="already-reported"' in page and 'data-may-support="yes"' in page
    assert "js/nearby.js" in page
    operator = browser(app, "operator").get("/report").get_data(as_text=True)
    assert 'data-may-support="no"' in operator
