"""The case lifecycle: one explicit transition table and the guards around it.

Pure rules: no Flask, no session. `decide` says whether an actor may apply an action to a case
in its current state, and to which status it leads; the service applies the decision and
records the event in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum

from cases.models import CaseStatus as S
from gridmgmt.kernel.models import Role

SYSTEM = "system"  # the dispatcher job and trusted channels act as this pseudo-role
OPEN_STATUSES = frozenset(
    {S.REPORTED, S.VERIFIED, S.FILED, S.DISPATCHED, S.IN_PROGRESS, S.RETURNED, S.SUSPENDED,
     S.HANDLED, S.CHECKING, S.CHECKED}
)  # fmt: skip
ENDED_STATUSES = frozenset(S) - OPEN_STATUSES  # closed, and cases that never became one
DEADLINE_RUNS = (S.DISPATCHED, S.IN_PROGRESS)  # a unit has the case: its deadline counts


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
ANSWER_TO = {
    Action.APPROVE_EXTENSION: PendingRequest.EXTENSION,
    Action.REFUSE_EXTENSION: PendingRequest.EXTENSION,
    Action.APPROVE_SUSPENSION: PendingRequest.SUSPENSION,
    Action.REFUSE_SUSPENSION: PendingRequest.SUSPENSION,
}


@dataclass(frozen=True)
class CaseState:
    """What the rules need to know about a case (None status: not created yet)."""

    status: S | None
    unit_id: int | None = None
    check_inspector_id: int | None = None
    pending_request: PendingRequest | None = None
    closed_at: datetime | None = None


@dataclass(frozen=True)
class Actor:
    """Who acts: a role, and the unit for unit staff."""

    role: str
    user_id: int | None = None
    unit_id: int | None = None


@dataclass(frozen=True)
class Request:
    """What the actor supplied with the action."""

    reason: str = ""
    note: str = ""
    after_photos: int = 0


@dataclass(frozen=True)
class Decision:
    """The answer of `decide`: allowed with a target status, or refused with a reason."""

    allowed: bool
    to: S | None = None
    refusal: Refusal | None = None
    reason: str = ""
    effects: dict[str, object] = field(default_factory=dict)

    @classmethod
    def refuse(cls, refusal: Refusal, reason: str) -> Decision:
        """A refusal with its reason."""
        return cls(False, refusal=refusal, reason=reason)


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
            Refusal.STATE, f"cannot {action.value.replace('_', ' ')} {where}: not allowed now"
        )
    if actor.role not in rule.roles:
        return Decision.refuse(
            Refusal.ROLE,
            f"a {actor.role} cannot {action.value.replace('_', ' ')} a case "
            "(supervision and handling are kept separate)",
        )
    refusal = _guard(state, actor, action, rule, request, now, reopen_within)
    if refusal is not None:
        return refusal
    return Decision(True, to=rule.to or state.status, effects=_effects(action))


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
            Refusal.STATE, f"a {state.pending_request.value} request is already waiting"
        )
    if action in ANSWER_TO and state.pending_request != ANSWER_TO[action]:
        return Decision.refuse(Refusal.STATE, f"no {ANSWER_TO[action].value} request is waiting")
    if action == Action.REPORT_DONE and state.pending_request is not None:
        return Decision.refuse(
            Refusal.STATE, f"the {state.pending_request.value} request is still waiting"
        )
    if rule.needs_reason and not request.reason.strip():
        return Decision.refuse(Refusal.INPUT, f"{action.value.replace('_', ' ')} needs a reason")
    if rule.needs_note and not request.note.strip():
        return Decision.refuse(Refusal.INPUT, f"{action.value.replace('_', ' ')} needs a note")
    if action == Action.REPORT_DONE and request.after_photos < 1:
        return Decision.refuse(Refusal.INPUT, "report the work done with at least one photo")
    if action == Action.REJECT and request.reason not in {r.value for r in RejectReason}:
        reasons = ", ".join(r.value for r in RejectReason)
        return Decision.refuse(Refusal.INPUT, f"a rejection reason is one of {reasons}")
    reopen_expired = state.closed_at is None or now is None or now - state.closed_at > reopen_within
    if action == Action.REOPEN and reopen_expired:
        days = reopen_within.days
        return Decision.refuse(
            Refusal.STATE, f"a case can be reopened within {days} days of closing"
        )
    return None


def _effects(action: Action) -> dict[str, object]:
    """Side facts the service applies with the status (counters, pending requests)."""
    if action == Action.CHECK_FAIL:
        return {"rework": True}
    if action == Action.RETURN:
        return {"pending": None}  # the unit's request leaves with the case
    if action in REQUEST_OF:
        return {"pending": REQUEST_OF[action]}
    if action in ANSWER_TO:
        return {"pending": None}
    return {}


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
