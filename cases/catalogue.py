"""The category catalogue: load the component and event classes from a JSON file.

The file also says who may mark a report urgent (`urgent_roles`, `urgent_trusted_api_keys`):
an urgent case's shorter limit comes before everyone else's cases, so only the roles listed
(and, if it says so, trusted Open311 api keys) are believed; citizens and untrusted keys never.
The app reads this policy from the shipped catalogue file (`urgent_policy`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cases.models import Category, CategoryKind, MajorClass
from gridmgmt.kernel.business_calendar import LimitUnit
from gridmgmt.kernel.errors import N_, InvalidInput, NotFound, word
from gridmgmt.kernel.models import Role, UnitType

DEFAULT_CATALOGUE = Path(__file__).parent / "data" / "categories.json"
MAX_LIMIT = 1_000_000  # categories.limit_value is NUMERIC(8, 2)
_TWO_DIGITS = re.compile(r"[0-9]{2}")
KIND_PREFIX = {CategoryKind.COMPONENT: "C", CategoryKind.EVENT: "E"}
_TEXT_FIELDS = (
    "name_zh",
    "name_en",
    "description_zh",
    "description_en",
    "filing_condition_zh",
    "filing_condition_en",
    "closing_condition_zh",
    "closing_condition_en",
)


DEFAULT_URGENT_ROLES = (Role.INSPECTOR.value, Role.OPERATOR.value)
NEVER_URGENT = (Role.CITIZEN.value,)  # no catalogue may let these mark a report urgent


@dataclass(frozen=True)
class UrgentPolicy:
    """Who may mark a report urgent: the roles of signed-in reporters, and whether trusted
    Open311 api keys may. Anonymous reporters, citizens and untrusted keys never may."""

    roles: frozenset[str] = frozenset(DEFAULT_URGENT_ROLES)
    trusted_api_keys: bool = True

    def allows(self, role: str | None, trusted: bool = False) -> bool:
        """Whether a report by `role` (None: no account) through a channel, `trusted` or not,
        may be urgent."""
        if role is not None:
            return role in self.roles
        return trusted and self.trusted_api_keys


def read_urgent_policy(data: dict[str, Any]) -> UrgentPolicy:
    """The urgent policy of a catalogue's data (defaults when the file names none).

    Raises:
        InvalidInput: `urgent_roles` is not a list of roles, or names a role that may never
            mark a report urgent; `urgent_trusted_api_keys` is not true or false.
    """
    roles = data.get("urgent_roles", list(DEFAULT_URGENT_ROLES))
    known = {r.value for r in Role}
    if not isinstance(roles, list) or not all(isinstance(r, str) and r in known for r in roles):
        raise InvalidInput(
            "urgent_roles is a list of roles among %(roles)s", roles=", ".join(sorted(known))
        )
    refused = sorted(set(roles) & set(NEVER_URGENT))
    if refused:
        raise InvalidInput("urgent_roles may not name %(role)s", role=refused[0])
    trusted = data.get("urgent_trusted_api_keys", True)
    if not isinstance(trusted, bool):
        raise InvalidInput("urgent_trusted_api_keys is true or false")
    return UrgentPolicy(frozenset(roles), trusted)


@lru_cache(maxsize=4)
def urgent_policy(path: str | Path = DEFAULT_CATALOGUE) -> UrgentPolicy:
    """The urgent policy of a catalogue file, read once per process (restart to change it).

    Raises:
        InvalidInput: the file is unreadable or its policy is wrong.
    """
    return read_urgent_policy(read_catalogue(path))


@dataclass
class LoadResult:
    """How many classes a load created, changed or left as they were."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    changed: list[str] = field(default_factory=list, compare=False)  # codes created or updated


def category_code(kind: CategoryKind, major: str, minor: str) -> str:
    """The catalogue code of a minor class, also its Open311 service_code: C0101, E0102..."""
    return f"{KIND_PREFIX[kind]}{major}{minor}"


def _limit(raw: Any, where: str) -> tuple[Decimal, str] | tuple[None, None]:
    if raw is None:
        return None, None
    try:
        value = Decimal(str(raw["value"]))
        unit = LimitUnit(raw["unit"]).value
    except (KeyError, TypeError, ValueError, InvalidOperation):
        raise InvalidInput(
            "%(where)s: a limit is {'value': number > 0, 'unit': 'hours' | 'days'}", where=where
        ) from None
    if not value.is_finite() or not 0 < value < MAX_LIMIT:
        raise InvalidInput(
            "%(where)s: a limit is a number above 0 and below %(most)s", where=where, most=MAX_LIMIT
        )
    return value, unit


def _minor_values(raw: dict[str, Any], where: str) -> dict[str, Any]:
    missing = [f for f in ("code", "name_zh", "name_en", "limit", "unit_type") if f not in raw]
    if missing:
        raise InvalidInput("%(where)s: missing %(fields)s", where=where, fields=", ".join(missing))
    if not _TWO_DIGITS.fullmatch(str(raw["code"])):
        raise InvalidInput("%(where)s: a minor code is 2 digits", where=where)
    try:
        unit_type = UnitType(raw["unit_type"]).value
    except ValueError:
        raise InvalidInput(
            "%(where)s: unknown unit_type %(unit_type)r", where=where, unit_type=raw["unit_type"]
        ) from None
    limit_value, limit_unit = _limit(raw["limit"], where)
    if limit_value is None:
        raise InvalidInput("%(where)s: limit is required", where=where)
    urgent_value, urgent_unit = _limit(raw.get("urgent_limit"), where)
    values: dict[str, Any] = {f: str(raw.get(f) or "") for f in _TEXT_FIELDS}
    values.update(
        limit_value=limit_value,
        limit_unit=limit_unit,
        urgent_limit_value=urgent_value,
        urgent_limit_unit=urgent_unit,
        unit_type=unit_type,
        keywords=_list_of(raw, "keywords", str, where),
        duplicate_radius_m=_count(raw, "duplicate_radius_m", 50, where),
        duplicate_window_hours=_count(raw, "duplicate_window_hours", 72, where),
        attributes=_list_of(raw, "attributes", dict, where),
    )
    if not all(isinstance(a.get("code"), str) and a["code"] for a in values["attributes"]):
        raise InvalidInput("%(where)s: every attribute needs a 'code'", where=where)
    return values


def _list_of(raw: dict[str, Any], field: str, kind: type, where: str) -> list[Any]:
    """An optional list field whose items are all of `kind`."""
    items = raw.get(field) or []
    if not isinstance(items, list) or not all(isinstance(item, kind) for item in items):
        raise InvalidInput(
            "%(where)s: %(field_name)s is a list of %(type)s",
            where=where,
            field_name=field,
            type=kind.__name__,
        )
    return items


def _count(raw: dict[str, Any], field: str, default: int, where: str) -> int:
    """An optional whole number of at least 0."""
    value = raw.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(
            "%(where)s: %(field_name)s is a whole number of at least 0",
            where=where,
            field_name=field,
        )
    return value


def read_catalogue(path: str | Path = DEFAULT_CATALOGUE) -> dict[str, Any]:
    """Read a catalogue file.

    Raises:
        InvalidInput: unreadable or not a catalogue.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(
            "cannot read %(path)s: %(reason)s", path=path, reason=exc.strerror
        ) from None
    return parse_catalogue(raw, str(path))


def parse_catalogue(raw: bytes, path: str) -> dict[str, Any]:
    """The catalogue in `raw` (a file's bytes; `path` names it in the messages), with the
    same checks as `read_catalogue`.

    Raises:
        InvalidInput: not UTF-8 JSON, or not a catalogue.
    """
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput("%(path)s is not valid JSON: %(error)s", path=path, error=exc) from None
    if not isinstance(data, dict) or not isinstance(data.get("majors"), list):
        raise InvalidInput("%(path)s is not a category catalogue (no 'majors' list)", path=path)
    read_urgent_policy(data)  # a file with a wrong policy is refused as a whole
    return data


def load_catalogue(session: Session, path: str | Path = DEFAULT_CATALOGUE) -> LoadResult:
    """Create or update every major and minor class of the file, by code.

    Loading the same file twice changes nothing. Classes missing from the file are left
    alone (cases refer to them).
    """
    return apply_catalogue(session, read_catalogue(path))


def apply_catalogue(session: Session, data: dict[str, Any]) -> LoadResult:
    """Create or update every class of a catalogue read by `read_catalogue` or
    `parse_catalogue`, in the caller's transaction (an error leaves the caller to roll back:
    nothing is half loaded); `LoadResult.changed` names the classes created or updated.

    Raises:
        InvalidInput: a class of the file is wrong (the first one found).
    """
    result = LoadResult()
    majors = {(m.kind, m.code): m for m in session.scalars(select(MajorClass))}
    categories = {c.code: c for c in session.scalars(select(Category))}
    seen: set[str] = set()
    for i, raw_major in enumerate(data["majors"], start=1):
        minors = (raw_major.get("minors") or []) if isinstance(raw_major, dict) else None
        if not isinstance(minors, list) or not all(isinstance(m, dict) for m in minors):
            raise InvalidInput("major class %(index)s: needs a list of minor classes", index=i)
        try:
            kind = CategoryKind(raw_major["kind"])
            major_code = str(raw_major["code"])
            if not _TWO_DIGITS.fullmatch(major_code):
                raise ValueError(major_code)
        except (KeyError, ValueError):
            raise InvalidInput(
                "major class %(index)s: needs kind (component|event) and a 2-digit code", index=i
            ) from None
        where = f"{kind.value} major {major_code}"
        major = majors.get((kind.value, major_code))
        if major is None:
            major = MajorClass(kind=kind.value, code=major_code)
            session.add(major)
            majors[(kind.value, major_code)] = major
        major.name_zh = str(raw_major.get("name_zh") or "")
        major.name_en = str(raw_major.get("name_en") or "")
        for raw_minor in minors:
            minor_where = f"{where} minor {raw_minor.get('code')}"
            values = _minor_values(raw_minor, minor_where)
            code = category_code(kind, major_code, str(raw_minor["code"]))
            if code in seen:
                raise InvalidInput("%(where)s: listed twice in the file", where=minor_where)
            seen.add(code)
            category = categories.get(code)
            if category is None:
                session.add(
                    Category(code=code, major=major, minor_code=str(raw_minor["code"]), **values)
                )
                result.created += 1
                result.changed.append(code)
                continue
            changed = {k: v for k, v in values.items() if getattr(category, k) != v}
            for key, value in changed.items():
                setattr(category, key, value)
            if changed:
                result.updated += 1
                result.changed.append(code)
            else:
                result.unchanged += 1
    session.flush()
    return result


# ---------------------------------------------------------------- administration


MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # the shipped catalogue of 95 classes is 113 KB
# The most an administrator may set (a longer limit or window is a typing mistake).
MAX_LIMIT_FOR = {LimitUnit.HOURS.value: Decimal(8760), LimitUnit.DAYS.value: Decimal(365)}
MAX_DUPLICATE_RADIUS_M = 2000
MAX_DUPLICATE_WINDOW_HOURS = 8760
_CENT = Decimal("0.01")
# The names of the values in the messages (translated when shown).
LIMIT_WORD = N_("limit")
URGENT_LIMIT_WORD = N_("urgent limit")
RADIUS_WORD = N_("duplicate radius (m)")
WINDOW_WORD = N_("duplicate window (hours)")
UNIT_WORDS = {LimitUnit.HOURS.value: N_("hours"), LimitUnit.DAYS.value: N_("days")}


def category_facts(category: Category) -> dict[str, Any]:
    """What the audit log keeps of a class: what the administration page may change."""

    def number(value: Decimal | None) -> str | None:
        return None if value is None else f"{value.normalize():f}"

    return {
        "code": category.code,
        "name": category.name_en or category.name_zh,
        "limit_value": number(category.limit_value),
        "limit_unit": str(getattr(category.limit_unit, "value", category.limit_unit)),
        "urgent_limit_value": number(category.urgent_limit_value),
        "urgent_limit_unit": (
            None
            if category.urgent_limit_unit is None
            else str(getattr(category.urgent_limit_unit, "value", category.urgent_limit_unit))
        ),
        "duplicate_radius_m": category.duplicate_radius_m,
        "duplicate_window_hours": category.duplicate_window_hours,
        "active": category.active,
    }


@dataclass(frozen=True)
class CategoryChange:
    """The values an administrator sets on a class (urgent value and unit both None: the
    class has no urgent limit)."""

    limit_value: Decimal
    limit_unit: str
    urgent_limit_value: Decimal | None
    urgent_limit_unit: str | None
    duplicate_radius_m: int
    duplicate_window_hours: int
    active: bool


def _checked_limit(value: Decimal, unit: str, label: str) -> tuple[Decimal, str]:
    """A limit within its unit's range, with at most two decimals (NUMERIC(8, 2))."""
    if unit not in MAX_LIMIT_FOR:
        raise InvalidInput("%(what)s: the unit is hours or days", what=word(label))
    most = MAX_LIMIT_FOR[unit]
    if not value.is_finite() or not 0 < value <= most:
        raise InvalidInput(
            "%(what)s: a number above 0 and at most %(most)s %(unit)s",
            what=word(label),
            most=most,
            unit=word(UNIT_WORDS[unit]),
        )
    if value != value.quantize(_CENT):
        raise InvalidInput("%(what)s: at most two decimals", what=word(label))
    return value.quantize(_CENT), unit


def _checked_count(value: int, most: int, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise InvalidInput(
            "%(what)s: a whole number from 0 to %(most)s", what=word(label), most=most
        )
    return value


def update_category(
    session: Session, code: str, change: CategoryChange
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set a class's limits, duplicate radius and window and active flag, in the caller's
    transaction; its facts before and after (`category_facts`). The new limits apply to
    cases dispatched from then on.

    Raises:
        NotFound: no class with this code.
        InvalidInput: a value out of range, or an urgent limit not shorter than the normal
            one (compared when both are in the same unit); nothing is changed.
    """
    limit_value, limit_unit = _checked_limit(change.limit_value, change.limit_unit, LIMIT_WORD)
    urgent_value: Decimal | None = None
    urgent_unit: str | None = None
    if change.urgent_limit_value is not None or change.urgent_limit_unit is not None:
        if change.urgent_limit_value is None or change.urgent_limit_unit is None:
            raise InvalidInput("urgent limit: give both a number and a unit, or neither")
        urgent_value, urgent_unit = _checked_limit(
            change.urgent_limit_value, change.urgent_limit_unit, URGENT_LIMIT_WORD
        )
        if urgent_unit == limit_unit and urgent_value >= limit_value:
            raise InvalidInput("the urgent limit must be shorter than the normal limit")
    radius = _checked_count(change.duplicate_radius_m, MAX_DUPLICATE_RADIUS_M, RADIUS_WORD)
    window = _checked_count(change.duplicate_window_hours, MAX_DUPLICATE_WINDOW_HOURS, WINDOW_WORD)
    category = session.scalar(select(Category).where(Category.code == code).with_for_update())
    if category is None:
        raise NotFound("no class %(code)s in the catalogue", code=code)
    before = category_facts(category)
    category.limit_value, category.limit_unit = limit_value, limit_unit  # type: ignore[assignment]
    category.urgent_limit_value = urgent_value
    category.urgent_limit_unit = urgent_unit  # type: ignore[assignment]
    category.duplicate_radius_m = radius
    category.duplicate_window_hours = window
    category.active = bool(change.active)
    session.flush()
    return before, category_facts(category)


def load_catalogue_bytes(session: Session, raw: bytes, name: str) -> LoadResult:
    """Load an uploaded catalogue file (`name` names it in the messages) with the checks of
    `flask categories load`, in the caller's transaction.

    Raises:
        InvalidInput: too big, not JSON, not a catalogue, or a wrong class (the first one).
    """
    if len(raw) > MAX_UPLOAD_BYTES:
        raise InvalidInput(
            "%(path)s is larger than %(most)s MB: not a catalogue",
            path=name,
            most=MAX_UPLOAD_BYTES // (1024 * 1024),
        )
    return apply_catalogue(session, parse_catalogue(raw, name))
