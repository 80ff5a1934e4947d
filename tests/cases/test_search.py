"""The staff's case search (`/cases/search`, `cases.search`) on a clone of the demo city of its
own, with a few cases reported through the real intake and 120 copies for paging: each filter,
who may search what (a unit's staff never find another unit's case, not even by its number),
the security event of a search by a reporter's phone or e-mail, the CSV, paging, bad input.

The cases are committed in the clone, so the app answers as it would a real client."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from cases import intake, search
from cases.intake import ReportInput
from cases.models import Case, CaseSource
from cases.search import CaseQuery
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import Forbidden, InvalidInput
from gridmgmt.kernel.models import Unit, User
from gridmgmt.kernel.security_events import SecurityEvent, SecurityEventKind
from grids.models import Area
from tests.conftest import demo_clone
from tests.support import Web, copy_case, point_in, real_app
from tests.support import browser as client_for

STAFF_COMMUNITY = "990100006046"  # HISTORIC CULTURAL NC: the `staff` login's unit
OTHER_COMMUNITY = "990100006076"  # PICO UNION NC
COPIES = 120
COPY_PREFIX = "SRCH"
PHONE = "+1 (213) 555-0101"
EMAIL = "Resident@Example.org"
EVERYONE_WHO_SEARCHES = ["operator", "dispatcher", "leader", "admin"]


@dataclass(frozen=True)
class Seeded:
    """The numbers of the cases the module reported, and the ids it needs."""

    a: str  # staff's unit, with the reporter's phone and e-mail, dispatched, 2026-03-10
    b: str  # the other unit's, closed, 2026-05-20
    c: str  # staff's community, filed (no unit yet), 2026-05-21
    staff_unit: int
    other_unit: int
    staff_community: int
    other_community: int


@pytest.fixture(scope="module")
def search_db(demo_database_url: URL) -> Iterator[URL]:
    """A database of its own: a clone of the demo city."""
    with demo_clone("search", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def search_engine(search_db: URL) -> Iterator[Engine]:
    engine = create_engine(search_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def search_app(
    search_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """The real app on that database."""
    with real_app(search_db, redis_url, tmp_path_factory.mktemp("photos")) as app:
        yield app


def report(
    session: Session, community: str, category: str, address: str, contact: dict[str, str]
) -> str:
    """Report a case through the real intake, as a citizen's web report; its number."""
    lon, lat = point_in(session, community)
    data = ReportInput(category_code=category, lon=lon, lat=lat, address=address, contact=contact)
    result = intake.report_case(session, data, None, CaseSource.CITIZEN, Path("/nonexistent"))
    return result.number


def place(connection: Any, number: str, status: str, unit: int | None, at: str) -> None:
    """Put a reported case where the test needs it: a status, a unit, a report time."""
    connection.execute(
        text(
            "UPDATE cases SET status = :status, unit_id = :unit, reported_at = :at,"
            " closed_at = CASE WHEN :status = 'closed' THEN timestamptz :at + interval '1 day'"
            " END WHERE number = :number"
        ),
        {"status": status, "unit": unit, "at": at, "number": number},
    )


@pytest.fixture(scope="module")
def seeded(search_app: Flask, search_engine: Engine) -> Seeded:
    """Three cases (one with a reporter's contact) and 120 closed copies of the second."""
    with search_app.app_context(), db.transaction() as session:
        a = report(
            session, STAFF_COMMUNITY, "C0101", "120 Spring Street", {"phone": PHONE, "email": EMAIL}
        )
        b = report(session, OTHER_COMMUNITY, "C0102", "77 Pico Boulevard", {})
        c = report(session, STAFF_COMMUNITY, "C0102", "9 SPRING st", {})
    with Session(search_engine) as session:
        units = dict(
            session.execute(select(Area.code, Unit.id).join(Unit.community)).tuples().all()
        )
        areas = dict(session.execute(select(Area.code, Area.id)).tuples().all())
    with search_engine.begin() as connection:
        place(connection, a, "dispatched", units[STAFF_COMMUNITY], "2026-03-10T12:00:00Z")
        place(connection, b, "closed", units[OTHER_COMMUNITY], "2026-05-20T18:00:00Z")
        place(connection, c, "filed", None, "2026-05-21T18:00:00Z")
        copy_case(connection, b, COPIES, COPY_PREFIX, "1 hour")
    return Seeded(
        a=a,
        b=b,
        c=c,
        staff_unit=units[STAFF_COMMUNITY],
        other_unit=units[OTHER_COMMUNITY],
        staff_community=areas[STAFF_COMMUNITY],
        other_community=areas[OTHER_COMMUNITY],
    )


def web(app: Flask, username: str | None) -> Web:
    with app.app_context():
        return client_for(app, username)


def numbers(html: str) -> list[str]:
    """The case numbers of a result page, in order."""
    return re.findall(r'<tr data-case="([^"]+)">', html)


def found(app: Flask, username: str, **args: str) -> list[str]:
    answer = web(app, username).get("/cases/search", query_string=args)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:2000]
    return numbers(answer.get_data(as_text=True))


def flashed_error(html: str) -> str:
    hit = re.search(r'<p class="flash flash-error" role="alert">([^<]*)</p>', html)
    assert hit, "no error flashed"
    return hit.group(1)


def contact_events(engine: Engine, username: str) -> list[SecurityEvent]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(SecurityEvent)
                .where(
                    SecurityEvent.kind == SecurityEventKind.CONTACT_SEARCH.value,
                    SecurityEvent.username == username,
                )
                .order_by(SecurityEvent.id)
            )
        )


# ---------------------------------------------------------------- each filter


def test_by_whole_number_and_by_its_start(search_app: Flask, seeded: Seeded) -> None:
    assert found(search_app, "operator", number=seeded.a) == [seeded.a]
    assert found(search_app, "operator", number=seeded.a.lower()) == [seeded.a]  # any case
    by_start = found(search_app, "operator", number=COPY_PREFIX)
    assert len(by_start) == search.PAGE_SIZE
    assert all(n.startswith(COPY_PREFIX) for n in by_start)


def test_by_a_piece_of_the_address_in_any_case(search_app: Flask, seeded: Seeded) -> None:
    assert found(search_app, "dispatcher", address="spring") == [seeded.c, seeded.a]
    assert found(search_app, "dispatcher", address="PICO BOUL", reported_from="2026-01-01") == [
        seeded.b
    ]
    # LIKE's own wildcards are plain characters here
    assert found(search_app, "dispatcher", address="%_%") == []


# Addresses as ANALYZE would sample them in a city full of "Spring" and "Street".
SPRING_CITY = search.AddressSample(
    null_share=0.1,
    common=(("1 Spring Street", 0.3),),
    bounds=("2 Spring Street", "3 Spring Street", "4 Main Street", "5 Main Avenue"),
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("120 Spring Street", ["a"]),  # by "120"
        ("120 SPRING st", ["a"]),
        ("Spring Street 120", []),  # the whole text still decides
        ("77 Pico Boul", ["b"]),  # by "Pico" and "Boul"
        ("Boulevard Pico", []),
        ("9 SPRING st", ["c"]),  # every word frequent or short: by the whole text
        ("spring", ["c", "a"]),
    ],
)
def test_the_index_searched_by_rare_words_finds_the_same(
    search_app: Flask,
    seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
    address: str,
    expected: list[str],
) -> None:
    # the frequent words are left out of the index's search, never out of the result
    monkeypatch.setattr(search, "read_address_sample", lambda _bind: SPRING_CITY)
    numbers_of = {"a": seeded.a, "b": seeded.b, "c": seeded.c}
    args = {"address": address, "reported_from": "2026-01-01"}

    assert found(search_app, "dispatcher", **args) == [numbers_of[n] for n in expected]
    answer = web(search_app, "operator").get("/cases/search.csv", query_string=args)
    rows = csv.DictReader(io.StringIO(answer.get_data(as_text=True)))
    assert [row["number"] for row in rows] == [numbers_of[n] for n in expected]


def test_the_trigram_index_is_searched_by_the_rare_words_alone(
    search_app: Flask, search_engine: Engine, seeded: Seeded
) -> None:
    query = CaseQuery(address="120 Spring Street")
    indexed = search.address_words(query.address, SPRING_CITY)
    with search_app.app_context(), Session(search_engine) as session:
        operator = session.scalar(select(User).where(User.username == "operator"))
        assert operator is not None
        _scope, *address_terms = search.conditions(operator, query, ZoneInfo("UTC"), indexed)
        statement = select(Case.id).where(*address_terms)  # without the scope: one index
        compiled = statement.compile(search_engine)
        connection = session.connection()
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a small table
        plan = connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars().all()

    assert indexed == ("120",)
    at = next(
        i for i, line in enumerate(plan) if "Bitmap Index Scan on ix_cases_address_trgm" in line
    )
    assert "Index Cond: (address ~~* '%120%'::text)" in plan[at + 1]
    assert any("lower(address) ~~ '%120 spring street%'::text" in line for line in plan)


def test_by_class_status_unit_and_community(search_app: Flask, seeded: Seeded) -> None:
    assert found(search_app, "leader", category="C0101", address="street") == [seeded.a]
    assert found(search_app, "leader", status="filed", address="spring") == [seeded.c]
    assert found(search_app, "leader", unit_id=str(seeded.staff_unit), address="spring") == [
        seeded.a
    ]
    assert found(
        search_app, "leader", community_id=str(seeded.staff_community), status="dispatched"
    ) == [seeded.a]
    in_pico = found(search_app, "leader", community_id=str(seeded.other_community), status="closed")
    assert seeded.b in in_pico and seeded.a not in in_pico


def test_by_report_dates_in_the_city_time_zone(search_app: Flask, seeded: Seeded) -> None:
    both = found(search_app, "admin", reported_from="2026-05-20", reported_to="2026-05-21")
    assert both == [seeded.c, seeded.b]
    assert found(search_app, "admin", reported_from="2026-05-21") == [seeded.c]
    assert found(search_app, "admin", reported_to="2026-03-10", status="dispatched") == [seeded.a]


def test_by_the_reporters_phone_or_email(search_app: Flask, seeded: Seeded) -> None:
    assert found(search_app, "operator", phone="213 555 0101") == []  # digits must all match
    assert found(search_app, "operator", phone="1-213-555-0101") == [seeded.a]
    assert found(search_app, "operator", email="resident@EXAMPLE.org") == [seeded.a]
    assert found(search_app, "operator", email="other@example.org") == []


def test_results_show_no_reporter_contact(search_app: Flask, seeded: Seeded) -> None:
    html = web(search_app, "operator").get(f"/cases/search?number={seeded.a}").get_data(True)

    assert seeded.a in html and "120 Spring Street" in html
    assert "555-0101" not in html and "Example.org" not in html.replace("example.org", "")


# ---------------------------------------------------------------- who may search what


@pytest.mark.parametrize("username", EVERYONE_WHO_SEARCHES)
def test_supervisors_find_any_units_case(search_app: Flask, seeded: Seeded, username: str) -> None:
    assert found(search_app, username, number=seeded.b) == [seeded.b]
    assert found(search_app, username, number=seeded.a) == [seeded.a]


def test_unit_staff_find_only_their_units_cases(search_app: Flask, seeded: Seeded) -> None:
    assert found(search_app, "staff", number=seeded.a) == [seeded.a]
    assert found(search_app, "staff", number=seeded.b) == []  # another unit's, even by number
    assert found(search_app, "staff", number=COPY_PREFIX) == []
    # a filed case of their community has no unit yet: not theirs
    assert found(search_app, "staff", address="spring") == [seeded.a]
    # naming the other unit changes nothing
    assert found(search_app, "staff", unit_id=str(seeded.other_unit)) == []


def test_unit_staff_may_not_search_by_contact(
    search_app: Flask, search_engine: Engine, seeded: Seeded
) -> None:
    client = web(search_app, "staff")
    page = client.get("/cases/search").get_data(as_text=True)
    assert 'name="phone"' not in page and 'name="email"' not in page
    assert 'name="unit_id"' not in page

    for args in ({"phone": PHONE}, {"email": EMAIL}):
        answer = client.get("/cases/search", query_string=args)
        assert answer.status_code == 403
        html = answer.get_data(as_text=True)
        assert "phone or e-mail" in flashed_error(html) and seeded.a not in numbers(html)
        assert client.get("/cases/search.csv", query_string=args).status_code == 403
    assert contact_events(search_engine, "staff") == []


@pytest.mark.parametrize("username", ["inspector", "citizen"])
def test_inspectors_and_citizens_may_not_search(
    search_app: Flask, seeded: Seeded, username: str
) -> None:
    client = web(search_app, username)
    for path in ("/cases/search", f"/cases/search?number={seeded.a}", "/cases/search.csv"):
        assert client.get(path).status_code == 403, path


def test_anonymous_goes_to_sign_in(search_app: Flask, seeded: Seeded) -> None:
    for path in ("/cases/search", "/cases/search.csv?number=1"):
        answer = web(search_app, None).get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"]


def test_the_menu_offers_search_to_staff_only(search_app: Flask, seeded: Seeded) -> None:
    for username in [*EVERYONE_WHO_SEARCHES, "staff"]:
        assert 'href="/cases/search"' in web(search_app, username).get("/cases/search").get_data(
            True
        )
    for username in ("inspector", "citizen"):
        home = web(search_app, username).get("/report").get_data(as_text=True)
        assert 'href="/cases/search"' not in home


# ---------------------------------------------------------------- the security event


def test_a_contact_search_is_a_security_event(
    search_app: Flask, search_engine: Engine, seeded: Seeded
) -> None:
    before = len(contact_events(search_engine, "dispatcher"))
    client = web(search_app, "dispatcher")

    client.get("/cases/search", query_string={"phone": PHONE})
    client.get("/cases/search", query_string={"address": "spring"})  # no contact: no event
    client.get("/cases/search.csv", query_string={"email": EMAIL}).get_data()

    events = contact_events(search_engine, "dispatcher")[before:]
    assert [e.detail for e in events] == [
        {"fields": ["phone"], "csv": False, "phone": "…0101"},
        {"fields": ["email"], "csv": True, "email": "…@example.org"},
    ]
    assert all(e.path.startswith("/cases/search") and e.user_id for e in events)
    assert "555" not in str([e.detail for e in events])  # never the whole number


# ---------------------------------------------------------------- paging and CSV


def test_pages_newest_first_without_gaps_or_repeats(search_app: Flask, seeded: Seeded) -> None:
    client = web(search_app, "operator")
    url: str | None = f"/cases/search?number={COPY_PREFIX}"
    seen: list[str] = []
    while url:
        html = client.get(url).get_data(as_text=True)
        page = numbers(html)
        assert len(page) <= search.PAGE_SIZE
        seen += page
        hit = re.search(r'<a href="([^"#]+)#results" rel="next">', html)
        url = hit.group(1).replace("&amp;", "&") if hit else None
    expected = [f"{COPY_PREFIX}{n:08d}" for n in range(COPIES, 0, -1)]  # copy n is n hours on
    assert seen == expected


def test_the_csv_has_the_whole_result_without_contact(search_app: Flask, seeded: Seeded) -> None:
    answer = web(search_app, "operator").get(f"/cases/search.csv?number={COPY_PREFIX}")

    assert answer.status_code == 200
    assert answer.mimetype == "text/csv" and answer.headers["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True))))
    assert rows[0] == [header for header, _field in search.EXPORT_COLUMNS]
    assert [r[0] for r in rows[1:]] == [f"{COPY_PREFIX}{n:08d}" for n in range(COPIES, 0, -1)]
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["status"] == "closed" and first["category"] == "C0102"
    assert first["address"] == "77 Pico Boulevard" and first["unit"] == "PICO UNION NC"
    assert first["reported_at"].startswith("2001-01-07T00:00:00")  # 2001-01-02 + 120 h

    own = web(search_app, "operator").get(f"/cases/search.csv?number={seeded.a}")
    text_of_a = own.get_data(as_text=True)
    assert "120 Spring Street" in text_of_a and "555" not in text_of_a
    assert "xample" not in text_of_a


def test_the_csv_stops_at_its_cap_and_says_so(
    search_app: Flask, search_engine: Engine, seeded: Seeded
) -> None:
    with search_app.app_context(), Session(search_engine) as session:
        operator = session.scalar(select(User).where(User.username == "operator"))
        assert operator is not None
        query = CaseQuery(number=COPY_PREFIX)
        zone = ZoneInfo("UTC")
        rows = list(search.export_cases(db.read, operator, query, zone, "en", cap=70, chunk=30))
        whole = list(search.export_cases(db.read, operator, query, zone, "en", cap=COPIES))

    assert len(rows) == 71 and rows[-1] is None  # 70 rows, then "there were more"
    assert [r.number for r in rows[:-1] if r] == [r.number for r in whole[:70] if r]
    assert len(whole) == COPIES and None not in whole  # exactly at the cap: nothing more to say


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "field_hint"),
    [
        ({"reported_from": "2026-13-01"}, "date"),
        ({"reported_from": "yesterday"}, "date"),
        ({"reported_from": "2026-05-21", "reported_to": "2026-05-20"}, "first day"),
        ({"status": "lost"}, "status"),
        ({"number": "X" * 101}, "100 characters"),
        ({"number": "20261201 OR 1=1"}, "letters, digits"),
        ({"address": "ab"}, "3 characters"),
        ({"phone": "12"}, "digits"),
        ({"email": "nobody"}, "e-mail"),
        ({"category": "Z9999"}, "unknown class"),
        ({"unit_id": "abc"}, "unknown unit"),
        ({"unit_id": "999999"}, "unknown unit"),
        ({"community_id": "1"}, "unknown community"),  # a district, not a community
        ({"number": "SRCH", "after": "garbage"}, "page link"),
    ],
)
def test_bad_input_is_a_400_with_the_form(
    search_app: Flask, seeded: Seeded, args: dict[str, str], field_hint: str
) -> None:
    client = web(search_app, "operator")
    paths = ["/cases/search"] + ([] if "after" in args else ["/cases/search.csv"])
    for path in paths:
        answer = client.get(path, query_string=args)
        assert answer.status_code == 400, (path, args)
        html = answer.get_data(as_text=True)
        assert 'class="search-form"' in html
        assert field_hint in flashed_error(html), flashed_error(html)
        assert numbers(html) == []


def test_the_form_alone_without_filters(search_app: Flask, seeded: Seeded) -> None:
    html = web(search_app, "operator").get("/cases/search").get_data(as_text=True)

    assert 'class="search-form"' in html and 'name="phone"' in html
    assert numbers(html) == [] and "Cases found" not in html


# ---------------------------------------------------------------- the rules alone


def test_parse_query_normalises_what_it_keeps() -> None:
    query = search.parse_query(
        {"number": " srch00 ", "phone": "+86 138-0000-1234", "email": " A@B.CN ", "status": ""}
    )

    assert (query.number, query.phone, query.email, query.status) == (
        "SRCH00",
        "8613800001234",
        "a@b.cn",
        None,
    )
    assert query.contact_fields == ["phone", "email"]
    assert query.args() == {"number": "SRCH00", "phone": "8613800001234", "email": "a@b.cn"}


def test_cursor_round_trip_and_refusal() -> None:
    cursor = search.Cursor(datetime(2026, 5, 20, 18, 0, 0, 123456, tzinfo=UTC), 42)

    assert search.Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "1", "a.b", "1.2.3", "-1.2", "9" * 50 + ".1"):
        with pytest.raises(InvalidInput):
            search.Cursor.decode(bad)


def test_address_words_are_the_rare_ones_of_a_trigram_or_more() -> None:
    assert SPRING_CITY.share("STREET") == pytest.approx(0.3 + 0.6 * 3 / 4)
    assert SPRING_CITY.share("main") == pytest.approx(0.6 * 2 / 4)
    assert SPRING_CITY.share("pico") == 0.0

    assert search.address_words("77 Pico Boulevard", SPRING_CITY) == ("Pico", "Boulevard")
    assert search.address_words("770 Main Street 770", SPRING_CITY) == ("770",)
    assert search.address_words("9 S spring_st", SPRING_CITY) == ()  # "st" has no trigram
    assert search.address_words("9 S spring_blvd", SPRING_CITY) == ("blvd",)
    assert search.address_words("770 Pico", None) == ()  # no statistics yet: the whole text
    # no histogram: every address is among the most common ones...
    few = search.AddressSample(common=(("1 Main St", 0.5), ("2 Pico Blvd", 0.5)))
    assert search.address_words("Main 1", few) == ()
    assert search.address_words("Spring", few) == ("Spring",)
    # ... or the rest is unknown: as if every one had the word
    unknown_rest = search.AddressSample(common=(("1 Main St", 0.5),))
    assert search.address_words("Spring", unknown_rest) == ()


@pytest.mark.parametrize("role", ["inspector", "citizen"])
def test_check_access_refuses_roles_without_search(role: str) -> None:
    with pytest.raises(Forbidden):
        search.check_access(User(role=role), CaseQuery())
