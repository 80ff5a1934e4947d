"""The map page as Folium's own layers write it: the layers that keep their output as text and
the communities' outlines written from the territory's JSON give the same page, byte for byte,
and data is never read as template code."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import folium
import pytest
from branca.element import Element
from folium.plugins import FastMarkerCluster, HeatMap
from jinja2.utils import htmlsafe_json_dumps

from maps import render
from maps.render import EmptyState, MapData, build_map
from maps.services import OverdueCase, PlaceStats

NAME = 'Tom\'s <Park> & "quoted" 公园'
LABELS = {k: k.title() for k in (
    "communities", "cells", "cell", "heat", "overdue_cases", "tiles", "title", "name", "n",
    "count", "open", "overdue", "on_time", "on_time_rate", "deadline", "no_data",
    "legend_count", "legend_open", "legend_overdue", "legend_on_time_rate")}  # fmt: skip


def square(x: float, y: float, size: float = 0.01) -> dict[str, Any]:
    ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def page_data(
    with_cells: bool, points: bool, other: str = "B", category: str = "Burst <b>"
) -> MapData:
    shapes = {"A": square(-118.3, 34.0), "B": square(-118.29, 34.0)}
    communities = [
        PlaceStats(1, "A", NAME, -118.295, 34.005, 7, 3, 1, 4, 2),
        PlaceStats(2, "B", other, -118.285, 34.005, 0, 0, 0, 0, 0),
    ]
    cells = [PlaceStats(10, "A1", "", -118.2951234, 34.0051234, 7, 3, 1, 4, 2, community_id=1)]
    overdue = [OverdueCase(5, "P0005", -118.29512345, 34.00512345, category,
                           datetime(2024, 5, 1, 14, 30, tzinfo=UTC))]  # fmt: skip
    return MapData(
        communities=communities,
        community_shapes=shapes,
        cells=cells,
        cell_shapes={10: square(-118.2955, 34.0045, 0.001)} if with_cells else {},
        points=[(-118.2951234, 34.0051234)] if points else None,
        overdue=overdue,
        overdue_total=1,
        measure="count",
        centre=(-118.29, 34.005),
        extent=None,
        community_shape_json={c: json.dumps(s, sort_keys=True) for c, s in shapes.items()},
    )


def draw(data: MapData) -> str:
    page = build_map(
        data,
        asset=lambda path: f"/static/{path}",
        case_url=lambda case_id: f"/cases/{case_id}",
        labels=LABELS,
        empty=EmptyState("Nothing", "Clear", "/maps"),
    )
    ids: dict[str, str] = {}
    return re.sub(r"[0-9a-f]{32}", lambda m: ids.setdefault(m[0], f"ID{len(ids)}"), page)


@pytest.mark.parametrize(("with_cells", "points"), [(False, False), (True, True)])
def test_the_page_is_what_folium_s_own_layers_write(
    monkeypatch: pytest.MonkeyPatch, with_cells: bool, points: bool
) -> None:
    data = page_data(with_cells, points)
    ours = draw(data)

    monkeypatch.setattr(render, "_Text", Element)
    monkeypatch.setattr(
        render, "_GeoJson", lambda d, geometry_json=None, **kw: folium.GeoJson(d, **kw)
    )
    monkeypatch.setattr(render, "_HeatMap", HeatMap)
    monkeypatch.setattr(render, "_FastMarkerCluster", FastMarkerCluster)
    folium_s = draw(data)

    assert ours == folium_s
    assert r"Burst \u003cb\u003e" in ours
    assert r"Tom\u0027s \u003cPark\u003e \u0026 \"quoted\" \u516c\u56ed" in ours


def test_names_that_look_like_template_code_are_written_as_they_are() -> None:
    # Folium's own layers compile their output as a template: "{{ 7 * 7 }}" came out as 49,
    # and "{% raw %}" failed the page.
    page = draw(page_data(False, False, other="{% raw %}B", category="{{ 7 * 7 }}"))

    assert '"name": "{% raw %}B"' in page
    assert '"{{ 7 * 7 }}"' in page


def test_the_communities_data_is_written_as_tojson_writes_it() -> None:
    data = page_data(False, False)
    features = [
        {"type": "Feature", "geometry": data.community_shapes[c.code],
         "properties": {"code": c.code, "name": c.name}}
        for c in data.communities
    ]  # fmt: skip
    collection = {"type": "FeatureCollection", "features": features}
    texts = [json.dumps(data.community_shapes[c.code], sort_keys=True) for c in data.communities]
    layer = render._GeoJson(collection, geometry_json=texts, name="x")

    assert layer.data_json() == str(htmlsafe_json_dumps(collection, sort_keys=True))
    assert render._GeoJson(collection, name="x").data_json() is None  # no texts: Folium writes
