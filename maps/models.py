"""What the supervisors' side keeps besides the cases: the state of its rollups, and the
indexes its queries need on the cases and their events (migrations 0017 and 0021)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, DateTime, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from cases.models import Case, CaseEvent
from cases.status import DEADLINE_RUNS, OPEN_STATUSES
from gridmgmt.kernel.db import Base, sql_in


class RollupState(Base):
    """How far a rollup (a materialised view) is complete: days before `through` are in it."""

    __tablename__ = "rollup_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    through: Mapped[date] = mapped_column(Date, nullable=False)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


# The evaluation's inspectors: each one's reports in a period (and the filed ones among them)...
Index(
    "ix_cases_reporter_reported_at",
    Case.reporter_id,
    Case.reported_at,
    postgresql_include=["filed_at"],
    postgresql_where=text("reporter_id IS NOT NULL"),
)
# ...and each one's on-site checks in a period.
Index(
    "ix_case_events_checks",
    CaseEvent.actor_id,
    CaseEvent.created_at,
    postgresql_include=["case_id"],
    postgresql_where=text("action IN ('check_pass', 'check_fail')"),
)
# The map's open cases by report time: what its rollups leave to be counted live.
Index(
    "ix_cases_open_reported_at",
    Case.reported_at,
    postgresql_include=["cell_id", "community_id", "status", "deadline", "closed_at"],
    postgresql_where=text(sql_in("status", sorted(OPEN_STATUSES))),
)
# The map's overdue markers, the most overdue first: the running cases by deadline, with what
# picks a period's and names the case, so only the markers shown are read from the table
# (migration 0021).
Index(
    "ix_cases_running_deadline",
    Case.deadline,
    postgresql_include=["reported_at", "id"],
    postgresql_where=text(sql_in("status", sorted(DEADLINE_RUNS))),
)
