"""What the supervisors' side keeps besides the cases: its rollups of whole past days and their
state, and the indexes its queries need on the cases and their events (migrations 0017, 0021,
0026 and 0027)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cases.models import Case, CaseEvent
from cases.status import DEADLINE_RUNS, OPEN_STATUSES
from gridmgmt.kernel.db import Base, sql_in


class RollupState(Base):
    """How far the rollups are complete: days before `through` are in them."""

    __tablename__ = "rollup_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    through: Mapped[date] = mapped_column(Date, nullable=False)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The response limit the three rates were counted with (rate_days only).
    response_seconds: Mapped[float | None] = mapped_column(Double)


# The rollups: counts of whole past days, written only by the owner's refresh function
# (`refresh_evaluation_rollup`, migration 0026), which recounts the days in `rollup_dirty`
# (written by a trigger on `cases` when a counted column changes). The app's role reads them.
def _counts(*names: str) -> list[Column[int]]:
    return [Column(name, BigInteger) for name in names]


def _unit_key(table: str, bucket: str) -> Index:
    """A rollup's unique key: its day or month, unit, community and urgency (NULLs equal)."""
    return Index(
        f"ix_{table}_key",
        bucket,
        "unit_id",
        "community_id",
        "urgent",
        unique=True,
        postgresql_nulls_not_distinct=True,
    )


def _evaluation_counts() -> list[Column[Any]]:
    return [
        Column("unit_id", Integer),
        Column("community_id", Integer),
        Column("urgent", Boolean),
        *_counts("due", "closed", "closed_on_time", "handled", "reworked", "rework_count"),
        Column("handling_hours", Numeric),
    ]


evaluation_days = Table(  # per deadline day (due, closed...) and handling day (handled...)
    "evaluation_days",
    Base.metadata,
    Column("day", Date),
    *_evaluation_counts(),
    _unit_key("evaluation_days", "day"),
)
map_cell_days = Table(  # per report day and cell, the last 62 days
    "map_cell_days",
    Base.metadata,
    Column("day", Date),
    Column("cell_id", Integer),
    Column("community_id", Integer),
    *_counts("n", "due_closed", "on_time"),
    Index(
        "ix_map_cell_days_key",
        "day",
        "cell_id",
        "community_id",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
)
map_cell_months = Table(  # per report month and cell
    "map_cell_months",
    Base.metadata,
    Column("month", Date),
    Column("cell_id", Integer),
    Column("community_id", Integer),
    *_counts("n", "due_closed", "on_time"),
    Index(
        "ix_map_cell_months_key",
        "month",
        "cell_id",
        "community_id",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
)
case_days = Table(  # per report day and class
    "case_days",
    Base.metadata,
    Column("day", Date),
    Column("category_id", Integer),
    *_counts("n"),
    Index("ix_case_days_key", "day", "category_id", unique=True),
)
RATE_COUNTS = ("dispatches", "responded", "fixed", "not_fixed", "satisfied",
               "basically_satisfied", "dissatisfied", "closings", "reachable", "followed_up",
               "rehandled")  # fmt: skip
RATE_DAY_COUNTS = (*RATE_COUNTS, "returns")  # and the returns to the dispatcher (0028)


def _rate_counts() -> list[Column[Any]]:
    return [
        Column("unit_id", Integer),
        Column("community_id", Integer),
        Column("urgent", Boolean),
        *[Column(name, BigInteger, nullable=False) for name in RATE_DAY_COUNTS],
    ]


rate_days = Table(  # the three rates' counts per day (migrations 0027, 0028): each at its moment
    "rate_days",
    Base.metadata,
    Column("day", Date, nullable=False),
    *_rate_counts(),
    _unit_key("rate_days", "day"),
)
# The same rows summed by month (migration 0029), kept equal to the daily tables' sums.
evaluation_months = Table(
    "evaluation_months",
    Base.metadata,
    Column("month", Date, nullable=False),
    *_evaluation_counts(),
    _unit_key("evaluation_months", "month"),
)
rate_months = Table(
    "rate_months",
    Base.metadata,
    Column("month", Date, nullable=False),
    *_rate_counts(),
    _unit_key("rate_months", "month"),
)
month_dirty = Table(  # the months whose days changed since the last refresh (triggers write it)
    "month_dirty",
    Base.metadata,
    Column("id", BigInteger, primary_key=True),
    Column("rollup", Text, nullable=False),
    Column("month", Date, nullable=False),
)
# The whole city's sums per day (migration 0034), for the dashboard's weekly trends, kept
# equal to the daily tables' sums as the monthly ones are.
evaluation_day_totals = Table(
    "evaluation_day_totals",
    Base.metadata,
    Column("day", Date, primary_key=True),
    *[c for c in _evaluation_counts() if c.name not in ("unit_id", "community_id", "urgent")],
)
rate_day_totals = Table(
    "rate_day_totals",
    Base.metadata,
    Column("day", Date, primary_key=True),
    *[Column(name, BigInteger, nullable=False) for name in RATE_DAY_COUNTS],
)
day_totals_dirty = Table(  # the days whose daily rows changed since the last refresh
    "day_totals_dirty",
    Base.metadata,
    Column("id", BigInteger, primary_key=True),
    Column("rollup", Text, nullable=False),
    Column("day", Date, nullable=False),
)


# The map's running sums (migration 0033): per month and cell, each count added up from the
# first whole month of the daily rollup's 400 days to each day of the month (array index: the
# day); the open, overdue and due open cases as of the refresh's moment...
MAP_SUMS = ("n", "due_closed", "on_time", "open", "overdue", "due")
map_cell_sums = Table(
    "map_cell_sums",
    Base.metadata,
    Column("month", Date, nullable=False),
    Column("cell_id", Integer, nullable=False),
    Column("community_id", Integer),
    *[Column(name, ARRAY(Integer), nullable=False) for name in MAP_SUMS],
    Index("ix_map_cell_sums_key", "month", "cell_id", "community_id", unique=True,
          postgresql_nulls_not_distinct=True),
)  # fmt: skip
# What the sums are written again from (migration 0037): the daily rollup's rows its refresh
# deleted (-1) and inserted (+1), and the open cases per day and place as of the last refresh
# (a place: a cell and its community, -1 for none).
map_sums_changes = Table(
    "map_sums_changes",
    Base.metadata,
    Column("sign", SmallInteger, nullable=False),
    Column("day", Date, nullable=False),
    Column("cell_id", Integer, nullable=False),
    Column("community", Integer, nullable=False),
    *_counts("n", "due_closed", "on_time"),
)
map_open_days = Table(
    "map_open_days",
    Base.metadata,
    Column("day", Date, nullable=False),
    Column("cell_id", Integer, nullable=False),
    Column("community", Integer, nullable=False),
    *[Column(name, Integer, nullable=False) for name in ("open", "overdue", "due")],
)
# ...and every change to an open case since, as its state before (-1) and after (+1): a trigger
# on `cases` appends, the refresh empties it in the statement that recounts.
map_open_log = Table(
    "map_open_log",
    Base.metadata,
    Column("sign", SmallInteger, nullable=False),
    Column("reported_at", DateTime(timezone=True), nullable=False),
    Column("cell_id", Integer),  # none: a case outside every cell that a unit has (0038)
    Column("community_id", Integer),
    Column("status", String(16), nullable=False),
    Column("deadline", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("unit_id", Integer),  # and what the evaluation's overdue count needs (0038)
    Column("urgent", Boolean),
    Column("dispatched_at", DateTime(timezone=True)),
)
# The evaluation's cases in a unit's hands past their deadline, per unit, community and
# urgency, as of the map's refresh (migration 0038).
overdue_units = Table(
    "overdue_units",
    Base.metadata,
    Column("unit_id", Integer, nullable=False),
    Column("community_id", Integer),
    Column("urgent", Boolean),
    Column("overdue", Integer, nullable=False),
)
rate_dirty = Table(  # the days whose rates changed since the last refresh (triggers write it)
    "rate_dirty",
    Base.metadata,
    Column("id", BigInteger, primary_key=True),
    Column("day", Date, nullable=False),
)
rollup_dirty = Table(  # the days whose counts changed since the last refresh
    "rollup_dirty",
    Base.metadata,
    Column("id", BigInteger, primary_key=True),
    Column("day", Date, nullable=False),
)


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
# The evaluation's suspended cases, with what it groups them by (migration 0028).
Index(
    "ix_cases_suspended",
    Case.unit_id,
    postgresql_include=["community_id", "urgent", "dispatched_at"],
    postgresql_where=text("status = 'suspended'"),
)
# The map's open cases by report time: what its rollups leave to be counted live.
Index(
    "ix_cases_open_reported_at",
    Case.reported_at,
    postgresql_include=["cell_id", "community_id", "status", "deadline", "closed_at"],
    postgresql_where=text(sql_in("status", sorted(OPEN_STATUSES))),
)
# The open cases by deadline, with what the map counts of them: those whose deadline passed
# since its last refresh of the open cases (migration 0031).
Index(
    "ix_cases_map_open_deadline",
    Case.deadline,
    postgresql_include=["reported_at", "cell_id", "community_id", "status", "closed_at"],
    postgresql_where=text(f"{sql_in('status', sorted(OPEN_STATUSES))} AND deadline IS NOT NULL"),
)
# The map's overdue markers, the most overdue first: the running cases by deadline, with what
# picks a period's and what a marker shows, so the markers are read from the index alone
# (migrations 0021, 0030).
Index(
    "ix_cases_running_deadline",
    Case.deadline,
    postgresql_include=["reported_at", "id", "number", "category_id", "location"],
    postgresql_where=text(sql_in("status", sorted(DEADLINE_RUNS))),
)
