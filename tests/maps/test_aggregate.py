"""The pure rules of the supervisors' pages: filters, the evaluation formulas of DOMAIN.md,
rankings, on-time, colour classes and the inline SVG chart. No database, no Flask."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from datetime import UTC, date, datetime, timedelta

import pytest

from maps.aggregate import (
    DEFAULT_PERIOD_DAYS,
    MEASURES,
    NO_DATA,
    PALETTE,
    STATUS_GROUPS,
    Classes,
    FilterError,
    Filters,
    RollupPlan,
    Series,
    Tally,
    classes,
    lat_lon,
    on_time,
    parse_filters,
    plan_rollup,
    ranked,
    rate,
    svg_chart,
)
from maps.views import tally_csv

TODAY = date(2026, 3, 18)
STATUSES = ["reported", "filed", "dispatched", "in_progress", "suspended", "closed", "rejected"]
SOURCES = ["inspector", "citizen", "open311", "hotline", "operator"]


def parse(**args: str) -> Filters:
    return parse_filters(args, TODAY, STATUSES, SOURCES)


# ---------------------------------------------------------------- parse_filters


def test_defaults_are_the_last_30_days_ending_today_with_everything_counted() -> None:
    f = parse()

    assert DEFAULT_PERIOD_DAYS == 30
    assert f == Filters(start=date(2026, 2, 17), end=TODAY)
    assert (f.end - f.start).days + 1 == 30  # inclusive days
    assert (f.kind, f.major_id, f.category_id, f.status, f.source, f.area_id) == (None,) * 6
    assert f.measure == "count"


def test_blank_values_mean_no_filter() -> None:
    blank = {k: "  " for k in ("start", "end", "kind", "major", "category", "status")}
    blank |= {"source": "", "area": "", "measure": ""}

    assert parse(**blank) == parse()


def test_every_filter_is_read() -> None:
    f = parse(
        start="2026-01-05",
        end="2026-01-31",
        kind="component",
        major=" 3 ",
        category="17",
        status="overdue",
        source="hotline",
        area="42",
        measure="on_time_rate",
    )

    assert f == Filters(
        start=date(2026, 1, 5),
        end=date(2026, 1, 31),
        kind="component",
        major_id=3,
        category_id=17,
        status="overdue",
        source="hotline",
        area_id=42,
        measure="on_time_rate",
    )


def test_only_an_end_moves_the_default_start_with_it() -> None:
    assert parse(end="2026-01-31").start == date(2026, 1, 2)
    assert parse(start="2026-03-18").end == TODAY  # a one-day period is fine


@pytest.mark.parametrize("status", [*STATUSES, *STATUS_GROUPS])
def test_statuses_and_status_groups_are_accepted(status: str) -> None:
    assert parse(status=status).status == status


@pytest.mark.parametrize("measure", MEASURES)
def test_measures_are_accepted(measure: str) -> None:
    assert parse(measure=measure).measure == measure


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"start": "notadate"}, "start must be a date"),
        ({"end": "2026-02-30"}, "end must be a date"),
        ({"start": "18/03/2026"}, "start must be a date"),
        ({"start": "2026-03-19"}, "starts after it ends"),
        ({"start": "2026-03-02", "end": "2026-03-01"}, "starts after it ends"),
        ({"start": "2010-01-01"}, "at most ten years"),
        ({"end": "9999-12-31"}, "end must be between the years 1900 and 9000"),
        ({"start": "0001-01-01"}, "start must be between the years 1900 and 9000"),
        ({"status": "lost"}, "unknown status"),
        ({"status": "OPEN"}, "unknown status"),
        ({"source": "pigeon"}, "unknown source"),
        ({"measure": "score"}, "unknown measure"),
        ({"kind": "thing"}, "unknown kind"),
        ({"major": "abc"}, "major must be a number"),
        ({"category": "-1"}, "category must be a number"),
        ({"category": "1.5"}, "category must be a number"),
        ({"area": "1e3"}, "area must be a number"),
        ({"area": "0x10"}, "area must be a number"),
    ],
)
def test_bad_values_are_filter_errors(args: dict[str, str], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse(**args)


@pytest.mark.parametrize("name", ["major", "category", "area"])
def test_unicode_digits_are_filter_errors(name: str) -> None:
    with pytest.raises(FilterError, match=f"{name} must be a number"):
        parse(**{name: "²"})


# ---------------------------------------------------------------- Filters.key


def test_key_is_stable_for_equal_filters() -> None:
    a = parse(start="2026-03-01", status="open", area="7")
    b = parse(area="7", status="open", start="2026-03-01")

    assert a == b
    assert a.key() == b.key()
    assert a.key() == Filters(date(2026, 3, 1), TODAY, status="open", area_id=7).key()
    assert re.fullmatch(r"[0-9a-f]{20}", a.key())


def test_key_differs_for_every_filter() -> None:
    base = Filters(start=date(2026, 3, 1), end=date(2026, 3, 18))
    changed = {
        "start": date(2026, 3, 2),
        "end": date(2026, 3, 17),
        "kind": "event",
        "major_id": 1,
        "category_id": 1,
        "status": "closed",
        "source": "citizen",
        "area_id": 1,
        "measure": "open",
    }
    assert set(changed) == {f.name for f in fields(Filters)}  # a new filter needs a case here

    keys = {name: replace(base, **{name: value}).key() for name, value in changed.items()}

    assert base.key() not in keys.values()
    assert len(set(keys.values())) == len(changed)
    # Ids of different things must not collide either.
    assert replace(base, major_id=5).key() != replace(base, category_id=5).key()
    assert replace(base, category_id=5).key() != replace(base, area_id=5).key()


# ---------------------------------------------------------------- Tally formulas


def test_rate() -> None:
    assert rate(3, 4) == 0.75
    assert rate(0, 4) == 0.0
    assert rate(0, 0) is None
    assert rate(5, 0) is None


def test_closure_and_on_time_rates_leave_suspended_cases_out() -> None:
    t = Tally(due=10, suspended=2, closed=6, closed_on_time=4)

    assert t.closure_rate == 6 / 8  # 结案数 / (应结案数 − 缓办数)
    assert t.on_time_rate == 4 / 8  # 按期结案数 / (应结案数 − 缓办数)


def test_rework_rate_is_reworked_over_handled() -> None:
    t = Tally(handled=8, reworked=2, rework_count=5)

    assert t.rework_rate == 2 / 8  # cases sent back, not rounds of rework
    assert Tally(handled=0, reworked=0).rework_rate is None


@pytest.mark.parametrize(
    "tally",
    [Tally(), Tally(due=3, suspended=3, closed=0), Tally(due=2, suspended=2, closed_on_time=0)],
)
def test_rates_are_none_when_nothing_is_due(tally: Tally) -> None:
    assert tally.closure_rate is None
    assert tally.on_time_rate is None
    assert tally.score() is None


def test_average_handling_hours() -> None:
    assert Tally(handled=4, handling_hours=10.0).average_handling_hours == 2.5
    assert Tally(handled=0, handling_hours=0.0).average_handling_hours is None


def test_score_is_on_time_points_less_a_penalty_per_rework() -> None:
    t = Tally(due=9, suspended=1, closed=7, closed_on_time=6, handled=7, reworked=2, rework_count=3)

    assert t.on_time_rate == 0.75
    assert t.score() == 72.0  # 75 points - 3 reworks
    assert t.score(rework_penalty=2.5) == 67.5
    assert Tally(due=3, closed_on_time=2).score() == 66.7  # rounded to 0.1
    assert Tally(due=1, closed_on_time=0, rework_count=4).score() == -4.0


# ---------------------------------------------------------------- ranked


def test_ranked_best_first_unscored_last_with_rank_zero() -> None:
    good = Tally(due=4, closed_on_time=4)  # 100
    fair = Tally(due=4, closed_on_time=3, rework_count=1)  # 74
    poor = Tally(due=4, closed_on_time=1)  # 25
    idle = Tally(handled=3)  # nothing due: no score
    rows = [
        ("Zeta idle", idle),
        ("Poor unit", poor),
        ("Alpha idle", Tally()),
        ("Good unit", good),
        ("Fair unit", fair),
    ]

    assert ranked(rows) == [
        (1, "Good unit", good),
        (2, "Fair unit", fair),
        (3, "Poor unit", poor),
        (0, "Alpha idle", Tally()),
        (0, "Zeta idle", idle),
    ]


def test_ranked_ties_are_ordered_by_name() -> None:
    same = Tally(due=2, closed_on_time=1)

    assert [name for _, name, _ in ranked([("B", same), ("A", same), ("C", same)])] == [
        "A",
        "B",
        "C",
    ]
    assert [rank for rank, _, _ in ranked([("B", same), ("A", same)])] == [1, 2]
    assert ranked([]) == []


# ---------------------------------------------------------------- on_time


DEADLINE = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("closed_at", "as_of", "expected"),
    [
        (DEADLINE - timedelta(hours=3), DEADLINE + timedelta(days=30), True),  # closed early
        (DEADLINE, DEADLINE + timedelta(days=30), True),  # closed at the deadline
        (DEADLINE + timedelta(seconds=1), DEADLINE + timedelta(days=30), False),  # late
        (DEADLINE + timedelta(seconds=1), DEADLINE - timedelta(days=1), False),  # late anyway
        (None, DEADLINE - timedelta(hours=1), True),  # open, not yet due
        (None, DEADLINE, True),  # open, due this very moment
        (None, DEADLINE + timedelta(seconds=1), False),  # open past its deadline
    ],
)
def test_on_time(closed_at: datetime | None, as_of: datetime, expected: bool) -> None:
    assert on_time(DEADLINE, closed_at, as_of) is expected


def test_the_work_done_by_the_deadline_counts_not_the_closing() -> None:
    # Reported done in time, closed after the check: on time, as the evaluation counts it.
    late_close = DEADLINE + timedelta(days=2)
    assert on_time(DEADLINE, late_close, late_close, handled_at=DEADLINE - timedelta(hours=1))
    assert not on_time(DEADLINE, late_close, late_close, handled_at=DEADLINE + timedelta(hours=1))


@pytest.mark.parametrize("closed_at", [None, DEADLINE + timedelta(days=400)])
def test_a_case_without_deadline_is_never_late(closed_at: datetime | None) -> None:
    assert on_time(None, closed_at, DEADLINE + timedelta(days=500)) is True


# ---------------------------------------------------------------- classes


def luminance(colour: str) -> float:
    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_palette_goes_from_light_to_dark_and_no_data_is_grey() -> None:
    shades = [luminance(c) for c in PALETTE]

    assert len(PALETTE) == 5
    assert shades == sorted(shades, reverse=True)
    assert len(set(shades)) == len(shades)
    r, g, b = (NO_DATA[i : i + 2] for i in (1, 3, 5))
    assert r == g == b  # grey


def test_quantile_bounds_of_ten_values() -> None:
    scale = classes([7.0, 1.0, None, 10.0, 3.0, 2.0, 9.0, 4.0, 8.0, 6.0, 5.0])

    assert scale == Classes((2.0, 4.0, 6.0, 8.0, 10.0), PALETTE)
    assert [scale.colour(v) for v in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)] == [
        PALETTE[0],
        PALETTE[0],
        PALETTE[1],
        PALETTE[1],
        PALETTE[2],
        PALETTE[2],
        PALETTE[3],
        PALETTE[3],
        PALETTE[4],
        PALETTE[4],
    ]
    assert scale.colour(99) == PALETTE[-1]  # above every bound: the darkest
    assert scale.colour(None) == NO_DATA


def test_repeated_values_give_fewer_darker_classes() -> None:
    scale = classes([0.0, 0.0, 1.0, 3.0, 7.0, 20.0])

    assert scale == Classes((0.0, 3.0, 7.0, 20.0), PALETTE[1:])
    assert scale.colour(0) == PALETTE[1]
    assert scale.colour(2) == PALETTE[2]
    assert scale.colour(20) == PALETTE[4]


def test_equal_values_are_one_dark_class() -> None:
    scale = classes([5.0, 5.0, 5.0])

    assert scale == Classes((5.0,), (PALETTE[-1],))
    assert scale.colour(5) == PALETTE[-1]
    assert scale.colour(None) == NO_DATA


@pytest.mark.parametrize("values", [[], [None, None]])
def test_no_values_colour_everything_grey(values: list[float | None]) -> None:
    scale = classes(values)

    assert scale.bounds == ()
    assert scale.colour(0) == scale.colour(3.5) == scale.colour(None) == NO_DATA


def test_rates_are_classed_too() -> None:
    scale = classes([0.25, 0.5, 1.0, None])

    assert scale.bounds == (0.25, 0.5, 1.0)
    assert scale.colours == PALETTE[2:]
    assert scale.colour(0.4) == PALETTE[3]


# ---------------------------------------------------------------- lat_lon and svg_chart


def test_lat_lon_flips_for_leaflet() -> None:
    assert lat_lon(-118.29, 34.05) == [34.05, -118.29]


def test_svg_chart_draws_one_polyline_per_series_without_external_urls() -> None:
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(7)]
    series = [
        Series("Events <street order>", tuple((d, float(i)) for i, d in enumerate(days))),
        Series("Components & more", tuple((d, 2.0) for d in days)),
        Series("One day", ((days[3], 5.0),)),
    ]

    svg = svg_chart(series)

    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<svg") == 1
    assert svg.count("<polyline") == 3
    polylines = re.findall(r'<polyline [^>]*points="([^"]*)"', svg)
    assert [len(p.split()) for p in polylines] == [7, 7, 1]
    assert "http" not in svg and "<script" not in svg and "href" not in svg
    assert "Events &lt;street order&gt;" in svg and "Components &amp; more" in svg
    assert "2026-03-01" in svg and "2026-03-07" in svg


def test_svg_chart_of_rates_tops_at_100_percent() -> None:
    day = date(2026, 3, 2)
    svg = svg_chart(
        [Series("On-time rate", ((day, 0.5), (day + timedelta(days=7), 1.0)))], percent=True
    )

    assert svg.count("<polyline") == 1
    assert "100 %" in svg
    # 100 % sits at the top (y = 8), 50 % half-way down to the axis (y = 196).
    assert 'points="36.0,102.0 632.0,8.0"' in svg


def test_svg_chart_without_data_is_an_empty_svg() -> None:
    for empty in ([], [Series("nothing", ())]):
        svg = svg_chart(empty)
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert "<polyline" not in svg


# ---------------------------------------------------------------- reading the map's rollups

DEC_1 = date(2026, 12, 1)


def _days(*ranges: tuple[str, str]) -> tuple[tuple[date, date], ...]:
    return tuple((date.fromisoformat(a), date.fromisoformat(b)) for a, b in ranges)


@pytest.mark.parametrize(
    ("start", "end", "through", "expected"),
    [
        # No rollup yet, or none before the period: everything live.
        ("2026-11-01", "2026-11-30", None, RollupPlan(live=_days(("2026-11-01", "2026-12-01")))),
        ("2026-12-01", "2026-12-01", DEC_1, RollupPlan(live=_days(("2026-12-01", "2026-12-02")))),
        # A year from today: whole months from the monthly rollup, the first one too, less its
        # first day (older than the 62 kept: live), and today live.
        (
            "2025-12-02",
            "2026-12-01",
            DEC_1,
            RollupPlan(
                months=(date(2025, 12, 1), *(date(2026, m, 1) for m in range(1, 12))),
                live=_days(("2026-12-01", "2026-12-02")),
                rolled=_days(("2025-12-02", "2026-12-01")),
                less_live=_days(("2025-12-01", "2025-12-02")),
            ),
        ),
        # The last 30 days: last month whole less its first day (kept), and today.
        (
            "2026-11-02",
            "2026-12-01",
            DEC_1,
            RollupPlan(
                months=(date(2026, 11, 1),),
                live=_days(("2026-12-01", "2026-12-02")),
                rolled=_days(("2026-11-02", "2026-12-01")),
                less_days=_days(("2026-11-01", "2026-11-02")),
            ),
        ),
        # A few kept days of a month: read as they are (cheaper than the month less the rest).
        (
            "2026-11-10",
            "2026-11-14",
            DEC_1,
            RollupPlan(
                days=_days(("2026-11-10", "2026-11-15")),
                rolled=_days(("2026-11-10", "2026-11-15")),
            ),
        ),
        # A month whose row is still growing (through mid-month) is read whole when the
        # period holds all of its days so far.
        (
            "2026-11-01",
            "2026-11-30",
            date(2026, 11, 20),
            RollupPlan(
                months=(date(2026, 11, 1),),
                live=_days(("2026-11-20", "2026-12-01")),
                rolled=_days(("2026-11-01", "2026-11-20")),
            ),
        ),
        # An old period across two months, neither whole (no days kept that far back): the
        # month it holds most of whole less its first days, the other one's days live.
        (
            "2026-03-15",
            "2026-04-10",
            DEC_1,
            RollupPlan(
                months=(date(2026, 3, 1),),
                live=_days(("2026-04-01", "2026-04-11")),
                rolled=_days(("2026-03-15", "2026-04-01")),
                less_live=_days(("2026-03-01", "2026-03-15")),
            ),
        ),
        # Edges on both sides inside the kept days, a whole month between them.
        (
            "2026-10-15",
            "2026-11-30",
            date(2026, 12, 10),
            RollupPlan(
                months=(date(2026, 11, 1),),
                days=_days(("2026-10-15", "2026-11-01")),
                rolled=_days(("2026-10-15", "2026-12-01")),
            ),
        ),
    ],
)
def test_plan_rollup(start: str, end: str, through: date | None, expected: RollupPlan) -> None:
    plan = plan_rollup(date.fromisoformat(start), date.fromisoformat(end), through, 62)

    assert plan == expected


def test_plan_rollup_covers_every_day_once() -> None:
    """Whatever the period and the rollup's end, each day is read from exactly one place."""
    through = DEC_1
    for offset in range(0, 400, 7):
        for length in (1, 13, 31, 45, 200, 365):
            start = through - timedelta(days=offset)
            end = start + timedelta(days=length - 1)
            plan = plan_rollup(start, end, through, 62)
            seen: list[date] = []
            for month in plan.months:
                day = month
                while day.month == month.month and day < through:
                    seen.append(day)
                    day += timedelta(days=1)
            for a, b in plan.days + plan.live:
                seen.extend(a + timedelta(days=i) for i in range((b - a).days))
            for a, b in plan.less_days + plan.less_live:  # taken off the months again
                for i in range((b - a).days):
                    seen.remove(a + timedelta(days=i))
            expected = [start + timedelta(days=i) for i in range(length)]
            assert sorted(seen) == expected, (start, end)
            # The open cases are counted live once: on the rolled days, or with the live ones.
            open_days = [d for a, b in plan.rolled + plan.live for d in _each(a, b)]
            assert sorted(open_days) == expected, (start, end)


def _each(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days)]


def test_plan_rollup_reads_fewer_rows_than_the_days() -> None:
    """A month taken whole, less the days outside the period, is chosen only when it reads
    fewer rows: the month of the last 30 days, not a few days of it."""
    last_30 = plan_rollup(date(2026, 11, 2), DEC_1, DEC_1, 62)
    few = plan_rollup(date(2026, 11, 10), date(2026, 11, 14), DEC_1, 62)

    assert last_30.months and not last_30.days
    assert not few.months and not few.less_days


def test_a_score_of_zero_is_written_in_the_csv_not_left_empty() -> None:
    nothing_on_time = Tally(due=4, closed=4, closed_on_time=0)
    no_cases = Tally()
    header, zero, empty = list(tally_csv([(1, "late", nothing_on_time), (2, "none", no_cases)]))

    column = header.index("score")
    assert (zero[column], empty[column]) == (0.0, "")
