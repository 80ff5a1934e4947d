"""The case lifecycle rules: cases.lifecycle.decide, allowed_actions and TRANSITIONS (no database).

The expected table is written out below from DOMAIN.md's closed loop, independently of
`TRANSITIONS`: a wrong edit of the product's table makes these tests fail.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cases.lifecycle import (
    EFFECTS,
    SYSTEM,
    TRANSITIONS,
    Action,
    Actor,
    CaseState,
    Decision,
    PendingRequest,
    Refusal,
    RejectReason,
    Request,
    allowed_actions,
    decide,
    is_overdue,
    time_limit,
)
from cases.models import CaseStatus
from gridmgmt.kernel.models import Role

NOW = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)
UNIT_ID = 7
OTHER_UNIT_ID = 8
USER_ID = 42
OTHER_USER_ID = 43

CITIZEN, INSPECTOR, OPERATOR = "citizen", "inspector", "operator"
DISPATCHER, UNIT_STAFF = "dispatcher", "unit_staff"

# (status before, action, role, status after); None as status: the case does not exist yet.
EXPECTED: list[tuple[str | None, str, str, str]] = [
    # 1. collect
    (None, "report", CITIZEN, "reported"),
    (None, "report", INSPECTOR, "reported"),
    (None, "report", OPERATOR, "reported"),
    (None, "report", "system", "reported"),
    ("reported", "verify", INSPECTOR, "verified"),
    ("reported", "invalidate", INSPECTOR, "invalid"),
    # 2. file, or reject / merge
    ("reported", "file", OPERATOR, "filed"),
    ("reported", "file", "system", "filed"),
    ("verified", "file", OPERATOR, "filed"),
    ("verified", "file", "system", "filed"),
    ("reported", "reject", OPERATOR, "rejected"),
    ("verified", "reject", OPERATOR, "rejected"),
    ("reported", "merge", OPERATOR, "merged"),
    ("verified", "merge", OPERATOR, "merged"),
    # 3. dispatch
    ("filed", "dispatch", DISPATCHER, "dispatched"),
    ("filed", "dispatch", "system", "dispatched"),
    ("returned", "dispatch", DISPATCHER, "dispatched"),
    ("returned", "dispatch", "system", "dispatched"),
    # 4. handle: accept, return, ask for more time or a suspension
    ("dispatched", "accept", UNIT_STAFF, "in_progress"),
    ("dispatched", "return", UNIT_STAFF, "returned"),
    ("in_progress", "return", UNIT_STAFF, "returned"),
    ("in_progress", "request_extension", UNIT_STAFF, "in_progress"),
    ("in_progress", "approve_extension", DISPATCHER, "in_progress"),
    ("in_progress", "refuse_extension", DISPATCHER, "in_progress"),
    ("in_progress", "request_suspension", UNIT_STAFF, "in_progress"),
    ("in_progress", "approve_suspension", DISPATCHER, "suspended"),
    ("in_progress", "refuse_suspension", DISPATCHER, "in_progress"),
    ("suspended", "resume", DISPATCHER, "in_progress"),
    # 5. report back
    ("in_progress", "report_done", UNIT_STAFF, "handled"),
    # 6. check on site, close, reopen
    ("handled", "assign_check", OPERATOR, "checking"),
    ("checking", "check_pass", INSPECTOR, "checked"),
    ("checking", "check_fail", INSPECTOR, "dispatched"),
    ("checked", "close", OPERATOR, "closed"),
    ("closed", "reopen", OPERATOR, "dispatched"),
    # 7. a follow-up complaint judged (cases.rehandling): re-handled, or dismissed with a reason
    ("closed", "rehandle", OPERATOR, "dispatched"),
    ("closed", "dismiss_complaint", OPERATOR, "closed"),
    # the dispatcher's deadline watch (the system only): the status stays, the event records it
    ("dispatched", "warn_deadline", "system", "dispatched"),
    ("in_progress", "warn_deadline", "system", "in_progress"),
    ("dispatched", "mark_overdue", "system", "dispatched"),
    ("in_progress", "mark_overdue", "system", "in_progress"),
]
ALLOWED = {(s, a, r): to for s, a, r, to in EXPECTED}
ROWS = {(s, a) for s, a, _, _ in EXPECTED}

STATUSES: list[str | None] = [None, *(s.value for s in CaseStatus)]
ACTIONS = [a.value for a in Action]
ROLES = [*(r.value for r in Role), SYSTEM]

UNIT_ACTION_NAMES = ["accept", "return", "request_extension", "request_suspension", "report_done"]
SUPERVISION_ROLES = [INSPECTOR, OPERATOR, DISPATCHER]
NEEDS_REASON = [
    ("reported", "invalidate", INSPECTOR),
    ("reported", "reject", OPERATOR),
    ("verified", "reject", OPERATOR),
    ("dispatched", "return", UNIT_STAFF),
    ("in_progress", "return", UNIT_STAFF),
    ("in_progress", "request_extension", UNIT_STAFF),
    ("in_progress", "refuse_extension", DISPATCHER),
    ("in_progress", "request_suspension", UNIT_STAFF),
    ("in_progress", "refuse_suspension", DISPATCHER),
    ("closed", "reopen", OPERATOR),
    ("closed", "rehandle", OPERATOR),
    ("closed", "dismiss_complaint", OPERATOR),
]
NEEDS_NOTE = [("in_progress", "report_done", UNIT_STAFF), ("checking", "check_fail", INSPECTOR)]
ANSWERS = {
    "approve_extension": "extension",
    "refuse_extension": "extension",
    "approve_suspension": "suspension",
    "refuse_suspension": "suspension",
}
FULL_REQUEST = Request(
    reason=RejectReason.DUPLICATE.value, note="done", after_photos=1, review=1
)  # review: the follow-up answer an operator judged (re-handling)


def status_of(value: str | None) -> CaseStatus | None:
    return CaseStatus(value) if value is not None else None


def actor(role: str, unit_id: int | None = UNIT_ID, user_id: int = USER_ID) -> Actor:
    """An actor of `role`; unit staff belong to the case's unit unless told otherwise."""
    return Actor(role, user_id, unit_id if role == UNIT_STAFF else None)


def state(
    status: str | None,
    pending: str | None = None,
    closed_ago: timedelta | None = timedelta(days=1),
    check_inspector_id: int | None = None,
    unit_id: int | None = UNIT_ID,
) -> CaseState:
    """A case in `status` with the unit UNIT_ID (closed `closed_ago` before NOW if closed)."""
    return CaseState(
        status_of(status),
        unit_id=unit_id,
        check_inspector_id=check_inspector_id,
        pending_request=PendingRequest(pending) if pending else None,
        closed_at=NOW - closed_ago if status == "closed" and closed_ago is not None else None,
    )


def satisfying_state(status: str | None, action: str) -> CaseState:
    """A state passing every guard of `action`: its unit, the right pending request..."""
    return state(status, pending=ANSWERS.get(action))


def run(
    case: CaseState,
    action: str,
    who: Actor,
    request: Request = FULL_REQUEST,
    now: datetime | None = NOW,
    **kwargs: timedelta,
) -> Decision:
    return decide(case, Action(action), who, request, now, **kwargs)


def assert_refused(decision: Decision, refusal: Refusal, *words: str) -> None:
    assert not decision.allowed
    assert decision.refusal is refusal, decision.reason
    assert decision.to is None
    assert decision.reason
    for word in words:
        assert word in str(decision.reason)


# ------------------------------------------------------------------ the table, exhaustively


def test_transition_table_is_the_expected_one() -> None:
    actual = {
        (status.value if status else None, action.value, role, (rule.to or status).value)
        for (status, action), rule in TRANSITIONS.items()
        for role in rule.roles
    }
    assert actual == set(EXPECTED)
    assert len(EXPECTED) == len(set(EXPECTED))


def test_every_status_action_and_role_is_covered() -> None:
    assert len(STATUSES) == 15 and len(ROLES) == 8
    assert {s for s, _, _, _ in EXPECTED} <= set(STATUSES)
    assert {a for _, a, _, _ in EXPECTED} == set(ACTIONS)  # every action is reachable
    assert {r for _, _, r, _ in EXPECTED} == set(ROLES) - {"leader", "admin"}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("status", STATUSES, ids=lambda s: s or "new")
def test_decide_every_combination(status: str | None, action: str, role: str) -> None:
    decision = run(satisfying_state(status, action), action, actor(role))

    expected_to = ALLOWED.get((status, action, role))
    if expected_to is not None:
        assert decision.allowed, decision.reason
        assert decision.refusal is None
        assert decision.to == CaseStatus(expected_to)
    elif (status, action) in ROWS:
        assert_refused(decision, Refusal.ROLE, role, "cannot")
    else:
        assert_refused(decision, Refusal.STATE, "not allowed now")


# ------------------------------------------------------------------ guards


@pytest.mark.parametrize(
    ("status", "action"),
    [(s, a) for s, a, r, _ in EXPECTED if a in UNIT_ACTION_NAMES],
)
def test_unit_actions_need_the_case_unit(status: str, action: str) -> None:
    mine = run(state(status), action, actor(UNIT_STAFF, UNIT_ID))
    other = run(state(status), action, actor(UNIT_STAFF, OTHER_UNIT_ID))
    unitless = run(state(status, unit_id=None), action, actor(UNIT_STAFF, UNIT_ID))
    no_unit_actor = run(state(status), action, actor(UNIT_STAFF, None))

    assert mine.allowed, mine.reason
    assert_refused(other, Refusal.UNIT, "another unit")
    assert_refused(unitless, Refusal.UNIT, "another unit")
    assert_refused(no_unit_actor, Refusal.UNIT, "another unit")


@pytest.mark.parametrize("action", ["check_pass", "check_fail"])
def test_check_assigned_to_another_inspector(action: str) -> None:
    inspector = actor(INSPECTOR, user_id=USER_ID)

    theirs = run(state("checking", check_inspector_id=OTHER_USER_ID), action, inspector)
    mine = run(state("checking", check_inspector_id=USER_ID), action, inspector)
    anyone = run(state("checking", check_inspector_id=None), action, inspector)

    assert_refused(theirs, Refusal.ROLE, "another inspector")
    assert mine.allowed and anyone.allowed


@pytest.mark.parametrize("waiting", ["extension", "suspension"])
@pytest.mark.parametrize("action", ["request_extension", "request_suspension"])
def test_second_pending_request_is_refused(action: str, waiting: str) -> None:
    decision = run(state("in_progress", pending=waiting), action, actor(UNIT_STAFF))

    assert_refused(decision, Refusal.STATE, f"a {waiting} request is already waiting")


@pytest.mark.parametrize("action", sorted(ANSWERS))
def test_answer_needs_its_pending_request(action: str) -> None:
    kind = ANSWERS[action]
    other = "suspension" if kind == "extension" else "extension"
    dispatcher = actor(DISPATCHER)

    none_waiting = run(state("in_progress"), action, dispatcher)
    other_waiting = run(state("in_progress", pending=other), action, dispatcher)
    right = run(state("in_progress", pending=kind), action, dispatcher)

    assert_refused(none_waiting, Refusal.STATE, f"no {kind} request is waiting")
    assert_refused(other_waiting, Refusal.STATE, f"no {kind} request is waiting")
    assert right.allowed
    if action.startswith("refuse_"):  # approvals move the deadline: tests/cases/test_effects
        cleared = EFFECTS[Action(action)](state("in_progress", pending=kind), Request(), NOW, None)
        assert cleared.values == {"pending_request": None, "pending_value": None,
                                  "pending_unit": None}  # fmt: skip


@pytest.mark.parametrize("action", ["request_extension", "request_suspension"])
def test_request_sets_the_pending_request(action: str) -> None:
    decision = run(state("in_progress"), action, actor(UNIT_STAFF))

    assert decision.allowed and decision.to == CaseStatus.IN_PROGRESS
    asked = Request(extra_value="2", extra_unit="days")
    change = EFFECTS[Action(action)](state("in_progress"), asked, NOW, None)
    assert change.values["pending_request"] == action.removeprefix("request_")


@pytest.mark.parametrize("waiting", ["extension", "suspension"])
def test_report_done_while_a_request_waits(waiting: str) -> None:
    decision = run(state("in_progress", pending=waiting), "report_done", actor(UNIT_STAFF))

    assert_refused(decision, Refusal.STATE, f"the {waiting} request is still waiting")


@pytest.mark.parametrize("reason", ["", "   \n\t"])
@pytest.mark.parametrize(("status", "action", "role"), NEEDS_REASON)
def test_missing_reason(status: str, action: str, role: str, reason: str) -> None:
    request = Request(reason=reason, note="a note", after_photos=1)

    decision = run(satisfying_state(status, action), action, actor(role), request)

    assert_refused(decision, Refusal.INPUT, "needs a reason")


@pytest.mark.parametrize("note", ["", "  "])
@pytest.mark.parametrize(("status", "action", "role"), NEEDS_NOTE)
def test_missing_note(status: str, action: str, role: str, note: str) -> None:
    request = Request(reason="a reason", note=note, after_photos=1)

    decision = run(state(status), action, actor(role), request)

    assert_refused(decision, Refusal.INPUT, "needs a note")


def test_report_done_needs_an_after_photo() -> None:
    without = run(state("in_progress"), "report_done", actor(UNIT_STAFF), Request(note="done"))
    with_one = run(
        state("in_progress"), "report_done", actor(UNIT_STAFF), Request(note="done", after_photos=1)
    )

    assert_refused(without, Refusal.INPUT, "photo")
    assert with_one.allowed and with_one.to == CaseStatus.HANDLED


@pytest.mark.parametrize("reason", ["spam", "Duplicate", "not a city problem", "duplicate "])
@pytest.mark.parametrize("status", ["reported", "verified"])
def test_reject_reason_must_be_a_reject_reason(status: str, reason: str) -> None:
    decision = run(state(status), "reject", actor(OPERATOR), Request(reason=reason))

    assert_refused(decision, Refusal.INPUT, "rejection reason is one of", "not_city_problem")


@pytest.mark.parametrize("reason", list(RejectReason))
def test_every_reject_reason_is_accepted(reason: RejectReason) -> None:
    decision = run(state("reported"), "reject", actor(OPERATOR), Request(reason=reason.value))

    assert decision.allowed and decision.to == CaseStatus.REJECTED


@pytest.mark.parametrize(
    ("closed_ago", "allowed"),
    [
        (timedelta(minutes=1), True),
        (timedelta(days=6, hours=23), True),
        (timedelta(days=7), True),  # the last moment of the period
        (timedelta(days=7, seconds=1), False),
        (timedelta(days=30), False),
    ],
)
def test_reopen_within_seven_days(closed_ago: timedelta, allowed: bool) -> None:
    decision = run(
        state("closed", closed_ago=closed_ago), "reopen", actor(OPERATOR), Request(reason="again")
    )

    if allowed:
        assert decision.allowed and decision.to == CaseStatus.DISPATCHED
    else:
        assert_refused(decision, Refusal.STATE, "within 7 days")


def test_reopen_period_is_configurable_and_needs_a_closing_time() -> None:
    reopen = Request(reason="again")
    closed_4_days = state("closed", closed_ago=timedelta(days=4))
    operator = actor(OPERATOR)

    short = run(closed_4_days, "reopen", operator, reopen, reopen_within=timedelta(days=3))
    long = run(closed_4_days, "reopen", operator, reopen, reopen_within=timedelta(days=5))
    never_closed = run(state("closed", closed_ago=None), "reopen", operator, reopen)
    no_clock = run(closed_4_days, "reopen", operator, reopen, now=None)

    assert_refused(short, Refusal.STATE, "within 3 days")
    assert long.allowed
    assert_refused(never_closed, Refusal.STATE, "within 7 days")
    assert_refused(no_clock, Refusal.STATE, "within 7 days")


def test_check_fail_counts_a_rework() -> None:
    decision = run(state("checking"), "check_fail", actor(INSPECTOR))

    assert decision.allowed and decision.to == CaseStatus.DISPATCHED


@pytest.mark.parametrize("pending", [None, "extension", "suspension"])
@pytest.mark.parametrize("role", SUPERVISION_ROLES)
def test_supervision_roles_never_handle(role: str, pending: str | None) -> None:
    """Not even with a unit of their own that matches the case's."""
    who = Actor(role, USER_ID, UNIT_ID)
    for status in STATUSES:
        for action in UNIT_ACTION_NAMES:
            decision = run(state(status, pending=pending), action, who)
            assert not decision.allowed, (status, action)
            assert decision.refusal in (Refusal.ROLE, Refusal.STATE), (status, action)
            if (status, action) in ROWS:
                assert decision.refusal is Refusal.ROLE, (status, action)


@pytest.mark.parametrize("pending", [None, "extension", "suspension"])
def test_unit_staff_never_supervise(pending: str | None) -> None:
    who = actor(UNIT_STAFF, UNIT_ID, user_id=USER_ID)
    supervision = [a for a in ACTIONS if a not in UNIT_ACTION_NAMES]
    assert len(supervision) == len(ACTIONS) - len(UNIT_ACTION_NAMES)
    for status in STATUSES:
        for action in supervision:
            case = state(status, pending=pending, check_inspector_id=USER_ID)
            decision = run(case, action, who)
            assert not decision.allowed, (status, action)
            if (status, action) in ROWS:
                assert decision.refusal is Refusal.ROLE, (status, action)
            else:
                assert decision.refusal is Refusal.STATE, (status, action)


@pytest.mark.parametrize("role", ["leader", "admin"])
def test_leader_and_admin_never_act(role: str) -> None:
    for status in STATUSES:
        for action in ACTIONS:
            decision = run(satisfying_state(status, action), action, actor(role))
            assert not decision.allowed, (status, action)


def test_decide_without_a_request_refuses_input_actions() -> None:
    decision = decide(state("reported"), Action.INVALIDATE, actor(INSPECTOR))

    assert_refused(decision, Refusal.INPUT, "invalidate needs a reason")


# ------------------------------------------------------------------ allowed_actions


def names(actions: list[Action]) -> set[str]:
    return {a.value for a in actions}


@pytest.mark.parametrize(
    ("case", "who", "expected"),
    [
        (state(None), actor(CITIZEN), {"report"}),
        (state(None), actor(UNIT_STAFF), set()),
        (state("reported"), actor(OPERATOR), {"file", "reject", "merge"}),
        (state("reported"), actor(INSPECTOR), {"verify", "invalidate"}),
        (state("reported"), actor(CITIZEN), set()),
        (state("verified"), actor(OPERATOR), {"file", "reject", "merge"}),
        (state("filed"), actor(DISPATCHER), {"dispatch"}),
        (state("returned"), actor(DISPATCHER), {"dispatch"}),
        (state("dispatched"), actor(UNIT_STAFF), {"accept", "return"}),
        (state("dispatched"), actor(UNIT_STAFF, OTHER_UNIT_ID), set()),
        (
            state("in_progress"),
            actor(UNIT_STAFF),
            {"return", "request_extension", "request_suspension", "report_done"},
        ),
        (state("in_progress", pending="extension"), actor(UNIT_STAFF), {"return"}),
        (state("in_progress"), actor(DISPATCHER), set()),
        (
            state("in_progress", pending="extension"),
            actor(DISPATCHER),
            {"approve_extension", "refuse_extension"},
        ),
        (
            state("in_progress", pending="suspension"),
            actor(DISPATCHER),
            {"approve_suspension", "refuse_suspension"},
        ),
        (state("suspended"), actor(DISPATCHER), {"resume"}),
        (state("suspended"), actor(UNIT_STAFF), set()),
        (state("handled"), actor(OPERATOR), {"assign_check"}),
        (state("checking"), actor(INSPECTOR), {"check_pass", "check_fail"}),
        (state("checking", check_inspector_id=OTHER_USER_ID), actor(INSPECTOR), set()),
        (state("checked"), actor(OPERATOR), {"close"}),
        (state("closed", closed_ago=timedelta(days=2)), actor(OPERATOR), {"reopen"}),
        (state("closed", closed_ago=timedelta(days=8)), actor(OPERATOR), set()),
        (state("rejected"), actor(OPERATOR), set()),
        (state("merged"), actor(OPERATOR), set()),
        (state("invalid"), actor(INSPECTOR), set()),
        (state("checked"), actor("admin"), set()),
    ],
)
def test_allowed_actions(case: CaseState, who: Actor, expected: set[str]) -> None:
    actions = allowed_actions(case, who, NOW)

    assert names(actions) == expected
    assert len(actions) == len(expected)  # no button twice
    for action in actions:
        assert run(case, action.value, who).allowed  # a button never leads to a refusal


@pytest.mark.parametrize(
    ("urgent", "urgent_limit", "expected"),
    [
        (False, (2, "hours"), (3.0, "days")),  # not urgent: the normal limit
        (True, (2, "hours"), (2.0, "hours")),  # urgent: the urgent limit
        (True, (4, None), (4.0, "days")),  # ...in the normal unit unless it names its own
        (True, (None, None), (3.0, "days")),  # no urgent limit: the normal one
    ],
)
def test_time_limit_of_a_case(
    urgent: bool, urgent_limit: tuple[int | None, str | None], expected: tuple[float, str]
) -> None:
    assert time_limit(urgent, (3, "days"), urgent_limit) == expected


NOON = datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.mark.parametrize("status", [s.value for s in CaseStatus])
def test_only_a_running_deadline_can_be_overdue(status: str) -> None:
    running = status in ("dispatched", "in_progress")
    assert is_overdue(status, NOON - timedelta(seconds=1), NOON) is running
    assert is_overdue(status, NOON, NOON) is False  # at the deadline itself: not yet
    assert is_overdue(status, None, NOON) is False
