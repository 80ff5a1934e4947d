"""The API schemas (`cases.schemas`): what the APIs really answer matches the published
component schemas, the serialiser gives what clients always got, and every channel's body is
parsed by the same code into the same service input.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from geoalchemy2.shape import to_shape
from pydantic import BaseModel
from redis import Redis
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage, MultiDict

from cases import schemas
from cases.api import case_json
from cases.forms import action_input, report_input
from cases.intake import ReportInput
from cases.lifecycle import ActionInput
from cases.models import Case
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import InvalidInput
from gridmgmt.kernel.i18n import localized
from tests.open311.open311_support import DEMO_KEY, OPEN311, City, seeded_city
from tests.support import browser, fresh_request_globals, jpeg, nested

GARBAGE = "E0102"  # a community class without attributes
COVER = "C0101"  # a class with a required attribute (cover_state)


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[City]:
    with seeded_city() as seeded:
        yield seeded


@pytest.fixture
def session(city: City, redis_conn: Redis, photo_dir: Path) -> Iterator[Session]:
    """The app's session on the seeded city; rolled back after the test."""
    db.session.remove()
    with nested(city.connection) as session:
        yield session


@pytest.fixture(scope="module")
def document(app: Flask) -> dict[str, Any]:
    """The served OpenAPI description."""
    return app.test_client().get("/openapi.json").get_json()


def conforms(document: dict[str, Any], component: str, body: Any) -> list[str]:
    """Why `body` does not match the published component schema (empty: it matches)."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
    return [str(error) for error in validator.iter_errors(body)]


def old_case_json(case: Case, full: bool = True) -> dict[str, Any]:
    """The serialiser `case_json` was before it became the models' dump (the oracle), and
    the one key added since: whether an event's note is public (issue 11)."""
    point = to_shape(case.location)
    data: dict[str, Any] = {
        "id": case.id,
        "number": case.number,
        "status": case.status,
        "category": case.category.code,
        "category_name": localized(case.category, "name"),
        "lon": point.x,
        "lat": point.y,
        "address": case.address,
        "urgent": case.urgent,
        "deadline": case.deadline.isoformat() if case.deadline else None,
        "unit_id": case.unit_id,
        "version": case.version,
        "rework_count": case.rework_count,
        "reported_at": case.reported_at.isoformat(),
    }
    if full:
        data["events"] = [
            {
                "action": e.action,
                "from": e.from_status,
                "to": e.to_status,
                "role": e.actor_role,
                "note": e.note,
                "public_note": bool(e.data.get("public_note")),
                "at": e.created_at.isoformat(),
            }
            for e in case.events
        ]
    return data


def report(city: City, **fields: Any) -> dict[str, Any]:
    return {"category": GARBAGE, "lon": city.lon, "lat": city.lat, **fields}


def test_staff_api_answers_match_their_published_schemas(
    app: Flask, session: Session, city: City, document: dict[str, Any]
) -> None:
    citizen, operator = browser(app, "citizen"), browser(app, "operator")

    reported = citizen.api("/api/reports", report(city, description="overflowing", urgent=True))
    case_id = reported.get_json()["id"]
    read = operator.get(f"/api/cases/{case_id}")
    acted = operator.api(f"/api/cases/{case_id}/actions/file", {"note": "ours"})
    refused = operator.api("/api/reports", report(city, lat=91))

    answers = [
        (reported, 201, "ReportedCase", schemas.ReportedCase),
        (read, 200, "CaseDetail", schemas.CaseDetail),
        (acted, 200, "CaseDetail", schemas.CaseDetail),
        (refused, 400, "ApiError", schemas.ApiError),
    ]
    for response, status, component, model in answers:
        body = response.get_json()
        assert response.status_code == status, body
        assert conforms(document, component, body) == [], component
        model.model_validate(body)  # and the model reads back what it wrote
    assert [e["action"] for e in acted.get_json()["events"]] == ["report", "file"]
    assert conforms(document, "CaseSummary", {**read.get_json(), "lat": 91}) != []  # can fail


def test_case_json_is_what_clients_always_got(
    app: Flask, session: Session, city: City, document: dict[str, Any]
) -> None:
    operator = browser(app, "operator")
    made = operator.api("/api/reports", report(city, address="5th and Main")).get_json()
    operator.api(f"/api/cases/{made['id']}/actions/file", {"note": "seen"})
    session.expire_all()
    case = session.get(Case, made["id"])
    assert case is not None

    with app.test_request_context():
        for full in (True, False):
            assert case_json(case, full) == old_case_json(case, full)
            assert app.json.dumps(case_json(case, full)) == app.json.dumps(
                old_case_json(case, full)
            )
    assert case.events and case.events[0].from_status is None  # both kinds of "from" seen


def test_open311_records_match_their_published_schemas(
    app: Flask, session: Session, city: City, document: dict[str, Any]
) -> None:
    client = app.test_client()
    fresh_request_globals()
    created = client.post(
        f"{OPEN311}/requests.json",
        data={
            "api_key": DEMO_KEY,
            "service_code": COVER,
            "lat": city.lat,
            "long": city.lon,
            "attribute[cover_state]": "missing",
            "account_id": "a-1",
        },
    )
    number = created.get_json()[0]["service_request_id"]
    answers = {
        "CreatedRequest": created,
        "Discovery": client.get(f"{OPEN311}/discovery.json"),
        "Service": client.get(f"{OPEN311}/services.json"),
        "ServiceDefinition": client.get(f"{OPEN311}/services/{COVER}.json"),
        "ServiceRequest": client.get(f"{OPEN311}/requests/{number}.json"),
        "TokenResult": client.get(f"{OPEN311}/tokens/{number}.json"),
        "Open311ErrorEntry": client.get(f"{OPEN311}/requests/nothing.json"),
    }
    for component, response in answers.items():
        body = response.get_json()
        records = body if isinstance(body, list) else [body]
        assert records, component
        record_type = getattr(schemas, component)
        for record in records:
            assert set(record) == set(record_type.__annotations__), component
            assert conforms(document, component, record) == [], component
    assert created.get_json()[0]["account_id"] == "a-1"  # a declared field reaches the parser
    attributes = answers["ServiceDefinition"].get_json()["attributes"]
    assert attributes and attributes[0]["values"]


def files(*names: str) -> MultiDict[str, Any]:
    return MultiDict([("photos", FileStorage(io.BytesIO(jpeg()), name)) for name in names])


def test_the_form_the_json_body_and_the_multipart_body_parse_alike(app: Flask) -> None:
    form = MultiDict(
        {
            "category": GARBAGE,
            "lon": "-118.2351",
            "lat": "34.0445",
            "description": "bags",
            "urgent": "on",
            "address": "",
            "name": "Ann",
            "csrf_token": "not a field of the report",
        }
    )
    body = {"category": GARBAGE, "lon": -118.2351, "lat": 34.0445, "description": "bags"}
    with app.test_request_context(
        headers={"Idempotency-Key": "retry-key-1"}, environ_base={"REMOTE_ADDR": "127.0.0.1"}
    ):
        from_form = report_input(form, files("a.jpg"))
        from_json = report_input({**body, "urgent": True, "name": "Ann"}, MultiDict())
        action_form = action_input(MultiDict({"version": "3", "unit_id": ""}), files("b.jpg"))
        action_json = action_input({"version": 3, "unit_id": None, "note": None}, MultiDict())

    assert from_form == ReportInput(
        GARBAGE,
        -118.2351,
        34.0445,
        "bags",
        urgent=True,
        idempotency_key="retry-key-1",
        contact={"name": "Ann", "phone": "", "email": ""},
        photos=from_form.photos,
        client_scope="ip:127.0.0.1",  # an anonymous reporter's scope of the key
    )
    assert [p.filename for p in from_form.photos] == ["a.jpg"]
    assert from_json == ReportInput(
        GARBAGE,
        -118.2351,
        34.0445,
        "bags",
        urgent=True,
        idempotency_key="retry-key-1",
        contact={"name": "Ann", "phone": "", "email": ""},
        photos=[],
        client_scope="ip:127.0.0.1",
    )
    assert action_form == ActionInput(version=3, photos=action_form.photos)
    assert len(action_form.photos) == 1
    assert action_json == ActionInput(version=3, photos=[])


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"category": ""}, "category", "category is required"),
        ({"lat": "north"}, "lat", "lat must be a number"),
        ({"lon": "181"}, "lon", "lon must be at most 180.0"),
        ({"lat": "nan"}, "lat", "lat must be a number"),
        ({"urgent": "maybe"}, "urgent", "urgent must be true or false"),
        ({"description": "x" * 4001}, "description", "description has at most 4000 characters"),
        ({"idempotency_key": "short"}, "idempotency_key", "idempotency_key must match"),
    ],
)
def test_a_refused_report_field_is_named(
    app: Flask, city: City, fields: dict[str, str], field: str, message: str
) -> None:
    form = MultiDict({**report(city), **fields})
    with app.test_request_context(), pytest.raises(InvalidInput) as refused:
        report_input(form, MultiDict())

    assert refused.value.details == {"field": field}
    assert refused.value.message.startswith(message)


def test_too_many_photos_and_too_many_digits_are_refused_at_the_edge(app: Flask) -> None:
    with app.test_request_context():
        with pytest.raises(InvalidInput) as photos:
            action_input(MultiDict(), files(*(f"{n}.jpg" for n in range(7))))
        with pytest.raises(InvalidInput) as digits:
            action_input({"inspector_id": "9" * 5000}, MultiDict())

    assert photos.value.message == "at most 6 photos at a time, not 7"
    assert digits.value.details == {"field": "inspector_id"}


@pytest.mark.parametrize("model", schemas.STAFF_MODELS, ids=lambda m: m.__name__)
def test_every_staff_model_is_a_published_component(
    model: type[BaseModel], document: dict[str, Any]
) -> None:
    published = document["components"]["schemas"][model.__name__]
    assert set(published["properties"]) == {
        field.alias or name for name, field in model.model_fields.items()
    }
