"""The administrators' audit log: every change made through the admin pages, append-only.

One row per change, written by `record_change` in the same transaction as the change itself,
so the two commit or roll back together: a change without its row (or a row without its
change) cannot happen. Each keeps who (the account and its username as it was then), when,
the action, the target (type and id) and the target's facts before and after, as JSONB. Never
a password, a password hash, a second factor's secret or an api key's secret: callers pass
the facts `user_facts` and `key_facts` pick out. The table is append-only (a trigger refuses
UPDATE, DELETE and TRUNCATE; migration 0011; the app role may only SELECT and INSERT).
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, func, or_, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from gridmgmt.kernel.db import Base
from gridmgmt.kernel.errors import N_
from gridmgmt.kernel.models import ApiKey, User


class AuditAction(str, Enum):
    """What an administrator did."""

    USER_CREATED = "user_created"
    USER_ROLE_CHANGED = "user_role_changed"  # role and/or unit
    USER_DEACTIVATED = "user_deactivated"
    USER_ACTIVATED = "user_activated"
    USER_PASSWORD_RESET = "user_password_reset"
    USER_UNLOCKED = "user_unlocked"
    API_KEY_CREATED = "api_key_created"
    API_KEY_CHANGED = "api_key_changed"  # name and/or trusted
    API_KEY_REVOKED = "api_key_revoked"
    UNIT_CREATED = "unit_created"
    UNIT_CHANGED = "unit_changed"  # name, type and/or active
    RULE_CREATED = "rule_created"
    RULE_CHANGED = "rule_changed"  # category, area, unit, priority, note and/or active
    CATEGORY_CHANGED = "category_changed"  # limits, duplicate radius and window, active
    CATALOGUE_LOADED = "catalogue_loaded"
    CALENDAR_LOADED = "calendar_loaded"
    CALENDAR_DAY_CHANGED = "calendar_day_changed"  # a holiday or make-up working day
    TERRITORY_IMPORTED = "territory_imported"
    CELLS_GENERATED = "cells_generated"
    SETTINGS_CHANGED = "settings_changed"


# What the audit page calls each action (`_(label)` there).
ACTION_LABELS: dict[AuditAction, str] = {
    AuditAction.USER_CREATED: N_("Person created"),
    AuditAction.USER_ROLE_CHANGED: N_("Role or unit changed"),
    AuditAction.USER_DEACTIVATED: N_("Person deactivated"),
    AuditAction.USER_ACTIVATED: N_("Person reactivated"),
    AuditAction.USER_PASSWORD_RESET: N_("Password reset"),
    AuditAction.USER_UNLOCKED: N_("Sign-in lock lifted"),
    AuditAction.API_KEY_CREATED: N_("API key created"),
    AuditAction.API_KEY_CHANGED: N_("API key changed"),
    AuditAction.API_KEY_REVOKED: N_("API key revoked"),
    AuditAction.UNIT_CREATED: N_("Unit created"),
    AuditAction.UNIT_CHANGED: N_("Unit changed"),
    AuditAction.RULE_CREATED: N_("Routing rule created"),
    AuditAction.RULE_CHANGED: N_("Routing rule changed"),
    AuditAction.CATEGORY_CHANGED: N_("Class changed"),
    AuditAction.CATALOGUE_LOADED: N_("Catalogue loaded"),
    AuditAction.CALENDAR_LOADED: N_("Calendar loaded"),
    AuditAction.CALENDAR_DAY_CHANGED: N_("Calendar day changed"),
    AuditAction.TERRITORY_IMPORTED: N_("Territory imported"),
    AuditAction.CELLS_GENERATED: N_("Cells generated"),
    AuditAction.SETTINGS_CHANGED: N_("City settings changed"),
}


class AdminAudit(Base):
    """One change made by an administrator."""

    __tablename__ = "admin_audit"
    __table_args__ = (
        Index("ix_admin_audit_at", text("at DESC")),
        Index("ix_admin_audit_action", "action", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target_type: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


def user_facts(user: User) -> dict[str, Any]:
    """What the audit log keeps of a person: no password hash, no second factor's secret."""
    return {
        "username": user.username,
        "display_name": user.display_name,
        "role": str(getattr(user.role, "value", user.role)),
        "unit": user.unit.code if user.unit is not None else None,
        "active": user.active,
    }


def key_facts(key: ApiKey) -> dict[str, Any]:
    """What the audit log keeps of an api key: its name, prefix and state, never its hash."""
    return {
        "name": key.name,
        "prefix": key.prefix,
        "trusted": key.trusted,
        "revoked": key.revoked_at is not None,
    }


def record_change(
    session: Session,
    actor: User | None,
    action: AuditAction,
    target_type: str,
    target_id: str | int | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AdminAudit:
    """Add the audit row of a change to the caller's transaction (it commits with the change).

    Args:
        actor: the administrator (None: the system, recorded as "system").
        action: what was done.
        target_type: the kind of thing changed ("user", "api_key", ...).
        target_id: its id.
        before: its facts before the change (None: it did not exist).
        after: its facts after the change.
    """
    row = AdminAudit(
        actor_id=actor.id if actor is not None else None,
        actor=actor.username if actor is not None else "system",
        action=action.value,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        before=before,
        after=after,
    )
    session.add(row)
    session.flush()
    return row


def _like_prefix(text_: str) -> str:
    """`text_` as a LIKE prefix pattern, its own wildcards escaped."""
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def find_changes(
    session: Session, who: str = "", action: str = "", before: int | None = None, size: int = 100
) -> tuple[list[AdminAudit], int | None]:
    """A page of changes, newest first, and the id the next page starts below (None: last).

    Args:
        who: only changes whose actor, or the person, key or thing changed (by its name or
            code; a routing rule by its class), starts with this (case-insensitive).
        action: only this action ("" or unknown: all).
        before: only changes with a smaller id (the previous page's last).
        size: changes a page.
    """
    query = select(AdminAudit)
    if who:
        pattern = _like_prefix(who)
        query = query.where(
            or_(
                AdminAudit.actor.ilike(pattern, escape="\\"),
                AdminAudit.after["username"].astext.ilike(pattern, escape="\\"),
                AdminAudit.after["name"].astext.ilike(pattern, escape="\\"),
                # units, classes, calendars and areas by their code; rules by their class
                AdminAudit.after["code"].astext.ilike(pattern, escape="\\"),
                AdminAudit.after["category"].astext.ilike(pattern, escape="\\"),
            )
        )
    if action in {a.value for a in AuditAction}:
        query = query.where(AdminAudit.action == action)
    if before is not None:
        query = query.where(AdminAudit.id < before)
    found = list(session.scalars(query.order_by(AdminAudit.id.desc()).limit(size + 1)))
    rows = found[:size]
    return rows, rows[-1].id if len(found) > size else None
