"""The three rates (三率) on the demo city's year of real requests (the LA 311 history replayed
through the lifecycle), with follow-up answers of known proportions: each unit's response,
resolution, satisfaction, follow-up and re-handling rates, as the evaluation page counts them,
equal the counts this test makes itself, to the case; and the page's CSV says the same.

The answers: per unit, its closed cases whose reporter can be reached (an e-mail or phone in
the report's contact, or a citizen's account), ordered by case id, the first 3 of every 4
answer, an hour after their last closing, by the reporter through the link or to an
operator's phone call; "fixed" runs yes, yes, no, don't know and the rating satisfied,
satisfied, basically satisfied, dissatisfied, none, each in its own cycle over the answers.
The history's hotline, inspector and Open311 reports leave no contact and the demo citizen's
are reachable: to have more of them, this test also writes a phone into the contact of every
third closed case without one (in its own clone of the city).

The response rate is checked against the history's own events, recounted here in Python
from the definition (a case put in a unit's hands, answered by an accept or a return within
the response limit)."""

from __future__ import annotations

import csv
import html
import io
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from cases.followup import (
    AnswerInput,
    Channel,
    Fixed,
    Respondent,
    Satisfaction,
    record_answer,
    respondent_key,
)
from gridmgmt.kernel.db import db
from maps import evaluation
from tests.conftest import as_owner, demo_clone
from tests.support import browser, real_app

pytestmark = pytest.mark.slow

BASIC_WEIGHT = 0.8  # the city's weight of "basically satisfied" (a setting)
RESPONSE_HOURS = 2.0  # the response limit (the setting's default)
FIXED_CYCLE = (Fixed.YES, Fixed.YES, Fixed.NO, Fixed.UNKNOWN)
RATING_CYCLE = (
    Satisfaction.SATISFIED,
    Satisfaction.SATISFIED,
    Satisfaction.BASICALLY_SATISFIED,
    Satisfaction.DISSATISFIED,
    None,
)
PUT_IN_HANDS = ("dispatch", "check_fail", "reopen", "rehandle")


@dataclass
class Expected:
    """One unit's counts, as this test makes them."""

    dispatches: int = 0
    responded: int = 0
    fixed: int = 0
    not_fixed: int = 0
    satisfied: int = 0
    basically_satisfied: int = 0
    dissatisfied: int = 0
    closings: int = 0
    reachable: int = 0
    followed_up: int = 0
    rehandled: int = 0
    answered_cases: set[int] = field(default_factory=set)

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in evaluation.RATE_COUNTS}


@dataclass(frozen=True)
class History:
    """The clone's app, the evaluated period and every unit's expected counts (by name)."""

    app: Flask
    period: evaluation.Period
    expected: dict[str, Expected]
    widened: int  # closed cases given a phone by this test
    answers: int


@pytest.fixture(scope="module")
def history(
    history_database_url: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[History]:
    """The demo city with its history, cloned, with the follow-up answers of the module's
    docstring recorded through `cases.followup.record_answer` (the demo's own answers
    deleted first)."""
    photos: Path = tmp_path_factory.mktemp("photos")
    with (
        demo_clone("rates_history", history_database_url) as url,
        real_app(
            url,
            redis_url,
            photos,
            SATISFACTION_BASIC_WEIGHT=BASIC_WEIGHT,
            RESPONSE_LIMIT_HOURS=RESPONSE_HOURS,
        ) as app,
    ):
        forget_the_demos_answers(url)
        with app.app_context():
            with db.transaction() as session:
                assert session.scalar(text("SELECT count(*) FROM followup_answers")) == 0
                widened = widen_contacts(session)
            with db.transaction() as session:
                found = answer_and_count(session)
            with db.transaction() as session:
                # As the scheduler keeps the rollups (with this city's response limit, not the
                # one they were counted with: every day is recounted).
                evaluation.refresh_rollup(session)
            db.session.remove()
        yield History(app, *found[:2], widened, found[2])


def forget_the_demos_answers(url: URL) -> None:
    """The demo's own follow-up answers, deleted (as the tables' owner: the app never
    deletes an answer) so that every answer counted is one of this test's."""
    engine = create_engine(as_owner(url))
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM followup_answers"))
    finally:
        engine.dispose()


def widen_contacts(session: Session) -> int:
    """Every third closed case (by id) without a way to reach its reporter gets a phone."""
    ids = session.scalars(
        text("""
            SELECT c.id FROM cases c LEFT JOIN users r ON r.id = c.reporter_id
            WHERE c.status = 'closed'
              AND NOT (c.contact ? 'email' OR c.contact ? 'phone'
                       OR coalesce(r.role = 'citizen', false))
            ORDER BY c.id
        """)
    ).all()
    chosen = ids[::3]
    for n, case_id in enumerate(chosen):
        session.execute(
            text("""UPDATE cases SET contact = contact || jsonb_build_object('phone', :phone)
                    WHERE id = :id"""),
            {"phone": f"+1 213 555 {n % 10000:04d}", "id": case_id},
        )
    return len(chosen)


def answer_and_count(session: Session) -> tuple[evaluation.Period, dict[str, Expected], int]:
    """Record the answers and count, per unit, what the rates should be made of."""
    now = datetime.now(UTC)
    first = session.scalar(text("SELECT min(reported_at) FROM cases"))
    period = evaluation.Period(first.date() - timedelta(days=1), now.date())
    bounds = period.params()
    units = {
        code: (uid, f"{code} {name}")
        for uid, code, name in session.execute(text("SELECT id, code, name FROM units"))
    }
    names = {uid: name for uid, name in units.values()}
    cases = {
        row.id: row
        for row in session.execute(
            text("""
                SELECT c.id, c.unit_id, c.status,
                       (c.contact ? 'email' OR c.contact ? 'phone'
                        OR coalesce(r.role = 'citizen', false)) AS reachable
                FROM cases c LEFT JOIN users r ON r.id = c.reporter_id
            """)
        )
    }
    events: dict[int, list[Any]] = defaultdict(list)
    for e in session.execute(
        text("""SELECT case_id, action, from_status, to_status, created_at, data
                FROM case_events ORDER BY case_id, created_at, id""")
    ):
        events[e.case_id].append(e)
    expected: dict[int | None, Expected] = defaultdict(Expected)
    limit = timedelta(hours=RESPONSE_HOURS)

    def within(at: datetime) -> bool:
        return bounds["start"] <= at < bounds["end"]

    # Response: every time a case was put in a unit's hands, and whether it answered in time.
    for case_id, its in events.items():
        for e in its:
            if e.action not in PUT_IN_HANDS or e.to_status != "dispatched":
                continue
            if not within(e.created_at):
                continue
            data = e.data or {}
            unit = (
                units[data["unit"]][0]
                if data.get("unit") in units
                else int(data["unit_id"])
                if data.get("unit_id") is not None
                else cases[case_id].unit_id
            )
            counted = expected[unit]
            counted.dispatches += 1
            counted.responded += any(
                x.from_status == "dispatched"
                and x.to_status != "dispatched"
                and e.created_at <= x.created_at <= e.created_at + limit
                for x in its
            )

    # The answers: per unit, 3 of every 4 reachable closed cases, by case id.
    closed = sorted(
        (c for c in cases.values() if c.status == "closed" and c.reachable),
        key=lambda c: c.id,
    )
    per_unit: dict[int | None, list[int]] = defaultdict(list)
    for c in closed:
        per_unit[c.unit_id].append(c.id)
    answered_at: dict[int, datetime] = {}
    given = 0
    for unit_id in sorted(per_unit, key=lambda u: (u is None, u or 0)):
        for n, case_id in enumerate(per_unit[unit_id]):
            if n % 4 == 3:
                continue
            closes = [e for e in events[case_id] if e.action == "close"]
            assert closes, f"case {case_id} is closed without a close event"
            when = closes[-1].created_at + timedelta(hours=1)
            if when >= now:
                when = closes[-1].created_at  # closed in the last hour: answered at once
            fixed, rating = FIXED_CYCLE[given % 4], RATING_CYCLE[given % 5]
            channel = Channel.PHONE if given % 2 else Channel.LINK
            record_answer(
                session,
                case_id,
                len(closes),
                AnswerInput(
                    fixed=fixed,
                    satisfaction=rating,
                    comment="",
                    respondent=Respondent.REPORTER,
                    channel=channel,
                    respondent_key=respondent_key("reporter", case_id),
                ),
                when,
            )
            given += 1
            answered_at[case_id] = when
            counted = expected[unit_id]
            counted.answered_cases.add(case_id)
            if within(when):
                counted.fixed += fixed == Fixed.YES
                counted.not_fixed += fixed == Fixed.NO
                counted.satisfied += rating == Satisfaction.SATISFIED
                counted.basically_satisfied += rating == Satisfaction.BASICALLY_SATISFIED
                counted.dissatisfied += rating == Satisfaction.DISSATISFIED

    # Closings (each close event), the reachable ones, and those answered after it; re-handlings.
    for case_id, its in events.items():
        case = cases[case_id]
        for e in its:
            if not within(e.created_at):
                continue
            counted = expected[case.unit_id]
            if e.action == "rehandle":
                counted.rehandled += 1
            if e.action != "close":
                continue
            counted.closings += 1
            if case.reachable:
                counted.reachable += 1
                counted.followed_up += (
                    case_id in answered_at and answered_at[case_id] >= e.created_at
                )
    return period, {names[u]: counts for u, counts in expected.items() if u in names}, given


def tallies(history: History) -> dict[str, Any]:
    """Every unit's tally as the evaluation page counts it."""
    with history.app.app_context():
        session = db.session()
        now = datetime.now(UTC)
        cube = evaluation.tally_cube(session, history.period, now)
        found = dict(evaluation.by_unit(session, history.period, now, cube=cube))
        db.session.remove()
        return found


def test_the_history_gives_the_rates_something_to_count(history: History) -> None:
    total = Expected()
    for counted in history.expected.values():
        for name in evaluation.RATE_COUNTS:
            setattr(total, name, getattr(total, name) + getattr(counted, name))
    assert history.widened > 10
    assert history.answers >= 30
    assert total.dispatches > 300 and total.closings > 100
    assert total.reachable > 40 and total.followed_up >= history.answers
    assert 0 < total.responded < total.dispatches  # some in time, some late
    units_answered = [n for n, c in history.expected.items() if c.answered_cases]
    assert len(units_answered) >= 2


def test_each_units_rates_equal_the_known_answers(history: History) -> None:
    found = tallies(history)
    checked = 0
    for name, t in found.items():
        counted = history.expected.get(name, Expected())
        assert {n: getattr(t, n) for n in evaluation.RATE_COUNTS} == counted.counts(), name
        c = counted
        assert t.response_rate == (c.responded / c.dispatches if c.dispatches else None), name
        decided = c.fixed + c.not_fixed
        assert t.resolution_rate == (c.fixed / decided if decided else None), name
        ratings = c.satisfied + c.basically_satisfied + c.dissatisfied
        if ratings:
            satisfaction = (c.satisfied + BASIC_WEIGHT * c.basically_satisfied) / ratings
            assert t.satisfaction_rate == pytest.approx(satisfaction, abs=1e-12), name
        else:
            assert t.satisfaction_rate is None, name
        assert t.followup_rate == (c.followed_up / c.reachable if c.reachable else None), name
        assert t.rehandle_rate == (c.rehandled / c.closings if c.closings else None), name
        checked += bool(c.answered_cases)
    assert checked >= 2


def test_the_proportions_are_the_ones_given(history: History) -> None:
    """Over all units: 3 of 4 reachable closed cases answered; of the answers, a half "fixed",
    a quarter "not fixed"; satisfied 2 in 5, basically 1 in 5, dissatisfied 1 in 5."""
    n = history.answers
    found = tallies(history)
    fixed = sum(t.fixed for t in found.values())
    not_fixed = sum(t.not_fixed for t in found.values())
    satisfied = sum(t.satisfied for t in found.values())
    basically = sum(t.basically_satisfied for t in found.values())
    dissatisfied = sum(t.dissatisfied for t in found.values())
    assert fixed == sum(1 for i in range(n) if i % 4 < 2)
    assert not_fixed == sum(1 for i in range(n) if i % 4 == 2)
    assert satisfied == sum(1 for i in range(n) if i % 5 < 2)
    assert basically == sum(1 for i in range(n) if i % 5 == 2)
    assert dissatisfied == sum(1 for i in range(n) if i % 5 == 3)


def test_the_csv_of_a_unit_has_its_rates(history: History) -> None:
    name, counted = max(history.expected.items(), key=lambda kv: len(kv[1].answered_cases))
    period = history.period
    with history.app.app_context():
        answer = browser(history.app, "leader").get(
            f"/evaluation?format=csv&table=units&start={period.start}&end={period.end}"
        )
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    row = next(r for r in rows if r["name"] == name)
    c = counted

    def pct(part: float, whole: int) -> str:
        return f"{100 * part / whole:.1f}" if whole else ""

    for column in evaluation.RATE_COUNTS:
        assert row[column] == str(getattr(c, column)), column
    ratings = c.satisfied + c.basically_satisfied + c.dissatisfied
    assert row["response_rate_pct"] == pct(c.responded, c.dispatches)
    assert row["resolution_rate_pct"] == pct(c.fixed, c.fixed + c.not_fixed)
    assert row["satisfaction_rate_pct"] == pct(
        c.satisfied + BASIC_WEIGHT * c.basically_satisfied, ratings
    )
    assert row["followup_rate_pct"] == pct(c.followed_up, c.reachable)
    assert row["rehandle_rate_pct"] == pct(c.rehandled, c.closings)


def test_the_page_shows_the_rates_and_their_counts(history: History) -> None:
    """The evaluation page with its "Public participation" columns: the unit's row has each
    rate's counts under it, and the formulas say how they are made."""
    name, c = max(history.expected.items(), key=lambda kv: len(kv[1].answered_cases))
    period = history.period
    with history.app.app_context():
        page = browser(history.app, "leader").get(
            f"/evaluation?start={period.start}&end={period.end}&show=participation"
        )
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    units = body.split('data-table="units"', 1)[1].split("</table>", 1)[0]
    row = re.search(rf'data-value="{re.escape(html.escape(name))}">.*?</tr>', units, flags=re.S)
    assert row is not None, name
    cells = row.group(0)
    ratings = c.satisfied + c.basically_satisfied + c.dissatisfied
    for part, whole in (
        (c.responded, c.dispatches),
        (c.fixed, c.fixed + c.not_fixed),
        (c.satisfied + c.basically_satisfied, ratings),
        (c.followed_up, c.reachable),
        (c.rehandled, c.closings),
    ):
        if whole:
            assert f'<small class="muted">{part:,}/{whole:,}</small>' in cells
    assert 'th scope="colgroup" colspan="5" class="g-participation">' in units  # shown
    assert f"within {RESPONSE_HOURS:g} hours" in body  # the formula with the city's limit
    assert f"{BASIC_WEIGHT:g} × basically satisfied" in body


def test_the_dashboard_draws_the_weekly_rates(history: History) -> None:
    """The response, resolution, satisfaction and follow-up rates per week, drawn inside
    their charts, each value written once at most at the top (the rates are often 100 %
    several weeks running)."""
    with history.app.app_context():
        page = browser(history.app, "leader").get("/dashboard?period=12m")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    for heading in ("h-response", "h-resolution", "h-satisfaction", "h-followup"):
        chart = body.split(f'id="{heading}"', 1)[1].split("</svg>", 1)[0]
        assert "<polyline" in chart, heading
        ys = [float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', chart)]
        assert ys and all(18 <= y <= 202 for y in ys), heading  # inside the plot (230 high)
        written = re.findall(r'font-weight="600"[^>]*>([^<]+)</text>', chart)
        assert len(written) <= 2, written  # the highest (first time) and the last
