"""The supervisor map as a Folium page, with every script and style served by the app itself.

`build_map` composes one helper per layer: the base map, the optional tiles, the communities'
choropleth, the cells' choropleth (when few cells are shown), the heat map, the cluster of
overdue cases, the layer switch and the legend.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import folium
from branca.element import Element, MacroElement
from folium.plugins import FastMarkerCluster, HeatMap

from maps.aggregate import NO_DATA, PALETTE, Classes, bounds, classes, lat_lon
from maps.services import OverdueCase, PlaceStats

Asset = Callable[[str], str]  # a static path → its URL
HIGHER_IS_BETTER = {"on_time_rate"}


class _Text(Element):
    """Text already rendered, written out as it is."""

    def __init__(self, text: str) -> None:
        super().__init__()
        # What rendering the text as a template gave: one newline form, no final newline.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        self._text = text[:-1] if text.endswith("\n") else text

    def render(self, **kwargs: Any) -> str:
        """The text."""
        return self._text


# What a layer's data is while Folium writes the rest of the layer, and how it is written.
_DATA_SLOT = "\ue000map-data\ue000"
_DATA_SLOT_JSON = json.dumps(_DATA_SLOT)


def _script_safe(text: str) -> str:
    """JSON text made safe in a script element, as Jinja's `tojson` makes it."""
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )


class _TextOutput(MacroElement):
    """A layer whose rendered parts are kept as text. Branca's MacroElement compiles each
    part it renders as a Jinja template of its own: for the layers that hold the map's data
    (the communities, the heat map, the overdue cases: 540 kB at ten million cases) that
    took 80 ms a page, and would have read a "{{" in the data as template code."""

    def data_json(self) -> str | None:
        """The layer's data as the JSON text Folium would write, when the layer has it at
        hand (else None: Folium writes it)."""
        return None

    def render(self, **kwargs: Any) -> str:
        """As `MacroElement.render`, each macro's output kept as text."""
        figure = self.get_root()
        macros = self._template.module.__dict__
        written = self.data_json()
        data = getattr(self, "data", None)
        if written is not None:
            self.data = _DATA_SLOT
        try:
            for part, parent in (("header", figure.header), ("html", figure.html),
                                 ("script", figure.script)):  # fmt: skip
                macro = macros.get(part)
                if macro is not None:
                    text = macro(self, kwargs)
                    if written is not None:
                        text = text.replace(_DATA_SLOT_JSON, written)
                    parent.add_child(_Text(text), name=self.get_name())
        finally:
            if written is not None:
                self.data = data
        for element in self._children.values():
            element.render(**kwargs)
        return f"L.{self._name}"


class _GeoJson(folium.GeoJson, _TextOutput):
    """Folium's GeoJson layer, rendered as text; with `geometry_json` (each feature's geometry
    as JSON text with sorted keys, made once with the territory) its data is written without
    turning every vertex into text again (13 ms a page for the communities' outlines)."""

    def __init__(
        self, data: dict[str, Any], geometry_json: Sequence[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(data, **kwargs)
        self.geometry_json = geometry_json

    def data_json(self) -> str | None:
        """The FeatureCollection as `tojson` writes it (sorted keys), each geometry given."""
        data = self.data
        if self.geometry_json is None or set(data) != {"type", "features"}:
            return None
        features = data["features"]
        if len(features) != len(self.geometry_json) or not all("type" in f for f in features):
            return None
        # Sorted keys: "geometry" comes first in a feature, "features" first in the collection.
        written = ", ".join(
            '{"geometry": '
            + geometry
            + ", "
            + json.dumps({k: v for k, v in feature.items() if k != "geometry"}, sort_keys=True)[1:]
            for feature, geometry in zip(features, self.geometry_json, strict=True)
        )
        rest = json.dumps({"type": data["type"]})[1:]
        return _script_safe('{"features": [' + written + "], " + rest)


class _HeatMap(HeatMap, _TextOutput):
    """Folium's heat map, rendered as text, of points already [lat, lon, weight] floats."""

    def __init__(self, data: list[list[float]], **kwargs: Any) -> None:
        # Folium checks each point one by one (35 ms for 4,800 cells): ours come from PostGIS.
        super().__init__([], **kwargs)
        self.data = data


class _FastMarkerCluster(FastMarkerCluster, _TextOutput):
    """Folium's marker cluster, rendered as text, of rows already starting [lat, lon]."""

    def __init__(self, data: list[list[Any]], **kwargs: Any) -> None:
        super().__init__([], **kwargs)  # as _HeatMap: Folium's check of each row is skipped
        self.data = data


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
    extent: list[list[float]] | None = None  # the communities' bounds (Territory.extent)
    community_shape_json: dict[str, str] | None = None  # code → geometry as JSON text


@dataclass(frozen=True)
class EmptyState:
    """What the map says when the filters leave no case: a message and a way out (a link
    opened in the page around the frame)."""

    message: str
    link_text: str
    link_url: str


def build_map(
    data: MapData,
    asset: Asset,
    case_url: Callable[[int], str],
    labels: dict[str, str],
    tiles: str = "",
    attribution: str = "",
    lang: str = "en",
    empty: EmptyState | None = None,
) -> str:
    """Render the map page (HTML, in language `lang`) from aggregated data, layer by layer;
    `empty` is shown over the map when no community has a case."""
    m = build_base_map(data.centre, asset)
    title = html.escape(labels.get("title", "Map"))
    m.get_root().header.add_child(_Text(f"<title>{title}</title>"), name="title")
    if tiles:
        add_tiles(m, tiles, attribution, labels)
    community_scale = legible(
        classes(c.measure(data.measure) for c in data.communities),
        higher_is_better=data.measure in HIGHER_IS_BETTER,
    )
    add_communities(m, data, community_scale, labels)
    if data.cell_shapes:
        add_cells(m, data, labels)
    add_heatmap(m, data, asset, labels)
    if data.overdue:
        add_overdue_cluster(m, data, asset, case_url, labels)
    folium.LayerControl(collapsed=False).add_to(m)
    extent = data.extent
    if extent is None:
        extent = bounds(data.community_shapes.values())
    if extent is not None:  # the territory fills the window, whatever its size
        m.fit_bounds(extent, padding=(16, 16))
    add_legend(
        m,
        labels.get(f"legend_{data.measure}", labels[data.measure]),
        community_scale,
        labels,
        [c.measure(data.measure) for c in data.communities],
        percent=data.measure == "on_time_rate",
    )
    if (
        empty is not None
        and not any(c.n for c in data.communities)
        and not any(c.n for c in data.cells)
    ):
        add_empty_state(m, empty)
    page = m.get_root().render()
    return page.replace("<html>", f'<html lang="{html.escape(lang)}">', 1)


def legible(scale: Classes, higher_is_better: bool = False) -> Classes:
    """Classes a reader takes in at once: an empty city (the only bound is 0) in the palette's
    lightest colour, not the alarming red of the top class; and for a measure where more is
    better (the on-time rate) the palette turned round, so that red still means trouble."""
    if scale.bounds and scale.bounds[-1] == 0:
        return Classes(scale.bounds, (PALETTE[0],))
    if higher_is_better:
        return Classes(scale.bounds, tuple(reversed(scale.colours)))
    return scale


def build_base_map(centre: tuple[float, float], asset: Asset) -> folium.Map:
    """An empty map (no tiles: they are optional) centred on (lon, lat), served offline."""
    m = folium.Map(
        location=lat_lon(*centre),
        zoom_start=13,
        tiles=None,
        prefer_canvas=True,
        control_scale=True,
        # Without tiles no layer gives the map a highest zoom, and the overdue cluster needs one
        # (Folium's own max_zoom only reaches a tile layer).
        maxZoom=19,
        zoomSnap=0.25,  # the territory fitted to the window closely, not to the next power of 2
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
    texts = data.community_shape_json or {}
    shown = [c.code for c in data.communities if c.code in data.community_shapes]
    _GeoJson(
        {"type": "FeatureCollection", "features": features},
        geometry_json=[texts[code] for code in shown] if texts.keys() >= set(shown) else None,
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
    scale = legible(
        classes(c.measure(data.measure) for c in data.cells),
        higher_is_better=data.measure in HIGHER_IS_BETTER,
    )
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
    _GeoJson(
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
    # Off at first (a switch of the layer control): its colours would blur the communities'
    # classes, which the legend explains.
    heat = _HeatMap(heat_data, name=labels["heat"], radius=18, blur=14, min_opacity=0.3, show=False)
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
            _minute(case.deadline),
        ]
        for case in data.overdue
    ]
    cluster = _FastMarkerCluster(
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


def _minute(moment: datetime) -> str:
    """A time as "2024-05-01 14:30" (what strftime writes, in less than half its time)."""
    return "%04d-%02d-%02d %02d:%02d" % (  # noqa: UP031 (the quickest form here)
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
    )


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


def add_legend(
    m: folium.Map,
    title: str,
    scale: Classes,
    labels: dict[str, str],
    values: Sequence[float | None] = (),
    percent: bool = False,
) -> None:
    """The legend of the communities' colour classes, in the map's bottom-right corner: each
    class as the range of values it holds ("3–7"), then how many communities have no data."""
    rows = "".join(
        f'<div><i style="background:{colour}"></i> {html.escape(text)}</div>'
        for text, colour in zip(class_ranges(scale, values, percent), scale.colours, strict=False)
    )
    legend = _Text(
        f"""<div class="gm-legend" role="region" aria-label="{html.escape(title, quote=True)}">
        <strong>{html.escape(title)}</strong>{rows}
        <div><i style="background:{NO_DATA}"></i> {html.escape(labels["no_data"])}</div></div>
        <style>.gm-legend{{position:absolute;bottom:28px;right:10px;z-index:1000;background:#fff;
        padding:6px 8px;font:13px/1.5 system-ui,sans-serif;border-radius:4px;color:#1b1f24;
        box-shadow:0 1px 4px #0004;max-width:14rem}}
        .gm-legend strong{{display:block;margin-bottom:2px}}
        .gm-legend i{{display:inline-block;width:14px;height:14px;vertical-align:middle;
        border:1px solid #999;margin-right:4px}}</style>"""
    )
    m.get_root().html.add_child(legend)


def class_ranges(
    scale: Classes, values: Sequence[float | None] = (), percent: bool = False
) -> list[str]:
    """The range of each colour class, from the lowest value (or 0) to its upper bound: whole
    numbers as "0–2", "3–7" (a class starts one above the previous bound), rates as
    "40–75 %" (classes touch: a rate is continuous)."""
    known = [float(v) for v in values if v is not None]
    low = min(known, default=0.0)
    ranges = []
    for bound in map(float, scale.bounds):
        if percent:
            lo, hi = round(100 * low), round(100 * bound)
            ranges.append(f"{hi} %" if lo == hi else f"{lo}–{hi} %")
            low = bound
        else:
            lo_text, hi_text = _number(low), _number(bound)
            ranges.append(hi_text if lo_text == hi_text else f"{lo_text}–{hi_text}")
            low = bound + 1 if bound.is_integer() else bound
    return ranges


def add_empty_state(m: folium.Map, empty: EmptyState) -> None:
    """A message over the map when the filters leave no case, with a link out of it (opened
    in the page around the frame)."""
    link = (
        f'<a href="{html.escape(empty.link_url, quote=True)}" target="_top">'
        f"{html.escape(empty.link_text)}</a>"
        if empty.link_url
        else ""
    )
    box = _Text(
        f"""<div class="gm-empty" role="status"><p>{html.escape(empty.message)}</p>{link}</div>
        <style>.gm-empty{{position:absolute;top:50%;left:50%;transform:translate(-50%,-50%);
        z-index:1001;background:#fff;padding:16px 20px;border-radius:6px;text-align:center;
        font:15px/1.5 system-ui,sans-serif;color:#1b1f24;box-shadow:0 2px 10px #0005;
        max-width:80%}}.gm-empty p{{margin:0 0 8px;font-weight:600}}
        .gm-empty a{{color:#0b5cad}}</style>"""
    )
    m.get_root().html.add_child(box)


def _number(value: float) -> str:
    """A legend bound: whole numbers plain, others with one decimal."""
    if value.is_integer():
        return f"{value:,.0f}"
    return f"{value:,.1f}"


# ---------------------------------------------------------------- dashboard charts

CHART_FONT = 11


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least `top` (0, 5, 10, 15, 20…), about `count` steps."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < top:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def line_chart(
    points: Sequence[tuple[str, float | None]],
    title: str,
    empty_text: str,
    percent: bool = False,
    target: float | None = None,
    target_text: str = "",
    width: int = 420,
    height: int = 230,
    max_labels: int = 7,
) -> str:
    """A line chart as inline SVG (no script, no CDN): a y axis with round ticks and grid lines,
    x labels thinned to fit, each point marked with its value in a tooltip and, when the points
    are few (or for the highest and the last), written over it; `target` draws a dashed line
    (a rate's goal). With no value at all, the axes and `empty_text` in their middle.

    `points` are (x label, value or None for a gap); rates are 0..1 with `percent`."""
    left, right, top_pad, bottom = 44, 12, 18, height - 28
    known = [v for _, v in points if v is not None]
    if not percent and not any(known):
        known = []  # counts that are all zero: nothing happened, say so
    label = html.escape(title, quote=True)
    cls = "chart" if known else "chart chart-empty"
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0] if percent else nice_ticks(max(known, default=0))
    top = ticks[-1] or 1.0
    n = max(len(points), 1)

    def x(i: int) -> float:
        return left + (width - left - right) * (i + 0.5) / n

    def y(v: float) -> float:
        return bottom - (bottom - top_pad) * v / top

    def show(v: float) -> str:
        return f"{100 * v:.0f}%" if percent else f"{v:,.0f}"

    parts = [
        f'<svg class="{cls}" viewBox="0 0 {width} {height}" role="img" aria-label="{label}"'
        f' font-size="{CHART_FONT}" font-family="system-ui, sans-serif">',
        f"<title>{html.escape(title)}</title>",
    ]
    for t in ticks:  # the y axis: grid lines and their values
        parts.append(
            f'<line x1="{left}" y1="{y(t):.1f}" x2="{width - right}" y2="{y(t):.1f}"'
            f' stroke="{"#8c959f" if t == 0 else "#e1e4e8"}"/>'
            f'<text x="{left - 4}" y="{y(t) + 4:.1f}" text-anchor="end" fill="#57606a">'
            f"{show(t)}</text>"
        )
    every = max(1, math.ceil(len(points) / max_labels))  # x labels that fit
    for i, (text, _) in enumerate(points):
        if i % every == 0:
            # Every other label is left out on a phone (maps.css), where the text is larger.
            alt = ' class="x-alt"' if (i // every) % 2 else ""
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - 10}" text-anchor="middle" fill="#57606a"'
                f"{alt}>{html.escape(text)}</text>"
            )
    if target is not None and known:
        parts.append(
            f'<line x1="{left}" y1="{y(target):.1f}" x2="{width - right}" y2="{y(target):.1f}"'
            ' stroke="#1a7431" stroke-dasharray="5 4"/>'
            f'<text x="{left + 4}" y="{y(target) - 4:.1f}" fill="#1a7431">'
            f"{html.escape(target_text)}</text>"
        )
    if not known:
        parts.append(
            f'<text x="{(left + width - right) / 2:.1f}" y="{(top_pad + bottom) / 2:.1f}"'
            f' text-anchor="middle" font-size="13" fill="#57606a">{html.escape(empty_text)}</text>'
        )
        parts.append("</svg>")
        return "".join(parts)
    # The line, broken where a value is missing.
    run: list[str] = []
    runs: list[list[str]] = []
    for i, (_, v) in enumerate(points):
        if v is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(f"{x(i):.1f},{y(v):.1f}")
    if run:
        runs.append(run)
    for r in runs:
        parts.append(
            f'<polyline fill="none" stroke="#0b5cad" stroke-width="2" points="{" ".join(r)}"/>'
        )
    highest = max(known)
    # The highest is written once, at its first point: a rate at 100 % many weeks running
    # would otherwise write "100%" over itself along the top.
    peak = next(i for i, (_, v) in enumerate(points) if v == highest)
    last = max(i for i, (_, v) in enumerate(points) if v is not None)
    few = len(points) <= 14
    for i, (text, v) in enumerate(points):
        if v is None:
            continue
        value = show(v)
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="{3 if few else 2}" fill="#0b5cad">'
            f"<title>{html.escape(text)}: {value}</title></circle>"
        )
        if few or i in (peak, last):
            minor = "" if i in (peak, last) else ' class="v-minor"'
            parts.append(
                f'<text x="{x(i):.1f}" y="{y(v) - 7:.1f}" text-anchor="middle" fill="#1b1f24"'
                f' font-weight="600"{minor}>{value}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
