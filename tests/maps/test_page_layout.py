"""The pure pieces of the supervisors' pages: the map legend's class ranges and colours, the
dashboard's chart and periods, the evaluation's best and worst rows and column groups."""

from __future__ import annotations

import re
from datetime import date

import pytest

from maps.aggregate import PALETTE, Classes, classes
from maps.render import class_ranges, legible, line_chart, nice_ticks
from maps.views import (
    INSPECTOR_GROUPS,
    TALLY_GROUPS,
    bucket_of,
    dashboard_period,
    standing,
)


def test_legend_ranges_are_the_classes_of_the_values() -> None:
    values = [0.0, 1, 2, 3, 5, 8, 13, 21, 34, 55]
    scale = classes(values)
    ranges = class_ranges(scale, values)

    assert len(ranges) == len(scale.bounds)
    assert ranges[0].startswith("0")
    assert ranges[-1].endswith("55")
    assert not any("≤" in r for r in ranges)
    # Each class starts one above the previous bound: whole numbers leave no gap or overlap.
    for previous, this in zip(scale.bounds, ranges[1:], strict=False):
        assert this.split("–")[0] == f"{previous + 1:,.0f}"


def test_legend_of_rates_in_percent() -> None:
    values = [0.2, 0.5, 0.75, 1.0, None]
    assert class_ranges(classes(values), values, percent=True)[-1].endswith("100 %")


def test_an_empty_city_is_not_painted_red() -> None:
    scale = legible(classes([0.0, 0.0, 0.0]))
    assert scale.colour(0.0) == PALETTE[0]
    assert class_ranges(scale, [0.0, 0.0]) == ["0"]


def test_rates_are_painted_red_when_low() -> None:
    scale = legible(Classes((0.2, 0.5, 0.8, 0.9, 1.0)), higher_is_better=True)
    assert scale.colour(0.1) == PALETTE[-1] and scale.colour(1.0) == PALETTE[0]


@pytest.mark.parametrize(("top", "ticks"), [(7, [0, 2, 4, 6, 8]), (80, [0, 20, 40, 60, 80])])
def test_round_ticks(top: float, ticks: list[float]) -> None:
    assert nice_ticks(top) == ticks


def test_chart_has_axes_values_and_target() -> None:
    svg = line_chart(
        [("Jan", 3), ("Feb", 7), ("Mar", None), ("Apr", 5)],
        title="New cases",
        empty_text="Nothing",
        target=6,
        target_text="Target",
    )
    assert svg.startswith('<svg class="chart"') and 'aria-label="New cases"' in svg
    assert svg.count("<polyline") == 2  # broken where the value is missing
    assert ">Target<" in svg and "stroke-dasharray" in svg
    for text in (">Jan<", ">Apr<", ">7<", ">8<"):  # x labels, a value, the top tick
        assert text in svg, text
    assert "Nothing" not in svg


@pytest.mark.parametrize("points", [[], [("Jan", 0), ("Feb", 0)], [("w", None)]])
def test_chart_empty_state(points: list[tuple[str, float | None]]) -> None:
    svg = line_chart(points, title="T", empty_text="No cases in this period.")
    assert 'class="chart chart-empty"' in svg
    assert "No cases in this period." in svg and "<polyline" not in svg
    assert re.search(r"<line ", svg)  # the axis is still drawn


def test_a_zero_rate_is_a_value_not_an_empty_chart() -> None:
    svg = line_chart([("w1", 0.0), ("w2", 0.5)], title="T", empty_text="E", percent=True)
    assert "<polyline" in svg and ">0%<" in svg and ">50%<" in svg


def test_dashboard_periods() -> None:
    today = date(2026, 3, 18)  # a Wednesday
    period, days = dashboard_period("30d", today)
    assert (period.start, period.end, len(days)) == (date(2026, 2, 17), today, 30)
    period, weeks = dashboard_period("13w", today)
    assert weeks[0].weekday() == 0 and weeks[-1] == date(2026, 3, 16) and len(weeks) == 13
    period, months = dashboard_period("12m", today)
    assert months[0] == date(2025, 4, 1) and months[-1] == date(2026, 3, 1)
    assert period.start == months[0]
    assert bucket_of(date(2025, 12, 31), months) == date(2025, 12, 1)


@pytest.mark.parametrize(
    ("ranked", "best", "worst"),
    [(1, [], []), (2, [1], [2]), (9, [1, 2], [8, 9]), (40, [1, 2, 3], [38, 39, 40])],
)
def test_best_and_worst_rows(ranked: int, best: list[int], worst: list[int]) -> None:
    marks = {rank: standing(rank, ranked) for rank in range(1, ranked + 1)}
    assert [r for r, m in marks.items() if m == "best"] == best
    assert [r for r, m in marks.items() if m == "worst"] == worst
    assert standing(0, ranked) == ""  # unranked rows are neither


def test_default_columns_and_formulas() -> None:
    """The default (not optional) columns are the ones a leader came for; every rate has its
    formula; column keys are unique across groups (a new group adds keys of its own)."""
    shown = [c.key for g in TALLY_GROUPS if not g.optional for c in g.columns]
    assert {"closure_rate", "on_time_rate", "rework_rate", "score"} <= set(shown)
    assert len(shown) <= 8
    every = [c for g in (*TALLY_GROUPS, *INSPECTOR_GROUPS) for c in g.columns]
    assert all(c.formula for c in every if c.kind == "percent")
    keys = [c.key for g in TALLY_GROUPS for c in g.columns]
    assert len(keys) == len(set(keys))
