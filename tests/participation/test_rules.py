"""The pure rules of public participation, without a database: the three rates' formulas and
the city's weights (`maps.aggregate`), the re-handling's place in the lifecycle (its effect and
its guard), the near-me query's parsing, and who a supporter is."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cases.lifecycle import (
    EFFECTS,
    Action,
    Actor,
    CaseState,
    Refusal,
    Request,
    allowed_actions,
    decide,
)
from cases.nearby import metres_between, parse_query
from cases.notices import where_it_stands
from cases.status import CaseStatus
from cases.support import SupportInput, clean_contact, may_be_supported, supporter_key
from gridmgmt.kernel.business_calendar import BusinessCalendar
from gridmgmt.kernel.errors import InvalidInput
from maps.aggregate import Scoring, Tally, ranked

DATA = Path(__file__).resolve().parents[2] / "gridmgmt" / "data"
CALENDAR = BusinessCalendar.from_dict(json.loads((DATA / "calendar_us_la.json").read_text()))
NOW = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Los Angeles

# ---------------------------------------------------------------- the rates


def test_the_rates_formulas() -> None:
    t = Tally(
        dispatches=8, responded=6, fixed=9, not_fixed=3, satisfied=5, basically_satisfied=3,
        dissatisfied=2, closings=10, reachable=8, followed_up=6, rehandled=1,
    )  # fmt: skip

    assert t.response_rate == 0.75
    assert t.resolution_rate == 0.75
    assert t.ratings == 10 and t.satisfaction_rate == 0.8
    assert t.followup_rate == 0.75
    assert t.rehandle_rate == 0.1


def test_basically_satisfied_may_weigh_less() -> None:
    t = Tally(satisfied=5, basically_satisfied=3, dissatisfied=2, scoring=Scoring(basic_weight=0.8))

    assert t.satisfaction_rate == pytest.approx((5 + 0.8 * 3) / 10)


def test_no_data_no_rate() -> None:
    t = Tally(fixed=0, not_fixed=0)

    assert t.response_rate is None and t.resolution_rate is None
    assert t.satisfaction_rate is None and t.followup_rate is None and t.rehandle_rate is None
    assert Tally(fixed=0, not_fixed=2).resolution_rate == 0.0


def test_default_weights_leave_the_score_as_it_was() -> None:
    t = Tally(due=4, closed_on_time=3, rework_count=1, satisfied=0, dissatisfied=9, rehandled=2)

    assert t.score() == 74.0  # 100 × 3/4 − 1 rework, the rates not counted
    assert t.score(rework_penalty=2.0) == 73.0


def test_weights_share_the_points() -> None:
    scoring = Scoring(response=0.3, resolution=0.35, satisfaction=0.35, rehandle_penalty=2.0)
    t = Tally(
        due=4, closed_on_time=2, dispatches=10, responded=9, fixed=8, not_fixed=2,
        satisfied=6, basically_satisfied=2, dissatisfied=2, rehandled=1, scoring=scoring,
    )  # fmt: skip

    # on time 0.5 has no share left; 30 × 0.9 + 35 × 0.8 + 35 × 0.8 − 2 per re-handling
    assert t.score() == pytest.approx(27 + 28 + 28 - 2)
    missing = Tally(due=4, closed_on_time=2, dispatches=10, responded=9,
                    scoring=Scoring(response=0.5))  # fmt: skip
    # no answers: only the response rate and the on-time rate share the points
    assert missing.score() == pytest.approx(100 * (0.5 * 0.5 + 0.5 * 0.9))


def test_ranking_follows_the_weights() -> None:
    weights = Scoring(satisfaction=0.5)
    fast_unloved = Tally(due=2, closed_on_time=2, satisfied=0, dissatisfied=4, scoring=weights)
    slow_loved = Tally(due=2, closed_on_time=1, satisfied=4, scoring=weights)

    assert [name for _, name, _ in ranked([("fast", fast_unloved), ("slow", slow_loved)])] == [
        "slow",
        "fast",
    ]
    plain = [("fast", Tally(due=2, closed_on_time=2)), ("slow", Tally(due=2, closed_on_time=1))]
    assert [name for _, name, _ in ranked(plain)] == ["fast", "slow"]


@pytest.mark.parametrize(
    "bad", [dict(response=-0.1), dict(response=0.6, satisfaction=0.6), dict(basic_weight=1.5)]
)
def test_impossible_weights_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Scoring(**bad)


# ---------------------------------------------------------------- re-handling in the lifecycle


def closed(**more: object) -> CaseState:
    return CaseState(
        CaseStatus.CLOSED, unit_id=7, case_id=1, closed_at=NOW, limit=(Decimal("1"), "days"),
        rework_count=2, rehandle_count=1, **more,  # type: ignore[arg-type]
    )  # fmt: skip


def test_rehandling_goes_back_to_the_unit_with_a_new_deadline() -> None:
    change = EFFECTS[Action.REHANDLE](closed(), Request(reason="r", review=5), NOW, CALENDAR)

    deadline = CALENDAR.add_working_time(NOW, 1, "days")
    assert change.values == {
        "closed_at": None, "handled_at": None, "check_inspector_id": None,
        "deadline": deadline, "warned_at": None, "overdue_at": None, "rehandle_count": 2,
    }  # fmt: skip
    assert "unit_id" not in change.values and "rework_count" not in change.values
    assert change.event_data == {"rehandle": 2, "answer": 5, "unit_id": 7,
                                 "deadline": deadline.isoformat()}  # fmt: skip


@pytest.mark.parametrize("action", [Action.REHANDLE, Action.DISMISS_COMPLAINT])
def test_only_after_a_review(action: Action) -> None:
    operator = Actor("operator", 1)

    without = decide(closed(), action, operator, Request(reason="r"), NOW)
    reviewed = decide(closed(), action, operator, Request(reason="r", review=5), NOW)
    no_reason = decide(closed(), action, operator, Request(review=5), NOW)
    dispatcher = decide(closed(), action, Actor("dispatcher", 2), Request("r", review=5), NOW)

    assert without.refusal is Refusal.INPUT and "review" in str(without.reason)
    assert reviewed.allowed
    assert no_reason.refusal is Refusal.INPUT
    assert dispatcher.refusal is Refusal.ROLE
    assert action not in allowed_actions(closed(), operator, NOW)  # no button on the page


def test_dismissing_keeps_the_case_closed() -> None:
    decision = decide(
        closed(), Action.DISMISS_COMPLAINT, Actor("operator", 1), Request("r", review=5), NOW
    )

    assert decision.to == CaseStatus.CLOSED
    change = EFFECTS[Action.DISMISS_COMPLAINT](closed(), Request("r", review=5), NOW, CALENDAR)
    assert change.values == {} and change.event_data == {"answer": 5}


# ---------------------------------------------------------------- near me, supporters


def test_a_query_near_a_point() -> None:
    q = parse_query({"lon": "-118.25", "lat": "34.05", "radius": "250", "page": "2"})

    assert (q.lon, q.lat, q.radius_m, q.page, q.state, q.duplicates) == (
        -118.25, 34.05, 250, 2, "all", False,
    )  # fmt: skip
    dup = parse_query({"lon": "1", "lat": "2", "category": "E0102", "duplicates": "1"})
    assert dup.duplicates and dup.state == "open"


@pytest.mark.parametrize(
    "args",
    [{}, {"lon": "1"}, {"lon": "nan", "lat": "1"}, {"lon": "1", "lat": "1", "radius": "2001"},
     {"community": "x" * 40}, {"lon": "1", "lat": "1", "page_size": "101"}],
)  # fmt: skip
def test_bad_queries(args: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        parse_query(args)


def test_distances() -> None:
    assert metres_between(0, 0, 0, 0) == 0
    assert metres_between(-118.25, 34.0, -118.25, 34.001) == pytest.approx(111.2, abs=0.5)


def test_who_supports() -> None:
    email = supporter_key(None, clean_contact(SupportInput(email=" Ana@Example.org ")))

    assert email == supporter_key(None, {"email": "ana@example.org"})
    assert supporter_key(None, {"phone": "+1 (213) 555-0101"}) == supporter_key(
        None, {"phone": "12135550101"}
    )
    assert supporter_key(7, {"email": "ana@example.org"}) != email  # an account is its own
    with pytest.raises(InvalidInput, match="sign in or give"):
        supporter_key(None, {"name": "Ana"})
    with pytest.raises(InvalidInput):
        clean_contact(SupportInput(email="ana@"))
    assert may_be_supported("dispatched") and may_be_supported("checked")
    assert not may_be_supported("closed") and not may_be_supported("reported")
    assert not may_be_supported("merged")


DEADLINE = datetime(2030, 5, 6, 17, 30, tzinfo=UTC)
WITH_UNIT = ("dispatched", {"unit": "Unit 7", "deadline": DEADLINE.isoformat()})


@pytest.mark.parametrize(
    ("status", "deadline", "expected"),
    [
        ("filed", None, ("filed", {})),
        ("returned", None, ("filed", {})),  # handed back: being sent again
        ("dispatched", DEADLINE, WITH_UNIT),
        ("in_progress", DEADLINE, WITH_UNIT),
        ("suspended", DEADLINE, WITH_UNIT),
        ("suspended", None, None),  # no message says "on hold" without a deadline
        ("handled", None, ("done", {})),
        ("checking", None, ("done", {})),
        ("checked", None, ("done", {})),
    ],
)  # fmt: skip
def test_a_new_supporter_is_told_where_the_case_stands(
    status: str, deadline: datetime | None, expected: tuple[str, dict] | None
) -> None:
    found = where_it_stands(status, "Unit 7", deadline)
    assert (None if found is None else (found[0].value, found[1])) == expected
