"""The shared nouns: responsible units, people and their roles, API keys, business calendars."""

from __future__ import annotations

import secrets
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    String,
    Text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridmgmt.kernel.db import Base, Timestamped, enum_check

if TYPE_CHECKING:  # the relationship is resolved by name: the kernel imports nothing above it
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

    community: Mapped[Area | None] = relationship("Area")


class Role(str, Enum):
    """Each person has exactly one role; supervision and handling are different roles."""

    CITIZEN = "citizen"
    INSPECTOR = "inspector"
    OPERATOR = "operator"
    DISPATCHER = "dispatcher"
    UNIT_STAFF = "unit_staff"
    LEADER = "leader"
    ADMIN = "admin"


def new_session_token() -> str:
    """A fresh random session token (256 bits)."""
    return secrets.token_urlsafe(32)


class User(Timestamped, Base):
    """A person who signs in. Unit staff are bound to exactly one unit; nobody else is."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(enum_check("role", Role), name="role"),
        CheckConstraint("(role = 'unit_staff') = (unit_id IS NOT NULL)", name="unit_staff_unit"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    display_name: Mapped[str | None] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[Role] = mapped_column(String(16), nullable=False)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())
    # Part of every session's key (`get_id`): a new one ends all the user's sessions.
    session_token: Mapped[str] = mapped_column(
        String(64), nullable=False, default=new_session_token
    )
    totp_secret: Mapped[str | None] = mapped_column(String(32))  # the second factor, if set
    last_signin_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    unit: Mapped[Unit | None] = relationship()

    # Flask-Login's user protocol.
    @property
    def is_active(self) -> bool:
        """Inactive users cannot sign in."""
        return self.active

    @property
    def is_authenticated(self) -> bool:
        """A loaded user is a signed-in user."""
        return True

    @property
    def is_anonymous(self) -> bool:
        """Never anonymous."""
        return False

    def get_id(self) -> str:
        """The session key: the id and the current session token (Flask-Login's alternative
        token), so that a new token ends every session signed in with the old one."""
        return f"{self.id}:{self.session_token}"

    def end_sessions(self) -> None:
        """Sign the user out everywhere: every session key made before this one is refused."""
        self.session_token = new_session_token()


class ApiKey(Timestamped, Base):
    """An Open311 client key; only its SHA-256 hash is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(8), nullable=False)
    trusted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # As of the last fold of the uses counted in Redis (gridmgmt.kernel.key_uses).
    use_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # refused since

    @property
    def usable(self) -> bool:
        """Whether requests with this key are accepted (active and never revoked)."""
        return self.active and self.revoked_at is None


class CalendarRecord(Timestamped, Base):
    """A city's business calendar: time zone, working periods and weekend days."""

    __tablename__ = "business_calendars"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    work_periods: Mapped[list[list[str]]] = mapped_column(JSONB, nullable=False)
    weekend: Mapped[list[int]] = mapped_column(JSONB, nullable=False)

    days: Mapped[list[CalendarDay]] = relationship(
        cascade="all, delete-orphan", order_by="CalendarDay.day"
    )

    def to_dict(self) -> dict[str, Any]:
        """Return the calendar in the JSON format `BusinessCalendar.from_dict` reads."""
        return {
            "code": self.code,
            "name": self.name,
            "timezone": self.timezone,
            "work_periods": self.work_periods,
            "weekend": self.weekend,
            "holidays": {d.day.isoformat(): d.name for d in self.days if not d.is_workday},
            "workdays": {d.day.isoformat(): d.name for d in self.days if d.is_workday},
        }


class CalendarDay(Base):
    """An exception to the weekly pattern: a public holiday or a make-up working day (调休)."""

    __tablename__ = "calendar_days"

    calendar_id: Mapped[int] = mapped_column(
        ForeignKey("business_calendars.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    is_workday: Mapped[bool] = mapped_column(Boolean, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
