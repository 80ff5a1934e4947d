"""Who handles what: the routing rules that pick a responsible unit, and hotspots.

Units themselves are a shared noun and live in the kernel (`gridmgmt.kernel.models`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridmgmt.kernel.db import Base, Timestamped
from gridmgmt.kernel.models import Unit


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
