from __future__ import annotations
import pytest
from collections.abc import Iterator
from flask import Flask, got_request_exception
from tests.open311.open311_support import (
    seeded_city,
    City,
    DEMO_KEY,
    fresh_request_globals,
    sign_in,
)
from gridmgmt.db import db


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[City]:
    with seeded_city(app) as c:
        yield c


errors = []


def rec(sender, exception, **kw):
    errors.append(repr(exception)[:200])


def run(city, fn):
    db.session.remove()
    nested = city.connection.begin_nested()
    errors.clear()
    try:
        fresh_request_globals()
        r = fn()
        print(
            r.status_code, r.content_type, r.get_data(as_text=True)[:150].replace("\n", " "), errors
        )
        return r
    finally:
        db.session.remove()
        if nested.is_active:
            nested.rollback()


def test_probe(app, city, redis_conn):
    got_request_exception.connect(rec)
    c = app.test_client()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    base = {"api_key": DEMO_KEY, "service_code": "E0102", "lat": city.lat, "long": city.lon}
    r = run(
        city,
        lambda: c.post(
            "/open311/v2/requests.json",
            data={**base, "description": "bell\x07", "address_string": "\x0b"},
        ),
    )
    print("nul idem header")
    run(
        city,
        lambda: c.post(
            "/open311/v2/requests.json", data=base, headers={"Idempotency-Key": "abc\x7fdef"}
        ),
    )
    db.session.remove()
    tok = sign_in(c, "operator")
    db.session.remove()
    for url in ["/api/cases/99999999999999999999", "/api/cases/1"]:
        print(url)
        run(city, lambda: c.get(url))
    h = {"X-CSRFToken": tok}
    print("urgent true")
    r = run(
        city,
        lambda: c.post(
            "/api/reports",
            json={"category": "E0102", "lon": city.lon, "lat": city.lat, "urgent": True},
            headers=h,
        ),
    )
    print("nul desc")
    run(
        city,
        lambda: c.post(
            "/api/reports",
            json={"category": "E0102", "lon": city.lon, "lat": city.lat, "description": "a\x00b"},
            headers=h,
        ),
    )
    print("nul cat")
    run(
        city,
        lambda: c.post(
            "/api/reports",
            json={"category": "E01\x0002", "lon": city.lon, "lat": city.lat},
            headers=h,
        ),
    )
    print("big id act")
    run(city, lambda: c.post("/api/cases/99999999999999999999/actions/file", json={}, headers=h))
    print("big version")
    run(
        city,
        lambda: c.post(
            "/api/cases/1/actions/file", json={"version": "99999999999999999999"}, headers=h
        ),
    )
    print("big unit")
    run(
        city,
        lambda: c.post(
            "/api/cases/1/actions/dispatch", json={"unit_id": "99999999999999999999"}, headers=h
        ),
    )
    print("nul merge")
    run(city, lambda: c.post("/api/cases/1/actions/merge", json={"merge_into": "a\x00"}, headers=h))
    app.config["PROPAGATE_EXCEPTIONS"] = None
    got_request_exception.disconnect(rec)
