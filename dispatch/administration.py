"""Administering who handles what: responsible units, routing rules, and "who gets this?".

Use cases of the administrators' pages (`dispatch.admin`). Each takes the caller's session
(the caller owns the transaction), checks its input, makes the change and adds its audit row
(`gridmgmt.kernel.audit.record_change`) to the same transaction, so a refused change writes
nothing at all. The tester (`who_gets`) runs the dispatcher's own code: the point is located
as a report is (`grids.services.locate`) and routed by `RoutingData.route`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cases.models import Case, Category
from cases.status import OPEN_STATUSES
from dispatch.models import RoutingRule
from dispatch.routing import SPECIFICITY, Route, Unroutable
from dispatch.services import RoutingData
from gridmgmt.kernel.audit import AuditAction, record_change
from gridmgmt.kernel.errors import Conflict, InvalidInput, NotFound
from gridmgmt.kernel.models import Unit, UnitKind, UnitType, User
from grids.gridding import check_lon_lat
from grids.models import Area, AreaLevel
from grids.services import Location, locate

UNIT_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
MAX_NAME = 200
MAX_NOTE = 500
# Rules are compared by priority first; the demo's city-wide rules use 100. A bounded range
# keeps the number readable and inside the column's integer.
MIN_PRIORITY, MAX_PRIORITY = 0, 1000
DEFAULT_PRIORITY = 100
UNIT_TARGET = "unit"
RULE_TARGET = "rule"


# ---------------------------------------------------------------- audit facts


def unit_facts(unit: Unit) -> dict[str, Any]:
    """What the audit log keeps of a unit."""
    return {
        "code": unit.code,
        "name": unit.name,
        "kind": str(getattr(unit.kind, "value", unit.kind)),
        "unit_type": str(getattr(unit.unit_type, "value", unit.unit_type)),
        "community": unit.community.code if unit.community is not None else None,
        "active": unit.active,
    }


def rule_facts(session: Session, rule: RoutingRule) -> dict[str, Any]:
    """What the audit log keeps of a routing rule: codes, not ids, so the log reads alone."""
    category = session.get(Category, rule.category_id)
    area = session.get(Area, rule.area_id) if rule.area_id is not None else None
    unit = session.get(Unit, rule.unit_id)
    return {
        "category": category.code if category is not None else None,
        "area": area.code if area is not None else None,
        "unit": unit.code if unit is not None else None,
        "priority": rule.priority,
        "note": rule.note,
        "active": rule.active,
    }


# ---------------------------------------------------------------- units


@dataclass(frozen=True)
class UnitLoad:
    """What rests on a unit: its active staff, its open cases, the active rules naming it."""

    staff: int = 0
    open_cases: int = 0
    active_rules: int = 0


@dataclass(frozen=True)
class UnitRow:
    """A unit as the units page lists it."""

    unit: Unit
    load: UnitLoad


def _counts(session: Session, query: Any) -> dict[int, int]:
    return {unit_id: count for unit_id, count in session.execute(query)}


def unit_loads(session: Session, unit_ids: list[int] | None = None) -> dict[int, UnitLoad]:
    """The load of each unit (of `unit_ids`, or all): three grouped counts on indexed columns."""

    def only(column: Any) -> Any:
        return column.in_(unit_ids) if unit_ids is not None else column.isnot(None)

    staff = _counts(
        session,
        select(User.unit_id, func.count())
        .where(User.active, only(User.unit_id))
        .group_by(User.unit_id),
    )
    cases = _counts(
        session,
        select(Case.unit_id, func.count())
        .where(Case.status.in_([s.value for s in OPEN_STATUSES]), only(Case.unit_id))
        .group_by(Case.unit_id),
    )
    rules = _counts(
        session,
        select(RoutingRule.unit_id, func.count())
        .where(RoutingRule.active, only(RoutingRule.unit_id))
        .group_by(RoutingRule.unit_id),
    )
    ids = set(staff) | set(cases) | set(rules)
    return {i: UnitLoad(staff.get(i, 0), cases.get(i, 0), rules.get(i, 0)) for i in ids}


def _like(text_: str) -> str:
    return "%" + text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def find_units(session: Session, query: str = "", kind: str = "", state: str = "") -> list[UnitRow]:
    """Units, departments first then communities, by code, with their load.

    Args:
        query: only units whose code or name contains this (case-insensitive).
        kind: "community" or "department" ("" or unknown: both).
        state: "active" or "inactive" ("" or unknown: both).
    """
    statement = select(Unit)
    if query:
        pattern = _like(query)
        statement = statement.where(
            or_(Unit.code.ilike(pattern, escape="\\"), Unit.name.ilike(pattern, escape="\\"))
        )
    if kind in {k.value for k in UnitKind}:
        statement = statement.where(Unit.kind == kind)
    if state in ("active", "inactive"):
        statement = statement.where(Unit.active.is_(state == "active"))
    units = list(session.scalars(statement.order_by(Unit.kind.desc(), Unit.code)))
    loads = unit_loads(session, [u.id for u in units]) if units else {}
    return [UnitRow(u, loads.get(u.id, UnitLoad())) for u in units]


def communities_without_unit(session: Session) -> list[Area]:
    """Communities no unit owns (a community unit can be made for each)."""
    owned = select(Unit.id).where(Unit.community_id == Area.id).exists()
    return list(
        session.scalars(
            select(Area).where(Area.level == AreaLevel.COMMUNITY, ~owned).order_by(Area.code)
        )
    )


def _unit_code(code: str) -> str:
    code = code.strip()
    if not UNIT_CODE.fullmatch(code):
        raise InvalidInput(
            "a unit code is 1-32 letters, digits or . _ - (starting with a letter or digit)",
            field="code",
        )
    return code


def _unit_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise InvalidInput("a unit needs a name", field="name")
    if len(name) > MAX_NAME:
        raise InvalidInput("a name has at most %(most)s characters", field="name", most=MAX_NAME)
    return name


def _department_type(unit_type: str) -> UnitType:
    if unit_type not in {t.value for t in UnitType} or unit_type == UnitType.COMMUNITY.value:
        raise InvalidInput(
            "%(value)r is not a department's unit type", field="unit_type", value=unit_type
        )
    return UnitType(unit_type)


def _add_unit(session: Session, unit: Unit) -> Unit:
    """Insert `unit`; a code (or community) taken meanwhile is a Conflict, not a 500."""
    if session.scalar(select(Unit.id).where(func.lower(Unit.code) == unit.code.lower())):
        raise Conflict("the unit code %(code)s is taken", field="code", code=unit.code)
    try:
        with session.begin_nested():
            session.add(unit)
            session.flush()
    except IntegrityError:
        raise Conflict(
            "the unit %(code)s was made by someone else meanwhile", code=unit.code
        ) from None
    return unit


def create_department(
    session: Session, actor: User | None, code: str, name: str, unit_type: str
) -> Unit:
    """Add a department (a unit that owns classes, not territory).

    Raises:
        InvalidInput: a bad code or name, or a unit type that is not a department's.
        Conflict: the code is taken.
    """
    unit = Unit(
        code=_unit_code(code),
        name=_unit_name(name),
        kind=UnitKind.DEPARTMENT.value,
        unit_type=_department_type(unit_type).value,
    )
    _add_unit(session, unit)
    record_change(
        session, actor, AuditAction.UNIT_CREATED, UNIT_TARGET, unit.id, None, unit_facts(unit)
    )
    return unit


def create_community_unit(
    session: Session,
    actor: User | None,
    community_code: str,
    code: str = "",
    name: str = "",
) -> Unit:
    """Add the unit of a community that has none (code and name default to the community's).

    Raises:
        NotFound: no community has this code.
        Conflict: the community has a unit already, or the code is taken.
        InvalidInput: a bad code or name.
    """
    area = session.scalar(
        select(Area).where(Area.code == community_code.strip(), Area.level == AreaLevel.COMMUNITY)
    )
    if area is None:
        raise NotFound("no community has the code %(code)s", field="community", code=community_code)
    existing = session.scalar(select(Unit).where(Unit.community_id == area.id))
    if existing is not None:
        raise Conflict(
            "the community %(community)s has a unit already: %(unit)s",
            field="community",
            community=area.code,
            unit=existing.code,
        )
    unit = Unit(
        code=_unit_code(code or area.code),
        name=_unit_name(name or area.name),
        kind=UnitKind.COMMUNITY.value,
        unit_type=UnitType.COMMUNITY.value,
        community=area,
    )
    _add_unit(session, unit)
    record_change(
        session, actor, AuditAction.UNIT_CREATED, UNIT_TARGET, unit.id, None, unit_facts(unit)
    )
    return unit


def _unit(session: Session, unit_id: int) -> Unit:
    unit = session.get(Unit, unit_id, with_for_update=True)
    if unit is None:
        raise NotFound("unit %(unit)s does not exist", unit=unit_id)
    return unit


def change_unit(
    session: Session,
    actor: User | None,
    unit_id: int,
    *,
    name: str | None = None,
    unit_type: str | None = None,
    active: bool | None = None,
) -> Unit:
    """Rename a unit, change a department's type, or (de)activate it; None leaves a fact as
    it is. Deactivating a unit that has open cases or rules is allowed: its cases stay with
    it, and routing skips it (`load_of` says what rests on it).

    Raises:
        NotFound: no such unit.
        InvalidInput: a bad name, a department type for a community unit or the reverse.
        Conflict: nothing would change.
    """
    unit = _unit(session, unit_id)
    before = unit_facts(unit)
    if name is not None:
        unit.name = _unit_name(name)
    if unit_type is not None and unit_type != before["unit_type"]:
        if unit.kind == UnitKind.COMMUNITY.value:
            raise InvalidInput("a community unit's type is always community", field="unit_type")
        unit.unit_type = _department_type(unit_type).value
    if active is not None:
        unit.active = active
    after = unit_facts(unit)
    if after == before:
        raise Conflict("nothing to change: the unit is already so")
    session.flush()
    record_change(session, actor, AuditAction.UNIT_CHANGED, UNIT_TARGET, unit.id, before, after)
    return unit


def load_of(session: Session, unit_id: int) -> UnitLoad:
    """What rests on one unit (for the warning shown before and after deactivating it)."""
    return unit_loads(session, [unit_id]).get(unit_id, UnitLoad())


# ---------------------------------------------------------------- routing rules


@dataclass(frozen=True)
class RuleInput:
    """A routing rule as a form gives it: codes and text, checked by `create_rule`."""

    category: str
    area: str
    unit: str
    priority: str
    note: str = ""


def _category(session: Session, code: str) -> Category:
    if not code.strip():
        raise InvalidInput("choose a class", field="category")
    category = session.scalar(select(Category).where(Category.code == code.strip()))
    if category is None:
        raise InvalidInput("no class has the code %(code)s", field="category", code=code)
    return category


def _area(session: Session, code: str) -> Area | None:
    if not code.strip():
        return None  # everywhere
    area = session.scalar(select(Area).where(Area.code == code.strip()))
    if area is None:
        raise InvalidInput("no area has the code %(code)s", field="area", code=code)
    return area


def _active_unit(session: Session, code: str) -> Unit:
    unit = session.scalar(select(Unit).where(Unit.code == code.strip()))
    if unit is None:
        raise InvalidInput("no unit has the code %(code)s", field="unit", code=code)
    if not unit.active:
        raise InvalidInput(
            "the unit %(code)s is inactive: reactivate it first, or choose another",
            field="unit",
            code=unit.code,
        )
    return unit


def _priority(text_: str) -> int:
    raw = text_.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,7}", raw) or not (MIN_PRIORITY <= int(raw) <= MAX_PRIORITY):
        raise InvalidInput(
            "the priority is a whole number from %(low)s to %(high)s",
            field="priority",
            low=MIN_PRIORITY,
            high=MAX_PRIORITY,
        )
    return int(raw)


def _note(text_: str) -> str | None:
    note = text_.strip()
    if len(note) > MAX_NOTE:
        raise InvalidInput("a note has at most %(most)s characters", field="note", most=MAX_NOTE)
    return note or None


def _apply(session: Session, rule: RoutingRule, data: RuleInput) -> None:
    """Check every field of `data` (all of them, before anything changes) and set them."""
    category = _category(session, data.category)
    area = _area(session, data.area)
    unit = _active_unit(session, data.unit)
    priority = _priority(data.priority)
    note = _note(data.note)
    rule.category_id = category.id
    rule.area_id = area.id if area is not None else None
    rule.unit_id = unit.id
    rule.priority = priority
    rule.note = note


def create_rule(session: Session, actor: User | None, data: RuleInput) -> RoutingRule:
    """Add an active routing rule.

    Raises:
        InvalidInput: an unknown class, area or unit, an inactive unit, a priority out of
            range, too long a note.
    """
    rule = RoutingRule(active=True)
    _apply(session, rule, data)
    session.add(rule)
    session.flush()
    record_change(
        session,
        actor,
        AuditAction.RULE_CREATED,
        RULE_TARGET,
        rule.id,
        None,
        rule_facts(session, rule),
    )
    return rule


def _rule(session: Session, rule_id: int) -> RoutingRule:
    rule = session.get(RoutingRule, rule_id, with_for_update=True)
    if rule is None:
        raise NotFound("routing rule %(rule)s does not exist", rule=rule_id)
    return rule


def change_rule(session: Session, actor: User | None, rule_id: int, data: RuleInput) -> RoutingRule:
    """Edit a rule's class, area, unit, priority and note.

    Raises:
        NotFound: no such rule.
        InvalidInput: as `create_rule`.
        Conflict: nothing would change.
    """
    rule = _rule(session, rule_id)
    before = rule_facts(session, rule)
    _apply(session, rule, data)
    session.flush()
    after = rule_facts(session, rule)
    if after == before:
        raise Conflict("nothing to change: the rule is already so")
    record_change(session, actor, AuditAction.RULE_CHANGED, RULE_TARGET, rule.id, before, after)
    return rule


def set_rule_active(
    session: Session, actor: User | None, rule_id: int, active: bool
) -> RoutingRule:
    """Deactivate a rule (the dispatcher ignores it) or reactivate it (its unit must be
    active).

    Raises:
        NotFound: no such rule.
        Conflict: the rule is already so, or its unit is inactive.
    """
    rule = _rule(session, rule_id)
    before = rule_facts(session, rule)
    if rule.active == active:
        raise Conflict("nothing to change: the rule is already so")
    if active and not rule.unit.active:
        raise Conflict(
            "the unit %(code)s is inactive: reactivate it first, or edit the rule",
            code=rule.unit.code,
        )
    rule.active = active
    session.flush()
    record_change(
        session,
        actor,
        AuditAction.RULE_CHANGED,
        RULE_TARGET,
        rule.id,
        before,
        rule_facts(session, rule),
    )
    return rule


def find_rules(
    session: Session, category: str = "", unit: str = "", state: str = ""
) -> list[RoutingRule]:
    """Rules by class code, then the order the dispatcher tries them (priority, specificity).

    Args:
        category: only rules of the class with this code ("": all).
        unit: only rules naming the unit with this code ("": all).
        state: "active" or "inactive" ("" or unknown: both).
    """
    statement = (
        select(RoutingRule)
        .join(Category, Category.id == RoutingRule.category_id)
        .join(Unit, Unit.id == RoutingRule.unit_id)
    )
    if category:
        statement = statement.where(Category.code == category)
    if unit:
        statement = statement.where(Unit.code == unit)
    if state in ("active", "inactive"):
        statement = statement.where(RoutingRule.active.is_(state == "active"))
    return list(
        session.scalars(
            statement.order_by(Category.code, RoutingRule.priority.desc(), RoutingRule.id)
        )
    )


# ---------------------------------------------------------------- who gets this?


@dataclass(frozen=True)
class Candidate:
    """A rule that matches the point's class and areas, in the order the router tries them."""

    rule: RoutingRule
    area: Area | None
    unit: Unit
    decides: bool


@dataclass(frozen=True)
class Answer:
    """Who would get a case of `category` at (lon, lat), and why.

    `route` is the dispatcher's own answer (`RoutingData.route`). `candidates` are the active
    rules that match here, best first, for the page; `community_unit` is the community's own.
    """

    category: Category
    lon: float
    lat: float
    location: Location
    community: Area
    route: Route | Unroutable
    unit: Unit | None
    rule: RoutingRule | None
    candidates: list[Candidate]
    community_unit: Unit | None

    @property
    def routable(self) -> bool:
        """Whether the dispatcher would find a unit."""
        return isinstance(self.route, Route)

    @property
    def why(self) -> str:
        """Why, for the page: rule | community | rules_inactive | no_unit | unit_inactive."""
        if isinstance(self.route, Route):
            return "rule" if self.route.rule_id is not None else "community"
        if self.candidates:
            return "rules_inactive"
        return "no_unit" if self.community_unit is None else "unit_inactive"


def who_gets(session: Session, category_code: str, lon: float | str, lat: float | str) -> Answer:
    """Which unit the dispatcher would choose for a case of this class at (lon, lat), with
    the code it runs: the report's location (`locate`), then `RoutingData.route`.

    Raises:
        InvalidInput: an unknown class, or coordinates that are not WGS 84 numbers.
        OutsideTerritory: the point lies in no unit grid cell.
    """
    category = _category(session, category_code)
    x, y = check_lon_lat(lon, lat)  # type: ignore[arg-type]  # it checks text too
    location = locate(session, x, y)
    routing = RoutingData.load(session)
    route = routing.route(category.id, location.community_id)
    areas = routing.areas_of(location.community_id)
    matching = sorted(
        (
            r
            for r in routing.rules
            if r.category_id == category.id and (r.area_id is None or r.area_id in areas)
        ),
        key=lambda r: (-r.priority, -SPECIFICITY.get(r.area_level, 0), r.id),
    )
    decided_by = route.rule_id if isinstance(route, Route) else None
    candidates = [
        Candidate(
            session.get_one(RoutingRule, r.id),
            session.get(Area, r.area_id) if r.area_id is not None else None,
            session.get_one(Unit, r.unit_id),
            r.id == decided_by,
        )
        for r in matching
    ]
    community = session.get_one(Area, location.community_id)
    community_unit = session.scalar(select(Unit).where(Unit.community_id == community.id))
    return Answer(
        category=category,
        lon=x,
        lat=y,
        location=location,
        community=community,
        route=route,
        unit=session.get(Unit, route.unit_id) if isinstance(route, Route) else None,
        rule=session.get(RoutingRule, decided_by) if decided_by is not None else None,
        candidates=candidates,
        community_unit=community_unit,
    )
