"""Supervisors' pages: the map, the evaluation tables (and their CSV), the trend dashboard, and
the open-data export of cases without personal data."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from redis.exceptions import RedisError
from sqlalchemy import select

from cases.models import CaseSource, CaseStatus, Category, MajorClass
from gridmgmt.kernel import ratelimit
from gridmgmt.kernel.db import db, reads_replica
from gridmgmt.kernel.errors import InvalidInput
from gridmgmt.kernel.i18n import N_, current_lang
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import Role
from gridmgmt.kernel.queue import queues
from gridmgmt.kernel.settings import city_settings
from gridmgmt.kernel.web import role_required
from grids.models import Area
from maps import evaluation
from maps import services as stats
from maps.aggregate import FilterError, Filters, Series, parse_filters, ranked, svg_chart
from maps.render import MapData, build_map

bp = Blueprint("maps", __name__, template_folder="templates")
SUPERVISORS = (Role.LEADER, Role.ADMIN, Role.OPERATOR, Role.DISPATCHER)
CACHE_SECONDS = 3600
CASE_ID_SLOT = 987654321987  # a case id no link has otherwise
GEOJSON = "application/geo+json"
OPEN_DATA_FIELDS = (
    "number",
    "category",
    "category_name",
    "status",
    "source",
    "reported_at",
    "closed_at",
    "deadline",
    "community",
    "lon",
    "lat",
)


def filters_from_request() -> Filters:
    """The page's filters, or a 400 with the reason."""
    try:
        return parse_filters(
            request.args,
            datetime.now(UTC).date(),
            [s.value for s in CaseStatus],
            [s.value for s in CaseSource],
        )
    except FilterError as err:
        raise InvalidInput(err.text, **err.params) from None


def map_labels() -> dict[str, str]:
    """The words on the map, in the page's language."""
    words = {
        "communities": N_("Communities"),
        "cells": N_("Unit grid cells"),
        "cell": N_("Cell"),
        "heat": N_("Case density"),
        "overdue_cases": N_("Overdue cases"),
        "tiles": N_("Base map"),
        "title": N_("Map"),
        "name": N_("Name"),
        "n": N_("Cases"),
        "count": N_("Cases"),
        "open": N_("Open"),
        "overdue": N_("Overdue"),
        "on_time": N_("On time"),
        "on_time_rate": N_("On-time rate"),
        "deadline": N_("Deadline"),
        "no_data": N_("No data"),
    }
    return {key: _(value) for key, value in words.items()}


def build_page(f: Filters) -> str:
    """Aggregate and render the map for these filters."""
    session = db.session()
    cells = stats.cell_stats(session, f)
    shown = [c.id for c in cells]
    places = stats.territory(session)
    data = MapData(
        communities=stats.community_stats(places, cells),
        community_shapes=places.shapes,
        cells=cells,
        cell_shapes=stats.cell_polygons(session, shown)
        if len(shown) <= stats.CELL_POLYGONS_MAX
        else {},
        # More cases in cells than raw points allowed: no need to ask for the points.
        points=None
        if sum(c.n for c in cells) > stats.RAW_POINTS_MAX
        else stats.raw_points(session, f),
        overdue=stats.overdue_cases(session, f),
        overdue_total=sum(c.overdue for c in cells),
        measure=f.measure,
        centre=places.centre or (0.0, 0.0),
    )
    # One url_for for every marker (2,000 of them): the case's id put into one built link.
    link = url_for("cases.case_page", case_id=CASE_ID_SLOT)
    return build_map(
        data,
        asset=lambda path: url_for("static", filename=path),
        case_url=lambda case_id: link.replace(str(CASE_ID_SLOT), str(case_id)),
        labels=map_labels(),
        tiles=city_settings().tile_url,
        attribution=city_settings().tile_attribution,
        lang=current_lang(),
    )


def map_cache_key(f: Filters, lang: str, generation: int, config: dict[str, Any]) -> str:
    """The Redis key of a map page: the filters, the newest case event (`generation`: any
    change to any case makes a new key), the language, the database and the base map."""
    city = city_settings()
    setting = f"{config['DATABASE_URL']}|{city.tile_url}|{city.tile_attribution}"
    where = hashlib.sha256(setting.encode()).hexdigest()[:12]
    return f"gridmgmt:map:{where}:{lang}:{generation}:{f.key()}"


def cached_page(f: Filters) -> str:
    """The map page from Redis when no case changed since it was built, else built now."""
    generation = stats.cases_generation(db.session())
    key = map_cache_key(f, current_lang(), generation, current_app.config)
    try:
        hit = queues.redis.get(key)
        if hit is not None:
            return hit.decode()
    except RedisError:
        return build_page(f)  # the cache is a convenience: the map works without it
    page = build_page(f)
    with contextlib.suppress(RedisError):
        queues.redis.set(key, page.encode(), ex=CACHE_SECONDS)
    return page


@bp.get("/maps")
@role_required(*SUPERVISORS)
@reads_replica
def map_page() -> ResponseReturnValue:
    """Filters, legend and the map (in a frame built from the same query string)."""
    f = filters_from_request()
    session = db.session()
    return render_template(
        "maps/map.html",
        f=f,
        majors=list(session.scalars(select(MajorClass).order_by(MajorClass.kind, MajorClass.code))),
        categories=list(session.scalars(select(Category).order_by(Category.code))),
        areas=list(session.scalars(select(Area).order_by(Area.level, Area.code))),
        statuses=[s.value for s in CaseStatus],
        sources=[s.value for s in CaseSource],
        # The same query string, as it came: filter names never clash with url_for's own
        # arguments (`_method`, `endpoint`...), whatever a visitor types.
        frame=f"{url_for('maps.map_frame')}?{request.query_string.decode('latin-1')}",
    )


@bp.get("/maps/frame")
@role_required(*SUPERVISORS)
@reads_replica
def map_frame() -> ResponseReturnValue:
    """The Folium map itself (cached until a case changes)."""
    return Response(cached_page(filters_from_request()), mimetype="text/html")


def period_from_request() -> evaluation.Period:
    """The evaluation period: `start`/`end` (default: this month so far)."""
    f = filters_from_request()
    if not request.args.get("start"):
        today = datetime.now(UTC).date()
        return evaluation.Period(today.replace(day=1), today)
    return evaluation.Period(f.start, f.end)


TABLES = ("units", "communities", "streets", "districts", "units_urgent", "inspectors")


def evaluation_tables(period: evaluation.Period) -> dict[str, Any]:
    """Every evaluation table of a period."""
    session = db.session()
    now = datetime.now(UTC)
    cube = evaluation.tally_cube(session, period, now)  # one count serves the three tables
    areas = evaluation.by_area(session, period, now, cube=cube)
    return {
        "units": ranked(evaluation.by_unit(session, period, now, cube=cube)),
        "units_urgent": ranked(evaluation.by_unit(session, period, now, urgent=True, cube=cube)),
        "communities": ranked(areas["community"]),
        "streets": ranked(areas["street"]),
        "districts": ranked(areas["district"]),
        "inspectors": evaluation.by_inspector(session, period),
    }


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def tally_csv(rows: list[tuple[int, str, Any]]) -> Iterator[list[object]]:
    """The rows of a ranked tally table, as CSV records."""
    yield [
        "rank",
        "name",
        "due",
        "suspended",
        "closed",
        "closed_on_time",
        "closure_rate_pct",
        "on_time_rate_pct",
        "handled",
        "rework_count",
        "rework_rate_pct",
        "overdue_open",
        "returns",
        "average_handling_hours",
        "score",
    ]
    for rank, name, t in rows:
        hours = t.average_handling_hours
        yield [
            rank or "",
            name,
            t.due,
            t.suspended,
            t.closed,
            t.closed_on_time,
            _percent(t.closure_rate),
            _percent(t.on_time_rate),
            t.handled,
            t.rework_count,
            _percent(t.rework_rate),
            t.overdue_open,
            t.returns,
            "" if hours is None else f"{hours:.1f}",
            t.score() or "",
        ]


def csv_response(records: Iterator[list[object]], filename: str) -> Response:
    """A streamed CSV download."""

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for record in records:
            writer.writerow(record)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get("/evaluation")
@role_required(*SUPERVISORS)
@reads_replica
def evaluation_page() -> ResponseReturnValue:
    """Indicators and rankings of units, areas and inspectors; `?table=X&format=csv` exports."""
    period = period_from_request()
    tables = evaluation_tables(period)
    if request.args.get("format") == "csv":
        name = request.args.get("table", "units")
        if name not in TABLES:
            raise InvalidInput(
                "unknown table %(name)r; tables are %(tables)s", name=name, tables=", ".join(TABLES)
            )
        filename = f"evaluation-{name}-{period.start}-{period.end}.csv"
        if name == "inspectors":
            records = iter(
                [
                    [
                        "inspector",
                        "reports",
                        "valid",
                        "valid_rate_pct",
                        "checks",
                        "checks_on_time",
                        "checks_on_time_rate_pct",
                    ]
                ]
                + [
                    [
                        r.name,
                        r.reports,
                        r.valid,
                        _percent(r.valid_rate),
                        r.checks,
                        r.checks_on_time,
                        _percent(r.checks_on_time_rate),
                    ]
                    for r in tables["inspectors"]
                ]
            )
            return csv_response(records, filename)
        return csv_response(tally_csv(tables[name]), filename)
    return render_template("maps/evaluation.html", period=period, tables=tables)


@bp.get("/dashboard")
@role_required(*SUPERVISORS)
@reads_replica
def dashboard() -> ResponseReturnValue:
    """Trends: new cases per day by major class, on-time closure rate per week."""
    today = datetime.now(UTC).date()
    period = evaluation.Period(today - timedelta(days=89), today)
    session = db.session()
    per_day: dict[str, dict[date, float]] = {}
    for row in evaluation.cases_per_day(session, period, current_lang()):
        per_day.setdefault(row.major, {})[row.day] = row.count
    top = sorted(per_day, key=lambda k: -sum(per_day[k].values()))[:6]
    days = [period.start + timedelta(days=i) for i in range((period.end - period.start).days + 1)]
    cases_chart = svg_chart(
        [Series(major, tuple((d, per_day[major].get(d, 0)) for d in days)) for major in top],
        title=_("New cases per day, by major class"),
    )
    weekly = [(w, r) for w, r in evaluation.on_time_per_week(session, period) if r is not None]
    rate_chart = svg_chart(
        [Series(_("On-time rate"), tuple(weekly))],
        percent=True,
        title=_("On-time closure rate per week"),
    )
    return render_template(
        "maps/dashboard.html", cases_chart=cases_chart, rate_chart=rate_chart, period=period
    )


@bp.get("/open-data/cases.<any(csv, geojson):fmt>")
def open_data(fmt: str) -> ResponseReturnValue:
    """Cases of a period as open data, in their public view (`cases.public`): listed cases
    only, public statuses, positions rounded by the coordinate policy; no reporter, contact,
    description or photo. Streamed in chunks, each read on a connection given back before it
    is sent."""
    ratelimit.limit(
        "reads",
        per_client="RATE_READS_PER_CLIENT",
        per_account="RATE_READS_PER_ACCOUNT",
        account=ratelimit.account_of_user(),
    )
    f = filters_from_request()
    start = datetime.combine(f.start, datetime.min.time(), UTC)
    end = datetime.combine(f.end + timedelta(days=1), datetime.min.time(), UTC)
    filename = f"cases-{f.start}-{f.end}.{fmt}"
    # The checks above (the signed-in user, the limits) used the request's session: give its
    # connection back now, not when the slow reader has the last byte.
    db.session.close()

    decimals = current_app.config["PUBLIC_COORDINATE_DECIMALS"]

    def csv_text() -> Iterator[str]:
        yield ",".join(OPEN_DATA_FIELDS) + "\n"
        yield from stats.open_data_csv(db.read, start, end, decimals)

    # Both written by PostgreSQL a chunk at a time, each chunk from the replica, else the primary.
    body, mimetype = (
        (csv_text(), "text/csv")
        if fmt == "csv"
        else (stats.open_data_geojson(db.read, start, end, decimals), GEOJSON)
    )
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def init_app(app: Flask) -> None:
    """Register the supervisors' pages."""
    app.register_blueprint(bp)
