"""The territory administration's services on real Los Angeles council boundaries: every
problem of every feature listed (nothing imported), the audited import and generation, the
territory summary; the command line's way (the first problem raises) is unchanged."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import mapping, shape
from shapely.ops import unary_union
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gridmgmt.kernel.audit import AdminAudit, AuditAction
from gridmgmt.kernel.errors import InvalidInput, NotFound
from gridmgmt.kernel.models import Unit
from grids import services
from grids.geojson import load_layer, parse_layer, polygon_features
from grids.models import Area, GridCell
from tests.conftest import shared_file

DISTRICT, STREET = "990100", "990100006"
# Three small councils (Hermon, Elysian Valley Riverside, Rampart Village).
COUNCILS = ("126", "43", "53")


def councils(*ids: str) -> dict[str, Any]:
    """A FeatureCollection of these real councils, in this order."""
    layer = load_layer(shared_file("la_neighborhood_councils.geojson"))
    by_id = {f["properties"]["nc_id"]: f for f in layer["features"]}
    return {"type": "FeatureCollection", "features": [copy.deepcopy(by_id[i]) for i in ids]}


def self_intersecting(feature: dict[str, Any]) -> dict[str, Any]:
    """The feature with two far vertices of its outer ring swapped: a bow-tie (invalid)."""
    ring = feature["geometry"]["coordinates"][0][0]
    i, j = len(ring) // 4, 3 * len(ring) // 4
    ring[i], ring[j] = ring[j], ring[i]
    return feature


def parents(session: Session) -> None:
    """The district and street the councils go under (the councils' union as boundary)."""
    whole = mapping(unary_union([f.geometry for f in polygon_features(councils(*COUNCILS))]))
    for level, code, parent in (("district", DISTRICT, None), ("street", STREET, DISTRICT)):
        feature = {"type": "Feature", "properties": {"code": code, "name": level}}
        layer = {"type": "FeatureCollection", "features": [{**feature, "geometry": whole}]}
        services.import_units(session, layer, level, "code", "name", parent_code=parent)


def audit_rows(session: Session, action: AuditAction) -> list[AdminAudit]:
    return list(session.scalars(select(AdminAudit).where(AdminAudit.action == action.value)))


def test_check_units_lists_every_problem_of_every_feature(session: Session) -> None:
    parents(session)
    layer = councils(*COUNCILS)
    self_intersecting(layer["features"][1])
    del layer["features"][2]["properties"]["nc_id"]
    layer["features"][0]["properties"]["name"] = " "

    problems = services.check_units(session, layer, "community", "nc_id", "name", STREET)

    found = [(p.index, p.code, p.error.code) for p in problems]
    assert found == [
        (1, "126", "invalid_input"),  # no name
        (2, "43", "invalid_input"),  # self-intersection
        (3, None, "invalid_input"),  # no code
    ]
    assert "field 'name'" in problems[0].error.message
    assert "invalid geometry (Self-intersection" in problems[1].error.message
    assert "no field 'nc_id'" in problems[2].error.message
    communities = select(func.count()).select_from(Area).where(Area.level == "community")
    assert session.scalar(communities) == 0


def test_check_units_repairs_with_make_valid_and_finds_duplicates(session: Session) -> None:
    parents(session)
    layer = councils("126", "43", "53")
    self_intersecting(layer["features"][1])
    layer["features"][2]["properties"]["nc_id"] = "126"

    problems = services.check_units(
        session, layer, "community", "nc_id", "name", STREET, make_valid=True
    )

    assert [(p.index, p.code) for p in problems] == [(3, "126")]
    assert "appears twice in the file (also feature 1)" in problems[0].error.message


def test_the_command_line_still_stops_at_the_first_problem(session: Session) -> None:
    parents(session)
    layer = councils(*COUNCILS)
    self_intersecting(layer["features"][1])
    del layer["features"][2]["properties"]["nc_id"]

    with pytest.raises(InvalidInput, match="feature 2: invalid geometry"):
        services.import_units(session, layer, "community", "nc_id", "name", STREET)


def test_upload_units_refuses_the_whole_layer(session: Session) -> None:
    parents(session)
    layer = councils(*COUNCILS)
    self_intersecting(layer["features"][1])

    refused = services.upload_units(session, None, layer, "community", "nc_id", "name", STREET)

    assert (refused.result, refused.total, refused.rejected) == (None, 3, 1)
    assert [p.index for p in refused.problems] == [2]
    communities = select(func.count()).select_from(Area).where(Area.level == "community")
    assert session.scalar(communities) == 0
    assert audit_rows(session, AuditAction.TERRITORY_IMPORTED) == []


def test_upload_units_imports_and_audits(session: Session) -> None:
    parents(session)
    layer = councils(*COUNCILS)
    self_intersecting(layer["features"][1])

    outcome = services.upload_units(
        session, None, layer, "community", "nc_id", "name", STREET, True, "councils.geojson"
    )

    assert outcome.problems == [] and outcome.result is not None
    assert (outcome.result.created, outcome.result.updated) == (3, 0)
    codes = set(session.scalars(select(Area.code).where(Area.level == "community")))
    assert codes == {"990100006126", "990100006043", "990100006053"}
    assert set(session.scalars(select(Unit.code))) >= codes
    [row] = audit_rows(session, AuditAction.TERRITORY_IMPORTED)
    assert (row.actor, row.target_type, row.target_id) == ("system", "territory", "community")
    assert row.before == {"level": "community", "areas": 0}
    assert row.after is not None
    assert (row.after["name"], row.after["areas"], row.after["created"]) == (
        "councils.geojson",
        3,
        3,
    )
    assert row.after["make_valid"] is True


def test_make_cells_for_one_community_and_all(session: Session) -> None:
    parents(session)
    services.upload_units(session, None, councils(*COUNCILS), "community", "nc_id", "name", STREET)

    one = services.make_cells(session, None, 250.0, "990100006126")

    assert one.total > 0 and list(one.communities) == ["990100006126"]
    cells = session.scalar(select(func.count()).select_from(GridCell))
    assert cells == one.total
    [row] = audit_rows(session, AuditAction.CELLS_GENERATED)
    assert (row.target_type, row.before, row.after) == (
        "area",
        {"name": "HERMON NC", "code": "990100006126", "cells": 0},
        {
            "name": "HERMON NC",
            "code": "990100006126",
            "cells": one.total,
            "cell_size_m": 250.0,
            "code_length": 15,
        },
    )

    every = services.make_cells(session, None, 250.0, code_length=14)

    assert len(every.communities) == 3
    assert every.communities["990100006126"][1] == one.total
    rows = audit_rows(session, AuditAction.CELLS_GENERATED)
    assert rows[-1].target_type == "territory"
    assert rows[-1].before == {"communities": 3, "cells": one.total}
    assert rows[-1].after == {
        "communities": 3,
        "cells": every.total,
        "cell_size_m": 250.0,
        "code_length": 14,
    }
    assert len(session.scalar(select(GridCell.code).limit(1)) or "") == 14


def test_make_cells_refuses_bad_input(session: Session) -> None:
    parents(session)
    services.upload_units(session, None, councils("126"), "community", "nc_id", "name", STREET)

    with pytest.raises(InvalidInput, match="between 1 and 10000"):
        services.make_cells(session, None, 0.5, "990100006126")
    with pytest.raises(InvalidInput, match="14 or 15 digits"):
        services.make_cells(session, None, 100.0, "990100006126", 16)
    with pytest.raises(NotFound, match="990100006999 does not exist"):
        services.make_cells(session, None, 100.0, "990100006999")
    with pytest.raises(NotFound, match="990100006 does not exist"):
        services.make_cells(session, None, 100.0, STREET)  # a street is no community
    assert audit_rows(session, AuditAction.CELLS_GENERATED) == []


def test_territory_summary_rolls_cells_up(session: Session) -> None:
    parents(session)
    services.upload_units(session, None, councils(*COUNCILS), "community", "nc_id", "name", STREET)
    made = services.make_cells(session, None, 250.0, "990100006043")

    summary = {area.code: area for area in services.territory_summary(session)}

    assert summary[DISTRICT].communities == 3 and summary[DISTRICT].cells == made.total
    assert summary[STREET].parent_code == DISTRICT and summary[STREET].cells == made.total
    assert summary["990100006043"].cells == made.total
    assert summary["990100006126"].cells == 0
    assert summary["990100006126"].unit_code == "990100006126"
    assert summary["990100006126"].unit_active is True
    assert summary["990100006126"].area_m2 > 100_000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json at all", "is not valid GeoJSON"),
        (b"\xff\xfe\x00garbage", "is not valid GeoJSON"),
        (b'{"type": "Feature"}', "is not a GeoJSON FeatureCollection"),
        (b'{"type": "FeatureCollection", "features": []}', "has no features"),
        (b"[" * 100_000 + b"]" * 100_000, "is not valid GeoJSON"),
    ],
)
def test_parse_layer_refuses_what_is_not_geojson(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_layer(data, "upload.geojson")


def test_load_layer_reads_the_real_file_as_before(tmp_path: Path) -> None:
    layer = load_layer(shared_file("la_neighborhood_councils.geojson"))
    assert len(layer["features"]) == 99
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [1]}))
    with pytest.raises(InvalidInput, match="feature 1 is not a GeoJSON Feature"):
        load_layer(bad)
    with pytest.raises(InvalidInput, match="cannot read"):
        load_layer(tmp_path / "missing.geojson")


def test_check_territory_gives_the_shapes_of_the_problems(session: Session) -> None:
    parents(session)
    services.upload_units(session, None, councils(*COUNCILS), "community", "nc_id", "name", STREET)
    services.make_cells(session, None, 250.0, "990100006126")

    plain = services.check_territory(session)
    shaped = services.check_territory(session, shapes=True)

    gaps = {p.first: p for p in shaped.problems if p.kind == "community_gap"}
    assert set(gaps) == {"990100006043", "990100006053"}  # no cells yet
    assert all(p.shape is None for p in plain.problems)
    assert [(p.kind, p.first) for p in plain.problems] == [
        (p.kind, p.first) for p in shaped.problems
    ]
    whole = json.loads(gaps["990100006043"].shape or "null")
    assert whole["type"] in ("Polygon", "MultiPolygon")
    assert shape(whole).area == pytest.approx(
        session.scalar(select(func.ST_Area(Area.geom)).where(Area.code == "990100006043")),
        rel=0.01,
    )
