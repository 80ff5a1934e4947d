"""The supervisor map as a Folium page, with every script and style served by the app itself.

`build_map` composes one helper per layer: the base map, the optional tiles, the communities'
choropleth, the cells' choropleth (when few cells are shown), the heat map, the cluster of
overdue cases, the layer switch and the legend.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import folium
from branca.element import Element
from folium.plugins import FastMarkerCluster, HeatMap

from maps.aggregate import Classes, classes, lat_lon
from maps.services import OverdueCase, PlaceStats

Asset = Callable[[str], str]  # a static path → its URL


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


def build_map(
    data: MapData,
    asset: Asset,
    case_url: Callable[[int], str],
    labels: dict[str, str],
    tiles: str = "",
    attribution: str = "",
    lang: str = "en",
) -> str:
    """Render the map page (HTML, in language `lang`) from aggregated data, layer by layer."""
    m = build_base_map(data.centre, asset)
    title = html.escape(labels.get("title", "Map"))
    m.get_root().header.add_child(folium.Element(f"<title>{title}</title>"), name="title")
    if tiles:
        add_tiles(m, tiles, attribution, labels)
    community_scale = classes(c.measure(data.measure) for c in data.communities)
    add_communities(m, data, community_scale, labels)
    if data.cell_shapes:
        add_cells(m, data, labels)
    add_heatmap(m, data, asset, labels)
    if data.overdue:
        add_overdue_cluster(m, data, asset, case_url, labels)
    folium.LayerControl(collapsed=False).add_to(m)
    add_legend(m, labels[data.measure], community_scale, labels)
    page = m.get_root().render()
    return page.replace("<html>", f'<html lang="{html.escape(lang)}">', 1)


def build_base_map(centre: tuple[float, float], asset: Asset) -> folium.Map:
    """An empty map (no tiles: they are optional) centred on (lon, lat), served offline."""
    m = folium.Map(
        location=lat_lon(*centre),
        zoom_start=13,
        tiles=None,
        prefer_canvas=True,
        control_scale=True,
    )
    offline(m, asset)
    return m


def offline(m: folium.Map, asset: Asset) -> None:
    """Point Folium's scripts and styles at the app's vendored copies (no CDN)."""
    m.default_js = [("leaflet", asset("vendor/leaflet/leaflet.js"))]
    m.default_css = [("leaflet_css", asset("vendor/leaflet/leaflet.css"))]


def add_tiles(m: folium.Map, tiles: str, attribution: str, labels: dict[str, str]) -> None:
    """The background tile layer (a URL template)."""
    folium.TileLayer(tiles, attr=attribution or " ", name=labels["tiles"]).add_to(m)


def add_communities(m: folium.Map, data: MapData, scale: Classes, labels: dict[str, str]) -> None:
    """The communities' choropleth, coloured by the chosen measure, with a tooltip each."""
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
    folium.GeoJson(
        {"type": "FeatureCollection", "features": features},
        name=labels["communities"],
        style_function=lambda f: {
            "fillColor": scale.colour(by_code[f["properties"]["code"]].measure(data.measure)),
            "color": "#555",
            "weight": 1.5,
            "fillOpacity": 0.55,
        },
        tooltip=folium.GeoJsonTooltip(fields=fields, aliases=[labels[f] for f in fields]),
    ).add_to(m)


def add_cells(m: folium.Map, data: MapData, labels: dict[str, str]) -> None:
    """The cells' choropleth (hidden at first), on a colour scale of its own."""
    scale = classes(c.measure(data.measure) for c in data.cells)
    values = {c.id: c for c in data.cells}
    features = [
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
        {"type": "FeatureCollection", "features": features},
        name=labels["cells"],
        style_function=lambda f: {
            "fillColor": scale.colour(values[f["properties"]["id"]].measure(data.measure)),
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


def add_heatmap(m: folium.Map, data: MapData, asset: Asset, labels: dict[str, str]) -> None:
    """The heat map: of the cases themselves when few, else of the cells weighted by count."""
    if data.points is not None:
        heat_data = [lat_lon(x, y) for x, y in data.points]
    else:
        heat_data = [[round(c.lat, 4), round(c.lon, 4), c.n] for c in data.cells]
    heat = HeatMap(heat_data, name=labels["heat"], radius=18, blur=14, min_opacity=0.3)
    heat.default_js = [("leaflet-heat.js", asset("vendor/leaflet.heat/leaflet-heat.js"))]
    heat.add_to(m)


def add_overdue_cluster(
    m: folium.Map,
    data: MapData,
    asset: Asset,
    case_url: Callable[[int], str],
    labels: dict[str, str],
) -> None:
    """The overdue cases as clustered markers whose popup links to the case."""
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
    cluster = FastMarkerCluster(
        rows,
        callback=_overdue_marker_js(labels["deadline"]),
        name=f"{labels['overdue_cases']} ({data.overdue_total:,})",
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


def _overdue_marker_js(deadline_label: str) -> str:
    """The browser-side function that turns one row of `add_overdue_cluster` into a marker.

    The popup is built with DOM calls (textContent), never HTML strings: case numbers and
    category names are data, not markup.
    """
    deadline = json.dumps(deadline_label + ": ")
    return f"""
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


def add_legend(m: folium.Map, title: str, scale: Classes, labels: dict[str, str]) -> None:
    """The legend of the communities' colour classes, in the map's bottom-right corner."""
    rows = "".join(
        f'<div><i style="background:{colour}"></i> ≤ {_number(bound)}</div>'
        for bound, colour in zip(scale.bounds, scale.colours, strict=False)
    )
    legend = Element(
        f"""<div class="gm-legend"><strong>{title}</strong>{rows}
        <div><i style="background:#dddddd"></i> {labels["no_data"]}</div></div>
        <style>.gm-legend{{position:absolute;bottom:28px;right:10px;z-index:1000;background:#fff;
        padding:6px 8px;font:12px/1.4 sans-serif;border-radius:4px;box-shadow:0 1px 4px #0004}}
        .gm-legend i{{display:inline-block;width:14px;height:14px;vertical-align:middle;
        border:1px solid #999}}</style>"""
    )
    m.get_root().html.add_child(legend)


def _number(value: float) -> str:
    """A legend bound: whole numbers plain, rates as percentages."""
    if value.is_integer():
        return f"{value:,.0f}"
    return f"{100 * value:.0f} %" if value <= 1 else f"{value:,.1f}"
