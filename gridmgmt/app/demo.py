"""The demo city: 8 real Los Angeles neighborhood councils, the catalogue, a login per role."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shapely.geometry import mapping
from shapely.ops import unary_union
from sqlalchemy import select
from sqlalchemy.orm import Session

from cases.catalogue import load_catalogue
from cases.models import Category
from dispatch.models import RoutingRule
from gridmgmt.kernel.auth import create_api_key, create_user, hash_api_key
from gridmgmt.kernel.calendar_store import load_calendar, shipped_calendar
from gridmgmt.kernel.models import Role, Unit, UnitKind, UnitType
from grids import services as grids
from grids.geojson import load_layer, polygon_features
from grids.models import Area

DEMO_LAYER = Path(__file__).parent.parent.parent / "grids" / "data" / "demo_la_central.geojson"
DISTRICT_CODE = "990100"
STREET_CODE = "990100006"
DEMO_PASSWORD = "gridmgmt-demo"
DEMO_API_KEY = "demo-open311-key-not-for-production"
CELL_SIZE_M = 100.0


@dataclass(frozen=True)
class DemoLogin:
    """A seeded account, printed by `make run`."""

    username: str
    role: Role
    unit_code: str | None = None


def demo_logins(first_community: str) -> list[DemoLogin]:
    """One account per role; unit staff for a community and for a department."""
    return [
        DemoLogin("inspector", Role.INSPECTOR),
        DemoLogin("operator", Role.OPERATOR),
        DemoLogin("dispatcher", Role.DISPATCHER),
        DemoLogin("staff", Role.UNIT_STAFF, first_community),
        DemoLogin("water", Role.UNIT_STAFF, "DEPT-WATER"),
        DemoLogin("leader", Role.LEADER),
        DemoLogin("admin", Role.ADMIN),
        DemoLogin("citizen", Role.CITIZEN),
    ]


def is_seeded(session: Session) -> bool:
    """True once the demo district exists."""
    return session.scalar(select(Area.id).where(Area.code == DISTRICT_CODE)) is not None


def seed_demo(session: Session, say: Callable[[str], None] = print) -> list[DemoLogin]:
    """Seed the demo city in the caller's transaction; a second call changes nothing."""
    layer = load_layer(DEMO_LAYER)
    if is_seeded(session):
        say("demo city already seeded")
        return demo_logins(_first_community(session))
    for code in ("us_la", "cn"):
        load_calendar(session, shipped_calendar(code))
    result = load_catalogue(session)
    say(f"catalogue: {result.created} categories")
    whole = unary_union([f.geometry for f in polygon_features(layer)])
    for level, code, name, parent in (
        ("district", DISTRICT_CODE, "Los Angeles", None),
        ("street", STREET_CODE, "Central 2", DISTRICT_CODE),
    ):
        feature = {"type": "Feature", "properties": {"code": code}, "geometry": mapping(whole)}
        feature["properties"]["name"] = name
        parent_layer = {"type": "FeatureCollection", "features": [feature]}
        grids.import_units(session, parent_layer, level, "code", "name", parent_code=parent)
    imported = grids.import_units(
        session, layer, "community", "nc_id", "name", parent_code=STREET_CODE
    )
    say(f"communities: {imported.created}")
    cells = grids.generate_cells(session, CELL_SIZE_M)
    say(f"unit grid cells: {cells:,} of {CELL_SIZE_M:g} m")
    departments = seed_departments(session)
    rules = seed_routing_rules(session, departments)
    say(f"departments: {len(departments)}, routing rules: {rules}")
    first = _first_community(session)
    logins = demo_logins(first)
    for login in logins:
        create_user(session, login.username, DEMO_PASSWORD, login.role, login.unit_code)
    issued = create_api_key(session, "demo-app")
    issued.api_key.key_hash = hash_api_key(DEMO_API_KEY)
    issued.api_key.prefix = DEMO_API_KEY[:8]
    session.flush()
    return logins


def _first_community(session: Session) -> str:
    code = session.scalar(
        select(Area.code).where(Area.level == "community").order_by(Area.code).limit(1)
    )
    return code or ""


def seed_departments(session: Session) -> dict[str, Unit]:
    """One department per specialist unit type."""
    departments: dict[str, Unit] = {}
    for unit_type in UnitType:
        if unit_type == UnitType.COMMUNITY:
            continue
        unit = Unit(
            code=f"DEPT-{unit_type.value.upper()}",
            name=f"{unit_type.value.capitalize()} department",
            kind=UnitKind.DEPARTMENT.value,
            unit_type=unit_type.value,
        )
        session.add(unit)
        departments[unit_type.value] = unit
    session.flush()
    return departments


def seed_routing_rules(session: Session, departments: dict[str, Unit]) -> int:
    """Send each class a department owns to that department, city-wide."""
    count = 0
    for category in session.scalars(select(Category).order_by(Category.code)):
        unit = departments.get(category.unit_type)
        if unit is not None:
            session.add(RoutingRule(category_id=category.id, unit=unit, priority=100))
            count += 1
    session.flush()
    return count
