"""The supervisor map as a Folium page, with every script and style served by the app itself."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import folium
from branca.element import Element
from folium.plugins import FastMarkerCluster, HeatMap

from maps.aggregate import Classes, classes, lat_lon
from maps.services import OverdueCase, PlaceStats


@dataclass(frozen=True)
class MapData:
    """Everything the page shows, already aggregated."""

    communities: Sequence[PlaceStats]
    community_shapes: dict[str, dict[str, Any]]  # code → GeoJSON geometry
    cells: Sequence[PlaceStats]
    cell_shapes: dict[int, dict[str, Any]]  # id → geometry (only when few cells are shown)
    points: Sequence[tuple[float, float]] | None  # raw case positions when few
    overdue: Sequence[OverdueCase]
    overdue_total: int
    measure: str
    centre: tuple[float, float]


def offline(m: folium.Map, asset: Callable[[str], str]) -> None:
    """Point Folium's scripts and styles at the app's vendored copies (no CDN)."""
    m.default_js = [("leaflet", asset("vendor/leaflet/leaflet.js"))]
    m.default_css = [("leaflet_css", asset("vendor/leaflet/leaflet.css"))]


def _number(value: float) -> str:
    """A legend bound: whole numbers plain, rates as percentages."""
    if value.is_integer():
        return f"{value:,.0f}"
    return f"{100 * value:.0f} %" if value <= 1 else f"{value:,.1f}"


def _legend(title: str, scale: Classes, labels: dict[str, str]) -> Element:
    rows = "".join(
        f'<div><i style="background:{colour}"></i> ≤ {_number(bound)}</div>'
        for bound, colour in zip(scale.bounds, scale.colours, strict=False)
    )
    return Element(
        f"""<div class="gm-legend"><strong>{title}</strong>{rows}
        <div><i style="background:#dddddd"></i> {labels["no_data"]}</div></div>
        <style>.gm-legend{{position:absolute;bottom:28px;right:10px;z-index:1000;background:#fff;
        padding:6px 8px;font:12px/1.4 sans-serif;border-radius:4px;box-shadow:0 1px 4px #0004}}
        .gm-legend i{{display:inline-block;width:14px;height:14px;vertical-align:middle;
        border:1px solid #999}}</style>"""
    )


def build_map(
    data: MapData,
    asset: Callable[[str], str],
    case_url: Callable[[int], str],
    labels: dict[str, str],
    tiles: str = "",
    attribution: str = "",
) -> str:
    """Render the map page (HTML) from aggregated data."""
    m = folium.Map(
        location=lat_lon(*data.centre),
        zoom_start=13,
        tiles=None,
        prefer_canvas=True,
        control_scale=True,
    )
    offline(m, asset)
    if tiles:
        folium.TileLayer(tiles, attr=attribution or " ", name=labels["tiles"]).add_to(m)

    community_scale = classes(c.measure(data.measure) for c in data.communities)
    by_code = {c.code: c for c in data.communities}
    features = [
        {
            "type": "Feature",
            "geometry": data.community_shapes[c.code],
            "properties": {
                "code": c.code,
                "name": c.name,
                "n": c.n,
                "open": c.open,
                "overdue": c.overdue,
                "on_time": "" if c.on_time_rate is None else f"{100 * c.on_time_rate:.0f} %",
            },
        }
        for c in data.communities
        if c.code in data.community_shapes
    ]
    fields = ["name", "n", "open", "overdue", "on_time"]
    aliases = [labels[f] for f in fields]
    folium.GeoJson(
        {"type": "FeatureCollection", "features": features},
        name=labels["communities"],
        style_function=lambda f: {
            "fillColor": community_scale.colour(
                by_code[f["properties"]["code"]].measure(data.measure)
            ),
            "color": "#555",
            "weight": 1.5,
            "fillOpacity": 0.55,
        },
        tooltip=folium.GeoJsonTooltip(fields=fields, aliases=aliases),
    ).add_to(m)

    if data.cell_shapes:
        cell_scale = classes(c.measure(data.measure) for c in data.cells)
        values = {c.id: c for c in data.cells}
        cells = [
            {
                "type": "Feature",
                "geometry": shape,
                "properties": {
                    "id": cid,
                    "code": values[cid].code,
                    "n": values[cid].n,
                    "open": values[cid].open,
                    "overdue": values[cid].overdue,
                },
            }
            for cid, shape in data.cell_shapes.items()
        ]
        folium.GeoJson(
            {"type": "FeatureCollection", "features": cells},
            name=labels["cells"],
            style_function=lambda f: {
                "fillColor": cell_scale.colour(values[f["properties"]["id"]].measure(data.measure)),
                "color": "#777",
                "weight": 0.5,
                "fillOpacity": 0.6,
            },
            tooltip=folium.GeoJsonTooltip(
                fields=["code", "n", "open", "overdue"],
                aliases=[labels["cell"], labels["n"], labels["open"], labels["overdue"]],
            ),
            show=False,
        ).add_to(m)

    if data.points is not None:
        heat_data = [lat_lon(x, y) for x, y in data.points]
    else:
        heat_data = [[round(c.lat, 4), round(c.lon, 4), c.n] for c in data.cells]
    heat = HeatMap(heat_data, name=labels["heat"], radius=18, blur=14, min_opacity=0.3)
    heat.default_js = [("leaflet-heat.js", asset("vendor/leaflet.heat/leaflet-heat.js"))]
    heat.add_to(m)

    if data.overdue:
        # One compact row per case, drawn in the browser: a few dozen bytes each.
        rows = [
            [
                round(case.lat, 5),
                round(case.lon, 5),
                case_url(case.id),
                case.number,
                case.category,
                f"{case.deadline:%Y-%m-%d %H:%M}",
            ]
            for case in data.overdue
        ]
        deadline = json.dumps(labels["deadline"] + ": ")
        callback = f"""
            function callback(row) {{
                var marker = L.circleMarker([row[0], row[1]],
                    {{radius: 6, color: "#bd0026", fillOpacity: 0.8}});
                var box = document.createElement("div");
                var link = document.createElement("a");
                link.href = row[2]; link.target = "_top"; link.textContent = row[3];
                box.appendChild(link);
                box.appendChild(document.createElement("br"));
                box.appendChild(document.createTextNode(row[4]));
                box.appendChild(document.createElement("br"));
                box.appendChild(document.createTextNode({deadline} + row[5]));
                marker.bindPopup(box);
                return marker;
            }}"""
        cluster = FastMarkerCluster(
            rows, callback=callback, name=f"{labels['overdue_cases']} ({data.overdue_total:,})"
        )
        cluster.default_js = [
            ("markerclusterjs", asset("vendor/leaflet.markercluster/leaflet.markercluster.js"))
        ]
        cluster.default_css = [
            ("markerclustercss", asset("vendor/leaflet.markercluster/MarkerCluster.css")),
            (
                "markerclusterdefaultcss",
                asset("vendor/leaflet.markercluster/MarkerCluster.Default.css"),
            ),
        ]
        cluster.add_to(m)

    folium.LayerControl(collapsed=False).add_to(m)
    m.get_root().html.add_child(_legend(labels[data.measure], community_scale, labels))
    return m.get_root().render()
