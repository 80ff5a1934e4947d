"""What is reported: the category catalogue, cases and their append-only event log."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from geoalchemy2 import Geometry, WKBElement
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cases.status import OPEN_STATUSES, CaseStatus
from gridmgmt.kernel.business_calendar import LimitUnit
from gridmgmt.kernel.db import Base, Timestamped, enum_check, sql_in


class CategoryKind(str, Enum):
    """Components (部件) are city objects; events (事件) are conditions or acts."""

    COMPONENT = "component"
    EVENT = "event"


class DispatchState(str, Enum):
    """Delivery state of the dispatch job, kept apart from the case status."""

    NONE = "none"
    QUEUED = "queued"
    DONE = "done"
    MANUAL = "manual"
    FAILED = "failed"


class CaseSource(str, Enum):
    """The channel a report came in through."""

    INSPECTOR = "inspector"
    CITIZEN = "citizen"
    OPEN311 = "open311"
    HOTLINE = "hotline"
    OPERATOR = "operator"


class MajorClass(Base):
    """A major class (大类) of components or events."""

    __tablename__ = "major_classes"
    __table_args__ = (
        UniqueConstraint("kind", "code", name="uq_major_classes_kind_code"),
        CheckConstraint(enum_check("kind", CategoryKind), name="kind"),
        CheckConstraint("code ~ '^[0-9]{2}$'", name="code_digits"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[CategoryKind] = mapped_column(String(16), nullable=False)
    code: Mapped[str] = mapped_column(String(2), nullable=False)
    name_zh: Mapped[str] = mapped_column(Text, nullable=False)
    name_en: Mapped[str] = mapped_column(Text, nullable=False)

    categories: Mapped[list[Category]] = relationship(
        back_populates="major", order_by="Category.minor_code"
    )


class Category(Base):
    """A minor class (小类): what can be reported, with its own time limits and conditions."""

    __tablename__ = "categories"
    __table_args__ = (
        UniqueConstraint("major_id", "minor_code", name="uq_categories_major_minor"),
        CheckConstraint("minor_code ~ '^[0-9]{2}$'", name="minor_digits"),
        CheckConstraint(enum_check("limit_unit", LimitUnit), name="limit_unit"),
        CheckConstraint(
            f"urgent_limit_unit IS NULL OR {enum_check('urgent_limit_unit', LimitUnit)}",
            name="urgent_limit_unit",
        ),
        CheckConstraint("limit_value > 0", name="limit_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(8), unique=True, nullable=False)
    major_id: Mapped[int] = mapped_column(ForeignKey("major_classes.id"), nullable=False)
    minor_code: Mapped[str] = mapped_column(String(2), nullable=False)
    name_zh: Mapped[str] = mapped_column(Text, nullable=False)
    name_en: Mapped[str] = mapped_column(Text, nullable=False)
    description_zh: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    description_en: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    keywords: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default="[]")
    limit_value: Mapped[Decimal] = mapped_column(Numeric(8, 2), nullable=False)
    limit_unit: Mapped[LimitUnit] = mapped_column(String(8), nullable=False)
    urgent_limit_value: Mapped[Decimal | None] = mapped_column(Numeric(8, 2))
    urgent_limit_unit: Mapped[LimitUnit | None] = mapped_column(String(8))
    filing_condition_zh: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    filing_condition_en: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    closing_condition_zh: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    closing_condition_en: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    unit_type: Mapped[str] = mapped_column(String(16), nullable=False)
    duplicate_radius_m: Mapped[int] = mapped_column(Integer, nullable=False, server_default="50")
    duplicate_window_hours: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default="72"
    )
    attributes: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default="[]"
    )
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())

    major: Mapped[MajorClass] = relationship(back_populates="categories")


CASE_NUMBER_SEQ = Sequence("case_number_seq", metadata=Base.metadata)


class Case(Base):
    """A geolocated case. Status is the lifecycle; dispatch_state is the delivery of its job."""

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint(enum_check("status", CaseStatus), name="status"),
        CheckConstraint(enum_check("dispatch_state", DispatchState), name="dispatch_state"),
        CheckConstraint(enum_check("source", CaseSource), name="source"),
        Index("ix_cases_location", "location", postgresql_using="gist"),
        Index("ix_cases_status", "status"),
        Index("ix_cases_unit_status_deadline", "unit_id", "status", "deadline"),
        CheckConstraint(
            "pending_request IS NULL OR pending_request IN ('extension', 'suspension')",
            name="pending_request",
        ),
        # The dispatcher's queries: filed cases waiting for a unit, open cases by deadline.
        Index("ix_cases_filed_waiting", "filed_at", postgresql_where=text("status = 'filed'")),
        # Maps aggregate the cases of a period from this index alone (index-only scans).
        Index(
            "ix_cases_map",
            "reported_at",
            postgresql_include=[
                "cell_id",
                "community_id",
                "category_id",
                "status",
                "source",
                "deadline",
                "closed_at",
                "handled_at",
            ],
        ),
        # Evaluation counts the cases due, and those handled, in a period from these alone.
        Index(
            "ix_cases_deadline",
            "deadline",
            postgresql_include=["unit_id", "community_id", "urgent", "closed_at", "handled_at"],
        ),
        Index(
            "ix_cases_handled_at",
            "handled_at",
            postgresql_include=[
                "unit_id",
                "community_id",
                "urgent",
                "rework_count",
                "dispatched_at",
            ],
        ),
        Index("ix_cases_reported_at_id", "reported_at", "id"),  # exports' and listings' keyset
        Index(  # the reports merged into a case (and the self-reference's checks on delete)
            "ix_cases_merged_into_id",
            "merged_into_id",
            postgresql_where=text("merged_into_id IS NOT NULL"),
        ),
        Index(  # the open cases near a point: the inbox's duplicate suggestions
            "ix_cases_open_location",
            "location",
            postgresql_using="gist",
            postgresql_where=text(
                f"{sql_in('status', sorted(OPEN_STATUSES))} AND merged_into_id IS NULL"
            ),
        ),
        Index(
            "ix_cases_open_deadline",
            "deadline",
            postgresql_where=text("status IN ('dispatched', 'in_progress')"),
            postgresql_include=["unit_id", "community_id", "urgent", "dispatched_at"],
        ),
        Index(  # new reports, oldest first: the operator's inbox, the inspectors' tasks
            "ix_cases_new_reports",
            "reported_at",
            postgresql_where=text("status IN ('reported', 'verified')"),
        ),
        Index(  # the inbox: handled cases, oldest handling first
            "ix_cases_handled_waiting",
            "handled_at",
            postgresql_where=text("status = 'handled'"),
        ),
        Index(  # the inbox: cases being checked or checked, by id
            "ix_cases_on_check", "id", postgresql_where=text("status IN ('checking', 'checked')")
        ),
        Index(  # Open311 listings by service and period, newest first
            "ix_cases_category_reported_at", "category_id", "reported_at", "id"
        ),
        # The staff's case search (migration 0020): a piece of the address (pg_trgm), a
        # number's prefix whatever the collation, the reporter's phone (digits) or e-mail.
        Index(
            "ix_cases_address_trgm",
            "address",
            postgresql_using="gin",
            postgresql_ops={"address": "gin_trgm_ops"},
        ),
        Index("ix_cases_number_pattern", "number", postgresql_ops={"number": "text_pattern_ops"}),
        Index(
            "ix_cases_contact_phone",
            text("regexp_replace(contact ->> 'phone', '[^0-9]', '', 'g')"),
            postgresql_where=text("contact ? 'phone'"),
        ),
        Index(
            "ix_cases_contact_email",
            text("lower(contact ->> 'email')"),
            postgresql_where=text("contact ? 'email'"),
        ),
        Index(  # the dispatcher's board: extension and suspension requests waiting
            "ix_cases_pending_request",
            "updated_at",
            postgresql_where=text("pending_request IS NOT NULL"),
        ),
        Index(  # the dispatcher's board: cases still running past their deadline
            "ix_cases_overdue_open",
            "deadline",
            postgresql_where=text(
                "overdue_at IS NOT NULL AND status IN ('dispatched', 'in_progress')"
            ),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    number: Mapped[str] = mapped_column(
        String(24),
        unique=True,
        nullable=False,
        server_default=text("next_case_number()"),
    )
    source: Mapped[CaseSource] = mapped_column(String(16), nullable=False)
    status: Mapped[CaseStatus] = mapped_column(String(16), nullable=False)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), nullable=False)
    urgent: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    address: Mapped[str | None] = mapped_column(Text)
    location: Mapped[WKBElement] = mapped_column(
        Geometry("POINT", srid=4326, spatial_index=False), nullable=False
    )
    cell_id: Mapped[int | None] = mapped_column(ForeignKey("grid_cells.id"))
    community_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    routing_rule_id: Mapped[int | None] = mapped_column(ForeignKey("routing_rules.id"))
    reporter_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    contact: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    media_url: Mapped[str | None] = mapped_column(Text)  # a photo the reporter's app hosts
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rework_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Re-handlings (重办) after a follow-up complaint judged reasonable (migration 0024): apart
    # from rework after a failed on-site check.
    rehandle_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    check_inspector_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    pending_request: Mapped[str | None] = mapped_column(String(16))
    pending_value: Mapped[Decimal | None] = mapped_column(Numeric(8, 2))
    pending_unit: Mapped[str | None] = mapped_column(String(8))
    suspended_remaining_hours: Mapped[Decimal | None] = mapped_column(Numeric(10, 4))
    warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    overdue_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatch_state: Mapped[DispatchState] = mapped_column(
        String(16), nullable=False, server_default=DispatchState.NONE.value
    )
    dispatch_error: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    filed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    # A report sent from a phone's outbox (migration 0025): the UUID the phone gave it (a
    # repeat finds this case), the SHA-256 of what it said (a repeat saying something else is
    # refused), when the phone captured it (reported_at is when it arrived) and how precise
    # the phone said its position was, in metres.
    submission_uuid: Mapped[str | None] = mapped_column(UUID(as_uuid=False), unique=True)
    submission_digest: Mapped[str | None] = mapped_column(String(64))
    captured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gps_accuracy_m: Mapped[float | None] = mapped_column(Float)

    category: Mapped[Category] = relationship()
    events: Mapped[list[CaseEvent]] = relationship(order_by="CaseEvent.id", viewonly=True)
    photos: Mapped[list[Photo]] = relationship(order_by="Photo.id", viewonly=True)

    __mapper_args__ = {"version_id_col": version}


class PhotoKind(str, Enum):
    """When a photo was taken: with the report, after handling, or at the on-site check."""

    BEFORE = "before"
    AFTER = "after"
    CHECK = "check"


class Photo(Timestamped, Base):
    """A photo of a case, stored on disk by content hash (EXIF stripped) with a thumbnail."""

    __tablename__ = "photos"
    __table_args__ = (CheckConstraint(enum_check("kind", PhotoKind), name="kind"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), nullable=False, index=True)
    # The event it came with; no foreign key: case_events is partitioned (migration 0010).
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[PhotoKind] = mapped_column(String(8), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    thumb_path: Mapped[str] = mapped_column(Text, nullable=False)
    mime: Mapped[str] = mapped_column(String(32), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    # A photo sent on its own from a phone's outbox (migration 0025): the UUID the phone gave
    # it (a repeat stores nothing new) and when the phone took it.
    client_uuid: Mapped[str | None] = mapped_column(UUID(as_uuid=False), unique=True)
    captured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CaseEvent(Timestamped, Base):
    """One status change of a case. Append-only: a trigger refuses UPDATE and DELETE."""

    __tablename__ = "case_events"
    __table_args__ = (
        Index("ix_case_events_action_created_at", "action", "created_at"),
        Index(  # the notes staff marked public: Open311 listings and /track (migration 0035)
            "ix_case_events_public_notes",
            "case_id",
            "id",
            postgresql_where=text("note <> '' AND data ? 'public_note'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16), nullable=False)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_role: Mapped[str] = mapped_column(String(16), nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
