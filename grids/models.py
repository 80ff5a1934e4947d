"""Territory: administrative areas (district → street → community) and unit grid cells."""

from __future__ import annotations

from enum import Enum

from geoalchemy2 import Geometry, WKBElement
from sqlalchemy import CheckConstraint, Computed, Double, Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridmgmt.kernel.db import Base, Timestamped, enum_check


class AreaLevel(str, Enum):
    """Levels of the administrative hierarchy, top to bottom."""

    DISTRICT = "district"
    STREET = "street"
    COMMUNITY = "community"


class Area(Timestamped, Base):
    """A district (区), street (街道) or community (社区) with its boundary."""

    __tablename__ = "areas"
    __table_args__ = (
        CheckConstraint(enum_check("level", AreaLevel), name="level"),
        Index("ix_areas_geom", "geom", postgresql_using="gist"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[AreaLevel] = mapped_column(String(16), nullable=False)
    code: Mapped[str] = mapped_column(String(12), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"), index=True)
    geom: Mapped[WKBElement] = mapped_column(
        Geometry("MULTIPOLYGON", srid=4326, spatial_index=False), nullable=False
    )
    area_m2: Mapped[float] = mapped_column(Float, nullable=False)

    parent: Mapped[Area | None] = relationship(remote_side=[id])


class GridCell(Timestamped, Base):
    """A unit grid cell (单元网格): one polygon, owned by exactly one community."""

    __tablename__ = "grid_cells"
    __table_args__ = (
        CheckConstraint("code ~ '^[0-9]{14}([0-9])?$'", name="code_digits"),
        Index("ix_grid_cells_geom", "geom", postgresql_using="gist"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(15), unique=True, nullable=False)
    community_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), nullable=False, index=True)
    geom: Mapped[WKBElement] = mapped_column(
        Geometry("POLYGON", srid=4326, spatial_index=False), nullable=False
    )
    area_m2: Mapped[float] = mapped_column(Float, nullable=False)
    # The point on its surface where the map puts its marker, stored by PostgreSQL (0030).
    centre_lon: Mapped[float] = mapped_column(
        Double, Computed("ST_X(ST_PointOnSurface(geom))", persisted=True)
    )
    centre_lat: Mapped[float] = mapped_column(
        Double, Computed("ST_Y(ST_PointOnSurface(geom))", persisted=True)
    )

    community: Mapped[Area] = relationship()
