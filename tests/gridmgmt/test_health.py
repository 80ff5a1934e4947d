"""Liveness, readiness, the front page and JSON errors under /api/."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from geoalchemy2.shape import from_shape
from shapely.geometry import MultiPolygon, box
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cases.catalogue import load_catalogue
from cases.models import Category
from dispatch import readiness
from gridmgmt import create_app
from gridmgmt.kernel.db import db
from gridmgmt.kernel.queue import queues
from grids.models import Area, GridCell

CLOSED_DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:1/gridmgmt"
CLOSED_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def make_app(app: Flask) -> Iterator[Callable[..., Flask]]:
    """Build extra apps from overrides of the test app's config; their clients are closed after."""
    created: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        config = {
            "DATABASE_URL": app.config["DATABASE_URL"],
            "REDIS_URL": app.config["REDIS_URL"],
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            **overrides,
        }
        created.append(create_app(config))
        return created[-1]

    yield make
    for other in created:
        with other.app_context():
            db.engine.dispose()
            queues.redis.close()


def test_healthz(app: Flask) -> None:
    response = app.test_client().get("/healthz")

    assert response.status_code == 200
    assert response.is_json
    assert response.get_json() == {"status": "ok"}


def test_readyz_reachable_but_not_configured(app: Flask) -> None:
    # The test database is migrated but empty: reachable, and nothing to dispatch with (the
    # ready answer of a configured city: tests/admin/test_setup_check.py).
    app.extensions.pop(readiness.BLOCKED_CACHE, None)
    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.is_json
    body = response.get_json()
    assert body["status"] == "not configured"
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert "territory" in body["not_configured"]


def test_readyz_names_unreachable_database(make_app: Callable[..., Flask]) -> None:
    broken = make_app(DATABASE_URL=CLOSED_DATABASE)

    response = broken.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.is_json
    body = response.get_json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"].startswith("unreachable: ")
    assert body["checks"]["redis"] == "ok"


def test_readyz_names_unreachable_redis(make_app: Callable[..., Flask]) -> None:
    broken = make_app(REDIS_URL=CLOSED_REDIS)

    response = broken.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.is_json
    body = response.get_json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable: ")


def test_second_app_does_not_rebind_first_app(app: Flask, make_app: Callable[..., Flask]) -> None:
    make_app(DATABASE_URL=CLOSED_DATABASE, REDIS_URL=CLOSED_REDIS)

    response = app.test_client().get("/readyz")

    assert response.get_json()["checks"] == {"database": "ok", "redis": "ok"}
    assert response.status_code == 503  # reachable; the empty test database is not configured


def _shown(html: str, label: str) -> int:
    match = re.search(rf"<dt>{label}[^<]*</dt><dd>(\d+)</dd>", html)
    assert match, f"{label} not on the page"
    return int(match.group(1))


def _count(session: Session, model: type, *where: Any) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_home_page_shows_counts(app: Flask, session: Session) -> None:
    square = box(-118.30, 34.00, -118.29, 34.01)
    community = Area(
        code="990100006001",
        level="community",
        name="Test community",
        geom=from_shape(MultiPolygon([square]), srid=4326),
        area_m2=1_000_000,
    )
    session.add(community)
    session.add(
        GridCell(
            code="990100006001001",
            community=community,
            geom=from_shape(square, srid=4326),
            area_m2=1_000_000,
        )
    )
    load_catalogue(session)
    session.commit()
    communities = _count(session, Area, Area.level == "community")
    cells = _count(session, GridCell)
    categories = _count(session, Category)
    assert communities >= 1
    assert cells >= 1
    assert categories >= 95

    response = app.test_client().get("/")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert app.config["CITY_NAME"] in html
    assert _shown(html, "Communities") == communities
    assert _shown(html, "Unit grid cells") == cells
    assert _shown(html, "Categories") == categories


def test_unknown_api_path_is_json_404(app: Flask) -> None:
    response = app.test_client().get("/api/no-such-thing")

    assert response.status_code == 404
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == "not_found"
    assert error["message"]


def test_unknown_page_path_is_html_404(app: Flask) -> None:
    response = app.test_client().get("/no-such-page")

    assert response.status_code == 404
    assert response.mimetype == "text/html"
