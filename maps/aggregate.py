"""Pure rules of what supervisors see: filters, indicator formulas, colour classes, trends.

No Flask, no session: the SQL lives in `maps.services`, these functions only compute.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from cases.status import DEADLINE_RUNS, OPEN_STATUSES, CaseStatus

# Yellow → red, five classes (ColorBrewer YlOrRd): readable on a grey map without tiles.
PALETTE = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
NO_DATA = "#dddddd"
STATUS_GROUPS = {
    "open": tuple(s.value for s in CaseStatus if s in OPEN_STATUSES),
    "closed": (CaseStatus.CLOSED.value,),
    "overdue": tuple(s.value for s in DEADLINE_RUNS),
}
MEASURES = ("count", "open", "overdue", "on_time_rate")
DEFAULT_PERIOD_DAYS = 30


class FilterError(ValueError):
    """A filter value that cannot be right: an English message id with `%(name)s` fields
    (`text`, a literal that `pybabel extract` finds) and their values (`params`), turned
    into an InvalidInput at the edge. Not a DomainError: this module stays free of Flask."""

    def __init__(self, text: str, /, **params: object) -> None:
        self.text, self.params = text, params
        super().__init__(text % params if params else text)


@dataclass(frozen=True)
class Filters:
    """What the map and the indicators are about. Dates are inclusive days (UTC)."""

    start: date
    end: date
    kind: str | None = None
    major_id: int | None = None
    category_id: int | None = None
    status: str | None = None  # a case status, or a group: open, closed, overdue
    source: str | None = None
    area_id: int | None = None  # a district, street or community
    measure: str = "count"

    def key(self) -> str:
        """A stable hash of the filters, for caches."""
        raw = json.dumps(asdict(self), default=str, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:20]


def parse_filters(
    args: Mapping[str, str],
    today: date,
    statuses: Iterable[str],
    sources: Iterable[str],
) -> Filters:
    """Filters from query parameters; defaults: the last 30 days, everything, case counts.

    Raises:
        FilterError: a malformed date or number, an unknown status/source/measure, start > end.
    """

    def day(name: str, default: date) -> date:
        raw = (args.get(name) or "").strip()
        if not raw:
            return default
        try:
            value = date.fromisoformat(raw)
        except ValueError:
            raise FilterError(
                "%(name)s must be a date YYYY-MM-DD, not %(raw)r", name=name, raw=raw
            ) from None
        if not 1900 <= value.year <= 9000:
            raise FilterError("%(name)s must be between the years 1900 and 9000", name=name)
        return value

    def number(name: str) -> int | None:
        raw = (args.get(name) or "").strip()
        if not raw:
            return None
        if not (raw.isascii() and raw.isdigit()):
            raise FilterError("%(name)s must be a number, not %(raw)r", name=name, raw=raw)
        return int(raw)

    def choice(name: str, allowed: Iterable[str]) -> str | None:
        raw = (args.get(name) or "").strip() or None
        if raw is not None and raw not in set(allowed):
            raise FilterError("unknown %(name)s %(raw)r", name=name, raw=raw)
        return raw

    end = day("end", today)
    start = day("start", end - timedelta(days=DEFAULT_PERIOD_DAYS - 1))
    if start > end:
        raise FilterError("the period starts after it ends")
    if (end - start).days > 3660:
        raise FilterError("a period is at most ten years")
    return Filters(
        start=start,
        end=end,
        kind=choice("kind", ("component", "event")),
        major_id=number("major"),
        category_id=number("category"),
        status=choice("status", [*statuses, *STATUS_GROUPS]),
        source=choice("source", sources),
        area_id=number("area"),
        measure=choice("measure", MEASURES) or "count",
    )


def rate(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nothing to divide."""
    return part / whole if whole else None


@dataclass(frozen=True)
class Scoring:
    """How a city weighs what the public says (settings: `SATISFACTION_BASIC_WEIGHT`,
    `SCORE_WEIGHT_*`, `SCORE_REHANDLE_PENALTY`). The weights are shares of the score's 100
    points taken from the on-time closure rate, which keeps the rest; all 0 (the default): the
    score is the on-time rate's alone, as before the three rates."""

    basic_weight: float = 1.0  # what 基本满意 counts for in the satisfaction rate (0.8 in some)
    response: float = 0.0
    resolution: float = 0.0
    satisfaction: float = 0.0
    followup: float = 0.0
    rework_penalty: float = 1.0  # points off per rework round
    rehandle_penalty: float = 0.0  # points off per re-handling

    def __post_init__(self) -> None:
        shares = (self.response, self.resolution, self.satisfaction, self.followup)
        if any(w < 0 for w in shares) or sum(shares) > 1.0 + 1e-9:
            raise ValueError("the rates' weights are between 0 and 1 and add up to at most 1")
        if not 0.0 <= self.basic_weight <= 1.0:
            raise ValueError("basically satisfied counts for between 0 and 1")


DEFAULT_SCORING = Scoring()


@dataclass(frozen=True)
class Tally:
    """The counts the evaluation formulas need, for one unit, area or period.

    Every field is a count or a sum (two tallies add up field by field), except `scoring`:
    the city's weights, carried along so that the rates and the score read them."""

    due: int = 0  # 应结案数: cases whose deadline fell in the period (+ suspended)
    suspended: int = 0  # 缓办数
    closed: int = 0  # 结案数 (among the due)
    closed_on_time: int = 0  # 按期结案数: closed, and handled by the deadline
    handled: int = 0  # cases reported done in the period
    reworked: int = 0  # of those, sent back at least once
    rework_count: int = 0  # rework rounds in all
    overdue_open: int = 0  # open past their deadline now
    returns: int = 0  # 回退 in the period
    handling_hours: float = 0.0  # sum over the handled, dispatch → done
    # The public's say (三率), counted in the period (maps.evaluation):
    dispatches: int = 0  # times a case was put in the unit's hands (dispatched, sent back)
    responded: int = 0  # ...and it accepted or returned the case within the response limit
    fixed: int = 0  # follow-up answers "fixed"
    not_fixed: int = 0  # ...and "not fixed" (don't know counts in neither)
    satisfied: int = 0  # 满意
    basically_satisfied: int = 0  # 基本满意
    dissatisfied: int = 0  # 不满意
    closings: int = 0  # cases closed (each closing of a case re-handled and closed again)
    reachable: int = 0  # ...whose reporter can be asked (contact, or a citizen's account)
    followed_up: int = 0  # ...of those, with a follow-up answer after the closing
    rehandled: int = 0  # re-handlings (重办) after a complaint judged reasonable
    scoring: Scoring = field(default=DEFAULT_SCORING, compare=False)

    @property
    def closure_rate(self) -> float | None:
        """结案率 = 结案数 / (应结案数 − 缓办数)."""
        return rate(self.closed, self.due - self.suspended)

    @property
    def on_time_rate(self) -> float | None:
        """按期结案率 = 按期结案数 / (应结案数 − 缓办数)."""
        return rate(self.closed_on_time, self.due - self.suspended)

    @property
    def rework_rate(self) -> float | None:
        """返工率 = cases sent back after a failed check / cases handled."""
        return rate(self.reworked, self.handled)

    @property
    def average_handling_hours(self) -> float | None:
        """Mean time from dispatch to reported done, in hours."""
        return self.handling_hours / self.handled if self.handled else None

    @property
    def response_rate(self) -> float | None:
        """响应率 = cases accepted or returned within the response limit / cases dispatched."""
        return rate(self.responded, self.dispatches)

    @property
    def resolution_rate(self) -> float | None:
        """解决率 = answers "fixed" / answers "fixed" or "not fixed"."""
        return rate(self.fixed, self.fixed + self.not_fixed)

    @property
    def ratings(self) -> int:
        """Valid ratings: answers with a satisfaction."""
        return self.satisfied + self.basically_satisfied + self.dissatisfied

    @property
    def satisfaction_rate(self) -> float | None:
        """满意率 = (满意 + w × 基本满意) / valid ratings (w: `Scoring.basic_weight`)."""
        if not self.ratings:
            return None
        weight = self.scoring.basic_weight
        return (self.satisfied + weight * self.basically_satisfied) / self.ratings

    @property
    def followup_rate(self) -> float | None:
        """回访率 = closed cases with a follow-up answer / closed cases whose reporter can be
        reached."""
        return rate(self.followed_up, self.reachable)

    @property
    def rehandle_rate(self) -> float | None:
        """重办率 = re-handlings / closed cases."""
        return rate(self.rehandled, self.closings)

    def score(self, rework_penalty: float | None = None) -> float | None:
        """A city-style score: the on-time closure rate in points, less a point per rework;
        with `scoring` weights, the rates' shares of the points (a rate without data leaves
        its share to the others) and points off per re-handling. None without cases due."""
        on_time = self.on_time_rate
        if on_time is None:
            return None
        s = self.scoring
        penalty = s.rework_penalty if rework_penalty is None else rework_penalty
        shares = [
            (s.response, self.response_rate),
            (s.resolution, self.resolution_rate),
            (s.satisfaction, self.satisfaction_rate),
            (s.followup, self.followup_rate),
        ]
        parts = [(1.0 - sum(w for w, _ in shares), on_time)]
        parts += [(w, value) for w, value in shares if w > 0 and value is not None]
        weight = sum(w for w, _ in parts)
        points = 100 * sum(w * v for w, v in parts) / weight if weight > 0 else 100 * on_time
        penalties = penalty * self.rework_count + s.rehandle_penalty * self.rehandled
        return round(points - penalties, 1)


def ranked(rows: Sequence[tuple[str, Tally]]) -> list[tuple[int, str, Tally]]:
    """Rank by score (best first); rows without cases due come last, unranked (0)."""
    scored = sorted(
        (r for r in rows if r[1].score() is not None),
        key=lambda r: (-(r[1].score() or 0), r[0]),
    )
    unscored = sorted((r for r in rows if r[1].score() is None), key=lambda r: r[0])
    return [(i, name, t) for i, (name, t) in enumerate(scored, start=1)] + [
        (0, name, t) for name, t in unscored
    ]


def on_time(
    deadline: datetime | None,
    closed_at: datetime | None,
    as_of: datetime,
    handled_at: datetime | None = None,
) -> bool:
    """Whether one case is on time as of a moment: closed, and reported done (or else closed)
    by its deadline, as `maps.services.CLOSED_ON_TIME` counts; or still open and not yet past
    it. A case without a deadline is never late."""
    if deadline is None:
        return True
    if closed_at is not None:
        return (handled_at or closed_at) <= deadline
    return as_of <= deadline


@dataclass(frozen=True)
class Classes:
    """Colour classes of a measure: upper bounds and their colours (quantiles of the data)."""

    bounds: tuple[float, ...]
    colours: tuple[str, ...] = field(default=PALETTE)

    def colour(self, value: float | None) -> str:
        """The fill colour of a value."""
        if value is None:
            return NO_DATA
        for bound, colour in zip(self.bounds, self.colours, strict=False):
            if value <= bound:
                return colour
        return self.colours[len(self.bounds) - 1] if self.bounds else NO_DATA


def classes(values: Iterable[float | None], count: int = len(PALETTE)) -> Classes:
    """Quantile classes (at most `count`, fewer when the values are few or equal)."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return Classes(())
    bounds: list[float] = []
    for i in range(1, count + 1):
        bound = data[min(len(data) - 1, max(0, round(i * len(data) / count) - 1))]
        if not bounds or bound > bounds[-1]:
            bounds.append(bound)
    return Classes(tuple(bounds), PALETTE[-len(bounds) :] if len(bounds) < count else PALETTE)


def lat_lon(lon: float, lat: float) -> list[float]:
    """The one place where (lon, lat) flips to Leaflet's [lat, lon]."""
    return [lat, lon]


def bounds(shapes: Iterable[dict[str, Any]]) -> list[list[float]] | None:
    """[[south, west], [north, east]] of GeoJSON geometries (Leaflet's order), or None."""
    xs: list[float] = []
    ys: list[float] = []

    def walk(coordinates: Any) -> None:
        if coordinates and isinstance(coordinates[0], (int, float)):
            xs.append(float(coordinates[0]))
            ys.append(float(coordinates[1]))
        else:
            for part in coordinates:
                walk(part)

    for shape in shapes:
        walk(shape.get("coordinates", []))
    if not xs:
        return None
    return [lat_lon(min(xs), min(ys)), lat_lon(max(xs), max(ys))]


@dataclass(frozen=True)
class Series:
    """One line of a trend chart."""

    label: str
    points: tuple[tuple[date, float], ...]


def svg_chart(
    series: Sequence[Series],
    width: int = 640,
    height: int = 220,
    percent: bool = False,
    title: str = "",
) -> str:
    """A small line chart as inline SVG (no JavaScript, no CDN), named `title` for screen
    readers."""
    days = sorted({d for s in series for d, _ in s.points})
    values = [v for s in series for _, v in s.points]
    if not days or not values:
        return '<svg class="chart" width="0" height="0"></svg>'
    top = 1.0 if percent else max(max(values), 1.0)
    pad, bottom = 36, height - 24
    span = max((days[-1] - days[0]).days, 1)

    def x(d: date) -> float:
        return pad + (width - pad - 8) * (d - days[0]).days / span

    def y(v: float) -> float:
        return bottom - (bottom - 8) * v / top

    colours = ("#bd0026", "#2c7fb8", "#31a354", "#756bb1", "#636363", "#e6550d")
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{html.escape(title, quote=True)}">',
        f'<line x1="{pad}" y1="{bottom}" x2="{width - 8}" y2="{bottom}" stroke="#999"/>',
        f'<text x="2" y="14" font-size="11">{"100 %" if percent else f"{top:g}"}</text>',
        f'<text x="{pad}" y="{height - 6}" font-size="11">{days[0].isoformat()}</text>',
        f'<text x="{width - 80}" y="{height - 6}" font-size="11">{days[-1].isoformat()}</text>',
    ]
    for i, s in enumerate(series):
        colour = colours[i % len(colours)]
        path = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in s.points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        parts.append(
            f'<text x="{pad + 4 + 110 * i}" y="{height - 6 - 14}" font-size="11" '
            f'fill="{colour}">{_escape(s.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


Days = tuple[tuple[date, date], ...]  # day ranges [from, to)


@dataclass(frozen=True)
class RollupPlan:
    """Where the map reads each day of a period from: whole months of the monthly rollup, days
    of the daily one, and days counted live from the cases (today, and old edges of months).
    A month the period holds most of is read whole and its other days taken off again
    (`less_days` from the daily rollup, `less_live` counted live): a month's row and one day
    are fewer rows than the 29 days of the daily rollup or a whole month of cases."""

    months: tuple[date, ...] = ()  # first days of the months read whole from the monthly rollup
    days: Days = ()  # read from the daily rollup
    live: Days = ()  # counted live
    rolled: Days = ()  # the period's days counted from rollups: their open cases counted live
    less_days: Days = ()  # taken off the months again, from the daily rollup
    less_live: Days = ()  # taken off the months again, counted live


# What reading a day costs, in rows, relative to a day of the daily rollup (a row per cell with
# cases): a day counted live reads each of its cases (at ten million cases about 27,000 a day
# against 4,800 cells with cases: about 5), a month's row of the monthly rollup one row per cell.
LIVE_DAY_COST = 5
MONTH_ROW_COST = 1


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _merged(ranges: list[tuple[date, date]]) -> Days:
    merged: list[tuple[date, date]] = []
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        if merged and merged[-1][1] >= start:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _split(start: date, end: date, daily_from: date) -> tuple[tuple[date, date], tuple[date, date]]:
    """[start, end) as its part before the daily rollup's first day (live) and the rest."""
    return (start, min(end, daily_from)), (max(start, daily_from), end)


def _cost(ranges: Iterable[tuple[date, date]], daily_from: date) -> int:
    """The rows (in days of the daily rollup) that reading these day ranges takes."""
    total = 0
    for start, end in ranges:
        (live_a, live_b), (kept_a, kept_b) = _split(start, end, daily_from)
        total += LIVE_DAY_COST * max((live_b - live_a).days, 0) + max((kept_b - kept_a).days, 0)
    return total


def plan_rollup(start: date, end: date, through: date | None, days_kept: int) -> RollupPlan:
    """How to count the days `start`..`end` (inclusive) from rollups of the days before
    `through` (None: no rollup yet): the monthly rollup has each month's row for the days of
    the month before `through`, the daily one the `days_kept` days before `through`.

    A month is read whole when the period holds all the days its row counts; the other days
    before `through` come from the daily rollup where it has them, else live, unless reading
    their month whole and taking its other days off costs fewer rows; days from `through` on
    are live.
    """
    stop = end + timedelta(days=1)
    if through is None or through <= start:
        return RollupPlan(live=((start, stop),))
    rolled_end = min(stop, through)
    daily_from = through - timedelta(days=days_kept)
    months: list[date] = []
    days: list[tuple[date, date]] = []
    live: list[tuple[date, date]] = []
    rolled: list[tuple[date, date]] = []
    less_days: list[tuple[date, date]] = []
    less_live: list[tuple[date, date]] = []
    cursor = start
    while cursor < rolled_end:
        month = cursor.replace(day=1)
        covers = min(_next_month(month), through)  # the days the month's row counts
        part_end = min(_next_month(month), rolled_end)
        others = [(month, cursor), (part_end, covers)]  # the row's days outside the period
        if MONTH_ROW_COST + _cost(others, daily_from) < _cost([(cursor, part_end)], daily_from):
            months.append(month)
            rolled.append((cursor, part_end))
            for a, b in others:
                old, kept = _split(a, b, daily_from)
                less_live.append(old)
                less_days.append(kept)
        else:
            old, kept = _split(cursor, part_end, daily_from)
            live.append(old)
            days.append(kept)
            rolled.append(kept)
        cursor = part_end
    live.append((rolled_end, stop))
    return RollupPlan(
        tuple(months),
        _merged(days),
        _merged(live),
        _merged(rolled),
        _merged(less_days),
        _merged(less_live),
    )
