"""The administrators' page of security events (`/admin/security`): the audit trail written by
`gridmgmt.kernel.security_events`, newest first, filtered by kind and by username or client
address, a hundred a page (keyset on the id: the next page starts below the last id shown)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import or_, select

from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import N_
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import ApiKey, Role
from gridmgmt.kernel.security_events import KIND_LABELS, SecurityEvent, SecurityEventKind
from gridmgmt.kernel.web import role_required

bp = Blueprint("security", __name__, url_prefix="/admin")
PAGE_SIZE = 100
MAX_FILTER = 100  # characters of the username-or-address filter

# The reasons and scopes the events' `detail` names, as the page shows them.
REASONS: dict[str, str] = {
    "unknown_user": N_("unknown username"),
    "wrong_password": N_("wrong password"),
    "wrong_code": N_("wrong authenticator code"),
    "inactive_user": N_("deactivated account"),
    "unknown": N_("unknown key"),
    "revoked": N_("revoked key"),
}


@dataclass(frozen=True)
class EventRow:
    """One event as the page lists it."""

    event: SecurityEvent
    key_name: str | None

    @property
    def label(self) -> str:
        """The kind, in the reader's language."""
        return _(KIND_LABELS.get(SecurityEventKind(self.event.kind), self.event.kind))

    @property
    def facts(self) -> str:
        """What `detail` says, in the reader's language."""
        return describe(SecurityEventKind(self.event.kind), self.event.detail or {})


def describe(kind: SecurityEventKind, detail: dict[str, Any]) -> str:
    """The facts of an event's `detail` as a short phrase in the reader's language."""
    parts: list[str] = []
    reason = detail.get("reason")
    if isinstance(reason, str):
        parts.append(_(REASONS[reason]) if reason in REASONS else reason)
    if kind == SecurityEventKind.SIGNIN_LOCKOUT:
        values = {"failures": detail.get("failures", "?"), "minutes": detail.get("minutes", "?")}
        if detail.get("scope") == "client":
            parts.append(
                _("this address locked after %(failures)s failures for %(minutes)s min", **values)
            )
        else:
            parts.append(
                _("this account locked after %(failures)s failures for %(minutes)s min", **values)
            )
    if kind == SecurityEventKind.SIGNIN_THROTTLED and "retry_after" in detail:
        parts.append(_("locked for %(seconds)s s more", seconds=detail["retry_after"]))
    if kind == SecurityEventKind.RATE_LIMITED and "limit" in detail:
        parts.append(
            _(
                "limit %(name)s: %(most)s per %(window)s s",
                name=detail["limit"],
                most=detail.get("most", "?"),
                window=detail.get("window", "?"),
            )
        )
    if "hits" in detail:
        parts.append(_("hit %(hits)s of this minute", hits=detail["hits"]))
    return "; ".join(str(part) for part in parts)


def _filters() -> tuple[SecurityEventKind | None, str, int | None]:
    """The page's filters from the query string; a value that makes no sense is ignored."""
    raw_kind = request.args.get("kind", "")
    kind = SecurityEventKind(raw_kind) if raw_kind in {k.value for k in SecurityEventKind} else None
    who = request.args.get("who", "").strip()[:MAX_FILTER]
    before = request.args.get("before", "")
    return kind, who, int(before) if before.isascii() and before.isdigit() else None


def _like_prefix(text: str) -> str:
    """`text` as a LIKE prefix pattern, its own wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def find_events(
    kind: SecurityEventKind | None, who: str, before: int | None, size: int = PAGE_SIZE
) -> tuple[list[EventRow], int | None]:
    """A page of events, newest first, and the id the next page starts below (None: last).

    Args:
        kind: only this kind (None: all).
        who: only events whose username or client address starts with this (case-insensitive).
        before: only events with a smaller id (the previous page's last).
        size: events a page.
    """
    query = select(SecurityEvent, ApiKey.name).outerjoin(
        ApiKey, ApiKey.id == SecurityEvent.api_key_id
    )
    if kind is not None:
        query = query.where(SecurityEvent.kind == kind.value)
    if who:
        pattern = _like_prefix(who)
        query = query.where(
            or_(
                SecurityEvent.username.ilike(pattern, escape="\\"),
                SecurityEvent.client.ilike(pattern, escape="\\"),
            )
        )
    if before is not None:
        query = query.where(SecurityEvent.id < before)
    found = db.session.execute(query.order_by(SecurityEvent.id.desc()).limit(size + 1)).all()
    rows = [EventRow(event, name) for event, name in found[:size]]
    return rows, rows[-1].event.id if len(found) > size else None


@bp.get("/security")
@role_required(Role.ADMIN)
def events() -> ResponseReturnValue:
    """The security events, for administrators."""
    kind, who, before = _filters()
    rows, next_before = find_events(kind, who, before)
    filters = {"kind": kind.value if kind else None, "who": who or None}
    page = render_template(
        "admin/security.html",
        rows=rows,
        kind=kind.value if kind else "",
        who=who,
        kinds=[(k.value, _(KIND_LABELS[k])) for k in SecurityEventKind],
        newer=url_for("security.events", **filters) if before is not None else None,
        older=url_for("security.events", before=next_before, **filters) if next_before else None,
        page_size=PAGE_SIZE,
    )
    # Who was refused, from where: not for any cache, nor for the browser's history.
    return page, 200, {"Cache-Control": "no-store"}


def init_app(app: Flask) -> None:
    """Register the page."""
    app.register_blueprint(bp)
