"""Who handles what: responsible units and the routing rules that pick them."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridmgmt.db import Base, Timestamped, enum_check
from grids.models import Area


class UnitKind(str, Enum):
    """A community unit owns territory; a department owns categories."""

    COMMUNITY = "community"
    DEPARTMENT = "department"


class UnitType(str, Enum):
    """What a unit does; categories name the type that usually handles them."""

    COMMUNITY = "community"
    SANITATION = "sanitation"
    WATER = "water"
    DRAINAGE = "drainage"
    GAS = "gas"
    POWER = "power"
    TELECOM = "telecom"
    ROADS = "roads"
    TRAFFIC = "traffic"
    LIGHTING = "lighting"
    GREENERY = "greenery"
    HOUSING = "housing"
    ENFORCEMENT = "enforcement"
    EMERGENCY = "emergency"


class Unit(Timestamped, Base):
    """A responsible (handling) unit: a community or a specialist department."""

    __tablename__ = "units"
    __table_args__ = (
        CheckConstraint(enum_check("kind", UnitKind), name="kind"),
        CheckConstraint(enum_check("unit_type", UnitType), name="unit_type"),
        CheckConstraint(
            "(kind = 'community') = (community_id IS NOT NULL)", name="community_owns_area"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[UnitKind] = mapped_column(String(16), nullable=False)
    unit_type: Mapped[UnitType] = mapped_column(String(16), nullable=False)
    community_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())

    community: Mapped[Area | None] = relationship()


class RoutingRule(Timestamped, Base):
    """(category, optional area) → unit; the highest priority matching rule wins."""

    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(
        ForeignKey("categories.id"), nullable=False, index=True
    )
    area_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default="100")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())
    note: Mapped[str | None] = mapped_column(Text)

    unit: Mapped[Unit] = relationship()


class Hotspot(Base):
    """A cell or community whose new cases in a window far exceed its own baseline."""

    __tablename__ = "hotspots"
    __table_args__ = (
        CheckConstraint("(cell_id IS NULL) <> (area_id IS NULL)", name="cell_or_area"),
        UniqueConstraint("cell_id", "area_id", "window_end", name="uq_hotspots_place_window"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    cell_id: Mapped[int | None] = mapped_column(ForeignKey("grid_cells.id"))
    area_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    window_end: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    baseline: Mapped[float] = mapped_column(Float, nullable=False)
