"""The administrators' catalogue pages (`/admin/catalogue`): the classes with their limits,
duplicate radius and window and active flag, searchable; a class's values changed; a
catalogue file loaded with the checks of `flask categories load`.

Every change goes through `cases.catalogue` and writes its `admin_audit` row in the same
transaction (`gridmgmt.kernel.audit.record_change`): a refused change writes nothing.
Administrators only: anyone else gets 403, the anonymous the login page.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import PurePath
from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from cases.catalogue import (
    LIMIT_WORD,
    MAX_DUPLICATE_RADIUS_M,
    MAX_DUPLICATE_WINDOW_HOURS,
    MAX_UPLOAD_BYTES,
    RADIUS_WORD,
    URGENT_LIMIT_WORD,
    WINDOW_WORD,
    CategoryChange,
    load_catalogue_bytes,
    update_category,
)
from cases.models import Category, CategoryKind, MajorClass
from gridmgmt.kernel import web
from gridmgmt.kernel.audit import ACTION_LABELS, AdminAudit, AuditAction, record_change
from gridmgmt.kernel.business_calendar import LimitUnit
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import N_, DomainError, InvalidInput, NotFound, word
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.i18n import ngettext
from gridmgmt.kernel.models import Role, User

bp = Blueprint(
    "catalogue_admin", __name__, url_prefix="/admin/catalogue", template_folder="templates"
)
NO_STORE = {"Cache-Control": "no-store"}
MAX_FILTER = 100
HISTORY_SIZE = 20

KIND_LABELS = {CategoryKind.COMPONENT.value: N_("Component"), CategoryKind.EVENT.value: N_("Event")}
UNIT_LABELS = {LimitUnit.HOURS.value: N_("working hours"), LimitUnit.DAYS.value: N_("working days")}
STATES = {"active": N_("Active"), "inactive": N_("Inactive")}


def _number(value: Decimal | None) -> str:
    """A limit as typed: 2, 1.5 (never 2.00)."""
    return "" if value is None else f"{value.normalize():f}"


def limit_label(value: Decimal | None, unit: str | None) -> str:
    """A limit in the reader's language ("2 working hours"; "—" for none)."""
    if value is None or unit is None:
        return "—"
    unit = str(getattr(unit, "value", unit))
    count = 1 if value == 1 else 2  # 1.5 working hours, as English and Chinese say it
    if unit == LimitUnit.HOURS.value:
        return ngettext(
            "%(value)s working hour", "%(value)s working hours", count, value=_number(value)
        )
    if unit == LimitUnit.DAYS.value:
        return ngettext(
            "%(value)s working day", "%(value)s working days", count, value=_number(value)
        )
    return f"{_number(value)} {unit}"


def _actor(session: Session) -> User | None:
    return session.get(User, current_user.id)


def _catalogue_page(status: int = 200) -> ResponseReturnValue:
    """The classes matching the filters (`q`, `kind`, `state`), grouped by major class."""
    session = db.session()
    q = request.args.get("q", "").strip()[:MAX_FILTER]
    kind = request.args.get("kind", "")
    state = request.args.get("state", "")
    query = select(Category).join(MajorClass).options(selectinload(Category.major))
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                Category.code.ilike(pattern, escape="\\"),
                Category.name_zh.ilike(pattern, escape="\\"),
                Category.name_en.ilike(pattern, escape="\\"),
                MajorClass.name_zh.ilike(pattern, escape="\\"),
                MajorClass.name_en.ilike(pattern, escape="\\"),
            )
        )
    if kind in KIND_LABELS:
        query = query.where(MajorClass.kind == kind)
    if state in STATES:
        query = query.where(Category.active.is_(state == "active"))
    found = list(session.scalars(query.order_by(Category.code)))
    groups: dict[int, tuple[MajorClass, list[Category]]] = {}
    for category in found:
        groups.setdefault(category.major_id, (category.major, []))[1].append(category)
    total = session.scalar(select(func.count()).select_from(Category)) or 0
    active = session.scalar(select(func.count()).select_from(Category).where(Category.active))
    page = render_template(
        "cases/admin_catalogue.html",
        groups=list(groups.values()),
        shown=len(found),
        total=total,
        active=active or 0,
        q=q,
        kind=kind,
        state=state,
        kinds=[(value, _(label)) for value, label in KIND_LABELS.items()],
        states=[(value, _(label)) for value, label in STATES.items()],
        kind_label=lambda value: _(KIND_LABELS[value]) if value in KIND_LABELS else value,
        limit_label=limit_label,
        max_upload_mb=MAX_UPLOAD_BYTES // (1024 * 1024),
    )
    return page, status, NO_STORE


@bp.get("")
@web.role_required(Role.ADMIN)
def catalogue() -> ResponseReturnValue:
    """The classes of the catalogue, searchable, and the form that loads a catalogue file."""
    return _catalogue_page()


@bp.post("/load")
@web.role_required(Role.ADMIN)
def load() -> ResponseReturnValue:
    """Load an uploaded catalogue file: every class or none."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash(_("Choose a catalogue file (JSON) to load."), "error")
        return _catalogue_page(status=400)
    name = PurePath(upload.filename.replace("\\", "/")).name[:100] or "catalogue.json"
    raw = upload.stream.read(MAX_UPLOAD_BYTES + 1)
    try:
        with db.transaction() as session:
            before = session.scalar(select(func.count()).select_from(Category)) or 0
            result = load_catalogue_bytes(session, raw, name)
            after = session.scalar(select(func.count()).select_from(Category)) or 0
            record_change(
                session,
                _actor(session),
                AuditAction.CATALOGUE_LOADED,
                "catalogue",
                name[:64],
                {"classes": before},
                {
                    "file": name,
                    "classes": after,
                    "created": result.created,
                    "updated": result.updated,
                    "unchanged": result.unchanged,
                    "changed": ", ".join(result.changed),
                },
            )
    except DomainError as err:
        flash(_("Nothing was loaded: %(error)s", error=err.render(_)), "error")
        return _catalogue_page(status=err.status)
    flash(
        _(
            "%(file)s was loaded: %(created)s classes created, %(updated)s changed, "
            "%(unchanged)s unchanged.",
            file=name,
            created=result.created,
            updated=result.updated,
            unchanged=result.unchanged,
        ),
        "ok",
    )
    return redirect(url_for("catalogue_admin.catalogue"), 303)


def _class_page(
    code: str, form: dict[str, Any] | None = None, status: int = 200
) -> ResponseReturnValue:
    session = db.session()
    category = session.scalar(
        select(Category).where(Category.code == code).options(selectinload(Category.major))
    )
    if category is None:
        flash(_("There is no class %(code)s in the catalogue.", code=code), "error")
        return _catalogue_page(status=404)
    history = list(
        session.scalars(
            select(AdminAudit)
            .where(AdminAudit.target_type == "category", AdminAudit.target_id == category.code)
            .order_by(AdminAudit.id.desc())
            .limit(HISTORY_SIZE)
        )
    )
    values = form or {
        "limit_value": _number(category.limit_value),
        "limit_unit": str(getattr(category.limit_unit, "value", category.limit_unit)),
        "urgent_limit_value": _number(category.urgent_limit_value),
        "urgent_limit_unit": str(
            getattr(category.urgent_limit_unit, "value", category.urgent_limit_unit) or ""
        ),
        "duplicate_radius_m": str(category.duplicate_radius_m),
        "duplicate_window_hours": str(category.duplicate_window_hours),
        "active": "1" if category.active else "",
    }
    page = render_template(
        "cases/admin_catalogue_class.html",
        category=category,
        form=values,
        history=history,
        units=[(value, _(label)) for value, label in UNIT_LABELS.items()],
        kind_label=lambda value: _(KIND_LABELS[value]) if value in KIND_LABELS else value,
        limit_label=limit_label,
        action_label=lambda value: (
            _(ACTION_LABELS[AuditAction(value)])
            if value in {a.value for a in AuditAction}
            else value
        ),
        max_radius=MAX_DUPLICATE_RADIUS_M,
        max_window=MAX_DUPLICATE_WINDOW_HOURS,
    )
    return page, status, NO_STORE


@bp.get("/<code>")
@web.role_required(Role.ADMIN)
def category_page(code: str) -> ResponseReturnValue:
    """One class: its facts, the form that changes its values, and their history."""
    return _class_page(code[:16])


def _decimal(name: str, label: str) -> Decimal | None:
    raw = request.form.get(name, "").strip().replace(",", ".")[:20]
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidInput(
            "%(what)s: %(value)s is not a number", what=word(label), value=raw
        ) from None
    if not value.is_finite():
        raise InvalidInput("%(what)s: %(value)s is not a number", what=word(label), value=raw)
    return value


def _whole(name: str, label: str) -> int:
    raw = request.form.get(name, "").strip()[:20]
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput("%(what)s: a whole number from 0 up", what=word(label))
    return int(raw)


def _change_from_form() -> CategoryChange:
    """The submitted values, read as numbers (the service checks their ranges)."""
    limit = _decimal("limit_value", LIMIT_WORD)
    if limit is None:
        raise InvalidInput("%(what)s: a number above 0", what=word(LIMIT_WORD))
    urgent = _decimal("urgent_limit_value", URGENT_LIMIT_WORD)
    return CategoryChange(
        limit_value=limit,
        limit_unit=request.form.get("limit_unit", "")[:16],
        urgent_limit_value=urgent,
        urgent_limit_unit=(request.form.get("urgent_limit_unit", "")[:16] or None)
        if urgent is not None
        else None,
        duplicate_radius_m=_whole("duplicate_radius_m", RADIUS_WORD),
        duplicate_window_hours=_whole("duplicate_window_hours", WINDOW_WORD),
        active=request.form.get("active") == "1",
    )


@bp.post("/<code>")
@web.role_required(Role.ADMIN)
def change_category(code: str) -> ResponseReturnValue:
    """Set a class's limits, duplicate radius and window and active flag."""
    code = code[:16]
    try:
        change = _change_from_form()
        with db.transaction() as session:
            before, after = update_category(session, code, change)
            if before != after:
                record_change(
                    session,
                    _actor(session),
                    AuditAction.CATEGORY_CHANGED,
                    "category",
                    code,
                    before,
                    after,
                )
    except NotFound as err:
        flash(err.render(_), "error")
        return _catalogue_page(status=404)
    except DomainError as err:
        flash(_("Nothing was changed: %(error)s", error=err.render(_)), "error")
        form = {key: str(value)[:20] for key, value in request.form.items() if key != "csrf_token"}
        return _class_page(code, form=form, status=err.status)
    if before == after:
        flash(_("Nothing was changed: the values were the same."), "ok")
    else:
        flash(_("%(code)s was saved; cases dispatched from now on follow it.", code=code), "ok")
    return redirect(url_for("catalogue_admin.category_page", code=code), 303)


def init_app(app: Flask) -> None:
    """Register the catalogue pages."""
    app.register_blueprint(bp)
