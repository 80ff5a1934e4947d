"""Supervisors' pages: the map, the evaluation tables (and their CSV), the trend dashboard, and
the open-data export of cases without personal data."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from markupsafe import Markup, escape
from redis.exceptions import RedisError
from sqlalchemy import select

from cases.models import CaseSource, CaseStatus, Category, MajorClass
from gridmgmt.kernel import i18n, ratelimit
from gridmgmt.kernel.db import db, reads_replica
from gridmgmt.kernel.errors import InvalidInput
from gridmgmt.kernel.i18n import N_, current_lang, format_date, number
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import Role
from gridmgmt.kernel.queue import queues
from gridmgmt.kernel.settings import city_settings
from gridmgmt.kernel.web import role_required
from grids.models import Area
from maps import evaluation
from maps import services as stats
from maps.aggregate import FilterError, Filters, Scoring, Tally, parse_filters, ranked
from maps.render import EmptyState, MapData, build_map, line_chart

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
        "legend_count": N_("Cases per community"),
        "legend_open": N_("Open cases per community"),
        "legend_overdue": N_("Overdue cases per community"),
        "legend_on_time_rate": N_("On-time rate per community"),
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
        extent=places.extent,
        community_shape_json=places.shape_json,
    )
    # One url_for for every marker (2,000 of them): the case's id put into one built link.
    head, _, tail = url_for("cases.case_page", case_id=CASE_ID_SLOT).partition(str(CASE_ID_SLOT))
    return build_map(
        data,
        asset=lambda path: url_for("static", filename=path),
        case_url=lambda case_id: f"{head}{case_id}{tail}",
        labels=map_labels(),
        tiles=city_settings().tile_url,
        attribution=city_settings().tile_attribution,
        lang=current_lang(),
        empty=empty_state(f),
    )


def active_filters(f: Filters) -> int:
    """How many filters besides the period narrow the cases down."""
    return sum(
        value is not None
        for value in (f.kind, f.major_id, f.category_id, f.status, f.source, f.area_id)
    )


def clear_url(f: Filters) -> str:
    """The map of the same period and measure with no other filter."""
    keep = {} if f.measure == "count" else {"measure": f.measure}
    return url_for("maps.map_page", start=f.start.isoformat(), end=f.end.isoformat(), **keep)


def empty_state(f: Filters) -> EmptyState:
    """What the map says when nothing is left: clear the filters (keeping the period), or with
    none a longer period (the last 12 months) when the period is shorter."""
    if active_filters(f):
        return EmptyState(_("No cases match these filters."), _("Clear the filters"), clear_url(f))
    today = datetime.now(UTC).date()
    keep = {} if f.measure == "count" else {"measure": f.measure}
    year = url_for("maps.map_page", start=(today - timedelta(days=364)).isoformat(), **keep)
    if (f.end - f.start).days >= 364:
        return EmptyState(_("No cases in this period."), "", "")
    return EmptyState(_("No cases in this period."), _("Show the last 12 months"), year)


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
        active=active_filters(f),
        clear=clear_url(f),
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
ON_TIME_TARGET = 0.7  # a typical target of the on-time closure rate (DOMAIN.md)
SATISFACTION_TARGET = 0.85  # units below it are named in Beijing's monthly 三率 (DOMAIN.md)

# The public's rates on the dashboard, a chart each: (rate, title, column, empty, target).
PUBLIC_RATE_CHARTS: tuple[tuple[str, str, str, str, float | None], ...] = (
    ("satisfaction", N_("Satisfaction rate per week"), N_("Satisfaction rate"),
     N_("No follow-up answer in this period."), SATISFACTION_TARGET),
    ("resolution", N_("Resolution rate per week"), N_("Resolution rate"),
     N_("No follow-up answer in this period."), None),
    ("response", N_("Response rate per week"), N_("Response rate"),
     N_("No case was put in a unit's hands in this period."), None),
    ("followup", N_("Follow-up rate per week"), N_("Follow-up rate"),
     N_("No case whose reporter can be reached was closed in this period."), None),
)  # fmt: skip


@dataclass(frozen=True)
class Column:
    """One figure of an evaluation table: its header (an English message id), how to read it
    from a row's figures (a Tally, an InspectorRow...), how to show it, and its formula (the
    page lists every formula once, under "How the figures are computed")."""

    key: str
    label: str
    value: Callable[[Any], float | None]
    kind: str = "number"  # number | percent | decimal
    formula: str = ""
    # The counts a rate is made of (part, whole), shown small under it: "how many of how many".
    counts: Callable[[Any], tuple[int, int]] | None = None


# The score's formula, as `maps.aggregate.Tally.score` computes it, with the weights in effect.
SCORE_FORMULA = N_(
    "Points out of 100: %(shares)s (a rate without data leaves its share to the others),"
    " less %(penalties)s; ranks the rows."
)
SCORE_FORMULA_ON_TIME = N_(
    "Points out of 100: the on-time rate, less %(penalties)s; ranks the rows."
)
SCORE_SHARES = (  # Scoring's field → the rate's column label
    ("response", N_("Response rate")),
    ("resolution", N_("Resolution rate")),
    ("satisfaction", N_("Satisfaction rate")),
    ("followup", N_("Follow-up rate")),
)


def score_formula(scoring: Scoring) -> str:
    """The score's formula in the reader's language, with the city's weights written in:
    each weighted rate's share of the 100 points (the on-time rate has the rest), the points
    off per rework round and, when the city sets it, per re-handling."""
    penalties = _("%(points)s per rework round", points=number(scoring.rework_penalty))
    if scoring.rehandle_penalty:
        penalties += ", " + _("%(points)s per re-handling", points=number(scoring.rehandle_penalty))
    weighted = [(getattr(scoring, name), label) for name, label in SCORE_SHARES]
    weighted = [(w, label) for w, label in weighted if w > 0]
    if not weighted:
        return _(SCORE_FORMULA_ON_TIME, penalties=penalties)
    on_time = 1.0 - sum(w for w, _label in weighted)
    parts = [(on_time, N_("On-time rate")), *weighted] if on_time > 1e-9 else weighted
    shares = " + ".join(f"{number(100 * w)}% × {_(label).lower()}" for w, label in parts)
    return _(SCORE_FORMULA, shares=shares, penalties=penalties)


@dataclass(frozen=True)
class ColumnGroup:
    """Columns shown or hidden together, under one header. `optional` groups are hidden
    until asked for (`?show=<key>`, or their switch on the page): the default columns fit a
    1366-px screen. A new family of rates (say, public participation) is one more group."""

    key: str
    label: str
    columns: tuple[Column, ...]
    optional: bool = False


TALLY_GROUPS = (
    ColumnGroup(
        "cases",
        N_("Cases"),
        (
            Column(
                "due",
                N_("Cases due"),
                lambda t: t.due,
                formula=N_("Cases whose deadline fell in the period, suspended ones included."),
            ),
            Column(
                "closed",
                N_("Closed"),
                lambda t: t.closed,
                formula=N_("Cases due in the period that are closed."),
            ),
            Column(
                "overdue_open",
                N_("Overdue"),
                lambda t: t.overdue_open,
                formula=N_("Cases still open past their deadline now."),
            ),
        ),
    ),
    ColumnGroup(
        "indicators",
        N_("Indicators"),
        (
            Column(
                "closure_rate",
                N_("Closure rate"),
                lambda t: t.closure_rate,
                "percent",
                N_("Closed / (cases due − suspended)."),
            ),
            Column(
                "on_time_rate",
                N_("On-time rate"),
                lambda t: t.on_time_rate,
                "percent",
                N_("Closed on time / (due − suspended); a typical target is 70 percent or more."),
            ),
            Column(
                "rework_rate",
                N_("Rework rate"),
                lambda t: t.rework_rate,
                "percent",
                N_("Cases sent back after a failed check / cases reported done."),
            ),
            Column(
                "score",
                N_("Score"),
                lambda t: t.score(),
                "decimal",
                SCORE_FORMULA,  # written with the city's weights (`score_formula`)
            ),
        ),
    ),
    ColumnGroup(
        "details",
        N_("Details"),
        (
            Column(
                "suspended",
                N_("Suspended"),
                lambda t: t.suspended,
                formula=N_("Cases due that are suspended: left out of the rates."),
            ),
            Column(
                "closed_on_time",
                N_("Closed on time"),
                lambda t: t.closed_on_time,
                formula=N_("Cases due that are closed and were reported done by their deadline."),
            ),
            Column(
                "handled",
                N_("Handled"),
                lambda t: t.handled,
                formula=N_("Cases reported done in the period."),
            ),
            Column(
                "rework_count",
                N_("Rework"),
                lambda t: t.rework_count,
                formula=N_("Times a case was sent back after a failed check."),
            ),
            Column(
                "returns",
                N_("Returns"),
                lambda t: t.returns,
                formula=N_("Cases the unit returned to the dispatcher in the period."),
            ),
            Column(
                "average_handling_hours",
                N_("Avg. hours"),
                lambda t: t.average_handling_hours,
                "decimal",
                N_("Mean time from dispatch to reported done, in hours."),
            ),
        ),
        optional=True,
    ),
    ColumnGroup(
        "participation",
        N_("Public participation"),
        (
            Column(
                "response_rate",
                N_("Response rate"),
                lambda t: t.response_rate,
                "percent",
                N_(
                    "Times a case was put in the unit's hands in the period (dispatched, sent"
                    " back after a failed check, reopened, re-handled) that it accepted or"
                    " returned within %(hours)s hours / those times."
                ),
                lambda t: (t.responded, t.dispatches),
            ),
            Column(
                "resolution_rate",
                N_("Resolution rate"),
                lambda t: t.resolution_rate,
                "percent",
                N_(
                    'Follow-up answers "fixed" / answers "fixed" or "not fixed", given in'
                    ' the period ("don\'t know" and complaints judged unreasonable count in'
                    " neither)."
                ),
                lambda t: (t.fixed, t.fixed + t.not_fixed),
            ),
            Column(
                "satisfaction_rate",
                N_("Satisfaction rate"),
                lambda t: t.satisfaction_rate,
                "percent",
                N_(
                    "(Satisfied + %(weight)s × basically satisfied) / follow-up answers with a"
                    " rating, given in the period and not judged unreasonable."
                ),
                lambda t: (t.satisfied + t.basically_satisfied, t.ratings),
            ),
            Column(
                "followup_rate",
                N_("Follow-up rate"),
                lambda t: t.followup_rate,
                "percent",
                N_(
                    "Closings in the period whose reporter can be reached (an e-mail or phone"
                    " given, or a citizen's account) and who answered after the closing /"
                    " those closings."
                ),
                lambda t: (t.followed_up, t.reachable),
            ),
            Column(
                "rehandle_rate",
                N_("Re-handling rate"),
                lambda t: t.rehandle_rate,
                "percent",
                N_(
                    "Cases sent back for re-handling after a complaint judged reasonable /"
                    " closings in the period."
                ),
                lambda t: (t.rehandled, t.closings),
            ),
        ),
        # Five more columns make the units' table wider than a 1366-px screen: on demand.
        optional=True,
    ),
)
INSPECTOR_GROUPS = (
    ColumnGroup(
        "reports",
        N_("Reports"),
        (
            Column("reports", N_("Reports"), lambda r: r.reports),
            Column(
                "valid",
                N_("Valid"),
                lambda r: r.valid,
                formula=N_("Reports filed as cases (not refused as invalid or duplicate)."),
            ),
            Column(
                "valid_rate",
                N_("Valid rate"),
                lambda r: r.valid_rate,
                "percent",
                N_("Valid reports / reports."),
            ),
        ),
    ),
    ColumnGroup(
        "checks",
        N_("Checks"),
        (
            Column("checks", N_("Checks"), lambda r: r.checks),
            Column(
                "checks_on_time",
                N_("On time"),
                lambda r: r.checks_on_time,
                formula=N_("Checks done within 24 hours of being assigned."),
            ),
            Column(
                "checks_on_time_rate",
                N_("On-time rate"),
                lambda r: r.checks_on_time_rate,
                "percent",
                N_("Checks on time / checks."),
            ),
        ),
    ),
)


def standing(rank: int, ranked_rows: int) -> str:
    """ "best" for the top rows of a ranking, "worst" for the bottom ones (up to three each,
    fewer in a short ranking; none with fewer than two ranked rows), else ""."""
    if not rank or ranked_rows < 2:
        return ""
    marked = min(3, max(1, ranked_rows // 4))
    if rank <= marked:
        return "best"
    if rank > ranked_rows - marked:
        return "worst"
    return ""


def row_cells(
    groups: tuple[ColumnGroup, ...], row: Any, shown: set[str], hide_optional: bool = True
) -> Markup:
    """A table row's figure cells, in the order of `groups`' columns: the value in the
    reader's locale ("–" for none) with its counts small under a rate, the raw value to sort
    by, and `hidden` on an optional group not asked for (with `hide_optional`). Written here
    rather than by a template macro per cell: the evaluation shows thousands of them."""
    figures = i18n.figures()
    shown_as = {"percent": figures.percent, "decimal": figures.decimal}
    cells = []
    for group in groups:
        hidden = " hidden" if hide_optional and group.optional and group.key not in shown else ""
        for column in group.columns:
            value = column.value(row)
            css = f"num g-{group.key}"
            if column.key == "on_time_rate" and value is not None and value < ON_TIME_TARGET:
                css += " below-target"
            shown_value = "–" if value is None else shown_as.get(column.kind, figures.number)(value)
            counts = ""
            if column.counts is not None:
                part, whole = column.counts(row)
                if whole:
                    counts = (
                        f'<br><small class="muted">{figures.number(part)}/'
                        f"{figures.number(whole)}</small>"
                    )
            sort_value = "" if value is None else value
            cells.append(
                f'<td class="{css}" data-value="{sort_value}"{hidden}>'
                f"{escape(shown_value)}{counts}</td>"
            )
    return Markup("".join(cells))


def shown_groups() -> set[str]:
    """The optional column groups asked for (`?show=details&show=...`)."""
    optional = {g.key for g in (*TALLY_GROUPS, *INSPECTOR_GROUPS) if g.optional}
    return optional & set(request.args.getlist("show"))


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
    """The rows of a ranked tally table, as CSV records: every figure of the page, optional
    groups included, then the public's say (the three rates with their counts)."""
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
        *evaluation.RATE_COLUMNS,
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
            "" if (score := t.score()) is None else score,  # 0.0 is a score
            *evaluation.rate_cells(t),
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
    return render_template(
        "maps/evaluation.html",
        period=period,
        tables=tables,
        tally_groups=TALLY_GROUPS,
        inspector_groups=INSPECTOR_GROUPS,
        shown=shown_groups(),
        standing=standing,
        row_cells=row_cells,
        formulas=formulas(),
    )


def formulas() -> list[tuple[str, str]]:
    """(column, formula) of every figure with one, in the reader's language (translated here:
    the formulas' percent signs are text, not a template's placeholders). The settings a
    formula depends on are written in: the response limit, the weight of "basically
    satisfied", the score's weights."""
    config = current_app.config
    settings = {
        "hours": number(float(config.get("RESPONSE_LIMIT_HOURS", 2.0))),
        "weight": number(float(config.get("SATISFACTION_BASIC_WEIGHT", 1.0))),
    }
    scoring = evaluation.scoring_settings(config)
    tallies = [  # only formulas with a placeholder are formatted: others may have a "%"
        (
            _(c.label),
            score_formula(scoring)
            if c.key == "score"
            else _(c.formula, **settings)
            if "%(" in c.formula
            else _(c.formula),
        )
        for g in TALLY_GROUPS
        for c in g.columns
        if c.formula
    ]
    inspectors = [
        (f"{_('Inspectors')}: {_(c.label)}", _(c.formula))
        for g in INSPECTOR_GROUPS
        for c in g.columns
        if c.formula
    ]
    return tallies + inspectors


DASHBOARD_PERIODS = {
    "30d": N_("Last 30 days"),
    "13w": N_("Last 13 weeks"),
    "12m": N_("Last 12 months"),
}
CASES_TITLES = {
    "30d": N_("New cases per day"),
    "13w": N_("New cases per week"),
    "12m": N_("New cases per month"),
}


def dashboard_period(choice: str, today: date) -> tuple[evaluation.Period, list[date]]:
    """The period of a dashboard choice and the first day of each of its buckets: days for
    30 days, weeks (from Monday) for 13 weeks, months for 12 months; the last bucket ends
    today (it is not over yet)."""
    if choice == "30d":
        start = today - timedelta(days=29)
        return evaluation.Period(start, today), [start + timedelta(days=i) for i in range(30)]
    if choice == "13w":
        start = today - timedelta(days=today.weekday()) - timedelta(weeks=12)
        return evaluation.Period(start, today), [start + timedelta(weeks=i) for i in range(13)]
    months = [(today.year * 12 + today.month - 1 - i) for i in range(11, -1, -1)]
    firsts = [date(m // 12, m % 12 + 1, 1) for m in months]
    return evaluation.Period(firsts[0], today), firsts


def bucket_of(day: date, firsts: list[date]) -> date:
    """The bucket (its first day) a day falls in."""
    found = firsts[0]
    for first in firsts:
        if first > day:
            break
        found = first
    return found


@bp.get("/dashboard")
@role_required(*SUPERVISORS)
@reads_replica
def dashboard() -> ResponseReturnValue:
    """Trends of a chosen period (`?period=30d|13w|12m`, default 12 months): the period's key
    figures, new cases per day, week or month, the on-time closure rate per week against its
    usual target, the public's rates per week (satisfaction and resolution from the follow-up
    answers given that week, response from the cases put in units' hands, follow-up from the
    closings), and the major classes with the most new cases."""
    choice = request.args.get("period") or "12m"
    if choice not in DASHBOARD_PERIODS:
        raise InvalidInput(
            "unknown period %(name)r; periods are %(periods)s",
            name=choice,
            periods=", ".join(DASHBOARD_PERIODS),
        )
    today = datetime.now(UTC).date()
    period, firsts = dashboard_period(choice, today)
    session = db.session()
    lang = current_lang()
    per_bucket = dict.fromkeys(firsts, 0)
    per_major: dict[str, int] = {}
    for row in evaluation.cases_per_day(session, period, lang):
        per_bucket[bucket_of(row.day, firsts)] += row.count
        per_major[row.major] = per_major.get(row.major, 0) + row.count
    pattern = "LLL" if choice == "12m" else "MM-dd"
    cases_points: list[tuple[str, float | None]] = [
        (format_date(d, pattern), per_bucket[d]) for d in firsts
    ]
    cases_chart = line_chart(
        cases_points,
        title=_(CASES_TITLES[choice]),
        empty_text=_("No cases in this period."),
        max_labels=12 if choice == "12m" else 7,
    )
    due = dict(evaluation.due_per_week(session, period))
    weekly = {week: tally.on_time_rate for week, tally in due.items()}
    monday = period.start - timedelta(days=period.start.weekday())
    weeks = [monday + timedelta(weeks=i) for i in range((today - monday).days // 7 + 1)]
    rate_points = [(format_date(w, "MM-dd"), weekly.get(w)) for w in weeks]
    rate_chart = line_chart(
        rate_points,
        title=_("On-time closure rate per week"),
        empty_text=_("No case was due in this period."),
        percent=True,
        target=ON_TIME_TARGET,
        target_text=_("Target %(rate)s", rate=f"{number(100 * ON_TIME_TARGET)}%"),
    )
    public = dict(evaluation.rates_per_week(session, period))
    public_charts = []
    for key, title, label, empty_text, target in PUBLIC_RATE_CHARTS:
        points = [
            (format_date(w, "MM-dd"), getattr(public[w], f"{key}_rate") if w in public else None)
            for w in weeks
        ]
        chart = line_chart(
            points,
            title=_(title),
            empty_text=_(empty_text),
            percent=True,
            target=target,
            target_text=_("Target %(rate)s", rate=f"{number(100 * target)}%") if target else "",
        )
        public_charts.append((key, _(title), _(label), chart, points))
    # The period's key figures add up the weeks of the charts.
    total = Tally(overdue_open=evaluation.overdue_open(session, datetime.now(UTC)))
    for tally in (*due.values(), *public.values()):
        total = evaluation.add(total, tally)
    majors = sorted(per_major.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    return render_template(
        "maps/dashboard.html",
        cases_chart=cases_chart,
        cases_title=_(CASES_TITLES[choice]),
        cases_points=cases_points,
        rate_chart=rate_chart,
        rate_points=rate_points,
        public_charts=public_charts,
        target=ON_TIME_TARGET,
        satisfaction_target=SATISFACTION_TARGET,
        period=period,
        choice=choice,
        periods=DASHBOARD_PERIODS,
        new_cases=sum(per_bucket.values()),
        total=total,
        majors=[(major_label(name), count) for name, count in majors],
        most=max((count for _major, count in majors), default=0),
    )


def major_label(major: str) -> str:
    """ "event Sanitation" (as the trend query names a major class) → "Event · Sanitation",
    the kind translated."""
    kind, _sep, name = major.partition(" ")
    return f"{_(kind.capitalize())} · {name}" if name else major


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
