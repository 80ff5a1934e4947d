"""Importing, generating, checking and locating on the real PostGIS, with synthetic layers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from gridmgmt.kernel.errors import InvalidInput, OutsideTerritory
from gridmgmt.kernel.models import Unit
from grids import services
from grids.models import Area, GridCell

EPSG = 32611  # UTM 11N, Los Angeles
# A 1 km square aligned on the 100 m UTM grid, in Los Angeles.
X0, Y0 = 380_000, 3_770_000


def utm_polygon(session: Session, coords: list[tuple[float, float]]) -> dict[str, Any]:
    """GeoJSON (EPSG:4326) of a polygon given in UTM 11N metres."""
    ring = ", ".join(f"{x} {y}" for x, y in [*coords, coords[0]])
    raw = session.scalar(
        text("SELECT ST_AsGeoJSON(ST_Transform(ST_GeomFromText(:wkt, :epsg), 4326), 15)"),
        {"wkt": f"POLYGON(({ring}))", "epsg": EPSG},
    )
    return json.loads(raw)


def box(session: Session, x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return utm_polygon(session, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def layer(*features: tuple[dict[str, Any], dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        **extra,
        "features": [{"type": "Feature", "properties": p, "geometry": g} for p, g in features],
    }


def write(tmp_path: Path, data: Any, name: str = "layer.geojson") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def run_import(cli: FlaskCliRunner, path: str, level: str, code_field: str, *extra: str) -> Any:
    """`flask grids import-units PATH --level L --code-field F --name-field name ...`."""
    args = ["grids", "import-units", path, "--level", level, "--code-field", code_field]
    return cli.invoke(args=[*args, "--name-field", "name", *extra])


def import_parents(cli: FlaskCliRunner, session: Session, tmp_path: Path) -> None:
    whole = box(session, X0 - 5000, Y0 - 5000, X0 + 5000, Y0 + 5000)
    for level, code, parent in (("district", "110105", None), ("street", "110105001", "110105")):
        path = write(tmp_path, layer(({"code": code, "name": level}, whole)), f"{level}.geojson")
        result = run_import(
            cli, path, level, "code", *(["--parent-code", parent] if parent else [])
        )
        assert result.exit_code == 0, result.output


def import_communities(
    cli: FlaskCliRunner, tmp_path: Path, *features: tuple[dict[str, Any], dict[str, Any]]
) -> Any:
    path = write(tmp_path, layer(*features), "communities.geojson")
    return run_import(cli, path, "community", "id", "--parent-code", "110105001")


@pytest.fixture
def territory(cli: FlaskCliRunner, session: Session, tmp_path: Path) -> Session:
    """District → street → one aligned 1 km community (001) and a clipped one (002)."""
    import_parents(cli, session, tmp_path)
    triangle = utm_polygon(session, [(X0 + 1000, Y0), (X0 + 1637, Y0), (X0 + 1000, Y0 + 733)])
    result = import_communities(
        cli,
        tmp_path,
        ({"id": "1", "name": "Square"}, box(session, X0, Y0, X0 + 1000, Y0 + 1000)),
        ({"id": "2", "name": "Triangle"}, triangle),
    )
    assert result.exit_code == 0, result.output
    return session


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


# --- import-units ---------------------------------------------------------------------------


def test_import_units_builds_the_hierarchy_with_areas_and_community_units(
    territory: Session,
) -> None:
    square = territory.scalar(select(Area).where(Area.code == "110105001001"))
    assert square is not None and square.level == "community"
    assert square.parent is not None and square.parent.code == "110105001"
    assert square.parent.parent is not None and square.parent.parent.code == "110105"
    assert square.area_m2 == pytest.approx(1_000_000, rel=0.005)  # UTM scale factor < 0.1 %
    second = territory.scalar(select(Area).where(Area.code == "110105001002"))
    assert second is not None and second.level == "community"
    units = territory.scalars(select(Unit).order_by(Unit.code)).all()
    assert [(u.code, u.kind, u.community_id) for u in units] == [
        ("110105001001", "community", square.id),
        ("110105001002", "community", second.id),
    ]


def test_reimport_updates_by_code_and_reports_progress(
    cli: FlaskCliRunner, territory: Session, tmp_path: Path
) -> None:
    bigger = box(territory, X0, Y0, X0 + 1000, Y0 + 2000)
    result = import_communities(cli, tmp_path, ({"id": "1", "name": "Square renamed"}, bigger))
    assert result.exit_code == 0, result.output
    assert "0 created, 1 updated" in result.output
    assert "importing community areas: 1/1" in result.stderr
    square = territory.scalar(select(Area).where(Area.code == "110105001001"))
    assert square is not None and square.name == "Square renamed"
    assert square.area_m2 == pytest.approx(2_000_000, rel=0.005)
    assert count(territory, Unit) == 2


BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
PROJECTED = {
    "type": "Polygon",
    "coordinates": [[[380000, 3770000], [381000, 3770000], [381000, 3771000], [380000, 3770000]]],
}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid GeoJSON"),
        ({"type": "Feature"}, "not a GeoJSON FeatureCollection"),
        (layer(), "has no features"),
        ({"type": "FeatureCollection", "features": {"a": 1}}, "'features' is not a list"),
        ({"type": "FeatureCollection", "features": [1]}, "feature 1 is not a GeoJSON Feature"),
        (
            {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": [1]}]},
            "feature 1 is not a GeoJSON Feature",
        ),
        ({**layer(({"code": "110106"}, SQUARE)), "crs": "EPSG:3857"}, "not a GeoJSON CRS"),
        (
            {**layer(({"code": "110106"}, SQUARE)), "crs": {"properties": "EPSG:3857"}},
            "not a GeoJSON CRS",
        ),
        (
            layer(
                ({"code": "110106"}, SQUARE),
                crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}},
            ),
            "EPSG::3857",
        ),
        (layer(({"code": "110106", "name": "x"}, PROJECTED)), "projected CRS"),
        (
            layer(({"code": "110106", "name": "x"}, {"type": "Point", "coordinates": [0, 0]})),
            "Point",
        ),
        (layer(({"code": "110106", "name": "x"}, BOWTIE)), r"feature 1: invalid geometry \(Self"),
        (layer(({"name": "x"}, SQUARE)), "feature 1 has no field 'code'"),
        (layer(({"code": "110106"}, SQUARE)), "has no field 'name'"),
        (layer(({"code": "1101", "name": "x"}, SQUARE)), "must be 6 digits"),
        (
            layer(
                ({"code": "110106", "name": "a"}, SQUARE), ({"code": "110106", "name": "b"}, SQUARE)
            ),
            "appears twice",
        ),
        (
            layer(
                ({"code": "110106", "name": "good"}, SQUARE),
                ({"code": "110107", "name": "bad"}, BOWTIE),
            ),
            "feature 2: invalid geometry",
        ),
    ],
)
def test_import_units_refuses_bad_files_clearly_and_keeps_nothing(
    cli: FlaskCliRunner, session: Session, tmp_path: Path, content: Any, message: str
) -> None:
    path = write(tmp_path, content)
    result = run_import(cli, path, "district", "code")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert re.search(message, result.output), result.output
    assert "nothing was changed" in result.output
    assert count(session, Area) == 0


def test_import_units_missing_file_is_a_clear_error(cli: FlaskCliRunner, session: Session) -> None:
    result = run_import(cli, "/nonexistent.geojson", "district", "code")
    assert result.exit_code == 1
    assert "cannot read /nonexistent.geojson" in result.output


def test_make_valid_repairs_a_self_intersecting_polygon(
    cli: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    path = write(tmp_path, layer(({"code": "110106", "name": "bowtie"}, BOWTIE)))
    result = run_import(cli, path, "district", "code", "--make-valid")
    assert result.exit_code == 0, result.output
    area = session.scalar(select(Area).where(Area.code == "110106"))
    assert area is not None
    assert session.scalar(select(func.ST_IsValid(Area.geom)).where(Area.id == area.id))
    assert session.scalar(select(func.ST_NumGeometries(Area.geom)).where(Area.id == area.id)) == 2


@pytest.mark.parametrize(
    ("parent", "message"),
    [("999999001", "does not exist"), ("110105", "parent must be a street")],
)
def test_import_units_checks_the_parent(
    cli: FlaskCliRunner, session: Session, tmp_path: Path, parent: str, message: str
) -> None:
    import_parents(cli, session, tmp_path)
    path = write(tmp_path, layer(({"id": "3", "name": "x"}, SQUARE)))
    result = run_import(cli, path, "community", "id", "--parent-code", parent)
    assert result.exit_code == 1
    assert message in result.output


# --- generate-cells -------------------------------------------------------------------------


def cells_of(session: Session, community: str) -> list[GridCell]:
    return list(
        session.scalars(
            select(GridCell)
            .join(Area, Area.id == GridCell.community_id)
            .where(Area.code == community)
            .order_by(GridCell.code)
        )
    )


def centre_utm(session: Session, cell: GridCell) -> tuple[float, float]:
    x, y = session.execute(
        text(
            "SELECT ST_X(p), ST_Y(p) FROM grid_cells, ST_Transform(ST_Centroid(geom), :epsg) AS p"
            " WHERE id = :id"
        ),
        {"id": cell.id, "epsg": EPSG},
    ).one()
    return x, y


def test_generate_cells_makes_true_100m_squares_numbered_west_east_north_south(
    cli: FlaskCliRunner, territory: Session
) -> None:
    result = cli.invoke(args=["grids", "generate-cells", "--community", "110105001001"])
    assert result.exit_code == 0, result.output
    assert "generated 100 cells of 100 m" in result.output
    cells = cells_of(territory, "110105001001")
    assert [c.code for c in cells] == [f"110105001001{n:03d}" for n in range(1, 101)]
    assert all(c.area_m2 == pytest.approx(10_000, rel=0.005) for c in cells)
    first, tenth, eleventh, last = (centre_utm(territory, cells[i]) for i in (0, 9, 10, 99))
    assert first == pytest.approx((X0 + 50, Y0 + 950), abs=0.01)  # north-west
    assert tenth == pytest.approx((X0 + 950, Y0 + 950), abs=0.01)  # north-east
    assert eleventh == pytest.approx((X0 + 50, Y0 + 850), abs=0.01)  # second row, west
    assert last == pytest.approx((X0 + 950, Y0 + 50), abs=0.01)  # south-east


def test_generated_cells_tile_a_clipped_community_without_gaps_or_overlaps(
    territory: Session,
) -> None:
    made = services.generate_cells(territory, 100)
    assert made > 100
    triangle = territory.scalar(select(Area).where(Area.code == "110105001002"))
    assert triangle is not None
    cells = cells_of(territory, "110105001002")
    # Geography areas follow geodesic edges: the long hypotenuse and its short pieces differ
    # by a few m², hence the relative tolerance.
    assert sum(c.area_m2 for c in cells) == pytest.approx(triangle.area_m2, rel=1e-4)
    assert any(c.area_m2 < 9_000 for c in cells)  # the hypotenuse really clips
    report = services.check_territory(territory)
    assert report.ok, [p.describe() for p in report.problems]
    assert report.cells == made and report.communities == 2


def test_regenerating_replaces_the_cells(territory: Session) -> None:
    services.generate_cells(territory, 100, "110105001001")
    services.generate_cells(territory, 200, "110105001001")
    cells = cells_of(territory, "110105001001")
    assert len(cells) == 25
    assert cells[-1].code == "110105001001025"


def test_too_many_cells_for_the_code_is_a_clear_error(
    cli: FlaskCliRunner, territory: Session
) -> None:
    result = cli.invoke(
        args=["grids", "generate-cells", "--community", "110105001001", "--code-length", "14"]
    )
    assert result.exit_code == 1
    assert "needs 100 cells of 100 m, but a 14-digit code holds at most 99" in result.output
    assert count(territory, GridCell) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "0.5"], "between 1 and 10000"),
        (["--community", "110105001009"], "does not exist"),
    ],
)
def test_generate_cells_bad_arguments(
    cli: FlaskCliRunner, territory: Session, args: list[str], message: str
) -> None:
    result = cli.invoke(args=["grids", "generate-cells", *args])
    assert result.exit_code == 1
    assert message in result.output


# --- locate ---------------------------------------------------------------------------------


def vertex(session: Session, x: float, y: float) -> tuple[float, float]:
    """A grid corner in EPSG:4326, computed as the cells' own vertices are."""
    lon, lat = session.execute(
        text(
            "SELECT ST_X(p), ST_Y(p) FROM ST_ReducePrecision(ST_Transform("
            "ST_SetSRID(ST_MakePoint(:x, :y), :epsg), 4326), :grid) AS p"
        ),
        {"x": x, "y": y, "epsg": EPSG, "grid": services.PRECISION_DEG},
    ).one()
    return lon, lat


def cells_at(session: Session, lon: float, lat: float) -> list[str]:
    """Codes of every cell whose closed polygon holds the point."""
    return list(
        session.scalars(
            text(
                "SELECT code FROM grid_cells WHERE ST_Intersects(geom, "
                "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)) ORDER BY code"
            ),
            {"lon": lon, "lat": lat},
        )
    )


@pytest.mark.parametrize(
    ("x", "y", "expected", "holders", "why"),
    [
        (X0 + 150, Y0 + 950, "001002", 1, "inside"),
        (X0 + 100, Y0 + 900, "001001", 4, "corner of 001, 002, 011, 012: north-west wins"),
        (X0 + 900, Y0 + 100, "001089", 4, "corner of 089, 090, 099, 100: north-west wins"),
        (X0 + 1000, Y0 + 1000, "001010", 1, "outer north-east corner, one cell"),
        (X0 + 1000, Y0, "001100", 2, "corner shared with the next community: lower code wins"),
    ],
)
def test_locate_tie_break_on_corners_of_generated_cells(
    territory: Session, x: float, y: float, expected: str, holders: int, why: str
) -> None:
    services.generate_cells(territory, 100)
    lon, lat = vertex(territory, x, y)
    assert len(cells_at(territory, lon, lat)) == holders
    where = services.locate(territory, lon, lat)
    assert where.cell_code == "110105001" + expected, why
    assert where.community_code == "110105001" + expected[:3]


def test_locate_tie_break_on_edges_of_a_lon_lat_layer(
    cli: FlaskCliRunner, session: Session, tmp_path: Path
) -> None:
    """Cells on binary lon/lat steps, so that edge midpoints are exact doubles."""
    import_parents(cli, session, tmp_path)
    step = 1 / 1024
    lon0, lat0 = -118.25, 34.0
    square = [[lon0, lat0], [lon0 + 2 * step, lat0], [lon0 + 2 * step, lat0 + 2 * step]]
    community = {
        "type": "Polygon",
        "coordinates": [[*square, [lon0, lat0 + 2 * step], [lon0, lat0]]],
    }
    assert (
        import_communities(cli, tmp_path, ({"id": "5", "name": "Grid"}, community)).exit_code == 0
    )
    cells = []
    for row, lat in enumerate((lat0 + step, lat0)):  # north row first
        for col, lon in enumerate((lon0, lon0 + step)):
            ring = [
                [lon, lat],
                [lon + step, lat],
                [lon + step, lat + step],
                [lon, lat + step],
                [lon, lat],
            ]
            code = f"110105001005{row * 2 + col + 1:03d}"
            cells.append(({"code": code}, {"type": "Polygon", "coordinates": [ring]}))
    result = cli.invoke(
        args=["grids", "import-cells", write(tmp_path, layer(*cells), "cells.json")]
    )
    assert result.exit_code == 0, result.output
    cases = [
        ((lon0 + step, lat0 + 1.5 * step), ["001", "002"], "001", "vertical edge: west wins"),
        ((lon0 + 0.5 * step, lat0 + step), ["001", "003"], "001", "horizontal edge: north wins"),
        ((lon0 + 1.5 * step, lat0 + step), ["002", "004"], "002", "horizontal edge, east column"),
        ((lon0 + step, lat0 + 0.5 * step), ["003", "004"], "003", "vertical edge, south row"),
        ((lon0 + step, lat0 + step), ["001", "002", "003", "004"], "001", "centre corner"),
        ((lon0 + 2 * step, lat0), ["004"], "004", "outer corner"),
    ]
    for (lon, lat), holders, expected, why in cases:
        assert cells_at(session, lon, lat) == [f"110105001005{h}" for h in holders], why
        assert services.locate(session, lon, lat).cell_code == f"110105001005{expected}", why
    with pytest.raises(OutsideTerritory):
        services.locate(session, lon0 + 2 * step + 1e-12, lat0)


def test_locate_outside_and_bad_coordinates(territory: Session) -> None:
    services.generate_cells(territory, 100)
    lon, lat = vertex(territory, X0 - 10, Y0 + 500)
    with pytest.raises(OutsideTerritory, match="outside the territory"):
        services.locate(territory, lon, lat)
    with pytest.raises(InvalidInput, match="out of range"):
        services.locate(territory, 200, 34)


# --- check and import-cells -----------------------------------------------------------------


def test_check_reports_gaps_overlaps_and_cells_outside(
    cli: FlaskCliRunner, territory: Session, tmp_path: Path
) -> None:
    services.generate_cells(territory, 100, "110105001001")
    territory.execute(text("DELETE FROM grid_cells WHERE code = '110105001001055'"))
    extra = box(territory, X0 + 150, Y0 + 150, X0 + 250, Y0 + 250)  # overlaps 4 cells
    outside = box(territory, X0 - 100, Y0, X0 + 1, Y0 + 100)
    path = write(
        tmp_path,
        layer(({"code": "110105001001101"}, extra), ({"code": "110105001001102"}, outside)),
    )
    result = cli.invoke(args=["grids", "import-cells", path])
    assert result.exit_code == 0, result.output
    assert "cells: 2 created, 0 updated" in result.output
    report = services.check_territory(territory)
    kinds = sorted({p.kind for p in report.problems})
    assert kinds == ["cell_outside", "cell_overlap", "community_gap"]
    gap = next(p for p in report.problems if p.kind == "community_gap")
    assert gap.first == "110105001002"  # the triangle has no cells at all
    holes = [p for p in report.problems if p.kind == "community_gap" and p.first.endswith("001")]
    assert holes and holes[0].area_m2 == pytest.approx(10_000, rel=0.01)
    outside_cell = next(p for p in report.problems if p.kind == "cell_outside")
    assert outside_cell.first == "110105001001102"
    assert outside_cell.area_m2 == pytest.approx(10_000, rel=0.01)
    overlaps = sorted(
        (p.first, p.second, round(p.area_m2, -1))
        for p in report.problems
        if p.kind == "cell_overlap"
    )
    # The extra 100 m cell 101 covers a quarter of each of four cells (2,500 m² each); cell
    # 102, mostly outside, overlaps 091 by 100 m².
    assert overlaps == [
        ("110105001001072", "110105001001101", 2500),
        ("110105001001073", "110105001001101", 2500),
        ("110105001001082", "110105001001101", 2500),
        ("110105001001083", "110105001001101", 2500),
        ("110105001001091", "110105001001102", 100),
    ]
    result = cli.invoke(args=["grids", "check"])
    assert result.exit_code == 1
    assert "cell outside" in result.output and "community gap" in result.output


@pytest.mark.parametrize(
    ("code", "geometry", "message"),
    [
        ("11010500100", SQUARE, "must be 14 digits"),
        ("110105001777001", SQUARE, "community 110105001777"),
        (
            "110105001001001",
            {
                "type": "MultiPolygon",
                "coordinates": [SQUARE["coordinates"], [[[2, 2], [3, 2], [3, 3], [2, 2]]]],
            },
            "one polygon",
        ),
    ],
)
def test_import_cells_refuses_bad_cells(
    cli: FlaskCliRunner,
    territory: Session,
    tmp_path: Path,
    code: str,
    geometry: dict[str, Any],
    message: str,
) -> None:
    path = write(tmp_path, layer(({"code": code}, geometry)))
    result = cli.invoke(args=["grids", "import-cells", path])
    assert result.exit_code == 1
    assert message in result.output
    assert count(territory, GridCell) == 0


def test_locate_command(cli: FlaskCliRunner, territory: Session) -> None:
    services.generate_cells(territory, 100)
    lon, lat = vertex(territory, X0 + 150, Y0 + 950)
    result = cli.invoke(args=["grids", "locate", str(lon), str(lat)])
    assert result.exit_code == 0, result.output
    assert "cell 110105001001002 community 110105001001" in result.output
