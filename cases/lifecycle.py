"""The case lifecycle, in one module: the transition table, the effect of each action, and the
one writer of statuses and case events.

- **The table** (`TRANSITIONS`, `decide`): from a status, which action leads where, for which
  roles, with which guards. Pure: no Flask, no session.
- **The effects** (`EFFECTS`): what an action does besides the status, registered per action.
  An effect is pure too: from the case's facts (`CaseState`), what came with the action
  (`Request`), the time and the city's calendar, it returns a `Change` (the columns to set,
  the event's record, the photos to attach, whether the dispatcher is rung).
- **The writer**: `write_one` applies a decision and its change to one case through the ORM;
  `write_batch` applies them to many cases in one set-based statement, with the statuses and
  values of the same decisions and effects passed as parameters; `create_case` writes a new
  case with its first events in one statement. Nothing else writes a status or a case event.
- **The service** (`act`, `apply_action`): lock the case, check the version the actor saw,
  decide, look up what the effect needs, apply. Callers own the commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import TextClause, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from cases import notices
from cases import photos as photo_store
from cases.models import Case, CaseEvent, DispatchState, PhotoKind
from cases.photos import Upload
from cases.public import PUBLIC_NOTE
from cases.queries import get_case
from cases.status import DEADLINE_RUNS, OPEN_STATUSES, CaseStatus
from cases.status import CaseStatus as S
from gridmgmt.kernel import logs
from gridmgmt.kernel.business_calendar import BusinessCalendar, LimitUnit
from gridmgmt.kernel.clock import now_utc
from gridmgmt.kernel.db import Prepared
from gridmgmt.kernel.doorbell import ring_after_commit
from gridmgmt.kernel.errors import (
    N_,
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    Message,
    NotFound,
    word,
)
from gridmgmt.kernel.models import Role, User
from grids.services import cell_at


class LifecycleError(RuntimeError):
    """A caller broke a rule of the lifecycle itself (a batch the table refuses, an effect
    the batch path cannot write): a bug to fix, never a user's mistake."""


SYSTEM = "system"  # the dispatcher job and trusted channels act as this pseudo-role


class Action(str, Enum):
    """Everything that can happen to a case."""

    REPORT = "report"
    VERIFY = "verify"
    INVALIDATE = "invalidate"
    FILE = "file"
    REJECT = "reject"
    MERGE = "merge"
    DISPATCH = "dispatch"
    ACCEPT = "accept"
    RETURN = "return"
    REQUEST_EXTENSION = "request_extension"
    APPROVE_EXTENSION = "approve_extension"
    REFUSE_EXTENSION = "refuse_extension"
    REQUEST_SUSPENSION = "request_suspension"
    APPROVE_SUSPENSION = "approve_suspension"
    REFUSE_SUSPENSION = "refuse_suspension"
    RESUME = "resume"
    REPORT_DONE = "report_done"
    ASSIGN_CHECK = "assign_check"
    CHECK_PASS = "check_pass"
    CHECK_FAIL = "check_fail"
    CLOSE = "close"
    REOPEN = "reopen"
    WARN_DEADLINE = "warn_deadline"
    MARK_OVERDUE = "mark_overdue"
    # The operator's review of a follow-up complaint (cases.rehandling): reasonable sends the
    # closed case back to its unit (重办), unreasonable is recorded with the operator's reason.
    REHANDLE = "rehandle"
    DISMISS_COMPLAINT = "dismiss_complaint"


class RejectReason(str, Enum):
    """Why a report is not filed."""

    NOT_CITY_PROBLEM = "not_city_problem"
    DUPLICATE = "duplicate"
    OUTSIDE_TERRITORY = "outside_territory"


class PendingRequest(str, Enum):
    """A unit's request waiting for the dispatcher."""

    EXTENSION = "extension"
    SUSPENSION = "suspension"


class Refusal(str, Enum):
    """Why an action is refused: maps to 403 (role, unit), 409 (state) or 400 (input)."""

    ROLE = "role"
    UNIT = "unit"
    STATE = "state"
    INPUT = "input"


@dataclass(frozen=True)
class Rule:
    """One row of the table: from a status, an action leads to a status, for these roles."""

    to: S | None  # None: the status stays (requests and their answers)
    roles: frozenset[str]
    needs_reason: bool = False
    needs_note: bool = False


def _roles(*roles: Role | str) -> frozenset[str]:
    return frozenset(r.value if isinstance(r, Role) else r for r in roles)


REPORTERS = _roles(Role.CITIZEN, Role.INSPECTOR, Role.OPERATOR, SYSTEM)
OPERATOR = _roles(Role.OPERATOR)
INSPECTOR = _roles(Role.INSPECTOR)
DISPATCHERS = _roles(Role.DISPATCHER, SYSTEM)
DISPATCHER = _roles(Role.DISPATCHER)
UNIT = _roles(Role.UNIT_STAFF)
FILERS = _roles(Role.OPERATOR, SYSTEM)
SYSTEM_ONLY = _roles(SYSTEM)

# (status, action) → rule. `None` as status: the case does not exist yet.
TRANSITIONS: dict[tuple[S | None, Action], Rule] = {
    (None, Action.REPORT): Rule(S.REPORTED, REPORTERS),
    (S.REPORTED, Action.VERIFY): Rule(S.VERIFIED, INSPECTOR),
    (S.REPORTED, Action.INVALIDATE): Rule(S.INVALID, INSPECTOR, needs_reason=True),
    (S.REPORTED, Action.FILE): Rule(S.FILED, FILERS),
    (S.VERIFIED, Action.FILE): Rule(S.FILED, FILERS),
    (S.REPORTED, Action.REJECT): Rule(S.REJECTED, OPERATOR, needs_reason=True),
    (S.VERIFIED, Action.REJECT): Rule(S.REJECTED, OPERATOR, needs_reason=True),
    (S.REPORTED, Action.MERGE): Rule(S.MERGED, OPERATOR),
    (S.VERIFIED, Action.MERGE): Rule(S.MERGED, OPERATOR),
    (S.FILED, Action.DISPATCH): Rule(S.DISPATCHED, DISPATCHERS),
    (S.RETURNED, Action.DISPATCH): Rule(S.DISPATCHED, DISPATCHERS),
    (S.DISPATCHED, Action.ACCEPT): Rule(S.IN_PROGRESS, UNIT),
    (S.DISPATCHED, Action.RETURN): Rule(S.RETURNED, UNIT, needs_reason=True),
    (S.IN_PROGRESS, Action.RETURN): Rule(S.RETURNED, UNIT, needs_reason=True),
    (S.IN_PROGRESS, Action.REQUEST_EXTENSION): Rule(None, UNIT, needs_reason=True),
    (S.IN_PROGRESS, Action.APPROVE_EXTENSION): Rule(None, DISPATCHER),
    (S.IN_PROGRESS, Action.REFUSE_EXTENSION): Rule(None, DISPATCHER, needs_reason=True),
    (S.IN_PROGRESS, Action.REQUEST_SUSPENSION): Rule(None, UNIT, needs_reason=True),
    (S.IN_PROGRESS, Action.APPROVE_SUSPENSION): Rule(S.SUSPENDED, DISPATCHER),
    (S.IN_PROGRESS, Action.REFUSE_SUSPENSION): Rule(None, DISPATCHER, needs_reason=True),
    (S.SUSPENDED, Action.RESUME): Rule(S.IN_PROGRESS, DISPATCHER),
    (S.IN_PROGRESS, Action.REPORT_DONE): Rule(S.HANDLED, UNIT, needs_note=True),
    (S.HANDLED, Action.ASSIGN_CHECK): Rule(S.CHECKING, OPERATOR),
    (S.CHECKING, Action.CHECK_PASS): Rule(S.CHECKED, INSPECTOR),
    (S.CHECKING, Action.CHECK_FAIL): Rule(S.DISPATCHED, INSPECTOR, needs_note=True),
    (S.CHECKED, Action.CLOSE): Rule(S.CLOSED, OPERATOR),
    (S.CLOSED, Action.REOPEN): Rule(S.DISPATCHED, OPERATOR, needs_reason=True),
    # A follow-up complaint reviewed (cases.rehandling): reasonable → back to the same unit.
    (S.CLOSED, Action.REHANDLE): Rule(S.DISPATCHED, OPERATOR, needs_reason=True),
    (S.CLOSED, Action.DISMISS_COMPLAINT): Rule(None, OPERATOR, needs_reason=True),
    # The deadline watch of the dispatcher: the status stays, the event is the record.
    (S.DISPATCHED, Action.WARN_DEADLINE): Rule(None, SYSTEM_ONLY),
    (S.IN_PROGRESS, Action.WARN_DEADLINE): Rule(None, SYSTEM_ONLY),
    (S.DISPATCHED, Action.MARK_OVERDUE): Rule(None, SYSTEM_ONLY),
    (S.IN_PROGRESS, Action.MARK_OVERDUE): Rule(None, SYSTEM_ONLY),
}

# Actions whose actor must belong to the unit that has the case.
UNIT_ACTIONS = frozenset(
    {Action.ACCEPT, Action.RETURN, Action.REQUEST_EXTENSION, Action.REQUEST_SUSPENSION,
     Action.REPORT_DONE}
)  # fmt: skip
REQUEST_OF = {
    Action.REQUEST_EXTENSION: PendingRequest.EXTENSION,
    Action.REQUEST_SUSPENSION: PendingRequest.SUSPENSION,
}
# Actions taken only from the operators' review of a follow-up answer (cases.rehandling).
REVIEWED_ACTIONS = frozenset({Action.REHANDLE, Action.DISMISS_COMPLAINT})
ANSWER_TO = {
    Action.APPROVE_EXTENSION: PendingRequest.EXTENSION,
    Action.REFUSE_EXTENSION: PendingRequest.EXTENSION,
    Action.APPROVE_SUSPENSION: PendingRequest.SUSPENSION,
    Action.REFUSE_SUSPENSION: PendingRequest.SUSPENSION,
}


# ---------------------------------------------------------------- the rules (pure)


@dataclass(frozen=True)
class CaseState:
    """What the rules and the effects know of a case (None status: not created yet)."""

    status: S | None
    unit_id: int | None = None
    check_inspector_id: int | None = None
    pending_request: PendingRequest | None = None
    closed_at: datetime | None = None
    # What effects read besides the guards' facts.
    case_id: int | None = None
    urgent: bool = False
    limit: tuple[Decimal | float, str] | None = None  # the class's (value, unit)...
    urgent_limit: tuple[Decimal | float | None, str | None] = (None, None)  # ...when urgent
    deadline: datetime | None = None
    pending_value: Decimal | None = None
    pending_unit: str | None = None
    suspended_remaining_hours: Decimal | None = None
    rework_count: int = 0
    rehandle_count: int = 0


@dataclass(frozen=True)
class Actor:
    """Who acts: a role, and the unit for unit staff."""

    role: str
    user_id: int | None = None
    unit_id: int | None = None


@dataclass(frozen=True)
class Assignment:
    """The unit a case is dispatched to, and why: the routing rule that decided (None: the
    community owning the cell, or the dispatcher's own choice)."""

    unit_id: int
    unit_code: str
    unit_name: str
    rule_id: int | None
    why: str


@dataclass(frozen=True)
class MergeTarget:
    """The case a report is merged into, as the merge effect needs it."""

    id: int
    number: str
    status: str
    merged_into_id: int | None


@dataclass(frozen=True)
class Inspector:
    """The inspector an on-site check is assigned to."""

    id: int
    username: str


ACTION_UUID = "action_uuid"  # the event data's key of the phone's UUID of an action


@dataclass(frozen=True)
class Request:
    """What comes with an action: what the actor supplied, and what the service looked up
    for the effect (the unit to dispatch to, the case to merge into, the inspector)."""

    reason: str = ""
    note: str = ""
    public_note: bool = False  # staff chose to show the note to the public
    after_photos: int = 0
    extra_value: str | None = None  # more time asked: amount...
    extra_unit: str | None = None  # ...in hours or days
    assignment: Assignment | None = None
    merge_target: MergeTarget | None = None
    inspector: Inspector | None = None
    review: int | None = None  # the follow-up answer an operator reviewed (REVIEWED_ACTIONS)
    action_uuid: str | None = None  # the phone's UUID of the action (ActionInput)

    @property
    def event_note(self) -> str:
        """The note the event keeps: the actor's note, else the reason."""
        return self.note.strip() or self.reason.strip()

    def event_data(self, change: Change) -> dict[str, Any]:
        """The event's data: the change's record, and the mark of a note shown to the public."""
        data = change.event_data
        if self.public_note and self.event_note:
            data = {**data, PUBLIC_NOTE: True}
        if self.action_uuid:
            data = {**data, ACTION_UUID: self.action_uuid}
        return data


@dataclass(frozen=True)
class Decision:
    """The answer of `decide`: allowed with a target status, or refused with a reason."""

    allowed: bool
    to: S | None = None
    refusal: Refusal | None = None
    reason: Message | None = None  # why it was refused

    @classmethod
    def refuse(cls, refusal: Refusal, reason: str, **params: Any) -> Decision:
        """A refusal with its reason (an English message id and its values)."""
        return cls(False, refusal=refusal, reason=Message(reason, params))


def _phrase(action: Action) -> Message:
    return word(action.value.replace("_", " "))


# The words refusals use for actions, statuses, roles and requests, translated when shown.
WORDS = (
    N_("report"), N_("verify"), N_("invalidate"), N_("file"), N_("reject"), N_("merge"),
    N_("dispatch"), N_("accept"), N_("return"), N_("request extension"),
    N_("approve extension"), N_("refuse extension"), N_("request suspension"),
    N_("approve suspension"), N_("refuse suspension"), N_("resume"), N_("report done"),
    N_("assign check"), N_("check pass"), N_("check fail"), N_("close"), N_("reopen"),
    N_("warn deadline"), N_("mark overdue"), N_("rehandle"), N_("dismiss complaint"),
    N_("a new case"), N_("reported"), N_("verified"), N_("invalid"), N_("filed"),
    N_("rejected"), N_("merged"), N_("dispatched"), N_("in_progress"), N_("returned"),
    N_("suspended"), N_("handled"), N_("checking"), N_("checked"), N_("closed"),
    N_("extension"), N_("suspension"),
)  # fmt: skip


def allowed_actions(state: CaseState, actor: Actor, now: datetime) -> list[Action]:
    """The actions this actor could take on the case now (for buttons on pages).

    Input guards are left out: the form asks for the reason, note or photo.
    """
    supplied = Request(reason=RejectReason.DUPLICATE.value, note="-", after_photos=1)
    return [
        action
        for (status, action), rule in TRANSITIONS.items()
        if status == state.status
        and actor.role in rule.roles
        and _guard(state, actor, action, rule, supplied, now) is None
    ]


def decide(
    state: CaseState,
    action: Action,
    actor: Actor,
    request: Request | None = None,
    now: datetime | None = None,
    reopen_within: timedelta = timedelta(days=7),
) -> Decision:
    """Whether `actor` may apply `action` to a case in `state`, and the status it leads to."""
    request = request or Request()
    rule = TRANSITIONS.get((state.status, action))
    if rule is None:
        where = state.status.value if state.status else "a new case"
        return Decision.refuse(
            Refusal.STATE,
            "cannot %(action)s %(status)s: not allowed now",
            action=_phrase(action),
            status=word(where),
        )
    if actor.role not in rule.roles:
        return Decision.refuse(
            Refusal.ROLE,
            "a %(role)s cannot %(action)s a case (supervision and handling are kept separate)",
            role=word(actor.role),
            action=_phrase(action),
        )
    refusal = _guard(state, actor, action, rule, request, now, reopen_within)
    if refusal is not None:
        return refusal
    return Decision(True, to=rule.to or state.status)


def _guard(
    state: CaseState,
    actor: Actor,
    action: Action,
    rule: Rule,
    request: Request,
    now: datetime | None = None,
    reopen_within: timedelta = timedelta(days=7),
) -> Decision | None:
    if action in UNIT_ACTIONS and (state.unit_id is None or actor.unit_id != state.unit_id):
        return Decision.refuse(Refusal.UNIT, "this case belongs to another unit")
    if action in (Action.CHECK_PASS, Action.CHECK_FAIL) and state.check_inspector_id not in (
        None,
        actor.user_id,
    ):
        return Decision.refuse(Refusal.ROLE, "this check is assigned to another inspector")
    if action in REQUEST_OF and state.pending_request is not None:
        return Decision.refuse(
            Refusal.STATE,
            "a %(request)s request is already waiting",
            request=word(state.pending_request.value),
        )
    if action in ANSWER_TO and state.pending_request != ANSWER_TO[action]:
        return Decision.refuse(
            Refusal.STATE,
            "no %(request)s request is waiting",
            request=word(ANSWER_TO[action].value),
        )
    if action == Action.REPORT_DONE and state.pending_request is not None:
        return Decision.refuse(
            Refusal.STATE,
            "the %(request)s request is still waiting",
            request=word(state.pending_request.value),
        )
    if rule.needs_reason and not request.reason.strip():
        return Decision.refuse(Refusal.INPUT, "%(action)s needs a reason", action=_phrase(action))
    if rule.needs_note and not request.note.strip():
        return Decision.refuse(Refusal.INPUT, "%(action)s needs a note", action=_phrase(action))
    if action in REVIEWED_ACTIONS and request.review is None:
        return Decision.refuse(
            Refusal.INPUT,
            "%(action)s follows the review of a follow-up answer",
            action=_phrase(action),
        )
    if action == Action.REPORT_DONE and request.after_photos < 1:
        return Decision.refuse(Refusal.INPUT, "report the work done with at least one photo")
    if action == Action.REJECT and request.reason not in {r.value for r in RejectReason}:
        return Decision.refuse(
            Refusal.INPUT,
            "a rejection reason is one of %(reasons)s",
            reasons=", ".join(r.value for r in RejectReason),
        )
    reopen_expired = state.closed_at is None or now is None or now - state.closed_at > reopen_within
    if action == Action.REOPEN and reopen_expired:
        return Decision.refuse(
            Refusal.STATE,
            "a case can be reopened within %(days)s days of closing",
            days=reopen_within.days,
        )
    return None


def time_limit(
    urgent: bool,
    limit: tuple[float | Decimal, str],
    urgent_limit: tuple[float | Decimal | None, str | None],
) -> tuple[float, str]:
    """The class's time limit (value, unit) that applies to a case: the urgent one for an
    urgent case when the class has one (in the normal limit's unit unless it names its own),
    else the normal one."""
    value, unit = limit
    urgent_value, urgent_unit = urgent_limit
    if urgent and urgent_value is not None:
        return float(urgent_value), urgent_unit or unit
    return float(value), unit


def is_overdue(status: str, deadline: datetime | None, now: datetime) -> bool:
    """Past its deadline while the deadline counts: the rule the deadline watch, the maps, the
    evaluation and the case lists share (in SQL: `sql_in("status", DEADLINE_RUNS) AND
    deadline < now`)."""
    return deadline is not None and deadline < now and status in DEADLINE_RUNS


# ---------------------------------------------------------------- the effects (pure)


@dataclass(frozen=True)
class Change:
    """What an action does besides the status: case columns to set, the event's record, the
    kind the action's photos are kept as, and whether the dispatcher is rung after commit."""

    values: Mapping[str, Any] = field(default_factory=dict)
    record: Mapping[str, Any] = field(default_factory=dict)
    photos: PhotoKind | None = None
    ring: bool = False

    @property
    def event_data(self) -> dict[str, Any]:
        """The event's data: the record without empty values."""
        return {k: v for k, v in self.record.items() if v is not None}


Effect = Callable[[CaseState, Request, datetime, BusinessCalendar | None], Change]
EFFECTS: dict[Action, Effect] = {}


def effect(*actions: Action) -> Callable[[Effect], Effect]:
    """Register the decorated function as the effect of `actions`."""

    def register(function: Effect) -> Effect:
        for action in actions:
            if action in EFFECTS:
                raise LifecycleError(f"{action.value} has two effects")
            EFFECTS[action] = function
        return function

    return register


_NO_REQUEST = {"pending_request": None, "pending_value": None, "pending_unit": None}


def _new_deadline(deadline: datetime | None) -> dict[str, Any]:
    """A new deadline: the watch (warning, overdue) starts again."""
    return {"deadline": deadline, "warned_at": None, "overdue_at": None}


def _calendar(calendar: BusinessCalendar | None) -> BusinessCalendar:
    if calendar is None:
        raise InvalidInput("this action needs the city's business calendar")
    return calendar


def _deadline(state: CaseState, now: datetime, calendar: BusinessCalendar | None) -> datetime:
    """The case's deadline counted from now on the city's calendar, by its class's limit."""
    if state.limit is None:
        raise LifecycleError("a deadline needs the class's time limit in the case's state")
    value, unit = time_limit(state.urgent, state.limit, state.urgent_limit)
    return _calendar(calendar).add_working_time(now, value, unit)


def _extra_time(request: Request) -> tuple[Decimal, str]:
    try:
        value = Decimal(str(request.extra_value or "").strip())
        unit = LimitUnit(request.extra_unit or LimitUnit.HOURS.value).value
    except (InvalidOperation, ValueError):
        raise InvalidInput("more time is a number of working hours or days") from None
    if not value.is_finite() or not 0 < value <= 1000:
        raise InvalidInput("more time is between 0 and 1000 working hours or days")
    return value, unit


@effect(Action.REPORT, Action.VERIFY, Action.INVALIDATE, Action.ACCEPT)
def _status_only(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change()


@effect(Action.FILE)
def _file(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change({"filed_at": now, "dispatch_state": DispatchState.QUEUED.value}, ring=True)


@effect(Action.REJECT)
def _reject(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change(record={"reason": request.reason})


@effect(Action.MERGE)
def _merge(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    target = request.merge_target
    if target is None:
        raise InvalidInput("merge into which case?")
    if target.id == state.case_id or target.status not in OPEN_STATUSES:
        raise Conflict("case %(number)s is not an open case to merge into", number=target.number)
    if target.merged_into_id is not None:
        raise Conflict("case %(number)s was itself merged", number=target.number)
    return Change({"merged_into_id": target.id}, {"into": target.number})


@effect(Action.DISPATCH)
def _dispatch(
    state: CaseState, request: Request, now: datetime, calendar: BusinessCalendar | None
) -> Change:
    """One dispatch, whether the dispatcher's batch or a person does it."""
    unit = request.assignment
    if unit is None:
        raise LifecycleError("a dispatch comes with its assignment (dispatch.services)")
    deadline = _deadline(state, now, calendar)
    values = {
        "unit_id": unit.unit_id,
        "routing_rule_id": unit.rule_id,
        "dispatched_at": now,
        **_new_deadline(deadline),
        "dispatch_state": DispatchState.DONE.value,
        "dispatch_error": None,
    }
    record = {"unit": unit.unit_code, "unit_name": unit.unit_name, "rule": unit.rule_id,
              "why": unit.why, "deadline": deadline.isoformat()}  # fmt: skip
    return Change(values, record)


@effect(Action.RETURN, Action.REFUSE_EXTENSION, Action.REFUSE_SUSPENSION)
def _clear_request(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change(_NO_REQUEST)  # a unit's request leaves with the case, or is answered


def _asked(kind: PendingRequest, request: Request) -> Change:
    value, unit = _extra_time(request)
    values = {"pending_request": kind.value, "pending_value": value, "pending_unit": unit}
    return Change(values, {"asked": f"{value} {unit}"})


@effect(Action.REQUEST_EXTENSION)
def _ask_extension(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return _asked(PendingRequest.EXTENSION, request)


@effect(Action.REQUEST_SUSPENSION)
def _ask_suspension(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    if request.extra_value:  # how long, when the unit knows
        return _asked(PendingRequest.SUSPENSION, request)
    return Change({"pending_request": PendingRequest.SUSPENSION.value})


@effect(Action.APPROVE_EXTENSION)
def _extend(
    state: CaseState, request: Request, now: datetime, calendar: BusinessCalendar | None
) -> Change:
    if state.pending_value is None or state.deadline is None:
        raise Conflict("the extension request names no time, or the case has no deadline")
    unit = state.pending_unit or LimitUnit.HOURS.value
    deadline = _calendar(calendar).add_working_time(
        state.deadline, float(state.pending_value), unit
    )
    record = {
        "granted": f"{state.pending_value} {state.pending_unit}",
        "deadline_before": state.deadline.isoformat(),
        "deadline": deadline.isoformat(),
    }
    return Change({**_new_deadline(deadline), **_NO_REQUEST}, record)


@effect(Action.APPROVE_SUSPENSION)
def _suspend(
    state: CaseState, request: Request, now: datetime, calendar: BusinessCalendar | None
) -> Change:
    deadline = state.deadline or now  # in progress: dispatched, so it has one
    left = max(_calendar(calendar).working_hours_between(now, deadline), 0.0)
    values = {
        "suspended_remaining_hours": Decimal(str(round(left, 4))),
        **_new_deadline(None),
        **_NO_REQUEST,
    }
    return Change(values, {"remaining_hours": round(left, 2)})


@effect(Action.RESUME)
def _resume(
    state: CaseState, request: Request, now: datetime, calendar: BusinessCalendar | None
) -> Change:
    left = float(state.suspended_remaining_hours or 0)
    deadline = _calendar(calendar).add_working_hours(now, left)
    values = {**_new_deadline(deadline), "suspended_remaining_hours": None}
    return Change(values, {"deadline": deadline.isoformat()})


@effect(Action.REPORT_DONE)
def _report_done(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change({"handled_at": now}, photos=PhotoKind.AFTER)


@effect(Action.ASSIGN_CHECK)
def _assign_check(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    inspector = request.inspector
    return Change(
        {"check_inspector_id": inspector.id if inspector else None},
        {"inspector": inspector.username if inspector else None},
    )


@effect(Action.CHECK_PASS)
def _check_pass(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change(photos=PhotoKind.CHECK)


@effect(Action.CHECK_FAIL)
def _check_fail(
    state: CaseState, request: Request, now: datetime, calendar: BusinessCalendar | None
) -> Change:
    """Rework: back to the unit with a new deadline, counted as one more round."""
    deadline = _deadline(state, now, calendar)
    rework = state.rework_count + 1
    values = {
        **_new_deadline(deadline),
        "handled_at": None,
        "check_inspector_id": None,
        "rework_count": rework,
    }
    return Change(values, {"rework": rework, "deadline": deadline.isoformat()}, PhotoKind.CHECK)


@effect(Action.CLOSE)
def _close(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change({"closed_at": now})


@effect(Action.REHANDLE)
def _rehandle(
    state: CaseState, request: Request, now: datetime, calendar: BusinessCalendar | None
) -> Change:
    """Re-handling (重办): back to the same unit with a new deadline from the class's limit,
    counted apart from rework after a failed check."""
    deadline = _deadline(state, now, calendar)
    rehandle = state.rehandle_count + 1
    values = {
        "closed_at": None,
        "handled_at": None,
        "check_inspector_id": None,
        **_new_deadline(deadline),
        "rehandle_count": rehandle,
    }
    record = {"rehandle": rehandle, "answer": request.review, "unit_id": state.unit_id,
              "deadline": deadline.isoformat()}  # fmt: skip
    return Change(values, record)


@effect(Action.DISMISS_COMPLAINT)
def _dismiss(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change(record={"answer": request.review})


@effect(Action.REOPEN)
def _reopen(
    state: CaseState, request: Request, now: datetime, calendar: BusinessCalendar | None
) -> Change:
    deadline = _deadline(state, now, calendar)
    values = {"closed_at": None, "handled_at": None, **_new_deadline(deadline)}
    return Change(values, {"deadline": deadline.isoformat()})


def _watched(state: CaseState) -> dict[str, Any]:
    deadline = state.deadline.isoformat() if state.deadline else None
    return {"unit_id": state.unit_id, "deadline": deadline}


@effect(Action.WARN_DEADLINE)
def _warn(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change({"warned_at": now}, _watched(state))


@effect(Action.MARK_OVERDUE)
def _overdue(state: CaseState, request: Request, now: datetime, calendar: Any) -> Change:
    return Change({"overdue_at": now}, _watched(state))


# ---------------------------------------------------------------- the writer


def write_one(
    session: Session,
    case: Case,
    action: Action,
    actor: Actor,
    decision: Decision,
    change: Change,
    now: datetime,
    request: Request,
    photos: Sequence[photo_store.StoredPhoto] = (),
) -> CaseEvent:
    """Apply an allowed decision and its change to one (locked) case through the ORM, and
    append its event; the photos are kept as the change says, linked to the event."""
    if not decision.allowed or decision.to is None:
        raise LifecycleError(f"{action.value} was refused: nothing to write")
    before = case.status
    for name, value in change.values.items():
        setattr(case, name, value)
    case.status = decision.to.value
    case.updated_at = now
    event = CaseEvent(
        case_id=case.id,
        action=action.value,
        from_status=before,
        to_status=case.status,
        actor_id=actor.user_id,
        actor_role=actor.role,
        note=request.event_note,
        data=request.event_data(change),
        created_at=now,
    )
    session.add(event)
    session.flush()
    if photos:
        if change.photos is None:
            raise LifecycleError(f"{action.value} keeps no photos")
        photo_store.photo_rows(session, case.id, photos, change.photos, event.id)
    if change.ring:
        ring_after_commit(session, case.id)
    notices.queue_for_events(session, action.value, [(case.id, event.data)], now)  # the public
    return event


def write_batch(
    session: Session,
    action: Action,
    actor: Actor,
    items: Sequence[tuple[CaseState, Request]],
    now: datetime,
    calendar: BusinessCalendar | None = None,
) -> list[int]:
    """Apply `action` to many cases in one statement, each with its own facts, exactly as
    `write_one` would one by one: the table decides each case and the action's effect
    computes its change; the statuses, the values and the events' records go to the database
    as parameters. A case whose status changed since it was read is left alone. Returns the
    ids of the cases changed.

    Raises:
        LifecycleError: the table refuses one of the cases, or the effect needs what a batch
            cannot do (photos, a doorbell) or gives the cases different columns.
    """
    rows: list[dict[str, Any]] = []
    columns: tuple[str, ...] | None = None
    for state, request in items:
        decision = decide(state, action, actor, request, now)
        if not decision.allowed or decision.to is None or state.status is None:
            raise LifecycleError(f"case {state.case_id}: {decision.reason} (in a batch)")
        change = EFFECTS[action](state, request, now, calendar)
        if change.photos is not None or change.ring:
            raise LifecycleError(f"{action.value} keeps photos or rings: not in a batch")
        if columns is None:
            columns = tuple(change.values)
        elif tuple(change.values) != columns:
            raise LifecycleError(f"{action.value} changes different columns across a batch")
        rows.append(
            {
                **{name: _json_value(value) for name, value in change.values.items()},
                "id": state.case_id,
                "from_status": state.status.value,
                "to_status": decision.to.value,
                "note": request.event_note,
                "event": request.event_data(change),
            }
        )
    if not rows or columns is None:
        return []
    params = {"rows": json.dumps(rows), "now": now, "action": action.value,
              "actor_id": actor.user_id, "role": actor.role}  # fmt: skip
    changed = list(session.scalars(_batch_statement(columns), params))
    done = set(changed)  # the public hears of what changed, in this transaction
    notices.queue_for_events(
        session, action.value, [(r["id"], r["event"]) for r in rows if r["id"] in done], now
    )
    return changed


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


@cache
def _batch_statement(columns: tuple[str, ...]) -> TextClause:
    """The set-based write of one action's decisions: one UPDATE of the cases and one INSERT
    of their events, from a JSON array with a row per case (ordered by id: events too)."""
    table = Case.__table__
    unknown = [name for name in columns if name not in table.c]
    if unknown:
        raise LifecycleError(f"cases has no column {unknown[0]}")
    dialect = postgresql.dialect()
    typed = "".join(f", {name} {table.c[name].type.compile(dialect=dialect)}" for name in columns)
    assigned = "".join(f", {name} = d.{name}" for name in columns)
    return text(f"""
        WITH d AS (
            SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                AS d(id bigint, from_status text, to_status text, note text, event jsonb{typed})
        ), changed AS (
            UPDATE cases AS c
            SET status = d.to_status, updated_at = :now, version = c.version + 1{assigned}
            FROM d WHERE c.id = d.id AND c.status = d.from_status
            RETURNING c.id
        )
        INSERT INTO case_events (case_id, action, from_status, to_status, actor_id,
                                 actor_role, note, data, created_at)
        SELECT d.id, :action, d.from_status, d.to_status, :actor_id, :role, d.note, d.event,
               :now
        FROM d JOIN changed USING (id)
        ORDER BY d.id
        RETURNING case_id
    """)


@dataclass(frozen=True)
class NewCase:
    """A case as created: its id, its public number and its first (the report's) event."""

    id: int
    number: str
    first_event: int


def create_case(
    session: Session, values: Mapping[str, Any], steps: Sequence[tuple[Action, Actor]], photos: int
) -> NewCase | None:
    """Write a new case in the cell that holds its point, with one event per step (a report,
    then at once a verification or a filing), in one statement. The table decides each step
    and the steps' effects set the case's columns. None when no cell holds the point: then
    nothing is written.

    Args:
        values: the report's checked columns (see `_INSERT_CASE`), contact and attributes
            as JSON text.
        steps: the actions taken at once, the first being `report`.
        photos: how many photos the report brings (recorded on its event).
    """
    now = now_utc()
    state = CaseState(None)
    columns: dict[str, Any] = {"filed_at": None, "dispatch_state": DispatchState.NONE.value}
    events: list[dict[str, Any]] = []
    ring = False
    for action, actor in steps:
        decision = decide(state, action, actor, Request(), now)
        if not decision.allowed or decision.to is None:
            raise refused(decision)
        change = EFFECTS[action](state, Request(), now, None)
        if set(change.values) - set(columns) or change.event_data or change.photos:
            raise LifecycleError(f"{action.value} cannot be taken as a case is created")
        columns.update(change.values)
        ring = ring or change.ring
        events.append(
            {"action": action.value, "from": state.status.value if state.status else None,
             "to": decision.to.value, "actor_id": actor.user_id, "role": actor.role}
        )  # fmt: skip
        state = CaseState(decision.to)
    if state.status is None:
        raise LifecycleError("a case is created by a report")
    params = {**values, **columns, "status": state.status.value, "events": json.dumps(events),
              "photos": photos, "now": now}  # fmt: skip
    row = _INSERT_CASE.execute(session, params).first()
    if row is None:
        return None
    if ring:
        ring_after_commit(session, row.id)
    if state.status == S.FILED:  # filed at once: those who follow its community hear of it
        notices.queue_for_events(session, Action.FILE.value, [(row.id, {})], now)
    return NewCase(row.id, row.number, row.first_event)


# A new case is one statement: locate (the tie-break of `grids.services.cell_at`), insert the
# case and its events in order, the first event carrying the number of photos. No row when the
# point is outside every cell (and then no event either).
_INSERT_CASE = Prepared(
    "gridmgmt_report",
    f"""
    WITH new_case AS (
        INSERT INTO cases (number, source, status, category_id, urgent, description, address,
                           location,
                           cell_id, community_id, reporter_id, api_key_id, contact,
                           idempotency_key, media_url, attributes, filed_at, dispatch_state,
                           reported_at, updated_at)
        SELECT n.number, :source, :status, :category_id, :urgent, :description, :address, p.geom,
               g.id, g.community_id, :reporter_id, :api_key_id, CAST(:contact AS jsonb),
               :idempotency_key, :media_url, CAST(:attributes AS jsonb),
               CAST(:filed_at AS timestamptz), :dispatch_state, :now, :now
        FROM (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS geom) AS p
        CROSS JOIN LATERAL ({cell_at("p.geom")}) AS g
        -- numbered as next_case_number() does (migration 0001), on the clock's UTC day
        CROSS JOIN LATERAL (
            SELECT to_char(CAST(:now AS timestamptz) AT TIME ZONE 'UTC', 'YYYYMMDD')
                   || lpad(s.n::text, greatest(6, length(s.n::text)), '0') AS number
            FROM (SELECT nextval('case_number_seq') AS n) AS s
        ) AS n
        RETURNING id, number
    ), new_events AS (
        INSERT INTO case_events (case_id, action, from_status, to_status, actor_id, actor_role,
                                 data, created_at)
        SELECT c.id, e.action, e."from", e."to", e.actor_id, e.role,
               CASE WHEN e.n = 1 AND :photos > 0
                    THEN jsonb_build_object('photos', CAST(:photos AS int))
                    ELSE '{{}}'::jsonb END,
               :now
        FROM new_case AS c
        CROSS JOIN ROWS FROM (
                 jsonb_to_recordset(CAST(:events AS jsonb))
                     AS (action text, "from" text, "to" text, actor_id int, role text)
             ) WITH ORDINALITY AS e(action, "from", "to", actor_id, role, n)
        ORDER BY e.n
        RETURNING id
    )
    -- the ids are drawn in the ORDER BY's order: the lowest is the report's own event
    SELECT id, number, (SELECT min(id) FROM new_events) AS first_event FROM new_case
""",
)


# ---------------------------------------------------------------- the service


@dataclass(frozen=True)
class ActionInput:
    """What an actor supplies with an action; only the fields the action needs are read."""

    reason: str = ""
    note: str = ""
    public_note: bool = False  # show the note (or reason) to the public
    version: int | None = None  # the version the actor saw: a stale form is a 409
    photos: Sequence[Upload] = ()
    unit_id: int | None = None  # dispatch to this unit instead of the routed one
    merge_into: str | None = None  # case number
    inspector_id: int | None = None  # who checks on site
    extra_value: str | None = None  # extension asked: amount...
    extra_unit: str | None = None  # ...in hours or days
    review: int | None = None  # the reviewed follow-up answer (cases.rehandling only)
    # The phone's UUID of the action (an outbox's): a resend whose reply was lost is answered
    # with the case as it is, not applied again (`act`).
    action_uuid: str | None = None


@dataclass(frozen=True)
class CaseContext:
    """Settings the lifecycle needs: the city's calendar, where photos go, the reopen period."""

    calendar: BusinessCalendar
    photo_root: Path
    reopen_within: timedelta = timedelta(days=7)


def actor_of(user: User | None) -> Actor:
    """The workflow actor for a user (None: the system, e.g. the dispatcher job)."""
    if user is None:
        return Actor(SYSTEM)
    return Actor(user.role, user.id, user.unit_id)


def refused(decision: Decision) -> DomainError:
    """The domain error a refusal is answered with."""
    if decision.allowed or decision.reason is None:
        raise LifecycleError("only a refusal with its reason is answered with an error")
    if decision.refusal == Refusal.ROLE:
        return Forbidden(decision.reason)
    if decision.refusal == Refusal.UNIT:
        return NotFound("no such case")  # other units' cases do not exist for you
    if decision.refusal == Refusal.INPUT:
        return InvalidInput(decision.reason)
    return Conflict(decision.reason)


def case_state(case: Case) -> CaseState:
    """The rules' view of a case."""
    category = case.category
    return CaseState(
        status=CaseStatus(case.status),
        unit_id=case.unit_id,
        check_inspector_id=case.check_inspector_id,
        pending_request=PendingRequest(case.pending_request) if case.pending_request else None,
        closed_at=case.closed_at,
        case_id=case.id,
        urgent=case.urgent,
        limit=(category.limit_value, category.limit_unit),
        urgent_limit=(category.urgent_limit_value, category.urgent_limit_unit),
        deadline=case.deadline,
        pending_value=case.pending_value,
        pending_unit=case.pending_unit,
        suspended_remaining_hours=case.suspended_remaining_hours,
        rework_count=case.rework_count,
        rehandle_count=case.rehandle_count,
    )


def parse_action(action: Action | str) -> Action:
    """The action named `action`.

    Raises:
        InvalidInput: no such action.
    """
    try:
        return Action(action)
    except ValueError:
        raise InvalidInput("unknown action %(action)r", action=action) from None


def locked_case(session: Session, case_id: int, user: User | None, version: int | None) -> Case:
    """The case, locked for the change, if the user may see it and it is still the version
    the user saw (None: any).

    Raises:
        NotFound: no such case, or not one the user may see.
        Conflict: the case changed since `version`.
    """
    case = get_case(session, case_id, user, lock=True)
    logs.note_case(case.number)  # the request's further log lines name it
    if version is not None and version != case.version:
        raise Conflict(
            "case %(number)s changed since you opened it (now %(status)s): reload it",
            number=case.number,
            status=case.status,
        )
    return case


def act(
    session: Session,
    case_id: int,
    action: Action | str,
    user: User | None,
    data: ActionInput,
    context: CaseContext,
) -> Case:
    """Apply `action` to a case for `user` (None: the system) and record the event. A
    dispatch goes through `dispatch.services.dispatch_case`, which chooses the unit.

    Raises:
        NotFound: no such case, or not one of the user's unit.
        Forbidden: the role may not do this.
        Conflict: not allowed in the case's status, or the case changed since `data.version`.
        InvalidInput: a reason, note, photo or value is missing or wrong.
    """
    action = parse_action(action)
    if data.action_uuid is not None:
        case = locked_case(session, case_id, user, None)  # a resend waits for its first send
        if done_before(session, case, action, actor_of(user), data.action_uuid):
            return case  # its reply was lost: the case as it is now, whatever its version
    case = locked_case(session, case_id, user, data.version)
    return apply_action(session, case, action, actor_of(user), data, context)


def done_before(session: Session, case: Case, action: Action, actor: Actor, uuid: str) -> bool:
    """Whether an event of this case already carries the action UUID `uuid`: the same
    action by the same person sent again because the phone never heard the answer. A case has
    few events, found by its case_id index: no index on the UUID is needed.

    Raises:
        Conflict: the UUID was sent with another action, or by another person.
    """
    done = session.execute(
        select(CaseEvent.action, CaseEvent.actor_id).where(
            CaseEvent.case_id == case.id, CaseEvent.data[ACTION_UUID].astext == uuid
        )
    ).first()
    if done is None:
        return False
    if done.action != action.value or done.actor_id != actor.user_id:
        raise Conflict(
            "action %(uuid)s was already sent on case %(number)s, as another action or by "
            "another person: make a new one",
            details={"reason": "action_uuid_taken"},
            uuid=uuid,
            number=case.number,
        )
    return True


def apply_action(
    session: Session,
    case: Case,
    action: Action,
    actor: Actor,
    data: ActionInput,
    context: CaseContext | None,
    assign: Callable[[], Assignment] | None = None,
) -> Case:
    """Decide, look up what the action's effect needs (`assign` chooses a dispatch's unit,
    once the table allowed it), apply the effect and write the change (`write_one`)."""
    now = now_utc()
    request = Request(
        reason=data.reason,
        note=data.note,
        public_note=data.public_note,
        after_photos=len(data.photos),
        extra_value=data.extra_value,
        extra_unit=data.extra_unit,
        review=data.review,
        action_uuid=data.action_uuid,
    )
    reopen_within = context.reopen_within if context else timedelta(days=7)
    state = case_state(case)
    decision = decide(state, action, actor, request, now, reopen_within)
    if not decision.allowed:
        raise refused(decision)
    request = _look_up(session, action, data, request, assign)
    change = EFFECTS[action](state, request, now, context.calendar if context else None)
    photos: list[photo_store.StoredPhoto] = []
    if change.photos is not None and data.photos:
        if context is None:
            raise LifecycleError("photos need the context's photo folder")
        # written only now that the table allowed the action; removed if it rolls back
        photos = photo_store.decode_photos(data.photos, context.photo_root, session)
    write_one(session, case, action, actor, decision, change, now, request, photos)
    return case


def _look_up(
    session: Session,
    action: Action,
    data: ActionInput,
    request: Request,
    assign: Callable[[], Assignment] | None,
) -> Request:
    """What the effect needs besides the actor's input: the case to merge into, the inspector
    of an on-site check, the unit a dispatch goes to."""
    if action == Action.MERGE:
        number = (data.merge_into or "").strip()
        target = session.scalar(select(Case).where(Case.number == number)) if number else None
        if target is None:
            raise InvalidInput("merge into which case? no case numbered %(number)r", number=number)
        merge = MergeTarget(target.id, target.number, target.status, target.merged_into_id)
        return replace(request, merge_target=merge)
    if action == Action.ASSIGN_CHECK and data.inspector_id is not None:
        inspector = session.get(User, data.inspector_id)
        if inspector is None or inspector.role != Role.INSPECTOR or not inspector.active:
            raise InvalidInput("the on-site check goes to an active inspector")
        return replace(request, inspector=Inspector(inspector.id, inspector.username))
    if action == Action.DISPATCH:
        if assign is None:
            raise LifecycleError("a dispatch chooses its unit: dispatch.services.dispatch_case")
        return replace(request, assignment=assign())
    return request
