"""The three rates (三率) of the evaluation, on the seeded demo city, against numbers built by
hand: cases of two units in two communities, put in the units' hands and answered (or not)
within the response limit, follow-up answers with known proportions, closings whose reporters
can or cannot be reached, a re-handling; all in a month long past, so that nothing else of the
city counts in it. Each rate is checked to the case for units, communities, the street and the
district, with the city's weight of "basically satisfied", and as the CSV gives it."""

from __future__ import annotations

import csv
import html
import io
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from gridmgmt.app import demo
from gridmgmt.kernel.i18n import percent
from gridmgmt.kernel.models import Unit
from grids.models import Area
from maps import evaluation
from maps.aggregate import Scoring, Tally
from tests.participation.conftest import (
    COMMUNITY_A,
    COMMUNITY_B,
    City,
    MakeCase,
    add_answer,
    add_event,
)
from tests.support import browser

PERIOD = evaluation.Period(date(2001, 3, 1), date(2001, 3, 31))
WATER = "DEPT-WATER"


def at(day: int, hour: float, month: int = 3) -> datetime:
    return datetime(2001, month, day, tzinfo=UTC) + timedelta(hours=hour)


@dataclass(frozen=True)
class Names:
    unit_a: str
    unit_w: str
    community_a: str
    community_b: str


def seed(session: Session, city: City, make_case: MakeCase) -> Names:
    """The cases, events and answers of the module's docstring (see the expected tallies)."""
    reporter = city.users["citizen"]
    old = at(1, 0, month=2)
    a1 = make_case("closed", reported=old, contact={"email": "a1@example.org"})
    a2 = make_case("closed", reported=old, reporter_id=reporter)
    a3 = make_case("closed", reported=old)  # nobody to ask
    a4 = make_case("closed", reported=old, contact={"phone": "+1 213 555 0104"})
    a5 = make_case("dispatched", reported=old)
    w1 = make_case("closed", city.b, unit=WATER, reported=old, contact={"email": "w@example.org"})

    def dispatched(case, when: datetime, unit: str = COMMUNITY_A) -> None:  # type: ignore[no-untyped-def]
        add_event(session, case, "dispatch", when, "filed", "dispatched", unit=unit)

    # Response: within 2 h (accept or return) or not.
    dispatched(a1, at(5, 10))
    add_event(session, a1, "accept", at(5, 11), "dispatched", "in_progress")  # 1 h: responded
    dispatched(a2, at(6, 10))
    add_event(session, a2, "accept", at(6, 13), "dispatched", "in_progress")  # 3 h: late
    dispatched(a3, at(7, 10))
    add_event(session, a3, "return", at(7, 10.5), "dispatched", "returned")  # returned: responded
    dispatched(a4, at(8, 10))  # never answered
    add_event(session, a4, "warn_deadline", at(8, 11), "dispatched", "dispatched")  # no answer
    dispatched(a5, at(27, 10, month=2))  # before the period
    add_event(session, a5, "accept", at(27, 10.5, month=2), "dispatched", "in_progress")
    dispatched(w1, at(10, 10), WATER)
    add_event(session, w1, "accept", at(10, 10.5), "dispatched", "in_progress")

    # Closings, and a re-handling of a2 (a dispatch to the same unit, answered in an hour).
    for case in (a1, a2, a3, a4):
        add_event(session, case, "close", at(12, 9), "checked", "closed")
    add_event(session, w1, "close", at(11, 9), "checked", "closed")
    add_event(session, a2, "rehandle", at(14, 10), "closed", "dispatched", unit_id=a2.unit_id)
    add_event(session, a2, "accept", at(14, 11), "dispatched", "in_progress")

    # Answers: A 3 fixed, 1 not, 1 don't know; satisfied 1, basically 2, dissatisfied 1.
    add_answer(session, a1, at(13, 9), "yes", "satisfied")
    add_answer(session, a1, at(13, 10), "yes", "basically_satisfied", who="supporter")
    add_answer(session, a2, at(13, 9), "no", "dissatisfied", comment="still there")
    add_answer(session, a3, at(13, 9), "unknown", "basically_satisfied")
    add_answer(session, a4, at(11, 9), "yes", None)  # before a4's closing
    add_answer(session, a1, at(2, 9, month=4), "no", "dissatisfied", who="follower")  # after
    add_answer(session, w1, at(12, 9), "no", "dissatisfied")
    evaluation.refresh_rollup(session)  # as the scheduler keeps it: March 2001 is long past
    units = {u.code: f"{u.code} {u.name}" for u in session.scalars(select(Unit))}
    areas = {a.code: f"{a.code} {a.name}" for a in session.scalars(select(Area))}
    return Names(units[COMMUNITY_A], units[WATER], areas[COMMUNITY_A], areas[COMMUNITY_B])


UNIT_A = dict(
    dispatches=5, responded=3, fixed=3, not_fixed=1, satisfied=1, basically_satisfied=2,
    dissatisfied=1, closings=4, reachable=3, followed_up=2, rehandled=1,
)  # fmt: skip
UNIT_W = dict(
    dispatches=1, responded=1, fixed=0, not_fixed=1, satisfied=0, basically_satisfied=0,
    dissatisfied=1, closings=1, reachable=1, followed_up=1, rehandled=0,
)  # fmt: skip


def counts(t: Tally) -> dict[str, int]:
    return {name: getattr(t, name) for name in evaluation.RATE_COUNTS}


@pytest.fixture
def names(city: City, db_session: Session, make_case: MakeCase) -> Names:
    return seed(db_session, city, make_case)


def test_rates_per_unit(names: Names, db_session: Session) -> None:
    tallies = dict(evaluation.by_unit(db_session, PERIOD, datetime.now(UTC)))
    a, w = tallies[names.unit_a], tallies[names.unit_w]

    assert counts(a) == UNIT_A
    assert counts(w) == UNIT_W
    assert a.response_rate == 3 / 5
    assert a.resolution_rate == 3 / 4
    assert a.satisfaction_rate == 3 / 4
    assert a.followup_rate == 2 / 3
    assert a.rehandle_rate == 1 / 4
    assert (w.response_rate, w.resolution_rate, w.satisfaction_rate) == (1.0, 0.0, 0.0)
    assert (w.followup_rate, w.rehandle_rate) == (1.0, 0.0)
    others = [t for name, t in tallies.items() if name not in (names.unit_a, names.unit_w)]
    assert all(t.response_rate is None and t.satisfaction_rate is None for t in others)


def test_an_anonymous_closing_alone_counts_as_unreachable(
    city: City, db_session: Session, make_case: MakeCase
) -> None:
    # Dispatched before the period, closed in it, no reporter and no contact: the only row of
    # its (unit, community, urgency) in the period. "Can be reached" is false, not unknown.
    case = make_case("closed", reported=at(1, 0, month=2), urgent=True)
    add_event(db_session, case, "dispatch", at(2, 10, month=2), "filed", "dispatched")
    add_event(db_session, case, "close", at(12, 9), "checked", "closed")
    evaluation.refresh_rollup(db_session)
    counts = evaluation.rate_counts(db_session, PERIOD)
    assert counts[(case.unit_id, case.community_id, True)] == {
        **dict.fromkeys(evaluation.RATE_DAY_COUNTS, 0),
        "closings": 1,
    }


def test_a_complaint_judged_unreasonable_is_no_valid_rating(
    names: Names, db_session: Session
) -> None:
    """Left out of the resolution and satisfaction rates (as 12345 leaves unreasonable
    demands out of the assessment); the answer still counts as a follow-up made."""
    db_session.execute(
        text(
            "UPDATE followup_answers a SET review_state = 'unreasonable'"
            " FROM cases c JOIN units u ON u.id = c.unit_id"
            " WHERE a.case_id = c.id AND u.code = :water"
        ),
        {"water": WATER},
    )
    evaluation.refresh_rollup(db_session)  # the answers' days were marked for it
    w = dict(evaluation.by_unit(db_session, PERIOD, datetime.now(UTC)))[names.unit_w]

    assert counts(w) == {**UNIT_W, "not_fixed": 0, "dissatisfied": 0}
    assert (w.resolution_rate, w.satisfaction_rate, w.followup_rate) == (None, None, 1.0)


def test_rates_per_area(names: Names, db_session: Session) -> None:
    areas = evaluation.by_area(db_session, PERIOD, datetime.now(UTC))
    communities = dict(areas["community"])
    street = dict(areas["street"])[f"{demo.STREET_CODE} Central 2"]
    district = dict(areas["district"])[f"{demo.DISTRICT_CODE} Los Angeles"]

    assert counts(communities[names.community_a]) == UNIT_A
    assert counts(communities[names.community_b]) == UNIT_W
    both = {k: UNIT_A[k] + UNIT_W[k] for k in UNIT_A}
    assert counts(street) == both == counts(district)
    assert street.response_rate == 4 / 6
    assert street.resolution_rate == 3 / 5
    assert street.satisfaction_rate == 3 / 5
    assert street.followup_rate == 3 / 4
    assert street.rehandle_rate == 1 / 5


def test_the_city_weighs_basically_satisfied(
    app: Flask, names: Names, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "SATISFACTION_BASIC_WEIGHT", 0.8)
    monkeypatch.setitem(app.config, "RESPONSE_LIMIT_HOURS", 4.0)

    tallies = dict(evaluation.by_unit(db_session, PERIOD, datetime.now(UTC)))

    assert tallies[names.unit_a].satisfaction_rate == pytest.approx((1 + 0.8 * 2) / 4)
    assert tallies[names.unit_a].response_rate == 4 / 5  # a2's 3 h is within 4 h


def test_one_grouped_query_for_every_unit(names: Names, db_session: Session) -> None:
    """The rates are counted in one statement, whatever the number of units and areas."""
    from sqlalchemy import event

    statements: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if "followup_answers" in statement:
            statements.append(statement)

    engine = db_session.get_bind()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        cube = evaluation.tally_cube(db_session, PERIOD, datetime.now(UTC))
        evaluation.by_unit(db_session, PERIOD, datetime.now(UTC), cube=cube)
        evaluation.by_area(db_session, PERIOD, datetime.now(UTC), cube=cube)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == 1


def test_rates_per_week_for_the_trend(names: Names, db_session: Session) -> None:
    weeks = dict(evaluation.rates_per_week(db_session, PERIOD))
    total = Tally()
    for tally in weeks.values():
        total = evaluation.add(total, tally)

    assert counts(total) == {k: UNIT_A[k] + UNIT_W[k] for k in UNIT_A}
    assert all(week.weekday() == 0 for week in weeks)


def test_csv_cells(names: Names, db_session: Session) -> None:
    tallies = dict(evaluation.by_unit(db_session, PERIOD, datetime.now(UTC)))

    row = dict(
        zip(evaluation.RATE_COLUMNS, evaluation.rate_cells(tallies[names.unit_a]), strict=True)
    )

    assert row["response_rate_pct"] == "60.0"
    assert row["resolution_rate_pct"] == "75.0"
    assert row["satisfaction_rate_pct"] == "75.0"
    assert row["followup_rate_pct"] == "66.7"
    assert row["rehandle_rate_pct"] == "25.0"
    assert (row["dispatches"], row["responded"], row["closings"]) == (5, 3, 4)
    empty = evaluation.rate_cells(Tally())
    assert empty[evaluation.RATE_COLUMNS.index("response_rate_pct")] == ""


def test_the_evaluation_csv_has_the_rates(app: Flask, names: Names) -> None:
    answer = browser(app, "leader").get(
        f"/evaluation?format=csv&table=units&start={PERIOD.start}&end={PERIOD.end}"
    )

    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    mine = next(r for r in rows if r["name"] == names.unit_a)
    assert set(evaluation.RATE_COLUMNS) <= set(rows[0])
    assert mine["satisfaction_rate_pct"] == "75.0"


def test_default_weights_leave_the_score_alone(names: Names, db_session: Session) -> None:
    cube = evaluation.tally_cube(
        db_session, PERIOD, datetime.now(UTC), scoring=Scoring(satisfaction=0.5)
    )
    assert all(t.scoring.satisfaction == 0.5 for t in cube.values())
    plain = evaluation.tally_cube(db_session, PERIOD, datetime.now(UTC))
    assert all(t.scoring == Scoring() for t in plain.values())


WEEKLY_RATES = {  # the dashboard's weekly charts of the public's say: heading → Tally rate
    "h-response": "response_rate",
    "h-resolution": "resolution_rate",
    "h-satisfaction": "satisfaction_rate",
    "h-followup": "followup_rate",
}


def test_the_dashboard_draws_the_four_rates_per_week(
    app: Flask, city: City, db_session: Session, make_case: MakeCase
) -> None:
    """This week: a case put in its unit's hands and accepted within the limit, closed and
    answered by its reporter; each of the four weekly charts shows, for every week, the rate
    `rates_per_week` counts (the response and follow-up rates this week among them)."""
    now = datetime.now(UTC)
    case = make_case("closed", reported=now - timedelta(minutes=40),
                     contact={"email": "weekly@example.org"})  # fmt: skip
    add_event(db_session, case, "dispatch", now - timedelta(minutes=30), "filed", "dispatched")
    add_event(db_session, case, "accept", now - timedelta(minutes=20), "dispatched", "in_progress")
    add_event(db_session, case, "close", now - timedelta(minutes=10), "checked", "closed")
    add_answer(db_session, case, now - timedelta(minutes=5), "yes", "satisfied")
    evaluation.refresh_rollup(db_session)

    page = browser(app, "leader").get("/dashboard?period=13w")
    body = page.get_data(as_text=True)

    assert page.status_code == 200
    today = now.date()
    period = evaluation.Period(today - timedelta(days=today.weekday() + 7 * 12), today)
    weeks = dict(evaluation.rates_per_week(db_session, period))
    this_week = weeks[today - timedelta(days=today.weekday())]
    assert this_week.response_rate is not None and this_week.followup_rate is not None
    for heading, name in WEEKLY_RATES.items():
        card = body.split(f'id="{heading}"', 1)[1].split("</section>", 1)[0]
        chart = card.split("</svg>", 1)[0]
        assert "<polyline" in chart or 'class="chart chart-empty"' in chart, heading
        shown = {
            label: value
            for label, value in re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td></tr>", card)
        }
        with app.test_request_context("/"):
            expected = {f"{w:%m-%d}": percent(getattr(t, name)) or "–" for w, t in weeks.items()}
        assert expected.items() <= shown.items(), heading
    response = body.split('id="h-response"', 1)[1].split("</svg>", 1)[0]
    followup = body.split('id="h-followup"', 1)[1].split("</svg>", 1)[0]
    assert "<polyline" in response and "<polyline" in followup


def unit_ranks(app: Flask) -> dict[str, tuple[str, str]]:
    """Each unit's (rank, score) in the evaluation's CSV of PERIOD."""
    answer = browser(app, "leader").get(
        f"/evaluation?format=csv&table=units&start={PERIOD.start}&end={PERIOD.end}"
    )
    assert answer.status_code == 200
    rows = csv.DictReader(io.StringIO(answer.get_data(as_text=True)))
    return {r["name"]: (r["rank"], r["score"]) for r in rows}


def test_the_score_weights_are_settings_of_the_app(
    app: Flask,
    city: City,
    names: Names,
    db_session: Session,
    make_case: MakeCase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One case due in March for each unit: A's closed late (on-time 0 %), W's on time
    (100 %). The on-time rate alone ranks W first; with 90 % of the points on satisfaction
    (A 75 %, W 0 %) and 10 % on response (A 60 %, W 100 %), A is first; the page's formula
    says so."""
    make_case("closed", reported=at(1, 0), deadline=at(20, 0), handled_at=at(21, 0),
              closed_at=at(21, 1))  # fmt: skip
    make_case("closed", city.b, unit=WATER, reported=at(1, 0),
              deadline=at(20, 0), handled_at=at(18, 0), closed_at=at(19, 0))  # fmt: skip
    evaluation.refresh_rollup(db_session)

    plain = unit_ranks(app)
    monkeypatch.setitem(app.config, "SCORE_WEIGHT_SATISFACTION", 0.9)
    monkeypatch.setitem(app.config, "SCORE_WEIGHT_RESPONSE", 0.1)
    monkeypatch.setitem(app.config, "SCORE_REHANDLE_PENALTY", 2.0)
    weighted = unit_ranks(app)
    page = browser(app, "leader").get(f"/evaluation?start={PERIOD.start}&end={PERIOD.end}")

    assert plain[names.unit_w] == ("1", "100.0") and plain[names.unit_a][0] == "2"  # 0 points
    # A: 100 × (0.1 × 3/5 + 0.9 × 3/4) − 2 × one re-handling; W: 100 × (0.1 × 1 + 0.9 × 0)
    assert weighted[names.unit_a] == ("1", "71.5")
    assert weighted[names.unit_w] == ("2", "10.0")
    formulas = page.get_data(as_text=True).split('class="formulas"', 1)[1]
    assert (
        "Points out of 100: 10% × response rate + 90% × satisfaction rate (a rate without data"
        " leaves its share to the others), less 1 per rework round, 2 per re-handling"
    ) in html.unescape(formulas)


def test_the_score_formula_without_weights(app: Flask, names: Names) -> None:
    page = browser(app, "leader").get(f"/evaluation?start={PERIOD.start}&end={PERIOD.end}")

    assert (
        "Points out of 100: the on-time rate, less 1 per rework round; ranks the rows."
        in html.unescape(page.get_data(as_text=True))
    )
