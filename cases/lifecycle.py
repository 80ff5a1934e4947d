"""The case lifecycle, in one module: the transition table, what each action does besides
the status, and the one writer of statuses and case events.

The table and its guards are pure (`decide`); the service applies the decision and records
the event in the same transaction. Callers own the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cases import photos as photo_store
from cases.models import (
    DEADLINE_RUNS,
    OPEN_STATUSES,
    Case,
    CaseEvent,
    CaseStatus,
    DispatchState,
    Photo,
    PhotoKind,
)
from cases.models import CaseStatus as S
from cases.queries import get_case
from dispatch.models import Unit
from gridmgmt.kernel.business_calendar import BusinessCalendar, LimitUnit
from gridmgmt.kernel.clock import now_utc
from gridmgmt.kernel.doorbell import ring_after_commit
from gridmgmt.kernel.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from gridmgmt.kernel.models import Role, User

MAX_PHOTOS = 6  # photos at a time: a report, a result, a check


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its name (for messages) and bytes."""

    filename: str
    data: bytes


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
    return Decision(True, to=rule.to or state.status, effects=_side_facts(action))


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


def _side_facts(action: Action) -> dict[str, object]:
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


@dataclass(frozen=True)
class ActionInput:
    """What an actor supplies with an action; only the fields the action needs are read."""

    reason: str = ""
    note: str = ""
    version: int | None = None  # the version the actor saw: a stale form is a 409
    photos: Sequence[Upload] = ()
    unit_id: int | None = None  # dispatch to this unit instead of the routed one
    merge_into: str | None = None  # case number
    inspector_id: int | None = None  # who checks on site
    extra_value: str | None = None  # extension asked: amount...
    extra_unit: str | None = None  # ...in hours or days


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
    if decision.refusal == Refusal.ROLE:
        return Forbidden(decision.reason)
    if decision.refusal == Refusal.UNIT:
        return NotFound("no such case")  # other units' cases do not exist for you
    if decision.refusal == Refusal.INPUT:
        return InvalidInput(decision.reason)
    return Conflict(decision.reason)


def _event(
    session: Session,
    case: Case,
    action: Action,
    from_status: CaseStatus | None,
    actor: Actor,
    note: str = "",
    **data: Any,
) -> CaseEvent:
    event = CaseEvent(
        case_id=case.id,
        action=action.value,
        from_status=from_status.value if from_status else None,
        to_status=case.status,
        actor_id=actor.user_id,
        actor_role=actor.role,
        note=note,
        data={k: v for k, v in data.items() if v is not None},
    )
    session.add(event)
    return event


def decode_photos(uploads: Sequence[Upload], root: Path) -> list[photo_store.StoredPhoto]:
    """Check, clean and store the uploaded images (no database work: do it before any).

    Raises:
        InvalidInput: too many photos, or one that is not an accepted image.
    """
    if len(uploads) > MAX_PHOTOS:
        raise InvalidInput(f"at most {MAX_PHOTOS} photos at a time, not {len(uploads)}")
    return [photo_store.store_photo(u.data, root, u.filename) for u in uploads]


def _store_photos(
    session: Session, case: Case, uploads: Sequence[Upload], kind: PhotoKind, root: Path
) -> list[Photo]:
    return photo_rows(session, case.id, decode_photos(uploads, root), kind)


def photo_rows(
    session: Session,
    case_id: int,
    stored: Sequence[photo_store.StoredPhoto],
    kind: PhotoKind,
    event_id: int | None = None,
) -> list[Photo]:
    rows = [
        Photo(
            case_id=case_id,
            event_id=event_id,
            kind=kind.value,
            sha256=s.sha256,
            path=s.path,
            thumb_path=s.thumb_path,
            mime=s.mime,
            width=s.width,
            height=s.height,
            size_bytes=s.size_bytes,
        )
        for s in stored
    ]
    session.add_all(rows)
    session.flush()
    return rows


def case_state(case: Case) -> CaseState:
    """The workflow's view of a case."""
    return CaseState(
        status=CaseStatus(case.status),
        unit_id=case.unit_id,
        check_inspector_id=case.check_inspector_id,
        pending_request=PendingRequest(case.pending_request) if case.pending_request else None,
        closed_at=case.closed_at,
    )


def act(
    session: Session,
    case_id: int,
    action: Action | str,
    user: User | None,
    data: ActionInput,
    context: CaseContext,
) -> Case:
    """Apply `action` to a case for `user` (None: the system) and record the event.

    Raises:
        NotFound: no such case, or not one of the user's unit.
        Forbidden: the role may not do this.
        Conflict: not allowed in the case's status, or the case changed since `data.version`.
        InvalidInput: a reason, note, photo or value is missing or wrong.
    """
    try:
        action = Action(action)
    except ValueError:
        raise InvalidInput(f"unknown action {action!r}") from None
    case = get_case(session, case_id, user, lock=True)
    if data.version is not None and data.version != case.version:
        raise Conflict(
            f"case {case.number} changed since you opened it (now {case.status}): reload it"
        )
    return _apply(session, case, action, actor_of(user), data, context)


def _apply(
    session: Session,
    case: Case,
    action: Action,
    actor: Actor,
    data: ActionInput,
    context: CaseContext | None,
) -> Case:
    now = now_utc()
    request = Request(reason=data.reason, note=data.note, after_photos=len(data.photos))
    reopen_within = context.reopen_within if context else timedelta(days=7)
    decision = decide(case_state(case), action, actor, request, now, reopen_within)
    if not decision.allowed:
        raise refused(decision)
    before = CaseStatus(case.status)
    details = _effects(session, case, action, actor, data, context, now)
    if "pending" in decision.effects:
        pending = decision.effects["pending"]
        case.pending_request = pending.value if isinstance(pending, PendingRequest) else None
        if pending is None:
            case.pending_value = case.pending_unit = None
    if decision.effects.get("rework"):
        case.rework_count += 1
    case.status = decision.to.value if decision.to else case.status
    case.updated_at = now
    note = data.note.strip() or data.reason.strip()
    uploads = details.pop("uploads", None)
    event = _event(session, case, action, before, actor, note, **details)
    session.flush()
    if uploads:
        kind = PhotoKind.AFTER if action == Action.REPORT_DONE else PhotoKind.CHECK
        assert context is not None
        for photo in _store_photos(session, case, uploads, kind, context.photo_root):
            photo.event_id = event.id
    return case


def _set_deadline(case: Case, deadline: datetime | None) -> None:
    """A new deadline: the watch (warning, overdue) starts again."""
    case.deadline = deadline
    case.warned_at = case.overdue_at = None


def _calendar(context: CaseContext | None) -> BusinessCalendar:
    """The city's calendar, which every action that moves a deadline needs."""
    if context is None:
        raise InvalidInput("this action needs the city's business calendar")
    return context.calendar


def _deadline(case: Case, context: CaseContext | None, start: datetime) -> datetime:
    k = case.category
    value, unit = time_limit(
        case.urgent, (k.limit_value, k.limit_unit), (k.urgent_limit_value, k.urgent_limit_unit)
    )
    return _calendar(context).add_working_time(start, value, unit)


def _effects(
    session: Session,
    case: Case,
    action: Action,
    actor: Actor,
    data: ActionInput,
    context: CaseContext | None,
    now: datetime,
) -> dict[str, Any]:
    """Apply what an action does besides the status; return the event's details."""
    if action == Action.FILE:
        case.filed_at = now
        case.dispatch_state = DispatchState.QUEUED.value
        ring_after_commit(session, case.id)
        return {}
    if action == Action.REJECT:
        return {"reason": data.reason}
    if action == Action.MERGE:
        return _merge(session, case, data)
    if action == Action.DISPATCH:
        return _dispatch(session, case, data, context, now)
    if action in (Action.REQUEST_EXTENSION, Action.REQUEST_SUSPENSION):
        if action == Action.REQUEST_EXTENSION or data.extra_value:
            value, unit = _extra_time(data)
            case.pending_value, case.pending_unit = value, unit
            return {"asked": f"{value} {unit}"}
        return {}
    if action == Action.APPROVE_EXTENSION:
        assert case.pending_value is not None and case.deadline is not None
        old = case.deadline
        _set_deadline(
            case,
            _calendar(context).add_working_time(
                old, float(case.pending_value), case.pending_unit or LimitUnit.HOURS.value
            ),
        )
        return {
            "granted": f"{case.pending_value} {case.pending_unit}",
            "deadline_before": old.isoformat(),
            "deadline": case.deadline.isoformat(),
        }
    if action == Action.APPROVE_SUSPENSION:
        deadline = case.deadline or now  # in progress: dispatched, so it has one
        left = max(_calendar(context).working_hours_between(now, deadline), 0.0)
        case.suspended_remaining_hours = Decimal(str(round(left, 4)))
        _set_deadline(case, None)
        return {"remaining_hours": round(left, 2)}
    if action == Action.RESUME:
        left = float(case.suspended_remaining_hours or 0)
        _set_deadline(case, _calendar(context).add_working_hours(now, left))
        case.suspended_remaining_hours = None
        return {"deadline": case.deadline.isoformat()}
    if action == Action.REPORT_DONE:
        case.handled_at = now
        return {"uploads": list(data.photos)}
    if action == Action.ASSIGN_CHECK:
        return _assign_check(session, case, data)
    if action in (Action.CHECK_PASS, Action.CHECK_FAIL):
        details: dict[str, Any] = {"uploads": list(data.photos)}
        if action == Action.CHECK_FAIL:
            _set_deadline(case, _deadline(case, context, now))
            case.handled_at = None
            case.check_inspector_id = None
            details["rework"] = case.rework_count + 1
            details["deadline"] = case.deadline.isoformat()
        return details
    if action == Action.CLOSE:
        case.closed_at = now
        return {}
    if action == Action.REOPEN:
        case.closed_at = None
        case.handled_at = None
        _set_deadline(case, _deadline(case, context, now))
        return {"deadline": case.deadline.isoformat()}
    return {}


def _extra_time(data: ActionInput) -> tuple[Decimal, str]:
    try:
        value = Decimal(str(data.extra_value or "").strip())
        unit = LimitUnit(data.extra_unit or LimitUnit.HOURS.value).value
    except (InvalidOperation, ValueError):
        raise InvalidInput("more time is a number of working hours or days") from None
    if not value.is_finite() or not 0 < value <= 1000:
        raise InvalidInput("more time is between 0 and 1000 working hours or days")
    return value, unit


def _merge(session: Session, case: Case, data: ActionInput) -> dict[str, Any]:
    number = (data.merge_into or "").strip()
    target = session.scalar(select(Case).where(Case.number == number)) if number else None
    if target is None:
        raise InvalidInput(f"merge into which case? no case numbered {number!r}")
    if target.id == case.id or target.status not in {s.value for s in OPEN_STATUSES}:
        raise Conflict(f"case {target.number} is not an open case to merge into")
    if target.merged_into_id is not None:
        raise Conflict(f"case {target.number} was itself merged")
    case.merged_into_id = target.id
    return {"into": target.number}


def _dispatch(
    session: Session,
    case: Case,
    data: ActionInput,
    context: CaseContext | None,
    now: datetime,
) -> dict[str, Any]:
    from dispatch.routing import Unroutable, dispatch_record  # temporary: being moved
    from dispatch.services import route_case

    if data.unit_id is not None:
        unit = session.get(Unit, data.unit_id)
        if unit is None or not unit.active:
            raise InvalidInput(f"unit {data.unit_id} does not exist or is inactive")
        case.unit_id, case.routing_rule_id, why = unit.id, None, "chosen by the dispatcher"
    else:
        route = route_case(session, case)
        if isinstance(route, Unroutable):
            raise Conflict(f"case {case.number} cannot be routed: {route.reason}")
        unit = session.get(Unit, route.unit_id)
        assert unit is not None
        case.unit_id, case.routing_rule_id, why = unit.id, route.rule_id, route.reason
    case.dispatched_at = now
    _set_deadline(case, _deadline(case, context, now))
    case.dispatch_state = DispatchState.DONE.value
    case.dispatch_error = None
    assert case.deadline is not None
    return dispatch_record((unit.code, unit.name), case.routing_rule_id, why, case.deadline)


def _assign_check(session: Session, case: Case, data: ActionInput) -> dict[str, Any]:
    if data.inspector_id is None:
        case.check_inspector_id = None
        return {"inspector": None}
    inspector = session.get(User, data.inspector_id)
    if inspector is None or inspector.role != Role.INSPECTOR or not inspector.active:
        raise InvalidInput("the on-site check goes to an active inspector")
    case.check_inspector_id = inspector.id
    return {"inspector": inspector.username}
