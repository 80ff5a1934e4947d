"""The territory's GeoJSON for the maps, on a clone of the demo city: the cells in a box (for
the cell codes at street level) and the community outlines with where their names go."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import URL

from gridmgmt.kernel.db import db
from grids import services
from grids.views import BOX_MAX_DEG
from tests.conftest import demo_clone
from tests.support import real_app

COMMUNITY = "990100006046"  # a community of the demo city
CHUNK = 0.005  # the box the maps ask for (gridmgmt/static/js/map.js CHUNK_DEG)


@pytest.fixture(scope="module")
def city_app(
    demo_database_url: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    with (
        demo_clone("cells", demo_database_url) as url,
        real_app(url, redis_url, tmp_path_factory.mktemp("photos")) as app,
    ):
        yield app


@pytest.fixture
def client(city_app: Flask) -> Iterator[FlaskClient]:
    with city_app.app_context():
        yield city_app.test_client()
        db.session.remove()


def box_around(client: FlaskClient, size: float) -> tuple[float, float, float, float]:
    """A `size`-degree box, on the maps' chunk grid, around a point of COMMUNITY."""
    lon, lat = db.session.execute(
        text("SELECT ST_X(p), ST_Y(p) FROM areas, ST_PointOnSurface(geom) p WHERE code = :c"),
        {"c": COMMUNITY},
    ).one()
    west, south = lon // CHUNK * CHUNK, lat // CHUNK * CHUNK
    return west, south, round(west + size, 6), round(south + size, 6)


def bbox(box: tuple[float, float, float, float]) -> str:
    return ",".join(str(v) for v in box)


def test_the_cells_of_a_box_with_their_codes_and_label_points(client: FlaskClient) -> None:
    box = box_around(client, CHUNK)
    answer = client.get("/territory/cells.geojson", query_string={"bbox": bbox(box)})
    assert answer.status_code == 200
    data = answer.get_json()
    expected = db.session.scalars(
        text("""
            SELECT code FROM grid_cells
            WHERE geom && ST_MakeEnvelope(:w, :s, :e, :n, 4326) ORDER BY code
        """),
        dict(zip("wsen", box, strict=True)),
    ).all()
    codes = [f["properties"]["code"] for f in data["features"]]
    assert codes == expected and len(codes) > 10
    assert data["type"] == "FeatureCollection" and data["truncated"] is False
    # Each label point is inside its own cell: the code reads on the cell it names.
    for feature in data["features"][:20]:
        inside = db.session.scalar(
            text("""
                SELECT ST_Covers(geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326))
                FROM grid_cells WHERE code = :code
            """),
            {
                "lon": feature["properties"]["label"][0],
                "lat": feature["properties"]["label"][1],
                "code": feature["properties"]["code"],
            },
        )
        assert inside, feature["properties"]
        assert feature["geometry"]["type"] == "Polygon"
    # Light on a phone: a box the map asks for is ~10 kB for 100 m cells (a phone at zoom
    # 17 asks for 1 to 4 of them), and each cell costs about 300 bytes.
    assert len(answer.data) < 350 * len(codes)
    assert len(answer.data) < 40_000


def test_the_cells_answer_is_cacheable(client: FlaskClient) -> None:
    query = {"bbox": bbox(box_around(client, CHUNK))}
    first = client.get("/territory/cells.geojson", query_string=query)
    assert first.cache_control.public and first.cache_control.max_age == 300
    assert first.headers["ETag"]
    again = client.get(
        "/territory/cells.geojson",
        query_string=query,
        headers={"If-None-Match": first.headers["ETag"]},
    )
    assert again.status_code == 304 and again.data == b""


def test_an_empty_box_has_no_cells(client: FlaskClient) -> None:
    answer = client.get("/territory/cells.geojson?bbox=10,10,10.01,10.01")
    assert answer.status_code == 200
    assert answer.get_json() == {"type": "FeatureCollection", "features": [], "truncated": False}


def test_at_most_the_limit_and_truncated_says_so(client: FlaskClient) -> None:
    box = box_around(client, CHUNK)
    whole = services.cells_in_box(db.session(), box)
    cut = services.cells_in_box(db.session(), box, limit=5)
    assert cut["truncated"] is True and whole["truncated"] is False
    assert cut["features"] == whole["features"][:5]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("", "bbox is required"),
        ("bbox=", "bbox is required"),
        ("bbox=1,2,3", "four numbers"),
        ("bbox=1,2,3,4,5", "four numbers"),
        ("bbox=a,b,c,d", "four numbers"),
        ("bbox=nan,34,-118.2,34.01", "four numbers"),
        ("bbox=-118.3,34,inf,34.01", "four numbers"),
        ("bbox=-118.2,34,-118.3,34.01", "west < east"),  # west and east swapped
        ("bbox=-118.3,34,-118.3,34.01", "west < east"),  # empty
        ("bbox=-118.3,34.01,-118.29,34", "west < east"),  # south and north swapped
        ("bbox=179.99,34,180.01,34.01", "west < east"),  # off the globe
        ("bbox=-118.3,89.99,-118.29,90.5", "west < east"),
        ("bbox=-118.4,34,-118.3,34.01", "at most 0.05 degrees"),  # too wide
        ("bbox=-118.3,34,-118.29,34.06", "at most 0.05 degrees"),  # too tall
    ],
)
def test_a_bad_box_is_a_clear_400_in_json(client: FlaskClient, query: str, words: str) -> None:
    # JSON whatever the client accepts: this is data for a map, never a page.
    answer = client.get(f"/territory/cells.geojson?{query}", headers={"Accept": "text/html"})
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_input" and error["field"] == "bbox"
    assert words in error["message"]
    assert "Cache-Control" not in answer.headers or "public" not in answer.headers["Cache-Control"]


def test_the_largest_box_allowed_answers(client: FlaskClient) -> None:
    west, south, _, _ = box_around(client, CHUNK)
    box = (west, south, west + BOX_MAX_DEG, south + BOX_MAX_DEG)
    answer = client.get("/territory/cells.geojson", query_string={"bbox": bbox(box)})
    assert answer.status_code == 200
    assert 0 < len(answer.get_json()["features"]) <= services.CELLS_MAX


def test_the_communities_say_where_their_names_go(client: FlaskClient) -> None:
    answer = client.get("/territory/communities.geojson")
    assert answer.status_code == 200
    features = answer.get_json()["features"]
    count = db.session.scalar(text("SELECT count(*) FROM areas WHERE level = 'community'"))
    assert len(features) == count > 0
    for feature in features:
        properties = feature["properties"]
        inside = db.session.scalar(
            text("""
                SELECT ST_Covers(geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326))
                FROM areas WHERE code = :code
            """),
            {
                "lon": properties["label"][0],
                "lat": properties["label"][1],
                "code": properties["code"],
            },
        )
        assert inside, properties
        assert properties["name"]
    # The outlines are simplified for a phone: the whole demo city is a few kB.
    assert len(json.dumps(answer.get_json())) < 20_000
