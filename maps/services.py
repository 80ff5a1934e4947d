"""Aggregation in PostGIS for maps and evaluation: the page gets counts per cell and per
community, never the cases themselves (except a few raw points when the filter leaves few)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cases import public
from cases.models import CaseStatus
from cases.status import DEADLINE_RUNS, ENDED_STATUSES, OPEN_STATUSES
from gridmgmt.kernel.db import sql_in
from maps.aggregate import STATUS_GROUPS, Days, Filters, RollupPlan, bounds, plan_rollup

RAW_POINTS_MAX = 5000
CELL_POLYGONS_MAX = 3000
OVERDUE_MARKERS_MAX = 2000
NOT_OPEN = tuple(s.value for s in CaseStatus if s in ENDED_STATUSES)


# The communities under an area (itself, when it is one), for the area filter.
_COMMUNITIES_UNDER = """
    WITH RECURSIVE tree AS (
        SELECT id, level FROM areas WHERE id = :area
        UNION ALL SELECT a.id, a.level FROM areas a JOIN tree t ON a.parent_id = t.id
    )
    SELECT id FROM tree WHERE level = 'community'
"""


def case_filter(f: Filters, alias: str = "c") -> tuple[str, dict[str, Any]]:
    """SQL conditions and parameters selecting the cases the filters describe."""
    c = alias
    start = datetime.combine(f.start, time(), UTC)
    end = datetime.combine(f.end + timedelta(days=1), time(), UTC)
    clauses = [f"{c}.reported_at >= :start", f"{c}.reported_at < :end"]
    params: dict[str, Any] = {"start": start, "end": end}
    if f.category_id is not None:
        clauses.append(f"{c}.category_id = :category_id")
        params["category_id"] = f.category_id
    if f.major_id is not None:
        clauses.append(f"{c}.category_id IN (SELECT id FROM categories WHERE major_id = :major)")
        params["major"] = f.major_id
    if f.kind is not None:
        clauses.append(
            f"{c}.category_id IN (SELECT k.id FROM categories k "
            "JOIN major_classes m ON m.id = k.major_id WHERE m.kind = :kind)"
        )
        params["kind"] = f.kind
    if f.status in STATUS_GROUPS:
        clauses.append(f"{c}.status = ANY(:statuses)")
        params["statuses"] = list(STATUS_GROUPS[f.status])
        if f.status == "overdue":
            clauses.append(f"{c}.deadline < now()")
    elif f.status is not None:
        clauses.append(f"{c}.status = :status")
        params["status"] = f.status
    if f.source is not None:
        clauses.append(f"{c}.source = :source")
        params["source"] = f.source
    if f.area_id is not None:
        clauses.append(f"{c}.community_id IN ({_COMMUNITIES_UNDER})")
        params["area"] = f.area_id
    return " AND ".join(clauses), params


# Per place: counts, open, overdue now, and on-time among those that are due (closed, or open
# past their deadline): what the choropleth colours and the heat map weighs.
_RUNNING = sql_in("c.status", DEADLINE_RUNS)
# Closed on time: reported done (or else closed) by the deadline; `maps.aggregate.on_time` is
# the same rule for one case.
CLOSED_ON_TIME = "c.closed_at IS NOT NULL AND COALESCE(c.handled_at, c.closed_at) <= c.deadline"
_MEASURES = f"""
    count(*) AS n,
    count(*) FILTER (WHERE c.status <> ALL(:not_open)) AS open,
    count(*) FILTER (WHERE {_RUNNING} AND c.deadline < now())
        AS overdue,
    count(*) FILTER (WHERE c.deadline IS NOT NULL AND (c.closed_at IS NOT NULL
                     OR (c.deadline < now() AND c.status <> ALL(:not_open)))) AS due,
    count(*) FILTER (WHERE {CLOSED_ON_TIME}) AS on_time
"""


@dataclass(frozen=True)
class PlaceStats:
    """The measures of one cell or community."""

    id: int
    code: str
    name: str  # a community's ("" for a cell)
    lon: float
    lat: float
    n: int
    open: int
    overdue: int
    due: int
    on_time: int
    community_id: int | None = None  # the cell's community (cells only)

    @property
    def on_time_rate(self) -> float | None:
        """Closed on time / due."""
        return self.on_time / self.due if self.due else None

    def measure(self, name: str) -> float | None:
        """The value a choropleth colours by."""
        if name == "on_time_rate":
            return self.on_time_rate
        return float(self.n if name == "count" else getattr(self, name))


def _params(f: Filters) -> tuple[str, dict[str, Any]]:
    where, params = case_filter(f)
    params["not_open"] = list(NOT_OPEN)
    return where, params


# The map's rollups (migration 0017), refreshed with the evaluation's: per cell and day of
# report (the last MAP_DAYS_KEPT days before `through`, migration 0032) and per cell and month
# (every month, the current one up to `through`), the cases reported, and among them the due
# and closed ones and the ones closed on time. What a case's status or the clock changes (open,
# overdue, open and past its deadline) is rolled up apart, as of the refresh's moment, and
# brought to the moment of reading by the log of changes since and the deadlines passed since
# (migration 0031).
MAP_DAYS_KEPT = 400  # a year and a month: every period of the last year has its edges here
_OPEN_SQL = sql_in("c.status", sorted(OPEN_STATUSES))  # as ix_cases_open_reported_at's WHERE
# A cell has no name of its own (its code names it): the community's name was read for each
# cell, and shown nowhere.
_CELL_PLACES = """
    SELECT g.id, g.code, '', g.centre_lon, g.centre_lat, s.n, s.open, s.overdue, s.due,
           s.on_time, g.community_id
    FROM ({per_cell}) AS s
    JOIN grid_cells g ON g.id = s.cell_id
"""
# Each part is added up per cell before the parts are added together: fewer, narrower rows
# for the last sum. The parts' counts are added up as int: as bigint, their sums were numeric.
_ROLLED_CELLS = """
    SELECT cell_id, sum(n::int)::int AS n, sum(open::int)::int AS open,
           sum(overdue::int)::int AS overdue, sum(due::int)::int AS due,
           sum(on_time::int)::int AS on_time
    FROM ({parts}) AS parts
    GROUP BY cell_id
    HAVING sum(n::int) > 0 OR sum(open::int) > 0
"""
# Whole months, days, and days taken off a month read whole (their open cases counted apart).
_MONTHS = """
        SELECT r.cell_id, sum(r.n) AS n, 0 AS open, 0 AS overdue, sum(r.due_closed) AS due,
               sum(r.on_time) AS on_time
        FROM map_cell_months r WHERE r.month = ANY(:months) {area_r} GROUP BY r.cell_id
"""
_DAYS = """
        SELECT r.cell_id, sum(r.n), 0, 0, sum(r.due_closed), sum(r.on_time)
        FROM map_cell_days r WHERE ({days}) {area_r} GROUP BY r.cell_id
"""
_LESS_DAYS = """
        SELECT r.cell_id, -sum(r.n), 0, 0, -sum(r.due_closed), -sum(r.on_time)
        FROM map_cell_days r WHERE ({less_days}) {area_r} GROUP BY r.cell_id
"""
# The days counted live, a range at a time: each an index-only scan of ix_cases_map (an OR of
# ranges would read the table itself, through a bitmap).
_LIVE_CELLS = f"""
        SELECT c.cell_id, count(*) AS n,
               count(*) FILTER (WHERE c.status <> ALL(:not_open)) AS open,
               count(*) FILTER (WHERE {_RUNNING} AND c.deadline < now()) AS overdue,
               count(*) FILTER (WHERE c.deadline IS NOT NULL AND (c.closed_at IS NOT NULL
                   OR (c.deadline < now() AND c.status <> ALL(:not_open)))) AS due,
               count(*) FILTER (WHERE {CLOSED_ON_TIME}) AS on_time
        FROM cases c WHERE c.reported_at >= :{{name}}a AND c.reported_at < :{{name}}b
          AND c.cell_id IS NOT NULL {{area_c}}
        GROUP BY c.cell_id
"""
# The days taken off a month counted live: what the monthly rollup counted of them (the cases,
# the due and closed ones, the ones closed on time; never the open ones, counted live apart).
_LESS_LIVE_CELLS = f"""
        SELECT c.cell_id, -count(*), 0, 0,
               -count(*) FILTER (WHERE c.deadline IS NOT NULL AND c.closed_at IS NOT NULL),
               -count(*) FILTER (WHERE {CLOSED_ON_TIME})
        FROM cases c WHERE c.reported_at >= :{{name}}a AND c.reported_at < :{{name}}b
          AND c.cell_id IS NOT NULL {{area_c}}
        GROUP BY c.cell_id
"""
# The open cases of the days read from the months and days above, counted live.
_OPEN_LIVE = f"""
        SELECT c.cell_id, 0, count(*), count(*) FILTER (WHERE {_RUNNING} AND c.deadline < now()),
               count(*) FILTER (WHERE c.deadline < now() AND c.closed_at IS NULL), 0
        FROM cases c WHERE {_OPEN_SQL} AND ({{rolled}}) AND c.cell_id IS NOT NULL {{area_c}}
        GROUP BY c.cell_id
"""
# The days of the running sums (migration 0033): the sums at the period's last day less those
# at the day before its first, every count at once; the open ones as of the refresh's moment
# T0... The day before the first one summed is in the base month (migration 0040), or, for a
# place without a row there, zero.
# A place's array ends at its last change of the month (migration 0037): later days are its
# last element.
_SUMS = ("(CASE WHEN r.month = :sums_end THEN r.{a}[least(:sums_end_day, cardinality(r.{a}))]"
         " ELSE 0 END - CASE WHEN r.month = :sums_start"
         " THEN r.{a}[least(:sums_start_day, cardinality(r.{a}))] ELSE 0 END)")  # fmt: skip
_SUMS_CELLS = f"""
        SELECT r.cell_id, sum({_SUMS.format(a="n")}) AS n, sum({_SUMS.format(a="open")}) AS open,
               sum({_SUMS.format(a="overdue")}) AS overdue,
               sum({_SUMS.format(a="due_closed")} + {_SUMS.format(a="due")}) AS due,
               sum({_SUMS.format(a="on_time")}) AS on_time
        FROM map_cell_sums r WHERE r.month = ANY(:sums_months) {{area_r}} GROUP BY r.cell_id
"""
# ...brought to the moment of reading: the changes to open cases since, each the state a case
# left (-1) and the one it took (+1), judged at T0; and the clock: the open cases whose
# deadline lies between T0 and now (taken off when now is before T0). T0 is read in the same
# statement as the sums, on the snapshot they belong to.
_T0 = "(SELECT refreshed_at FROM rollup_state WHERE name = 'map_sums')"
_CHANGES_CELLS = f"""
        SELECT c.cell_id, 0, sum(c.sign),
               COALESCE(sum(c.sign) FILTER (WHERE {_RUNNING} AND c.deadline < {_T0}), 0),
               COALESCE(sum(c.sign) FILTER (WHERE c.deadline < {_T0} AND c.closed_at IS NULL), 0),
               0
        FROM map_open_log c WHERE ({{summed}}) {{area_c}} GROUP BY c.cell_id
"""
_DEADLINES_CELLS = f"""
        SELECT c.cell_id, 0, 0,
               COALESCE(sum(CASE WHEN c.deadline < now() THEN 1 ELSE -1 END)
                        FILTER (WHERE {_RUNNING}), 0),
               COALESCE(sum(CASE WHEN c.deadline < now() THEN 1 ELSE -1 END)
                        FILTER (WHERE c.closed_at IS NULL), 0),
               0
        FROM cases c
        WHERE {_OPEN_SQL} AND c.deadline IS NOT NULL
          AND c.deadline >= least({_T0}, now()) AND c.deadline < greatest({_T0}, now())
          AND ({{summed}}) AND c.cell_id IS NOT NULL {{area_c}}
        GROUP BY c.cell_id
"""


def _between(column: str, ranges: Days, name: str, params: dict[str, Any], as_time: bool) -> str:
    """`column` in any of the day ranges, as SQL (bounds added to `params`)."""
    clauses = []
    for i, (start, end) in enumerate(ranges):
        params[f"{name}{i}a"] = datetime.combine(start, time(), UTC) if as_time else start
        params[f"{name}{i}b"] = datetime.combine(end, time(), UTC) if as_time else end
        clauses.append(f"({column} >= :{name}{i}a AND {column} < :{name}{i}b)")
    return " OR ".join(clauses) or "FALSE"


@dataclass
class _Parts:
    """The parts of a per-cell count being put together, and their parameters."""

    area_r: str
    area_c: str
    params: dict[str, Any]
    sql: list[str] = field(default_factory=list)

    def live(self, template: str, ranges: Days, name: str) -> None:
        """A part per day range counted live (`template`: _LIVE_CELLS or _LESS_LIVE_CELLS)."""
        for i, (start, end) in enumerate(ranges):
            self.params[f"{name}{i}a"] = datetime.combine(start, time(), UTC)
            self.params[f"{name}{i}b"] = datetime.combine(end, time(), UTC)
            self.sql.append(template.format(name=f"{name}{i}", area_c=self.area_c))

    def rolled(self, plan: RollupPlan) -> None:
        """The days of a plan: months, days, live days and the open cases of the rolled ones."""
        self.params["months"] = list(plan.months)
        self.sql += [
            _MONTHS.format(area_r=self.area_r),
            _DAYS.format(
                days=_between("r.day", plan.days, "d", self.params, as_time=False),
                area_r=self.area_r,
            ),
            _LESS_DAYS.format(
                less_days=_between("r.day", plan.less_days, "e", self.params, as_time=False),
                area_r=self.area_r,
            ),
            _OPEN_LIVE.format(
                rolled=_between("c.reported_at", plan.rolled, "r", self.params, as_time=True),
                area_c=self.area_c,
            ),
        ]
        self.live(_LIVE_CELLS, plan.live, "l")
        self.live(_LESS_LIVE_CELLS, plan.less_live, "m")

    def summed(self, start: date, end: date) -> None:
        """The days from `start` to before `end` from the running sums, with the changes to
        open cases and the deadlines passed since their refresh."""
        last, before = end - timedelta(days=1), start - timedelta(days=1)
        self.params.update(
            sums_end=last.replace(day=1),
            sums_end_day=last.day,
            sums_start=before.replace(day=1),
            sums_start_day=before.day,
            sums_months=[last.replace(day=1), before.replace(day=1)],
        )
        summed = _between("c.reported_at", ((start, end),), "s", self.params, as_time=True)
        self.sql += [
            _SUMS_CELLS.format(area_r=self.area_r),
            _CHANGES_CELLS.format(summed=summed, area_c=self.area_c),
            _DEADLINES_CELLS.format(summed=summed, area_c=self.area_c),
        ]


def cell_stats(session: Session, f: Filters) -> list[PlaceStats]:
    """Measures per unit grid cell with cases, and each cell's centre. Without filters on the
    cases themselves (an area alone, or none), whole past days come from the map's rollups:
    the days of the running sums from them (two rows per cell, whatever the period), older
    ones from whole months and days counted live, today live; else everything is counted
    live."""
    through, sums_through, first = session.execute(
        text("""SELECT (SELECT through FROM rollup_state WHERE name = 'evaluation_days'),
                       (SELECT through FROM rollup_state WHERE name = 'map_sums'),
                       (SELECT through FROM rollup_state WHERE name = 'map_sums_first')""")
    ).one()
    plain = Filters(f.start, f.end, area_id=f.area_id, measure=f.measure)
    if through is None or f != plain:
        where, params = _params(f)
        per_cell = f"""SELECT c.cell_id, {_MEASURES} FROM cases c
                       WHERE {where} AND c.cell_id IS NOT NULL GROUP BY c.cell_id"""
        rows = session.execute(text(_CELL_PLACES.format(per_cell=per_cell)), params).all()
        return [PlaceStats(*row) for row in rows]
    parts = _Parts("", "", {"not_open": list(NOT_OPEN)})
    if f.area_id is not None:
        parts.params["area"] = f.area_id
        parts.area_r = f"AND r.community_id IN ({_COMMUNITIES_UNDER})"
        parts.area_c = f"AND c.community_id IN ({_COMMUNITIES_UNDER})"
    stop = f.end + timedelta(days=1)
    if sums_through != through or first is None:  # not yet summed as far as the rest
        parts.rolled(plan_rollup(f.start, f.end, through, MAP_DAYS_KEPT))
    else:
        if f.start < first:  # before the sums: whole months, and the other days live
            parts.rolled(plan_rollup(f.start, min(f.end, first - timedelta(days=1)), first, 0))
        if max(f.start, first) < min(stop, through):
            parts.summed(max(f.start, first), min(stop, through))
        parts.live(_LIVE_CELLS, ((max(f.start, through), stop),) if stop > through else (), "t")
    per_cell = _ROLLED_CELLS.format(parts=" UNION ALL ".join(parts.sql))
    # Fetched at once: row by row, the driver's fetches took longer than the rows' sums.
    rows = session.execute(text(_CELL_PLACES.format(per_cell=per_cell)), parts.params).all()
    return [PlaceStats(*row) for row in rows]


def community_stats(places: Territory, cells: list[PlaceStats]) -> list[PlaceStats]:
    """Measures per community, added up from its cells (every community, zeros included)."""
    totals: dict[int, list[int]] = {}
    for cell in cells:
        if cell.community_id is None:
            continue
        sums = totals.get(cell.community_id)
        if sums is None:
            totals[cell.community_id] = [cell.n, cell.open, cell.overdue, cell.due, cell.on_time]
        else:
            sums[0] += cell.n
            sums[1] += cell.open
            sums[2] += cell.overdue
            sums[3] += cell.due
            sums[4] += cell.on_time
    return [PlaceStats(*row, *totals.get(row[0], [0, 0, 0, 0, 0])) for row in places.places]


def cell_polygons(session: Session, cell_ids: list[int]) -> dict[int, dict[str, Any]]:
    """GeoJSON geometries of some cells (about 1 m precision)."""
    rows = session.execute(
        text("SELECT id, ST_AsGeoJSON(geom, 5)::json FROM grid_cells WHERE id = ANY(:ids)"),
        {"ids": cell_ids},
    )
    return dict(rows.tuples().all())


def raw_points(
    session: Session, f: Filters, limit: int = RAW_POINTS_MAX
) -> list[tuple[float, float]] | None:
    """The cases' own positions when the filter leaves at most `limit`, else None."""
    where, params = _params(f)
    rows = session.execute(
        text(f"""SELECT ST_X(c.location), ST_Y(c.location) FROM cases c WHERE {where}
                 LIMIT :limit"""),
        {**params, "limit": limit + 1},
    ).all()
    return None if len(rows) > limit else [(x, y) for x, y in rows]


@dataclass(frozen=True)
class OverdueCase:
    """An overdue case marker."""

    id: int
    number: str
    lon: float
    lat: float
    category: str
    deadline: datetime


# The most overdue first, read from ix_cases_running_deadline alone (migrations 0021 and 0030:
# the running cases by deadline, with their report time, id, number, class and position).
# Reading the period's running cases first and sorting them read 64,000 table pages for a
# month at ten million cases (0.96 s); reading the markers' rows by id, 40 ms.
_OVERDUE = f"""
    SELECT c.id, c.number, ST_X(c.location), ST_Y(c.location), k.name_en, c.deadline
    FROM cases c JOIN categories k ON k.id = c.category_id
    WHERE {{where}} AND {_RUNNING} AND c.deadline < now()
    ORDER BY c.deadline, c.id LIMIT :limit
"""


def overdue_cases(
    session: Session, f: Filters, limit: int = OVERDUE_MARKERS_MAX
) -> list[OverdueCase]:
    """The most overdue open cases, at most `limit` (their total is in the cells' counts)."""
    where, params = _params(f)
    rows = session.execute(text(_OVERDUE.format(where=where)), {**params, "limit": limit}).all()
    return [OverdueCase(*row) for row in rows]


@dataclass(frozen=True)
class Territory:
    """What the map draws of the communities, which change rarely: each one's outline
    simplified (~5 m), as GeoJSON, and the point where its marker goes; the centre of all."""

    shapes: dict[str, dict[str, Any]]  # code → GeoJSON geometry
    places: tuple[tuple[int, str, str, float, float], ...]  # (id, code, name, lon, lat)
    centre: tuple[float, float] | None
    extent: list[list[float]] | None = None  # the outlines' bounds, [[south, west], [north, east]]
    shape_json: dict[str, str] = field(default_factory=dict)  # code → outline as JSON text


# Changes whenever a community is added, removed or changed (any update gives its row a new
# xmin, a transaction id never given twice in a cluster, which a hot standby keeps): what the
# simplified outlines are kept by, with the database's name.
_TERRITORY_VERSION = text("""
    SELECT current_database() || ':'
           || md5(COALESCE(string_agg(id || ':' || xmin::text, ',' ORDER BY id), ''))
    FROM areas WHERE level = 'community'
""")
_TERRITORY = text("""
    SELECT a.id, a.code, a.name, ST_X(p), ST_Y(p),
           ST_AsGeoJSON(ST_SimplifyPreserveTopology(a.geom, :tolerance), 7)::json,
           ST_X(ST_Centroid(e)), ST_Y(ST_Centroid(e))
    FROM areas a, ST_PointOnSurface(a.geom) AS p,
         (SELECT ST_Extent(geom)::geometry AS e FROM areas WHERE level = 'community') AS box
    WHERE a.level = 'community' ORDER BY a.code
""")
# One per process: (version, territory). Simplifying the outlines took 0.1-0.7 s a page.
_territory: tuple[str, Territory] | None = None


def territory(session: Session, tolerance_deg: float = 0.00005) -> Territory:
    """The communities as the map draws them, simplified once per change of the territory
    (kept in this process until a community changes; checking costs one small query)."""
    global _territory
    version = session.scalar(_TERRITORY_VERSION)
    kept = _territory
    if kept is not None and kept[0] == f"{version}:{tolerance_deg}":
        return kept[1]
    rows = session.execute(_TERRITORY, {"tolerance": tolerance_deg}).all()
    shapes = {row[1]: row[5] for row in rows}
    built = Territory(
        shapes=shapes,
        places=tuple((row[0], row[1], row[2], row[3], row[4]) for row in rows),
        centre=(rows[0][6], rows[0][7]) if rows else None,
        extent=bounds(shapes.values()),  # walking every vertex took 17 ms a page
        # As the map's page writes them (sorted keys): 13 ms a page.
        shape_json={code: json.dumps(shape, sort_keys=True) for code, shape in shapes.items()},
    )
    _territory = (f"{version}:{tolerance_deg}", built)
    return built


def cases_generation(session: Session) -> int:
    """Changes whenever any case changes: every change appends a case event."""
    return int(session.scalar(text("SELECT COALESCE(max(id), 0) FROM case_events")) or 0)


# One chunk of the open-data export: the public view of cases reported in a period (listed
# cases only, rounded positions), in (reported_at, id) order after the last row sent (from the
# period's start with id 0). The row comparison alone bounds it from below, so the index on
# (reported_at, id) is read in order and stops at the chunk's end.
_OPEN_DATA_CHUNK = text(f"""
    SELECT c.id, c.number, k.code AS category, k.name_en AS category_name, c.status, c.source,
           c.reported_at, c.closed_at, c.deadline, a.code AS community,
           round(ST_X(c.location)::numeric, :decimals) AS lon,
           round(ST_Y(c.location)::numeric, :decimals) AS lat
    FROM cases c JOIN categories k ON k.id = c.category_id
    LEFT JOIN areas a ON a.id = c.community_id
    WHERE (c.reported_at, c.id) > (:after_at, :after_id) AND c.reported_at < :end
      AND {sql_in("c.status", public.LISTED_STATUSES)}
    ORDER BY c.reported_at, c.id
    LIMIT :size
""")


Rows = list[dict[str, Any]]


def open_data_chunks(
    read: Callable[[Callable[[Connection], Rows]], Rows],
    start: datetime,
    end: datetime,
    decimals: int,
    size: int = 5000,
) -> Iterator[Rows]:
    """The open-data rows of cases reported in [start, end), `size` at a time, as Python
    values: what the CSV and GeoJSON exports, written by PostgreSQL, say (the tests compare
    them). Each chunk is read by `read` (`db.read`: the replica, else the primary) on a
    connection of its own, given back before the chunk is sent: a slow client holds no
    database connection while it reads (rows changed between chunks show their newer state;
    none is sent twice or missed; a chunk the replica fails to give is read from the
    primary). Statuses are public statuses (`cases.public`)."""
    after_at, after_id = start, 0
    while True:
        params = {"after_at": after_at, "after_id": after_id, "end": end,
                  "decimals": decimals, "size": size}  # fmt: skip
        rows = read(
            lambda conn, params=params: [
                dict(r) for r in conn.execute(_OPEN_DATA_CHUNK, params).mappings()
            ]
        )
        if not rows:
            return
        after_at, after_id = rows[-1]["reported_at"], rows[-1]["id"]
        for row in rows:
            del row["id"]
            row["status"] = public.public_status(row["status"]).value
        yield rows
        if len(rows) < size:
            return


# The exports' chunks, written by PostgreSQL itself: where the chunk of `size` rows after the
# last one sent ends...
_OPEN_DATA_END = text(f"""
    SELECT c.reported_at, c.id FROM cases c
    WHERE (c.reported_at, c.id) > (:after_at, :after_id) AND c.reported_at < :end
      AND {sql_in("c.status", public.LISTED_STATUSES)}
    ORDER BY c.reported_at, c.id OFFSET :last LIMIT 1
""")
# ...and its rows as CSV (`COPY` takes no parameters: the driver binds them into the text).
_PUBLIC_STATUS_SQL = (
    "CASE c.status "
    + " ".join(f"WHEN '{s.value}' THEN '{p.value}'" for s, p in public.PUBLIC_STATUS.items())
    + " END"
)
_OPEN_DATA_COPY = f"""
    COPY (
        SELECT c.number, k.code, k.name_en, {_PUBLIC_STATUS_SQL}, c.source,
               to_json(c.reported_at) #>> '{{}}', to_json(c.closed_at) #>> '{{}}',
               to_json(c.deadline) #>> '{{}}', a.code,
               round(ST_X(c.location)::numeric, %(decimals)s),
               round(ST_Y(c.location)::numeric, %(decimals)s)
        FROM cases c JOIN categories k ON k.id = c.category_id
        LEFT JOIN areas a ON a.id = c.community_id
        WHERE (c.reported_at, c.id) > (%(after_at)s, %(after_id)s)
          AND (c.reported_at, c.id) < (%(until_at)s, %(until_id)s)
          AND {sql_in("c.status", public.LISTED_STATUSES)}
        ORDER BY c.reported_at, c.id
    ) TO STDOUT WITH (FORMAT csv)
"""


def open_data_csv(
    read: Callable[[Callable[[Connection], Any]], Any],
    start: datetime,
    end: datetime,
    decimals: int,
    size: int = 5000,
) -> Iterator[str]:
    """The open-data rows of `open_data_chunks` as CSV text, a chunk at a time, formatted by
    PostgreSQL (`COPY … TO STDOUT`): Python only passes the text on. Each chunk is one short
    read (the end of the chunk, then its rows) on a connection given back before it is sent;
    times are ISO 8601 with their offset (JSON's form: no trailing zeros of microseconds)."""
    after_at, after_id = start, 0

    def chunk(conn: Connection) -> tuple[str, tuple[datetime, int] | None]:
        params = {"after_at": after_at, "after_id": after_id, "end": end, "last": size - 1}
        last = conn.execute(_OPEN_DATA_END, params).first()
        # Rows before (until_at, until_id): up to the chunk's last row, or the period's end.
        until = (last[0], last[1] + 1) if last else (end, 0)
        cursor = conn.connection.cursor()
        statement = cursor.mogrify(
            _OPEN_DATA_COPY,
            {"after_at": after_at, "after_id": after_id, "until_at": until[0],
             "until_id": until[1], "decimals": decimals},
        ).decode()  # fmt: skip
        buffer = io.StringIO()
        cursor.copy_expert(statement, buffer)
        return buffer.getvalue(), ((last[0], last[1]) if last else None)

    while True:
        body, until = read(chunk)
        if body:
            yield body
        if until is None:
            return
        after_at, after_id = until


# The GeoJSON export's features, written by PostgreSQL too: a chunk's features as one text
# (joined by commas), in the key order and the times' form of the CSV. Built by concatenation
# rather than json_build_object: the same JSON in a tenth less time and a tenth fewer bytes
# (no spaces around its colons), measured on a month at a million cases.
def _json(expression: str) -> str:
    return f"COALESCE(to_json({expression})::text, 'null')"


_OPEN_DATA_FEATURES = text(f"""
    SELECT string_agg(concat(
               '{{"type":"Feature","geometry":{{"type":"Point","coordinates":[',
               round(ST_X(c.location)::numeric, :decimals), ',',
               round(ST_Y(c.location)::numeric, :decimals),
               ']}},"properties":{{"number":', {_json("c.number")},
               ',"category":', {_json("k.code")},
               ',"category_name":', {_json("k.name_en")},
               ',"status":', {_json(_PUBLIC_STATUS_SQL)},
               ',"source":', {_json("c.source")},
               ',"reported_at":', {_json("c.reported_at")},
               ',"closed_at":', {_json("c.closed_at")},
               ',"deadline":', {_json("c.deadline")},
               ',"community":', {_json("a.code")}, '}}}}'),
           ',' ORDER BY c.reported_at, c.id)
    FROM cases c JOIN categories k ON k.id = c.category_id
    LEFT JOIN areas a ON a.id = c.community_id
    WHERE (c.reported_at, c.id) > (:after_at, :after_id)
      AND (c.reported_at, c.id) < (:until_at, :until_id)
      AND {sql_in("c.status", public.LISTED_STATUSES)}
""")


def open_data_geojson(
    read: Callable[[Callable[[Connection], Any]], Any],
    start: datetime,
    end: datetime,
    decimals: int,
    size: int = 5000,
) -> Iterator[str]:
    """The open-data rows of `open_data_chunks` as a GeoJSON FeatureCollection, a chunk at a
    time, each chunk's features written by PostgreSQL: Python only passes the text on. Read
    as `open_data_csv` reads (the end of the chunk, then its features, on a connection given
    back before they are sent)."""
    after_at, after_id = start, 0

    def chunk(conn: Connection) -> tuple[str | None, tuple[datetime, int] | None]:
        params = {"after_at": after_at, "after_id": after_id, "end": end, "last": size - 1}
        last = conn.execute(_OPEN_DATA_END, params).first()
        until = (last[0], last[1] + 1) if last else (end, 0)
        features = conn.scalar(
            _OPEN_DATA_FEATURES,
            {"after_at": after_at, "after_id": after_id, "until_at": until[0],
             "until_id": until[1], "decimals": decimals},
        )  # fmt: skip
        return features, ((last[0], last[1]) if last else None)

    yield '{"type":"FeatureCollection","features":['
    first = True
    while True:
        features, until = read(chunk)
        if features:
            yield features if first else "," + features
            first = False
        if until is None:
            break
        after_at, after_id = until
    yield "]}"
