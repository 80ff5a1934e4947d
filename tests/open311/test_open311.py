"""Open311 GeoReport v2 (`/open311/v2/`) over HTTP, in JSON and in XML, on the seeded demo city.

The demo city is seeded once for the module in a transaction rolled back at its end; each test
runs in a savepoint of it, and the app's scoped session is bound to that connection, so what
the requests change is rolled back after the test. Redis is the test database, flushed around
each test. Every response of every test is checked: no 5xx, ever (`no_server_errors`).

Tests marked `xfail(strict=True)` pin product bugs (the reason says where): they fail today and
will turn into errors (XPASS) once the bug is fixed, so the marker is removed with the fix.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, request_finished
from flask import request as flask_request
from flask.testing import FlaskClient
from geoalchemy2.shape import to_shape
from redis import Redis
from rq import Queue
from sqlalchemy import func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from cases import intake, open311
from cases.intake import ReportInput
from cases.models import Case, CaseSource, Category, Photo
from dispatch.jobs import dispatch_cases
from gridmgmt import create_app
from gridmgmt.kernel import ratelimit
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import NotFound
from gridmgmt.kernel.models import ApiKey
from gridmgmt.kernel.queue import DISPATCH_QUEUE
from tests.open311.open311_support import DEMO_KEY, OPEN311, City, seeded_city
from tests.support import browser, csrf_token, fresh_request_globals, jpeg, nested

FORMATS = ["json", "xml"]
GARBAGE = "E0102"  # exposed garbage: a community class, no attributes
COVER = "C0101"  # water supply manhole cover: one singlevaluelist attribute, cover_state
COVER_STATES = ["missing", "broken", "displaced", "uneven"]
CATALOGUE_SIZE = 95
SECRET_CONTACT = {
    "email": "zebulon.quackenbush@example.org",
    "phone": "+1-213-555-0199",
    "first_name": "Zebulon",
    "last_name": "Quackenbush",
}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[City]:
    with seeded_city() as seeded:
        yield seeded


@pytest.fixture
def session(city: City, redis_conn: Redis) -> Iterator[Session]:
    """The app's session on the seeded city (and a clean Redis); rolled back after the test."""
    db.session.remove()
    with nested(city.connection) as session:
        yield session


@pytest.fixture(autouse=True)
def no_server_errors(request: pytest.FixtureRequest) -> Iterator[list[tuple[str, int]]]:
    """Every response any app sends during the test is below 500 (xfail tests pin bugs that
    are 500s today, so they are exempt)."""
    answered: list[tuple[str, int]] = []

    def record(sender: Flask, response: Any, **_extra: Any) -> None:
        answered.append((f"{flask_request.method} {flask_request.path}", response.status_code))

    request_finished.connect(record)
    try:
        yield answered
    finally:
        request_finished.disconnect(record)
    if request.node.get_closest_marker("xfail") is None:
        assert [a for a in answered if a[1] >= 500] == []


@dataclass
class Open311:
    """A client of the Open311 endpoint (a fresh `g` for every request)."""

    client: FlaskClient

    def get(self, path: str, **query: Any) -> TestResponse:
        fresh_request_globals()
        return self.client.get(f"{OPEN311}/{path}", query_string=query)

    def post(
        self,
        fmt: str = "json",
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        multipart: bool = False,
        query: dict[str, str] | None = None,
        path: str | None = None,
    ) -> TestResponse:
        fresh_request_globals()
        return self.client.post(
            path or f"{OPEN311}/requests.{fmt}",
            data=data or {},
            headers=headers or {},
            query_string=query,
            content_type="multipart/form-data" if multipart else None,
        )


@pytest.fixture
def o311(app: Flask, session: Session, photo_dir: Path) -> Open311:
    return Open311(app.test_client())


def form(city: City, code: str = GARBAGE, **fields: Any) -> dict[str, Any]:
    """A valid report of `code` at the community's point, with the demo key."""
    return {
        "api_key": DEMO_KEY,
        "service_code": code,
        "lat": str(city.lat),
        "long": str(city.lon),
        "description": "bags of garbage on the pavement",
        **fields,
    }


# ---------------------------------------------------------------- reading responses


def parsed(response: TestResponse, fmt: str) -> Any:
    """The body as JSON, or the root element of the XML (which must be well-formed)."""
    if fmt == "json":
        assert response.mimetype == "application/json", response.mimetype
        return response.get_json()
    assert response.mimetype == "text/xml", response.mimetype
    raw = response.get_data()
    assert raw.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(raw)


def records(response: TestResponse, fmt: str, root: str, item: str) -> list[dict[str, str]]:
    """A list response as dicts of text (XML: `<root><item>...</item></root>`)."""
    body = parsed(response, fmt)
    if fmt == "json":
        return [{k: "" if v is None else str(v) for k, v in row.items()} for row in body]
    assert body.tag == root
    assert all(child.tag == item for child in body)
    return [{field.tag: field.text or "" for field in child} for child in body]


def assert_error(response: TestResponse, fmt: str, status: int, contains: str = "") -> str:
    """The spec's error list: one {code, description} with the HTTP status as code."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    [error] = records(response, fmt, "errors", "error")
    assert set(error) == {"code", "description"}
    assert error["code"] == str(status)
    assert contains in error["description"], error["description"]
    return error["description"]


def created(response: TestResponse, fmt: str, status: int = 201) -> dict[str, str]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    [row] = records(response, fmt, "service_requests", "request")
    assert set(row) == {"service_request_id", "token", "service_notice", "account_id"}
    assert row["service_request_id"] and row["token"]
    return row


def case_of(number: str) -> Case:
    """The case, read fresh through the app's current session (a CLI command or a job may
    have replaced the session the test started with)."""
    session = db.session()
    session.expire_all()
    case = session.scalar(select(Case).where(Case.number == number))
    assert case is not None, number
    return case


def count_cases() -> int:
    return db.session.scalar(select(func.count()).select_from(Case)) or 0


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---------------------------------------------------------------- discovery and services


@pytest.mark.parametrize("fmt", FORMATS)
def test_discovery(o311: Open311, fmt: str) -> None:
    response = o311.get(f"discovery.{fmt}")

    assert response.status_code == 200
    body = parsed(response, fmt)
    if fmt == "json":
        [endpoint] = body["endpoints"]
        formats = endpoint["formats"]
        url, spec = endpoint["url"], endpoint["specification"]
    else:
        assert body.tag == "discovery"
        [endpoint] = body.findall("endpoints/endpoint")
        formats = [f.text for f in endpoint.findall("formats/format")]
        url, spec = endpoint.findtext("url"), endpoint.findtext("specification")
    assert formats == ["application/json", "text/xml"]
    assert url == "http://localhost/open311/v2/"
    assert spec == "http://wiki.open311.org/GeoReport_v2"


@pytest.mark.parametrize("fmt", FORMATS)
def test_services_are_exactly_the_catalogue(o311: Open311, session: Session, fmt: str) -> None:
    response = o311.get(f"services.{fmt}")

    assert response.status_code == 200
    rows = records(response, fmt, "services", "service")
    categories = session.scalars(select(Category).where(Category.active).order_by(Category.code))
    expected = {c.code: c for c in categories}
    assert len(rows) == len(expected) == CATALOGUE_SIZE
    assert [r["service_code"] for r in rows] == list(expected)
    by_code = {r["service_code"]: r for r in rows}
    assert by_code[COVER]["service_name"] == expected[COVER].name_en
    assert by_code[COVER]["metadata"].lower() == "true"  # it has attributes
    assert by_code[GARBAGE]["metadata"].lower() == "false"
    assert {r["type"] for r in rows} == {"realtime"}
    assert all(r["group"] and r["description"] for r in rows)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", ["services", "service"])
def test_service_definition(o311: Open311, fmt: str, path: str) -> None:
    response = o311.get(f"{path}/{COVER}.{fmt}")

    assert response.status_code == 200
    body = parsed(response, fmt)
    if fmt == "json":
        assert body["service_code"] == COVER
        [attribute] = body["attributes"]
        keys = [v["key"] for v in attribute["values"]]
        fields = {k: str(v) for k, v in attribute.items() if k != "values"}
    else:
        assert body.tag == "service_definition"
        assert body.findtext("service_code") == COVER
        [attribute] = body.findall("attributes/attribute")
        keys = [v.findtext("key") for v in attribute.findall("values/value")]
        fields = {f.tag: f.text or "" for f in attribute if f.tag != "values"}
    assert keys == COVER_STATES
    assert fields["code"] == "cover_state"
    assert fields["datatype"] == "singlevaluelist"
    assert fields["required"].lower() == "false"
    assert fields["variable"].lower() == "true"
    assert fields["order"] == "1"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_service_without_attributes_has_an_empty_definition(o311: Open311, fmt: str) -> None:
    body = parsed(o311.get(f"services/{GARBAGE}.{fmt}"), fmt)
    if fmt == "json":
        assert body == {"service_code": GARBAGE, "attributes": []}
    else:
        assert body.findtext("service_code") == GARBAGE
        assert body.findall("attributes/attribute") == []


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", ["services", "service"])
def test_unknown_service_is_a_404_in_the_spec_format(o311: Open311, fmt: str, path: str) -> None:
    assert_error(o311.get(f"{path}/X9999.{fmt}"), fmt, 404, "unknown service_code 'X9999'")


def test_unknown_format_is_a_404_list(o311: Open311) -> None:
    assert_error(o311.get("services.csv"), "json", 404, "unknown format 'csv'")


# ---------------------------------------------------------------- POST requests


@pytest.mark.parametrize("fmt", FORMATS)
def test_form_encoded_report_is_a_case_at_once(
    o311: Open311, session: Session, city: City, fmt: str
) -> None:
    response = o311.post(fmt, form(city, account_id="acct-7"))

    row = created(response, fmt)
    assert row["account_id"] == "acct-7"
    case = case_of(row["service_request_id"])
    demo_key = db.session.scalar(select(ApiKey).where(ApiKey.name == "demo-app"))
    assert demo_key is not None
    assert (case.source, case.status, case.dispatch_state) == ("open311", "reported", "none")
    assert case.api_key_id == demo_key.id
    assert case.description == "bags of garbage on the pavement"
    assert case.category.code == GARBAGE
    assert case.cell_id is not None and case.community_id is not None
    token = o311.get(f"tokens/{row['token']}.{fmt}")
    assert records(token, fmt, "service_requests", "request") == [
        {"service_request_id": case.number, "token": row["token"]}
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_multipart_report_keeps_the_photo(
    o311: Open311, session: Session, city: City, photo_dir: Path, fmt: str
) -> None:
    data = {**form(city), "media": (io.BytesIO(jpeg()), "pothole.jpg", "image/jpeg")}

    row = created(o311.post(fmt, data, multipart=True), fmt)

    case = case_of(row["service_request_id"])
    assert (case.source, case.status) == ("open311", "reported")
    [photo] = db.session.scalars(select(Photo).where(Photo.case_id == case.id))
    assert (photo.kind, photo.mime, photo.width, photo.height) == ("before", "image/jpeg", 48, 32)
    stored = photo_dir / photo.path
    assert stored.read_bytes().startswith(b"\xff\xd8")
    assert (photo_dir / photo.thumb_path).exists()


def test_a_fake_photo_is_refused(o311: Open311, session: Session, city: City) -> None:
    before = count_cases()
    data = {**form(city), "media": (io.BytesIO(b"not an image"), "x.jpg", "image/jpeg")}

    assert_error(o311.post("json", data, multipart=True), "json", 400, "x.jpg")
    assert count_cases() == before


def test_api_key_in_the_query_string(o311: Open311, session: Session, city: City) -> None:
    data = form(city)
    del data["api_key"]

    row = created(o311.post("json", data, query={"api_key": DEMO_KEY}), "json")

    assert case_of(row["service_request_id"]).source == "open311"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("key", "message"),
    [(None, "api_key is required"), ("", "api_key is required"), ("wrong", "not valid")],
)
def test_api_key_missing_or_wrong_is_403(
    o311: Open311, session: Session, city: City, fmt: str, key: str | None, message: str
) -> None:
    data = form(city)
    if key is None:
        del data["api_key"]
    else:
        data["api_key"] = key
    before = count_cases()

    assert_error(o311.post(fmt, data), fmt, 403, message)
    assert count_cases() == before


@pytest.mark.parametrize(
    ("given", "accepted"),
    [(None, True), ("", True), ("la.gridmgmt.example", True), ("nyc.example", False)],
)
def test_jurisdiction_id(
    o311: Open311, app: Flask, city: City, given: str | None, accepted: bool
) -> None:
    assert app.config["OPEN311_JURISDICTION"] == "la.gridmgmt.example"
    query = {} if given is None else {"jurisdiction_id": given}
    data = form(city, **query)

    responses = {
        "POST requests": (o311.post("json", data), 201),
        "GET services": (o311.get("services.json", **query), 200),
        "GET requests": (o311.get("requests.json", **query), 200),
    }

    for what, (response, ok) in responses.items():
        if accepted:
            assert response.status_code == ok, (what, response.get_data(as_text=True))
        else:
            assert_error(response, "json", 404, "jurisdiction_id 'nyc.example' is not this city")


@pytest.mark.parametrize(
    "path", [f"services/{COVER}.json", f"service/{COVER}.json", "requests/{id}", "tokens/{token}"]
)
def test_another_jurisdiction_is_a_404_on_every_read(o311: Open311, city: City, path: str) -> None:
    row = created(o311.post("json", form(city)), "json")
    path = path.format(id=f"{row['service_request_id']}.json", token=f"{row['token']}.json")
    assert_error(o311.get(path, jurisdiction_id="nyc.example"), "json", 404, "jurisdiction_id")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("service_code", "service_code is required"),
        ("lat", "lat and long are required"),
        ("long", "lat and long are required"),
    ],
)
def test_missing_fields_are_400(
    o311: Open311, session: Session, city: City, fmt: str, missing: str, message: str
) -> None:
    data = form(city)
    del data[missing]
    before = count_cases()

    assert_error(o311.post(fmt, data), fmt, 400, message)
    assert count_cases() == before


def test_an_address_alone_is_400_with_a_clear_message(o311: Open311, city: City) -> None:
    data = form(city, address_string="600 W 5th St, Los Angeles")
    del data["lat"], data["long"]

    description = assert_error(o311.post("json", data), "json", 400)

    assert description == "this city does not geocode addresses: send lat and long"


@pytest.mark.parametrize(
    ("lat", "long", "message"),
    [
        ("91", "-118.25", "out of range"),
        ("-90.5", "-118.25", "out of range"),
        ("34.05", "181", "out of range"),
        ("north", "-118.25", "lat must be a number"),
        ("40.7128", "-74.0060", "outside the territory"),  # New York: a real point, not here
        ("0", "0", "outside the territory"),
    ],
)
def test_bad_coordinates_are_400(
    o311: Open311, session: Session, city: City, lat: str, long: str, message: str
) -> None:
    before = count_cases()

    assert_error(o311.post("json", form(city, lat=lat, long=long)), "json", 400, message)
    assert count_cases() == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_attributes_are_checked_against_the_definition(
    o311: Open311, session: Session, city: City, fmt: str
) -> None:
    bad = form(city, COVER, **{"attribute[cover_state]": "stolen"})
    unknown = form(city, COVER, **{"attribute[colour]": "red"})
    good = form(city, COVER, **{"attribute[cover_state]": "missing"})

    assert_error(o311.post(fmt, bad), fmt, 400, "attribute[cover_state] is one of")
    assert_error(o311.post(fmt, unknown), fmt, 400, "unknown attribute 'colour'")
    row = created(o311.post(fmt, good), fmt)
    assert case_of(row["service_request_id"]).attributes == {"cover_state": "missing"}


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999"])
def test_a_number_attribute_must_be_finite(
    o311: Open311, city: City, answers_500: None, value: str
) -> None:
    before = count_cases()
    data = form(city, "E0101", **{"attribute[area_m2]": value})  # a number attribute

    assert_error(o311.post("json", data), "json", 400, "attribute[area_m2] must be a number")
    assert count_cases() == before


def test_a_required_attribute_must_be_sent(o311: Open311, session: Session, city: City) -> None:
    category = session.scalar(select(Category).where(Category.code == COVER))
    assert category is not None
    category.attributes = [{**category.attributes[0], "required": True}]
    session.commit()

    definition = o311.get(f"services/{COVER}.json").get_json()
    assert definition["attributes"][0]["required"] is True
    assert_error(
        o311.post("json", form(city, COVER)), "json", 400, "attribute[cover_state] is required"
    )
    created(o311.post("json", form(city, COVER, **{"attribute[cover_state]": "broken"})), "json")


# ---------------------------------------------------------------- privacy


def test_contact_details_are_never_in_a_get_response(
    app: Flask, o311: Open311, session: Session, city: City
) -> None:
    data = form(city, device_id="device-311", **SECRET_CONTACT)
    row = created(o311.post("json", data), "json")
    number, token = row["service_request_id"], row["token"]
    case = case_of(number)
    assert case.contact == {  # kept for the operator...
        "name": "Zebulon Quackenbush",
        "email": SECRET_CONTACT["email"],
        "phone": SECRET_CONTACT["phone"],
        "device_id": "device-311",
    }
    staff = browser(app, "operator")

    bodies = []
    for fmt in FORMATS:
        for path in (f"requests.{fmt}", f"requests/{number}.{fmt}", f"tokens/{token}.{fmt}"):
            response = o311.get(path)
            assert response.status_code == 200, path
            bodies.append(response.get_data(as_text=True))
        listed = o311.get(f"requests.{fmt}", service_request_id=number)
        assert number in listed.get_data(as_text=True)
        bodies.append(listed.get_data(as_text=True))
    for path in (f"/api/cases/{case.id}", f"/track/{number}"):
        response = staff.get(path)
        assert response.status_code == 200, path
        bodies.append(response.get_data(as_text=True))

    assert len(bodies) == 10  # ...and never shown
    for body in bodies:
        for secret in (*SECRET_CONTACT.values(), "device-311", "Zebulon", "Quackenbush"):
            assert secret not in body


# ---------------------------------------------------------------- GET requests


@dataclass(frozen=True)
class Three:
    """Three listed cases: two open (garbage two days ago, dispatched; a cover yesterday,
    filed), one closed (3 h ago)."""

    garbage: str
    cover: str
    closed: str
    times: dict[str, datetime]


@pytest.fixture
def three(session: Session, city: City, photo_dir: Path) -> Three:
    now = datetime.now(UTC).replace(microsecond=0)
    made: dict[str, tuple[str, datetime]] = {}
    for name, code, age, status in (
        ("garbage", GARBAGE, timedelta(days=2), "dispatched"),
        ("cover", COVER, timedelta(days=1), "filed"),
        ("closed", "E0108", timedelta(hours=3), "closed"),
    ):
        data = ReportInput(code, city.lon, city.lat, f"{name} case")
        case = intake.report_case(session, data, None, CaseSource.OPEN311, photo_dir).case
        at = now - age
        session.execute(
            update(Case).where(Case.id == case.id).values(reported_at=at, status=status)
        )
        made[name] = (case.number, at)
    session.commit()
    return Three(
        made["garbage"][0],
        made["cover"][0],
        made["closed"][0],
        {n: at for n, (_, at) in made.items()},
    )


def numbers_of(response: TestResponse, fmt: str = "json") -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return [r["service_request_id"] for r in records(response, fmt, "service_requests", "request")]


def w3c(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("fmt", FORMATS)
def test_requests_by_ids_service_dates_and_status(o311: Open311, three: Three, fmt: str) -> None:
    g, c, x, t = three.garbage, three.cover, three.closed, three.times

    def listed(**query: Any) -> list[str]:
        return numbers_of(o311.get(f"requests.{fmt}", **query), fmt)

    assert listed() == [x, c, g]  # newest first
    assert sorted(listed(service_request_id=f"{g},{x}")) == sorted([g, x])
    assert listed(service_request_id="20000101999999") == []
    assert listed(service_code=COVER) == [c]
    assert listed(service_code=f"{GARBAGE},{COVER}") == [c, g]
    assert listed(status="open") == [c, g]
    assert listed(status="closed") == [x]
    window = {"start_date": w3c(t["garbage"] + timedelta(hours=1)), "end_date": w3c(t["closed"])}
    assert listed(**window) == [x, c]
    assert listed(end_date=w3c(t["cover"])) == [c, g]
    offset = (t["cover"] - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-7)))
    assert listed(start_date=offset.isoformat()) == [x, c]  # a W3C date with an offset
    assert listed(start_date=w3c(t["closed"] + timedelta(minutes=1))) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_requests_are_paged(o311: Open311, three: Three, fmt: str) -> None:
    def page(number: int, size: int = 1) -> list[str]:
        return numbers_of(o311.get(f"requests.{fmt}", page=number, page_size=size), fmt)

    assert [page(1), page(2), page(3), page(4)] == [
        [three.closed],
        [three.cover],
        [three.garbage],
        [],
    ]
    assert page(1, 2) == [three.closed, three.cover]
    assert page(2, 2) == [three.garbage]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": "pending"}, "status is open or closed"),
        ({"start_date": "yesterday"}, "start_date must be a W3C date-time"),
        ({"end_date": "2026-13-01T00:00:00Z"}, "end_date must be a W3C date-time"),
        (
            {"start_date": "2026-03-02T00:00:00Z", "end_date": "2026-03-01T00:00:00Z"},
            "start_date is after end_date",
        ),
        ({"page": "two"}, "page and page_size are whole numbers"),
        ({"page_size": "1.5"}, "page and page_size are whole numbers"),
    ],
)
def test_bad_request_filters_are_400(
    o311: Open311, three: Three, query: dict[str, str], message: str
) -> None:
    assert_error(o311.get("requests.json", **query), "json", 400, message)
    assert_error(o311.get("requests.xml", **query), "xml", 400, message)


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_request_is_a_one_element_list(
    o311: Open311, session: Session, three: Three, fmt: str
) -> None:
    response = o311.get(f"requests/{three.cover}.{fmt}")

    [row] = records(response, fmt, "service_requests", "request")
    case = case_of(three.cover)
    assert row["service_request_id"] == three.cover
    assert (row["status"], row["service_code"], row["description"]) == ("open", COVER, "cover case")
    assert row["service_name"] == case.category.name_en
    assert float(row["lat"]) == pytest.approx(to_shape(case.location).y)
    assert iso(row["requested_datetime"]) == three.times["cover"]
    assert row["agency_responsible"] == "" and row["expected_datetime"] == ""  # not dispatched


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_request_and_token_are_404_lists(o311: Open311, fmt: str) -> None:
    assert_error(o311.get(f"requests/20000101999999.{fmt}"), fmt, 404, "no service request")
    assert_error(o311.get(f"tokens/0123456789abcdef.{fmt}"), fmt, 404, "unknown token")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_closed_case_shows_closed(o311: Open311, three: Three, fmt: str) -> None:
    [row] = records(o311.get(f"requests/{three.closed}.{fmt}"), fmt, "service_requests", "request")

    assert row["status"] == "closed"
    assert row["status_notes"] == "Closed"  # the public status text


# ---------------------------------------------------------------- paths


def test_doubled_and_trailing_slashes_answer_like_the_plain_path(
    app: Flask, o311: Open311, session: Session, city: City
) -> None:
    plain = o311.get("services.json")
    fresh_request_globals()
    odd = app.test_client().get("/open311//v2///services.json/")
    environ = EnvironBuilder(path="/", base_url="http://localhost/").get_environ()
    environ["PATH_INFO"] = "//open311//v2/services.json"
    fresh_request_globals()
    app_iter, status, headers = run_wsgi_app(app, environ)
    leading = b"".join(app_iter)

    assert plain.status_code == odd.status_code == 200
    assert status.startswith("200")
    assert odd.get_data() == plain.get_data() == leading
    assert headers["Content-Type"] == "application/json"

    posted = o311.post(data=form(city), path=f"{OPEN311}/requests.json/")
    assert posted.status_code == 201  # answered in place: no redirect for a POST
    created(posted, "json")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "nope.json", 404),
        ("GET", "requests/a%2Fb.json", 404),
        ("DELETE", "requests.json", 405),
    ],
)
def test_unknown_paths_answer_the_spec_error_list(
    o311: Open311, method: str, path: str, status: int
) -> None:
    fresh_request_globals()
    response = o311.client.open(f"{OPEN311}/{path}", method=method)
    assert_error(response, "json", status)


# ---------------------------------------------------------------- idempotency and rate limit


def test_the_same_idempotency_key_and_device_make_one_case(
    o311: Open311, session: Session, city: City
) -> None:
    before = count_cases()
    data = form(city, device_id="phone-42")
    headers = {"Idempotency-Key": "retry-5f0c2a9e"}

    first = created(o311.post("json", data, headers), "json", 201)
    again = created(o311.post("json", data, headers), "json", 200)
    other_device = created(o311.post("json", form(city, device_id="phone-43"), headers), "json")
    as_field = created(
        o311.post("json", {**data, "idempotency_key": "retry-5f0c2a9e"}), "json", 200
    )

    assert again["service_request_id"] == first["service_request_id"]
    assert as_field["service_request_id"] == first["service_request_id"]
    assert other_device["service_request_id"] != first["service_request_id"]
    assert count_cases() == before + 2


@pytest.fixture
def limited_app(app: Flask, database_url: URL, redis_url: str, photo_dir: Path) -> Iterator[Flask]:
    """A second app on the same database and Redis, allowing 2 POSTs a second per key."""
    second = create_app(
        {
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "PHOTO_DIR": str(photo_dir),
            "OPEN311_RATE_PER_KEY": 2,
        }
    )
    yield second
    with second.app_context():
        db.engine.dispose()


def test_the_third_post_in_a_second_is_429(
    limited_app: Flask, session: Session, city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limiter counts per api_key in one-second windows: pin the clock to one second."""
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: 1_795_000_000.25))
    client = limited_app.test_client()

    statuses = [client.post(f"{OPEN311}/requests.json", data=form(city)) for _ in range(3)]

    assert [r.status_code for r in statuses] == [201, 201, 429]
    assert statuses[2].headers["Retry-After"] == "1"
    assert_error(statuses[2], "json", 429, "at most 2 a second")
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: 1_795_000_001.25))
    assert client.post(f"{OPEN311}/requests.json", data=form(city)).status_code == 201


def test_bad_keys_are_limited_per_address_before_the_database_is_asked(
    limited_app: Flask, session: Session, city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: 1_795_000_000.25))
    monkeypatch.setitem(limited_app.config, "OPEN311_RATE_PER_IP", 3)
    asked: list[str] = []

    def unknown_key(_session: Session, secret: str) -> None:
        asked.append(secret)
        raise NotFound("unknown or revoked API key")

    monkeypatch.setattr(open311, "use_api_key", unknown_key)
    client = limited_app.test_client()

    statuses = [
        client.post(f"{OPEN311}/requests.json", data=form(city, api_key=f"guess-{n}")).status_code
        for n in range(5)
    ]

    assert statuses == [403, 403, 403, 429, 429]
    assert asked == ["guess-0", "guess-1", "guess-2"]


# ---------------------------------------------------------------- trusted channels and dispatch


def test_a_trusted_key_files_at_once_and_the_dispatch_shows(
    app: Flask, o311: Open311, session: Session, city: City, redis_conn: Redis
) -> None:
    queue = Queue(DISPATCH_QUEUE, connection=redis_conn)
    normal = created(o311.post("json", form(city)), "json")
    assert case_of(normal["service_request_id"]).status == "reported"
    assert queue.count == 0  # a normal key's report waits for the operator

    made = app.test_cli_runner().invoke(args=["apikey", "create", "hotline-12345", "--trusted"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.splitlines()[0]
    trusted = created(o311.post("json", {**form(city), "api_key": secret}), "json")

    case = case_of(trusted["service_request_id"])
    assert (case.status, case.dispatch_state) == ("filed", "queued")
    assert case.source == CaseSource.HOTLINE.value  # a trusted key is a verified channel
    [job] = queue.get_jobs()
    assert job.func_name == "dispatch.jobs.dispatch_cases"
    assert case.id in job.args[0]

    result = dispatch_cases(job.args[0])

    assert result["dispatched"] == 1
    case = case_of(trusted["service_request_id"])
    assert case.status == "dispatched" and case.unit_id is not None and case.deadline
    for fmt in FORMATS:
        response = o311.get(f"requests/{case.number}.{fmt}")
        [row] = records(response, fmt, "service_requests", "request")
        assert row["agency_responsible"] == city.unit_names[case.unit_id]
        assert iso(row["expected_datetime"]) == case.deadline.replace(microsecond=0)
        assert row["status"] == "open"


# ---------------------------------------------------------------- known bugs


@pytest.fixture
def answers_500(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors become 500 responses (as in production) instead of raising in the test."""
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)


@pytest.mark.parametrize("where", ["description", "email", "service_code", "GET id", "GET code"])
def test_nul_bytes_are_refused(o311: Open311, city: City, answers_500: None, where: str) -> None:
    if where == "GET id":
        response = o311.get("requests/2026%00.json")
        assert response.status_code == 400
    elif where == "GET code":
        response = o311.get("requests.json", service_code="E01\x0002")
        assert response.status_code == 400
    else:
        response = o311.post("json", form(city, **{where: "bad\x00value"}))
        assert response.status_code == 400
    assert response.get_json() == [
        {"code": 400, "description": "the request contains a NUL character"}
    ]


@pytest.mark.parametrize("path", ["/api/reports", "/api/cases/1/actions/accept"])
def test_a_nul_in_a_json_body_is_refused(
    app: Flask, session: Session, city: City, answers_500: None, path: str
) -> None:
    inspector = browser(app, "inspector")
    before = count_cases()
    body = {"category": GARBAGE, "lon": city.lon, "lat": city.lat, "description": "a\x00b"}

    response = inspector.api(path, {**body, "nested": [{"k\x00": 1}]} if "cases" in path else body)

    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == "the request contains a NUL character"
    assert count_cases() == before


@pytest.mark.parametrize(
    "query",
    [
        {"page": str(10**16)},
        {"end_date": "0001-01-01T00:00:00Z"},
        {"start_date": "2026-01-01T00:00:00+16:00"},
    ],
)
def test_far_pages_and_odd_dates_are_not_server_errors(
    o311: Open311, answers_500: None, query: dict[str, str]
) -> None:
    assert o311.get("requests.json", **query).status_code in (200, 400)


@pytest.mark.parametrize("path", [f"{OPEN311}/requests.json", "/api/reports"])
def test_a_field_name_with_a_line_break_is_no_server_error(
    o311: Open311, city: City, answers_500: None, path: str
) -> None:
    """A malformed part (a line break inside its name) is ignored or refused."""
    open311_fields = (("api_key", DEMO_KEY), ("service_code", GARBAGE), ("long", city.lon))
    staff_fields = (("category", GARBAGE), ("lon", city.lon))
    fields = [
        ("a\nb", "x"),
        ("lat", city.lat),
        *(open311_fields if path.startswith(OPEN311) else staff_fields),
    ]
    body = "".join(
        f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    )
    headers = {} if path.startswith(OPEN311) else {"X-CSRFToken": csrf_token(o311.client)}
    fresh_request_globals()
    response = o311.client.post(
        path,
        data=(body + "--b--\r\n").encode(),
        content_type="multipart/form-data; boundary=b",
        headers=headers,
    )
    assert response.status_code in (201, 400), response.get_data(as_text=True)[:300]


def test_xml_stays_well_formed_with_control_characters(o311: Open311, city: City) -> None:
    row = created(o311.post("json", form(city, description="bell\x07 and tab\x0b")), "json")

    response = o311.get(f"requests/{row['service_request_id']}.xml")

    assert parsed(response, "xml").findtext("request/description") is not None


def test_staff_api_reads_a_json_true_as_urgent(
    app: Flask, session: Session, city: City, photo_dir: Path
) -> None:
    inspector = browser(app, "inspector")
    body = {"category": GARBAGE, "lon": city.lon, "lat": city.lat, "urgent": True}

    response = inspector.api("/api/reports", body)

    assert response.status_code == 201
    assert response.get_json()["urgent"] is True
