"""Property test of the served OpenAPI description: schemathesis generates requests for every
operation of `/openapi.json` (valid and invalid ones) and sends them to the app through WSGI, on
the seeded demo city.

Checks on every response: no 5xx, the status code is documented, and the content type, headers
and body are as described. Bounded (25 examples per operation and mode, no deadline) and
derandomized, so CI is reproducible.

Requests go to a second app on the same database and Redis: each one gets its own app context
(a fresh `g` and session, as in production) while seeing the module's seeded city. The cases
come from `operation.as_strategy()` under an explicit `@given`, one pytest test per operation:
schemathesis' own `from_fixture(...).parametrize()` needs a private pytest attribute that
pytest 9 no longer has.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select
from sqlalchemy.engine import URL

from cases import intake
from cases.intake import ReportInput
from cases.models import CaseSource
from gridmgmt import create_app
from gridmgmt.app.openapi import build_spec
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import User
from tests.open311.open311_support import DEMO_KEY, City, seeded_city
from tests.support import browser, jpeg

MAX_EXAMPLES = int(os.environ.get("GRIDMGMT_FUZZ_EXAMPLES", "25"))  # more for a deep local run
OPEN311_POST = "/open311/v2/requests.{format}"
PHOTOS_POST = "/api/reports/{submission_uuid}/photos"
# The photo UUIDs the hook sends real photos with: fewer than a case's 6 photos, so that a
# valid photo is stored (201) or found again (200), never refused for the count.
PHOTO_UUIDS = [str(uuid.UUID(int=n)) for n in range(1, 4)]
REAL_FIRST = {"submission_uuid"}  # a random one is always a 404
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    f"{method.upper()} {path}" for path, item in build_spec()["paths"].items() for method in item
]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


@dataclass(frozen=True)
class Known:
    """Real values that let generated requests reach past the first validation."""

    codes: list[str]  # service codes
    points: list[tuple[float, float]]  # (lon, lat) inside a unit grid cell
    numbers: list[str]  # case numbers (also valid tokens)
    ids: list[int]  # case ids
    submissions: list[str]  # submission UUIDs of the operator's own report (its photos)


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[City]:
    with seeded_city() as seeded:
        yield seeded


@pytest.fixture(scope="module")
def known(city: City, tmp_path_factory: pytest.TempPathFactory) -> Known:
    """Three cases to read and act on, and the operator's report sent from a phone (its
    photos follow), kept for the whole module."""
    session = db.session()
    photos = tmp_path_factory.mktemp("photos")
    made = [
        intake.report_case(
            session, ReportInput(code, lon, lat, "fuzz target"), None, CaseSource.CITIZEN, photos
        ).case
        for code, (lon, lat) in zip(("E0102", "C0101", "E0402"), city.inside, strict=False)
    ]
    operator = session.scalars(select(User).where(User.username == "operator")).one()
    submission = str(uuid.uuid5(uuid.NAMESPACE_URL, "gridmgmt:fuzz:photos"))  # reproducible
    lon, lat = city.inside[0]
    phone = ReportInput("E0102", lon, lat, "fuzz photos", submission_uuid=submission)
    intake.report_case(session, phone, operator, CaseSource.OPERATOR, photos)
    session.commit()
    found = Known(
        city.codes, city.inside, [c.number for c in made], [c.id for c in made], [submission]
    )
    db.session.remove()
    return found


@pytest.fixture(scope="module")
def fuzz_app(
    city: City, database_url: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """A second app on the same database and Redis that answers 500 instead of raising, with
    the rate limiter out of the way and photos in a temporary folder."""
    application = create_app(
        {
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "SECRET_KEY": "test-secret",
            "TESTING": False,
            "OPEN311_RATE_PER_KEY": 1_000_000,
            "OPEN311_RATE_PER_IP": 1_000_000,
            "RATE_REPORTS_PER_CLIENT": 0,  # 0: the limit is not applied
            "RATE_REPORTS_PER_ACCOUNT": 0,
            "RATE_ACTIONS_PER_CLIENT": 0,
            "RATE_ACTIONS_PER_ACCOUNT": 0,
            "RATE_READS_PER_CLIENT": 0,
            "RATE_READS_PER_ACCOUNT": 0,
            "PHOTO_DIR": str(tmp_path_factory.mktemp("fuzz-photos")),
        }
    )
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def login(fuzz_app: Flask) -> dict[str, str]:
    """The operator's session cookie and CSRF token: the staff API's credentials."""
    operator = browser(fuzz_app, "operator")
    name = fuzz_app.config["SESSION_COOKIE_NAME"]
    cookie = operator.client.get_cookie(name)
    assert cookie is not None
    return {"name": name, "cookie": cookie.value, "token": operator.token}


def form_fields(body: Any) -> dict[str, Any] | None:
    """The fields of a generated form body (multipart bodies whose parts have their own
    content type come wrapped in a dataclass, with the fields as `.body`), else None."""
    if isinstance(body, dict):
        return body
    inner = getattr(body, "body", None)
    return inner if isinstance(inner, dict) else None


def with_fields(body: Any, **fields: Any) -> Any:
    """A copy of a form body (plain or wrapped) with these fields set."""
    if isinstance(body, dict):
        return {**body, **fields}
    return dataclasses.replace(body, body={**body.body, **fields})


def only_fields(body: Any, fields: dict[str, Any]) -> Any:
    """A form body (plain or wrapped) with just these fields."""
    if isinstance(body, dict):
        return dict(fields)
    return dataclasses.replace(body, body=dict(fields))


def mixed(
    generated: dict[str, Any], real: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """Each generated value that has a real counterpart, kept or replaced by a real one (the
    real one first where a random value is never found: Hypothesis prefers the first)."""
    names = [name for name in generated if name in real]
    if not names:
        return st.just(generated)
    choices = {
        name: st.one_of(real[name], st.just(generated[name]))
        if name in REAL_FIRST
        else st.one_of(st.just(generated[name]), real[name])
        for name in names
    }
    return st.fixed_dictionaries(choices).map(lambda chosen: {**generated, **chosen})


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Flask, known: Known) -> schemathesis.BaseSchema:
    """The app's own description, with hooks that fill in the api_key and, half of the time,
    real service codes, points inside the city and existing cases."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    jurisdiction = fuzz_app.config["OPEN311_JURISDICTION"]
    # Credentials are the operator's real ones (below), not generated.
    schema.config.generation.update(with_security_parameters=False)
    places = st.tuples(st.sampled_from(known.codes), st.sampled_from(known.points))

    photo = jpeg()
    real_photo = st.sampled_from(PHOTO_UUIDS).map(lambda u: {"photo_uuid": u, "photo": photo})

    @schema.hook
    def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
        path = context.operation.path if context.operation else ""
        if form_fields(body) is None or path not in (OPEN311_POST, "/api/reports", PHOTOS_POST):
            return st.just(body)
        if path == PHOTOS_POST:  # a real photo, half of the time
            return st.one_of(real_photo.map(lambda f: only_fields(body, f)), st.just(body))
        if path == OPEN311_POST:
            body = with_fields(body, api_key=DEMO_KEY)
            names = ("service_code", "long", "lat")
        else:
            names = ("category", "lon", "lat")
        real = places.map(
            lambda t: with_fields(body, **dict(zip(names, (t[0], *t[1]), strict=True)))
        )
        return st.one_of(st.just(body), real)

    real_path = {
        "service_code": st.sampled_from(known.codes),
        "service_request_id": st.sampled_from(known.numbers),
        "token": st.sampled_from(known.numbers),
        "case_id": st.sampled_from(known.ids),
        "submission_uuid": st.sampled_from(known.submissions),
        "action": st.sampled_from(["file", "verify", "reject", "merge", "dispatch", "close"]),
    }
    real_query = {
        "jurisdiction_id": st.sampled_from(["", jurisdiction]),
        "service_request_id": st.lists(st.sampled_from(known.numbers), min_size=1).map(",".join),
        "service_code": st.lists(st.sampled_from(known.codes), min_size=1).map(",".join),
        "status": st.sampled_from(["open", "closed"]),
    }

    @schema.hook
    def flatmap_path_parameters(
        context: schemathesis.HookContext, path_parameters: dict[str, Any]
    ) -> st.SearchStrategy[dict[str, Any]]:
        return mixed(path_parameters or {}, real_path)

    @schema.hook
    def flatmap_query(
        context: schemathesis.HookContext, query: dict[str, Any]
    ) -> st.SearchStrategy[dict[str, Any]]:
        return mixed(query or {}, real_query)

    return schema


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_matches_its_description(
    label: str,
    mode: schemathesis.GenerationMode,
    api_schema: schemathesis.BaseSchema,
    login: dict[str, str],
    redis_conn: Redis,
) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    staff = path.startswith("/api/")
    headers = {"X-CSRFToken": login["token"]} if staff else None
    cookies = {login["name"]: login["cookie"]} if staff else None

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=headers, cookies=cookies, checks=CHECKS)
        seen.append(response.status_code)

    seen: list[int] = []
    check()
    if mode == schemathesis.GenerationMode.POSITIVE:
        # The hooks keep valid requests reaching past the first validation: some succeed (an
        # action on a case at least reaches the transition table).
        reached = (200, 409) if path.endswith("{action}") else range(200, 300)
        assert any(status in reached for status in seen), seen


def test_the_description_covers_every_route(app: Flask) -> None:
    """The served document is valid OpenAPI 3.1 and has exactly the routes of Open311 and the
    staff JSON API."""
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    document = app.test_client().get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    assert [str(e) for e in OPENAPI_31_VALIDATOR.iter_errors(document)] == []
    routes = {
        (method, rule.rule.replace("<int:", "<"))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(("open311.", "api.")) or rule.endpoint == "offline.add_photo"
        for method in rule.methods or ()
        if method in ("GET", "POST")
    }
    renamed = {"service_request_id": "number", "service_code": "code", "format": "fmt"}
    documented = set()
    for path, item in document["paths"].items():
        for name, flask_name in renamed.items():
            path = path.replace(f"{{{name}}}", f"{{{flask_name}}}")
        documented |= {(m.upper(), path.replace("{", "<").replace("}", ">")) for m in item}
    assert documented == routes
    assert app.config["OPEN311_JURISDICTION"] in str(document["components"]["parameters"])


def test_the_page_lists_every_operation(app: Flask) -> None:
    page = app.test_client().get("/openapi")
    html = page.get_data(as_text=True)
    assert (page.status_code, page.mimetype) == (200, "text/html")
    assert 'href="openapi.json"' in html
    assert html.count("<tr><td><code>") == len(OPERATIONS) == 12
