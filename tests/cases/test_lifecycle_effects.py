"""The effects of the lifecycle (cases.lifecycle.EFFECTS): pure, so tested without a database.

Each effect is asked with a case's facts and what came with the action, on the shipped Los
Angeles calendar, and must give the columns, the event's record and the photos it promises.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cases.lifecycle import (
    EFFECTS,
    TRANSITIONS,
    Action,
    Assignment,
    CaseState,
    Change,
    Inspector,
    MergeTarget,
    PendingRequest,
    Request,
)
from cases.models import DispatchState, PhotoKind
from cases.status import CaseStatus
from gridmgmt.kernel.business_calendar import BusinessCalendar
from gridmgmt.kernel.errors import Conflict, InvalidInput

DATA = Path(__file__).resolve().parents[2] / "gridmgmt" / "data"
CALENDAR = BusinessCalendar.from_dict(json.loads((DATA / "calendar_us_la.json").read_text()))
NOW = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Los Angeles
DEADLINE = datetime(2026, 3, 12, 17, 0, tzinfo=UTC)
ROADS = Assignment(7, "DEPT-ROADS", "Roads", 3, "rule 3 (city-wide, priority 100)")


def facts(status: CaseStatus, **more: object) -> CaseState:
    """A case of a class with a 1 working day limit (4 hours when urgent)."""
    base = CaseState(
        status, case_id=1, limit=(Decimal("1"), "days"), urgent_limit=(Decimal("4"), "hours")
    )
    return replace(base, **more)


def run(action: Action, state: CaseState, request: Request | None = None) -> Change:
    return EFFECTS[action](state, request or Request(), NOW, CALENDAR)


def test_every_action_of_the_table_has_an_effect() -> None:
    assert {action for _, action in TRANSITIONS} == set(EFFECTS)


@pytest.mark.parametrize(("urgent", "hours"), [(False, 8), (True, 4)])
def test_dispatch_sets_the_unit_and_a_deadline_on_the_calendar(urgent: bool, hours: int) -> None:
    change = run(Action.DISPATCH, facts(CaseStatus.FILED, urgent=urgent), Request(assignment=ROADS))

    deadline = CALENDAR.add_working_hours(NOW, hours)
    assert change.values == {
        "unit_id": 7, "routing_rule_id": 3, "dispatched_at": NOW, "deadline": deadline,
        "warned_at": None, "overdue_at": None, "dispatch_state": DispatchState.DONE.value,
        "dispatch_error": None,
    }  # fmt: skip
    assert change.event_data == {"unit": "DEPT-ROADS", "unit_name": "Roads", "rule": 3,
                                 "why": ROADS.why, "deadline": deadline.isoformat()}  # fmt: skip


def test_a_dispatch_without_a_rule_records_none() -> None:
    community = Assignment(9, "990100006046", "Community 46", None, "default: the community")
    change = run(Action.DISPATCH, facts(CaseStatus.FILED), Request(assignment=community))

    assert "rule" not in change.event_data  # empty values are left out of the record
    assert change.values["routing_rule_id"] is None


def test_filing_queues_the_case_and_rings_the_dispatcher() -> None:
    change = run(Action.FILE, facts(CaseStatus.REPORTED))

    assert change.values == {"filed_at": NOW, "dispatch_state": DispatchState.QUEUED.value}
    assert change.ring


def test_an_extension_asks_then_moves_the_deadline() -> None:
    asked = run(
        Action.REQUEST_EXTENSION,
        facts(CaseStatus.IN_PROGRESS),
        Request(extra_value="2", extra_unit="days"),
    )
    assert asked.values == {
        "pending_request": PendingRequest.EXTENSION.value,
        "pending_value": Decimal("2"),
        "pending_unit": "days",
    }
    assert asked.event_data == {"asked": "2 days"}

    waiting = facts(
        CaseStatus.IN_PROGRESS, deadline=DEADLINE, pending_request=PendingRequest.EXTENSION,
        pending_value=Decimal("2"), pending_unit="days",
    )  # fmt: skip
    granted = run(Action.APPROVE_EXTENSION, waiting)

    moved = CALENDAR.add_working_time(DEADLINE, 2, "days")
    assert granted.values["deadline"] == moved > DEADLINE
    assert granted.values["pending_request"] is None
    assert granted.event_data["deadline_before"] == DEADLINE.isoformat()


@pytest.mark.parametrize("value", ["", "x", "0", "-1", "1001", "NaN", "inf"])
def test_more_time_must_be_a_sensible_amount(value: str) -> None:
    with pytest.raises(InvalidInput, match="more time"):
        run(Action.REQUEST_EXTENSION, facts(CaseStatus.IN_PROGRESS), Request(extra_value=value))


def test_an_approval_without_an_amount_is_a_conflict_not_a_crash() -> None:
    waiting = facts(CaseStatus.IN_PROGRESS, pending_request=PendingRequest.EXTENSION)

    with pytest.raises(Conflict, match="names no time"):
        run(Action.APPROVE_EXTENSION, waiting)


def test_a_suspension_keeps_the_working_hours_left_and_resume_gives_them_back() -> None:
    running = facts(CaseStatus.IN_PROGRESS, deadline=DEADLINE)
    suspended = run(Action.APPROVE_SUSPENSION, running)

    left = CALENDAR.working_hours_between(NOW, DEADLINE)
    assert suspended.values["suspended_remaining_hours"] == Decimal(str(round(left, 4)))
    assert suspended.values["deadline"] is None

    later = NOW + timedelta(days=7)
    resumed = EFFECTS[Action.RESUME](
        facts(CaseStatus.SUSPENDED, suspended_remaining_hours=Decimal(str(left))),
        Request(),
        later,
        CALENDAR,
    )
    assert resumed.values["deadline"] == CALENDAR.add_working_hours(later, left)


def test_a_failed_check_is_one_more_rework_with_a_new_deadline() -> None:
    change = run(Action.CHECK_FAIL, facts(CaseStatus.CHECKING, rework_count=2))

    assert change.values["rework_count"] == 3
    assert change.event_data["rework"] == 3
    assert change.values["handled_at"] is None and change.values["check_inspector_id"] is None
    assert change.photos is PhotoKind.CHECK


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (MergeTarget(1, "C1", "reported", None), "not an open case"),  # itself
        (MergeTarget(2, "C2", "closed", None), "not an open case"),
        (MergeTarget(3, "C3", "filed", 9), "was itself merged"),
    ],
)
def test_a_merge_goes_only_into_another_open_case(target: MergeTarget, message: str) -> None:
    with pytest.raises(Conflict, match=message):
        run(Action.MERGE, facts(CaseStatus.REPORTED), Request(merge_target=target))


def test_a_merge_records_the_target() -> None:
    target = MergeTarget(2, "C2", "dispatched", None)
    change = run(Action.MERGE, facts(CaseStatus.REPORTED), Request(merge_target=target))

    assert change.values == {"merged_into_id": 2}
    assert change.event_data == {"into": "C2"}


def test_assigning_a_check_names_the_inspector() -> None:
    change = run(
        Action.ASSIGN_CHECK, facts(CaseStatus.HANDLED), Request(inspector=Inspector(5, "li"))
    )
    unassigned = run(Action.ASSIGN_CHECK, facts(CaseStatus.HANDLED))

    assert (change.values, change.event_data) == ({"check_inspector_id": 5}, {"inspector": "li"})
    assert (unassigned.values, unassigned.event_data) == ({"check_inspector_id": None}, {})


@pytest.mark.parametrize(("action", "column"), [(Action.WARN_DEADLINE, "warned_at"),
                                                (Action.MARK_OVERDUE, "overdue_at")])  # fmt: skip
def test_the_watch_stamps_the_case_and_records_its_unit_and_deadline(
    action: Action, column: str
) -> None:
    change = run(action, facts(CaseStatus.DISPATCHED, unit_id=4, deadline=DEADLINE))

    assert change.values == {column: NOW}
    assert change.event_data == {"unit_id": 4, "deadline": DEADLINE.isoformat()}


def test_a_deadline_needs_the_calendar() -> None:
    with pytest.raises(InvalidInput, match="business calendar"):
        EFFECTS[Action.REOPEN](facts(CaseStatus.CLOSED), Request(), NOW, None)
