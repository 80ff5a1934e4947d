"""Case use cases: report, look up, and move a case through its lifecycle.

Every change goes through `act`, which asks `cases.workflow.decide`, applies the decision and
appends one case event in the same transaction. Callers own the commit (one per use case).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cases import photos as photo_store
from cases.models import (
    Case,
    CaseEvent,
    CaseSource,
    CaseStatus,
    DispatchState,
    Photo,
    PhotoKind,
)
from cases.workflow import (
    OPEN_STATUSES,
    SYSTEM,
    Action,
    Actor,
    CaseState,
    Decision,
    PendingRequest,
    Refusal,
    Request,
    decide,
    time_limit,
)
from dispatch.routing import Unroutable, dispatch_record
from dispatch.services import route_case
from gridmgmt.kernel.business_calendar import BusinessCalendar, LimitUnit
from gridmgmt.kernel.db import Prepared, sql_in
from gridmgmt.kernel.doorbell import ring_after_commit
from gridmgmt.kernel.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
)
from gridmgmt.kernel.models import Role, Unit, User
from grids import gridding
from grids.services import cell_at, outside_territory

MAX_DESCRIPTION = 4000
MAX_PHOTOS = 6
IDEMPOTENCY_KEY = r"[A-Za-z0-9._:-]{8,128}"  # what a client's retry key may be
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY)


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its name (for messages) and bytes."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class ReportInput:
    """What a reporter sends: where, what, and optionally photos and contact details."""

    category_code: str
    lon: float
    lat: float
    description: str = ""
    address: str | None = None
    urgent: bool = False
    idempotency_key: str | None = None
    contact: dict[str, str] = field(default_factory=dict)
    photos: Sequence[Upload] = ()
    media_url: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


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


def now_utc() -> datetime:
    """The current time (UTC, aware)."""
    return datetime.now(UTC)


def actor_of(user: User | None) -> Actor:
    """The workflow actor for a user (None: the system, e.g. the dispatcher job)."""
    if user is None:
        return Actor(SYSTEM)
    return Actor(user.role, user.id, user.unit_id)


def _refused(decision: Decision) -> DomainError:
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


def _decode_photos(uploads: Sequence[Upload], root: Path) -> list[photo_store.StoredPhoto]:
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
    return _photo_rows(session, case.id, _decode_photos(uploads, root), kind)


def _photo_rows(
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


@dataclass(frozen=True)
class CategoryRef:
    """What a report needs of its class: the id, the code, the extra questions it asks."""

    id: int
    code: str
    attributes: list[dict[str, Any]]


_FIND_CATEGORY = Prepared(
    "gridmgmt_find_category",
    "SELECT id, code, attributes FROM categories WHERE code = :code AND active",
)


def find_category(session: Session, code: str) -> CategoryRef:
    """The active category with this code.

    Raises:
        InvalidInput: unknown or inactive category.
    """
    row = _FIND_CATEGORY.execute(session, {"code": code}).first()
    if row is None:
        raise InvalidInput(f"unknown category {code!r}", field="category")
    return CategoryRef(row.id, row.code, row.attributes or [])


class ReportResult:
    """The case a report made, and whether this call made it (False: an idempotent retry).

    The case row is written with Core; its ORM object is loaded only when asked for.
    """

    def __init__(self, session: Session, case_id: int, number: str, created: bool) -> None:
        self._session = session
        self.case_id = case_id
        self.number = number
        self.created = created

    @cached_property
    def case(self) -> Case:
        """The case itself."""
        case = self._session.get(Case, self.case_id)
        assert case is not None
        return case


def report_case(
    session: Session,
    data: ReportInput,
    reporter: User | None,
    source: CaseSource,
    photo_root: Path,
    api_key_id: int | None = None,
    trusted: bool = False,
) -> ReportResult:
    """Create a case from a report, located in its unit grid cell.

    An inspector's report is verified at once (they are the inspector); a trusted channel's
    report is filed at once. A retry with the same idempotency key returns the first case.

    Raises:
        InvalidInput: bad coordinates, unknown category, too long a text, a bad photo or key.
        OutsideTerritory: the point is in no unit grid cell.
    """
    key = (data.idempotency_key or "").strip() or None
    if key is not None:
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidInput("an idempotency key is 8-128 letters, digits or . _ : -")
        existing = session.execute(
            select(Case.id, Case.number).where(Case.idempotency_key == key)
        ).first()
        if existing is not None:
            return ReportResult(session, existing.id, existing.number, False)
    lon, lat = gridding.check_lon_lat(data.lon, data.lat)
    category = find_category(session, data.category_code)
    if len(data.description) > MAX_DESCRIPTION:
        raise InvalidInput(f"a description has at most {MAX_DESCRIPTION} characters")
    attributes = check_attributes(category, data.attributes)
    photos = _decode_photos(data.photos, photo_root)  # before any SQL: decoding takes long
    media_url = (data.media_url or "").strip() or None
    if media_url is not None and not re.fullmatch(r"https?://\S{1,2000}", media_url):
        raise InvalidInput("media_url must be an http(s) URL", field="media_url")
    # The steps a report takes at once, each asked of the transition table: report; an
    # inspector's own report is verified; a trusted channel's is filed.
    actor = actor_of(reporter)
    steps = [(Action.REPORT, actor)]
    if reporter is not None and reporter.role == Role.INSPECTOR:
        steps.append((Action.VERIFY, actor))
    if trusted:
        steps.append((Action.FILE, Actor(SYSTEM)))
    status: CaseStatus | None = None
    events: list[dict[str, Any]] = []
    for action, who in steps:
        decision = decide(CaseState(status), action, who)
        if not decision.allowed:
            raise _refused(decision)
        events.append(
            {
                "action": action.value,
                "from": status.value if status else None,
                "to": decision.to.value,
                "actor_id": who.user_id,
                "role": who.role,
            }
        )
        status = decision.to
    assert status is not None
    values = {
        "source": source.value,
        "status": status.value,
        "category_id": category.id,
        "urgent": data.urgent,
        "description": data.description.strip(),
        "address": (data.address or "").strip() or None,
        "lon": lon,
        "lat": lat,
        "reporter_id": reporter.id if reporter else None,
        "api_key_id": api_key_id,
        "contact": json.dumps({k: v.strip() for k, v in data.contact.items() if v and v.strip()}),
        "idempotency_key": key,
        "media_url": media_url,
        "attributes": json.dumps(attributes),
        "filed": status == CaseStatus.FILED,
        "events": json.dumps(events),
        "photos": len(data.photos),
    }
    try:
        if key is None:
            row = _INSERT_REPORT.execute(session, values).first()
        else:
            with session.begin_nested():
                row = _INSERT_REPORT.execute(session, values).first()
    except IntegrityError:
        # Another request with the same key won the race: theirs is the case.
        existing = session.execute(
            select(Case.id, Case.number).where(Case.idempotency_key == key)
        ).first()
        if existing is None:
            raise
        return ReportResult(session, existing.id, existing.number, False)
    if row is None:
        raise outside_territory(lon, lat)
    case_id, number, first_event = row
    if photos:
        _photo_rows(session, case_id, photos, PhotoKind.BEFORE, first_event)
    if status == CaseStatus.FILED:
        ring_after_commit(session, case_id)
    return ReportResult(session, case_id, number, True)


# A report is one statement: locate (the tie-break of `grids.services.cell_at`), insert the
# case and its events in order, the first event carrying the number of photos. No row when the
# point is outside every cell (and then no event either).
_INSERT_REPORT = Prepared(
    "gridmgmt_report",
    f"""
    WITH new_case AS (
        INSERT INTO cases (source, status, category_id, urgent, description, address, location,
                           cell_id, community_id, reporter_id, api_key_id, contact,
                           idempotency_key, media_url, attributes, filed_at, dispatch_state)
        SELECT :source, :status, :category_id, :urgent, :description, :address, p.geom,
               g.id, g.community_id, :reporter_id, :api_key_id, CAST(:contact AS jsonb),
               :idempotency_key, :media_url, CAST(:attributes AS jsonb),
               CASE WHEN :filed THEN now() END,
               CASE WHEN :filed THEN 'queued' ELSE 'none' END
        FROM (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS geom) AS p
        CROSS JOIN LATERAL ({cell_at("p.geom")}) AS g
        RETURNING id, number
    ), new_events AS (
        INSERT INTO case_events (case_id, action, from_status, to_status, actor_id, actor_role,
                                 data)
        SELECT c.id, e.action, e."from", e."to", e.actor_id, e.role,
               CASE WHEN e.n = 1 AND :photos > 0
                    THEN jsonb_build_object('photos', CAST(:photos AS int))
                    ELSE '{{}}'::jsonb END
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


def check_attributes(category: CategoryRef, given: dict[str, str]) -> dict[str, Any]:
    """The class's extra answers (Open311 attributes), checked against its definitions.

    Raises:
        InvalidInput: a required answer is missing, a value is not one of the list, not a
            number or not a date-time, or the attribute is unknown.
    """
    definitions = {a["code"]: a for a in category.attributes}
    unknown = sorted(set(given) - set(definitions))
    if unknown:
        raise InvalidInput(f"unknown attribute {unknown[0]!r} for {category.code}")
    answers: dict[str, Any] = {}
    for code, definition in definitions.items():
        raw = (given.get(code) or "").strip()
        if not raw:
            if definition.get("required"):
                raise InvalidInput(f"attribute[{code}] is required for {category.code}")
            continue
        kind = definition.get("datatype", "string")
        if kind in ("singlevaluelist", "multivaluelist"):
            keys = {str(v["key"]) for v in definition.get("values", [])}
            chosen = raw.split(",") if kind == "multivaluelist" else [raw]
            if not set(chosen) <= keys:
                raise InvalidInput(f"attribute[{code}] is one of {', '.join(sorted(keys))}")
            answers[code] = chosen if kind == "multivaluelist" else raw
        elif kind == "number":
            try:
                answers[code] = float(raw)
            except ValueError:
                raise InvalidInput(f"attribute[{code}] must be a number") from None
            if not math.isfinite(answers[code]):  # JSON has no NaN nor infinity
                raise InvalidInput(f"attribute[{code}] must be a number")
        elif kind == "datetime":
            try:
                answers[code] = datetime.fromisoformat(raw.replace("Z", "+00:00")).isoformat()
            except ValueError:
                raise InvalidInput(f"attribute[{code}] must be an ISO 8601 date-time") from None
        else:
            answers[code] = raw[:1000]
    return answers


def visible_cases(user: User | None) -> Any:
    """A filter for the cases this user may see: unit staff their unit's, citizens their own."""
    if user is None:
        return Case.id.is_(None)
    if user.role == Role.UNIT_STAFF:
        return Case.unit_id == user.unit_id
    if user.role == Role.CITIZEN:
        return Case.reporter_id == user.id
    return Case.id.isnot(None)


def get_case(session: Session, case_id: int, user: User | None, lock: bool = False) -> Case:
    """The case with this id, if the user may see it (and locked for update when asked).

    Raises:
        NotFound: no such case, or one this user may not see (no IDOR: same answer).
    """
    query = select(Case).where(Case.id == case_id)
    if user is not None:
        query = query.where(visible_cases(user))
    if lock:
        query = query.with_for_update()
    case = session.scalar(query)
    if case is None:
        raise NotFound("no such case")
    return case


def find_by_number(session: Session, number: str) -> Case:
    """The case with this public number (for the tracking page).

    Raises:
        NotFound: no such case.
    """
    case = session.scalar(select(Case).where(Case.number == number.strip()))
    if case is None:
        raise NotFound(f"no case numbered {number!r}")
    return case


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
        raise _refused(decision)
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


def find_duplicates(session: Session, case: Case, limit: int = 5) -> list[tuple[Case, float]]:
    """Open cases of the same class near this one, within its class's radius and time window.

    Returns (case, distance in metres) pairs, nearest first.
    """
    return duplicates_of(session, [case.id], limit).get(case.id, [])


# For each case, the open cases of its class within its class's radius, reported at most its
# class's window before it: nearest first, at most :limit each (one query for a whole list).
_DUPLICATES = text(f"""
    SELECT n.id AS for_id, d.id, d.distance
    FROM cases n
    JOIN categories k ON k.id = n.category_id
    CROSS JOIN LATERAL (
        SELECT c.id, ST_Distance(c.location::geography, n.location::geography) AS distance
        FROM cases c
        WHERE c.id <> n.id AND c.category_id = n.category_id
          AND {sql_in("c.status", OPEN_STATUSES)} AND c.merged_into_id IS NULL
          AND c.reported_at >= n.reported_at - make_interval(hours => k.duplicate_window_hours)
          AND ST_DWithin(c.location::geography, n.location::geography, k.duplicate_radius_m)
        ORDER BY distance, c.id
        LIMIT :limit
    ) AS d
    WHERE n.id = ANY(:ids)
    ORDER BY n.id, d.distance, d.id
""")


def duplicates_of(
    session: Session, case_ids: Sequence[int], limit: int = 5
) -> dict[int, list[tuple[Case, float]]]:
    """`find_duplicates` for several cases at once: case id → its suggestions."""
    if not case_ids:
        return {}
    rows = session.execute(_DUPLICATES, {"ids": list(case_ids), "limit": limit}).all()
    found = {
        c.id: c for c in session.scalars(select(Case).where(Case.id.in_({r.id for r in rows})))
    }
    suggestions: dict[int, list[tuple[Case, float]]] = {}
    for row in rows:
        suggestions.setdefault(row.for_id, []).append((found[row.id], float(row.distance)))
    return suggestions


def last_notes(session: Session, case_ids: Sequence[int]) -> dict[int, str]:
    """Each case's latest non-empty event note (a return's reason, a handling note...)."""
    last = (
        select(CaseEvent.case_id, func.max(CaseEvent.id).label("id"))
        .where(CaseEvent.case_id.in_(list(case_ids)), CaseEvent.note != "")
        .group_by(CaseEvent.case_id)
        .subquery()
    )
    query = select(CaseEvent.case_id, CaseEvent.note).join(last, last.c.id == CaseEvent.id)
    return dict(session.execute(query).tuples().all())


def public_case(session: Session, case: Case) -> Case:
    """The case a reporter should be told about: the open case it was merged into, if any."""
    seen = {case.id}
    while case.merged_into_id is not None and case.merged_into_id not in seen:
        target = session.get(Case, case.merged_into_id)
        if target is None:
            break
        seen.add(target.id)
        case = target
    return case
