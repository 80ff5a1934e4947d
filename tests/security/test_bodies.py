"""Malformed bodies over HTTP against the real server: deep nesting, invalid UTF-8, huge
strings and wrong JSON types are each a 4xx in the interface's own format (the JSON API's
`{"error": {...}}`, Open311's list of `{code, description}`, a page for the forms), never a
500; and every free text field has a server-side length limit (nothing is stored)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from gridmgmt.app.demo import DEMO_API_KEY
from tests.security.conftest import sign_in
from tests.support import point_in

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100 + b"1" + b"}" * 100  # parses, but deeper than any body of ours
HUGE = "x" * 1_000_000


@pytest.fixture(scope="module", autouse=True)
def roomy_limits(security_app: Flask) -> Iterator[None]:
    """The rate limits out of the way: these tests send many requests from one address (the
    limits themselves are tests/security/test_rate_limits.py's)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in security_app.config if k.startswith(("RATE_", "OPEN311_RATE_"))]:
            patch.setitem(security_app.config, name, 1_000_000)
        yield


@pytest.fixture(scope="module")
def point(engine: Engine) -> tuple[float, float]:
    """(lon, lat) inside the demo city."""
    with Session(engine) as session:
        return point_in(session, "990100006046")


def cases_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM cases")).scalar_one())


def with_csrf(http: requests.Session, server: str) -> requests.Session:
    """The session sends its CSRF token as a header, as the pages' scripts do."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', http.get(f"{server}/report").text)
    assert found is not None
    http.headers["X-CSRFToken"] = found.group(1)
    return http


@pytest.fixture(scope="module")
def anonymous(server: str) -> requests.Session:
    return with_csrf(requests.Session(), server)


@pytest.fixture(scope="module")
def operator(server: str) -> requests.Session:
    return with_csrf(sign_in(server, "operator"), server)


def api_error(answer: requests.Response, status: int = 400) -> dict[str, Any]:
    """The JSON API's error body, after checking the status."""
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    assert answer.headers["Content-Type"].startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] and error["message"]
    return error


def open311_error(answer: requests.Response, status: int = 400) -> str:
    """Open311's error list, after checking the status: its first description."""
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    body = answer.json()
    assert isinstance(body, list) and body[0]["code"] == status
    return str(body[0]["description"])


def post_raw(http: requests.Session, url: str, body: bytes, kind: str) -> requests.Response:
    return http.post(url, data=body, headers={"Content-Type": kind})


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def test_deeply_nested_json(server: str, anonymous: requests.Session, operator: Any) -> None:
    for http, path in (
        (anonymous, "/api/reports"),
        (operator, "/api/cases/1/actions/file"),
        (operator, "/api/cases/1/actions/dispatch"),
    ):
        for body in (DEEP, DEEP_OBJECT):
            error = api_error(post_raw(http, f"{server}{path}", body, JSON))
            assert "nests too deeply" in error["message"]
    # Pages and Open311 answer in their own format too.
    page = post_raw(anonymous, f"{server}/login", DEEP, JSON)
    assert page.status_code == 400 and page.headers["Content-Type"].startswith("text/html")
    assert "nests too deeply" in open311_error(
        post_raw(requests.Session(), f"{server}/open311/v2/requests.json", DEEP, JSON)
    )


def test_invalid_utf8(server: str, anonymous: requests.Session, engine: Engine) -> None:
    before = cases_count(engine)
    bad_json = b'{"category": "E0102", "lon": -118.3, "lat": 34.05, "description": "\xff\xfe"}'
    assert (
        "not valid JSON"
        in api_error(post_raw(anonymous, f"{server}/api/reports", bad_json, JSON))["message"]
    )
    bad_form = b"category=E0102&lon=-118.3&lat=34.05&description=%ff%fe"
    assert (
        "UTF-8"
        in api_error(post_raw(anonymous, f"{server}/api/reports", bad_form, FORM))["message"]
    )
    multipart = anonymous.post(
        f"{server}/api/reports",
        files={"category": (None, b"E0102"), "description": (None, b"caf\xe9")},
    )
    assert "UTF-8" in api_error(multipart)["message"]
    token = anonymous.headers["X-CSRFToken"].encode()
    page = post_raw(
        anonymous, f"{server}/report", b"csrf_token=" + token + b"&address=%c3%28", FORM
    )
    assert page.status_code == 400 and page.headers["Content-Type"].startswith("text/html")
    assert "UTF-8" in open311_error(
        post_raw(
            requests.Session(),
            f"{server}/open311/v2/requests.json",
            b"api_key=" + DEMO_API_KEY.encode() + b"&service_code=E0102&lat=34&long=-118"
            b"&description=%ff",
            FORM,
        )
    )
    assert cases_count(engine) == before


def test_wrong_json_types(server: str, anonymous: requests.Session, operator: Any) -> None:
    url = f"{server}/api/reports"
    for body in (
        [1, 2],
        "text",
        None,
        {"category": ["E0102"], "lon": -118.3, "lat": 34.05},
        {"category": "E0102", "lon": {"x": 1}, "lat": 34.05},
        {"category": "E0102", "lon": -118.3, "lat": 34.05, "description": 5},
        {"category": "E0102", "lon": -118.3, "lat": 34.05, "urgent": "maybe"},
        {"category": "E0102", "lon": "1e999", "lat": 34.05},
    ):
        api_error(anonymous.post(url, json=body))
    api_error(operator.post(f"{server}/api/cases/1/actions/file", json={"version": "x" * 50}))
    api_error(operator.post(f"{server}/api/cases/1/actions/file", json={"version": [1]}))


def test_every_text_field_has_a_limit(
    server: str,
    anonymous: requests.Session,
    operator: requests.Session,
    engine: Engine,
    point: tuple[float, float],
) -> None:
    lon, lat = point
    before = cases_count(engine)
    report = {"category": "E0102", "lon": lon, "lat": lat}
    for field, size in (
        ("description", 4001),
        ("address", 501),
        ("name", 201),
        ("phone", 201),
        ("email", 201),
        ("category", 201),
        ("address", len(HUGE)),
    ):
        error = api_error(
            anonymous.post(f"{server}/api/reports", json={**report, field: "x" * size})
        )
        assert "at most" in error["message"], (field, error)
    # The form (a page) and the catch-all for any other value (an unknown field).
    token = anonymous.headers["X-CSRFToken"]
    page = anonymous.post(
        f"{server}/report", data={"csrf_token": token, **report, "address": "x" * 501}
    )
    assert page.status_code == 400 and "at most" in page.text
    assert (
        "at most"
        in api_error(anonymous.post(f"{server}/api/reports", json={**report, "other": HUGE}))[
            "message"
        ]
    )
    repeated = [(k, str(v)) for k, v in report.items()] + [("address", "a"), ("address", HUGE)]
    assert "at most" in api_error(anonymous.post(f"{server}/api/reports", data=repeated))["message"]
    for field in ("reason", "note"):
        error = api_error(
            operator.post(f"{server}/api/cases/1/actions/reject", json={field: "x" * 4001})
        )
        assert "at most" in error["message"], (field, error)
    for field in ("merge_into", "extra_value", "extra_unit"):
        error = api_error(
            operator.post(f"{server}/api/cases/1/actions/merge", json={field: "x" * 201})
        )
        assert "at most" in error["message"], (field, error)
    open311 = {
        "api_key": DEMO_API_KEY,
        "service_code": "E0102",
        "lat": str(lat),
        "long": str(lon),
    }
    for field, size in (
        ("address_string", 501),
        ("first_name", 501),
        ("last_name", 501),
        ("email", 501),
        ("phone", 501),
        ("device_id", 501),
        ("account_id", 501),
        ("description", 4001),
        ("attribute[X]", 20_000),
    ):
        answer = requests.post(
            f"{server}/open311/v2/requests.json", data={**open311, field: "x" * size}
        )
        assert "at most" in open311_error(answer), field
    assert cases_count(engine) == before
