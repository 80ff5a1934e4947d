"""What the supervisors' side keeps besides the cases: the state of its rollups."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from gridmgmt.kernel.db import Base


class RollupState(Base):
    """How far a rollup (a materialised view) is complete: days before `through` are in it."""

    __tablename__ = "rollup_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    through: Mapped[date] = mapped_column(Date, nullable=False)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
