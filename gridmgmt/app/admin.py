"""The administrators' pages: the setup check (`/admin/setup`), people (`/admin/people`), api
keys (`/admin/keys`), the city's settings (`/admin/settings`) and the audit log of their
changes (`/admin/audit`).

Every change goes through the kernel's services (`gridmgmt.kernel.auth`, which keeps the role
rules) and writes its `admin_audit` row in the same transaction (`gridmgmt.kernel.audit`).
Administrators only: anyone else gets 403, the anonymous the login page. A new password or an
api key's secret is shown once, on the answer to the form that made it, never stored or put
in a flash message (the session cookie is signed, not encrypted).
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from redis.exceptions import RedisError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from dispatch import readiness
from gridmgmt.kernel import auth, key_uses, settings, web
from gridmgmt.kernel.audit import (
    ACTION_LABELS,
    AdminAudit,
    AuditAction,
    find_changes,
    key_facts,
    record_change,
    user_facts,
)
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import N_, Conflict, DomainError, NotFound
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import ApiKey, CalendarRecord, Role, Unit, User
from gridmgmt.kernel.queue import queues
from gridmgmt.kernel.settings import FALLBACKS, city_settings

bp = Blueprint("admin", __name__, url_prefix="/admin")
PAGE_SIZE = 100
MAX_FILTER = 100
NO_STORE = {"Cache-Control": "no-store"}

ROLE_LABELS: dict[str, str] = {
    Role.CITIZEN.value: N_("Citizen"),
    Role.INSPECTOR.value: N_("Inspector"),
    Role.OPERATOR.value: N_("Operator"),
    Role.DISPATCHER.value: N_("Dispatcher"),
    Role.UNIT_STAFF.value: N_("Unit staff"),
    Role.LEADER.value: N_("Leader"),
    Role.ADMIN.value: N_("Administrator"),
}

# The facts the audit log keeps (`gridmgmt.kernel.audit.user_facts`, `key_facts`).
FIELD_LABELS: dict[str, str] = {
    "username": N_("Username"),
    "display_name": N_("Display name"),
    "role": N_("Role"),
    "unit": N_("Unit"),
    "active": N_("Active"),
    "name": N_("Name"),
    "prefix": N_("Prefix"),
    "trusted": N_("Trusted"),
    "revoked": N_("Revoked"),
    "code": N_("Code"),
    "kind": N_("Kind"),
    "unit_type": N_("Unit type"),
    "community": N_("Community"),
    "category": N_("Class"),
    "area": N_("Area"),
    "priority": N_("Priority"),
    "note": N_("Note"),
    "limit_value": N_("Limit"),
    "limit_unit": N_("Time unit"),
    "urgent_limit_value": N_("Urgent limit"),
    "urgent_limit_unit": N_("Time unit"),
    "duplicate_radius_m": N_("Radius (m)"),
    "duplicate_window_hours": N_("Window (hours)"),
    "timezone": N_("Time zone"),
    "work_periods": N_("Work periods"),
    "weekend": N_("Weekend"),
    "holidays": N_("Holiday"),
    "workdays": N_("Make-up working day"),
    "calendar": N_("Business calendar"),
    "calendar_code": N_("Business calendar"),
    "day": N_("Date"),
    "file": N_("File"),
    "tile_url": N_("Tile layer URL"),
    "tile_attribution": N_("Tile attribution"),
    "level": N_("Level"),
    "areas": N_("Areas"),
    "created": N_("Created"),
    "updated": N_("Updated"),
    "parent_code": N_("Parent code"),
    "make_valid": N_("Repair invalid polygons"),
    "cells": N_("Cells"),
    "cell_size_m": N_("Cell side (m)"),
    "code_length": N_("Cell codes"),
    "communities": N_("Communities"),
}


def role_label(role: str) -> str:
    """A role in the reader's language."""
    return _(ROLE_LABELS[role]) if role in ROLE_LABELS else role


def _actor() -> User:
    return db.session.get(User, current_user.id)  # type: ignore[return-value]


def _error(err: DomainError) -> None:
    flash(err.render(_), "error")


def _text(name: str, limit: int = 200) -> str:
    return request.form.get(name, "").strip()[:limit]


# ---------------------------------------------------------------- setup check


@bp.get("/setup")
@web.role_required(Role.ADMIN)
def setup() -> ResponseReturnValue:
    """What a working city needs, each ok or a problem with its fix."""
    session = db.session()
    checks = readiness.run_checks(session, queues.redis, city_settings().calendar_code)
    blocking = readiness.blocking_failures(checks)
    page = render_template(
        "admin/setup.html",
        checks=checks,
        blocking=blocking,
        titles=readiness.TITLES,
        render=lambda message: message.render(_) if message is not None else "",
    )
    return page, 200, NO_STORE


# ---------------------------------------------------------------- audit log


@bp.get("/audit")
@web.role_required(Role.ADMIN)
def audit() -> ResponseReturnValue:
    """The administrators' changes, newest first, filtered by actor (or target) and action."""
    who = request.args.get("who", "").strip()[:MAX_FILTER]
    action = request.args.get("action", "")
    raw_before = request.args.get("before", "")
    before = int(raw_before) if raw_before.isascii() and raw_before.isdigit() else None
    rows, next_before = find_changes(db.session(), who, action, before, PAGE_SIZE)
    filters = {"who": who or None, "action": action or None}
    page = render_template(
        "admin/audit.html",
        rows=rows,
        who=who,
        action=action,
        actions=[(a.value, _(ACTION_LABELS[a])) for a in AuditAction],
        label=lambda value: (
            _(ACTION_LABELS[AuditAction(value)])
            if value in {a.value for a in AuditAction}
            else value
        ),
        changes=describe_change,
        newer=url_for("admin.audit", **filters) if before is not None else None,
        older=url_for("admin.audit", before=next_before, **filters) if next_before else None,
    )
    return page, 200, NO_STORE


def describe_change(row: AdminAudit) -> list[tuple[str, str, str]]:
    """(field, before, after) of each fact that changed (all facts of a creation)."""
    before, after = row.before or {}, row.after or {}
    fields = [*after.keys(), *(k for k in before if k not in after)]

    def shown(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, bool):
            return _("yes") if value else _("no")
        if isinstance(value, str) and value in ROLE_LABELS:
            return role_label(value)
        return str(value)

    return [
        (
            _(FIELD_LABELS[name]) if name in FIELD_LABELS else name,
            shown(before.get(name)) if row.before is not None else "",
            shown(after.get(name)),
        )
        for name in fields
        if row.before is None or before.get(name) != after.get(name)
    ]


# ---------------------------------------------------------------- people


def _units(session: Session) -> list[Unit]:
    return list(session.scalars(select(Unit).where(Unit.active).order_by(Unit.code)))


def _people_page(form: dict[str, Any] | None = None, status: int = 200) -> ResponseReturnValue:
    session = db.session()
    query_text = request.args.get("q", "").strip()[:MAX_FILTER]
    role = request.args.get("role", "")
    query = select(User).outerjoin(Unit, Unit.id == User.unit_id)
    if query_text:
        pattern = "%" + query_text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern += "%"
        query = query.where(
            or_(
                User.username.ilike(pattern, escape="\\"),
                User.display_name.ilike(pattern, escape="\\"),
                Unit.code.ilike(pattern, escape="\\"),
            )
        )
    if role in ROLE_LABELS:
        query = query.where(User.role == role)
    people = list(session.scalars(query.order_by(User.username).limit(PAGE_SIZE + 1)))
    total = session.scalar(select(func.count()).select_from(User))
    page = render_template(
        "admin/people.html",
        people=people[:PAGE_SIZE],
        more=len(people) > PAGE_SIZE,
        total=total,
        q=query_text,
        role=role,
        roles=[(value, role_label(value)) for value in ROLE_LABELS],
        role_label=role_label,
        units=_units(session),
        form=form or {},
    )
    return page, status, NO_STORE


@bp.get("/people")
@web.role_required(Role.ADMIN)
def people() -> ResponseReturnValue:
    """Everyone who signs in, searchable, and the form that adds a person."""
    return _people_page()


def _password_or_new(field: str) -> tuple[str, bool]:
    """The password typed in `field`, or a new random one (then True: show it once)."""
    typed = request.form.get(field, "")
    if typed:
        return typed, False
    return secrets.token_urlsafe(12), True


@bp.post("/people")
@web.role_required(Role.ADMIN)
def create_person() -> ResponseReturnValue:
    """Add a person with one role (and the unit of unit staff)."""
    password, made_up = _password_or_new("password")
    role = _text("role", 32)
    unit_code = _text("unit", 32) if role == Role.UNIT_STAFF.value else ""
    try:
        with db.transaction() as session:
            user = auth.create_user(
                session,
                _text("username", 64),
                password,
                role,
                unit_code or None,
                _text("display_name") or None,
            )
            record_change(
                session, _actor(), AuditAction.USER_CREATED, "user", user.id, None, user_facts(user)
            )
            user_id = user.id
    except DomainError as err:
        _error(err)
        return _people_page(form=dict(request.form), status=400)
    flash(_("%(username)s was created.", username=_text("username", 64)), "ok")
    return _person_page(user_id, new_password=password if made_up else None)


def _person_page(user_id: int, new_password: str | None = None) -> ResponseReturnValue:
    session = db.session()
    user = session.get(User, user_id)
    if user is None:
        abort(404)
    history, _next = find_changes(session, user.username, "", None, 20)
    page = render_template(
        "admin/person.html",
        person=user,
        roles=[(value, role_label(value)) for value in ROLE_LABELS],
        role_label=role_label,
        units=_units(session),
        history=history,
        label=lambda value: _(ACTION_LABELS[AuditAction(value)]),
        new_password=new_password,
        is_self=user.id == current_user.id,
    )
    return page, 200, NO_STORE


@bp.get("/people/<int:user_id>")
@web.role_required(Role.ADMIN)
def person(user_id: int) -> ResponseReturnValue:
    """One person: their facts, and the forms that change them."""
    return _person_page(user_id)


def _change_person(
    user_id: int, action: AuditAction, change: Any, *, not_self: Conflict | None = None
) -> User | None:
    """Apply `change(session, user)` and its audit row in one transaction; a domain error
    is flashed and None returned."""
    try:
        with db.transaction() as session:
            user = session.get(User, user_id)
            if user is None:
                raise NotFound("user %(username)s does not exist", username=str(user_id))
            if not_self is not None and user.id == current_user.id:
                raise not_self
            before = user_facts(user)
            change(session, user)
            record_change(session, _actor(), action, "user", user.id, before, user_facts(user))
            return user
    except DomainError as err:
        _error(err)
        return None


def _back(user_id: int) -> Response:
    return redirect(url_for("admin.person", user_id=user_id), 303)


@bp.post("/people/<int:user_id>/role")
@web.role_required(Role.ADMIN)
def change_role(user_id: int) -> ResponseReturnValue:
    """Give a person another role (and unit)."""
    role = _text("role", 32)
    unit_code = _text("unit", 32) if role == Role.UNIT_STAFF.value else ""
    changed = _change_person(
        user_id,
        AuditAction.USER_ROLE_CHANGED,
        lambda session, user: auth.set_role(session, user.username, role, unit_code or None),
        not_self=Conflict("you cannot change your own role: ask another administrator"),
    )
    if changed is not None:
        flash(_("The role was changed; their sessions have ended."), "ok")
    return _back(user_id)


@bp.post("/people/<int:user_id>/active")
@web.role_required(Role.ADMIN)
def set_active(user_id: int) -> ResponseReturnValue:
    """Deactivate or reactivate a person."""
    active = request.form.get("active") == "1"
    changed = _change_person(
        user_id,
        AuditAction.USER_ACTIVATED if active else AuditAction.USER_DEACTIVATED,
        lambda session, user: auth.set_active(session, user.username, active),
        not_self=None if active else Conflict("you cannot deactivate your own account"),
    )
    if changed is not None:
        flash(
            _("The account was reactivated.")
            if active
            else _("The account was deactivated; their sessions have ended."),
            "ok",
        )
    return _back(user_id)


@bp.post("/people/<int:user_id>/password")
@web.role_required(Role.ADMIN)
def reset_password(user_id: int) -> ResponseReturnValue:
    """Give a person a new password (typed, or made up and shown once)."""
    password, made_up = _password_or_new("password")
    changed = _change_person(
        user_id,
        AuditAction.USER_PASSWORD_RESET,
        lambda session, user: auth.set_password(session, user.username, password),
    )
    if changed is None:
        return _back(user_id)
    flash(_("The password was reset; their sessions have ended."), "ok")
    return _person_page(user_id, new_password=password if made_up else None)


@bp.post("/people/<int:user_id>/unlock")
@web.role_required(Role.ADMIN)
def unlock(user_id: int) -> ResponseReturnValue:
    """Lift the lock wrong passwords put on a person's account; their sessions end (an
    account someone was guessing at may have been guessed)."""
    counted: list[bool] = []

    def lift(_session: Session, user: User) -> None:
        user.end_sessions()
        try:
            counted.append(web.lift_signin_lock(user.username))
        except RedisError:
            raise Conflict("Redis is unreachable: try again later") from None

    changed = _change_person(user_id, AuditAction.USER_UNLOCKED, lift)
    if changed is not None:
        flash(
            _("The sign-in lock was lifted; their sessions have ended.")
            if counted and counted[0]
            else _("No wrong passwords were counted; their sessions have ended."),
            "ok",
        )
    return _back(user_id)


# ---------------------------------------------------------------- api keys


def _keys_page(
    secret: str | None = None, new_key: ApiKey | None = None, status: int = 200
) -> ResponseReturnValue:
    page = render_template(
        "admin/keys.html",
        keys=auth.api_keys(db.session()),
        waiting=key_uses.waiting_uses(queues.redis),  # counted, not folded yet
        secret=secret,
        new_key=new_key,
        form=dict(request.form) if status >= 400 else {},
    )
    return page, status, NO_STORE


@bp.get("/keys")
@web.role_required(Role.ADMIN)
def keys() -> ResponseReturnValue:
    """The Open311 api keys, and the form that issues one."""
    return _keys_page()


@bp.post("/keys")
@web.role_required(Role.ADMIN)
def create_key() -> ResponseReturnValue:
    """Issue a key: its secret is shown on this answer only."""
    try:
        with db.transaction() as session:
            issued = auth.create_api_key(
                session, _text("name", 100), request.form.get("trusted") == "1"
            )
            record_change(
                session,
                _actor(),
                AuditAction.API_KEY_CREATED,
                "api_key",
                issued.api_key.id,
                None,
                key_facts(issued.api_key),
            )
            key_id = issued.api_key.id
    except DomainError as err:
        _error(err)
        return _keys_page(status=400)
    return _keys_page(secret=issued.secret, new_key=db.session.get(ApiKey, key_id))


def _change_key(key_id: int, action: AuditAction, change: Any) -> bool:
    try:
        with db.transaction() as session:
            key = session.get(ApiKey, key_id)
            if key is None:
                raise NotFound("no API key named %(name)r", name=str(key_id))
            before = key_facts(key)
            change(session, key)
            record_change(session, _actor(), action, "api_key", key.id, before, key_facts(key))
            return True
    except DomainError as err:
        _error(err)
        return False


@bp.post("/keys/<int:key_id>")
@web.role_required(Role.ADMIN)
def change_key(key_id: int) -> ResponseReturnValue:
    """Rename a key, or mark it trusted or not."""
    name, trusted = _text("name", 100), request.form.get("trusted") == "1"
    if _change_key(
        key_id,
        AuditAction.API_KEY_CHANGED,
        lambda session, key: auth.update_api_key(session, key.id, name, trusted),
    ):
        flash(_("The API key was saved."), "ok")
    return redirect(url_for("admin.keys"), 303)


@bp.post("/keys/<int:key_id>/revoke")
@web.role_required(Role.ADMIN)
def revoke_key(key_id: int) -> ResponseReturnValue:
    """Revoke a key for good."""
    if _change_key(
        key_id,
        AuditAction.API_KEY_REVOKED,
        lambda session, key: auth.revoke_api_key(session, key.name),
    ):
        flash(_("The API key was revoked: requests with it are refused from now on."), "ok")
    return redirect(url_for("admin.keys"), 303)


# ---------------------------------------------------------------- city settings


def _settings_page(form: dict[str, str] | None = None, status: int = 200) -> ResponseReturnValue:
    session = db.session()
    page = render_template(
        "admin/settings.html",
        current=settings.read_settings(session),
        stored=settings.stored_settings(session),
        fallbacks={field: current_app.config.get(key, "") for field, key in FALLBACKS.items()},
        calendars=session.execute(
            select(CalendarRecord.code, CalendarRecord.name).order_by(CalendarRecord.code)
        ).all(),
        form=form,
    )
    return page, status, NO_STORE


@bp.get("/settings")
@web.role_required(Role.ADMIN)
def city_settings_page() -> ResponseReturnValue:
    """What belongs to the city: its name, its calendar, the base map's tiles."""
    return _settings_page()


@bp.post("/settings")
@web.role_required(Role.ADMIN)
def change_city_settings() -> ResponseReturnValue:
    """Store the city's settings (an empty field: the server's configuration)."""
    values = {field: _text(field, 1000) for field in FALLBACKS}
    try:
        with db.transaction() as session:
            before, after = settings.change_settings(session, values)
            if before != after:
                record_change(
                    session,
                    _actor(),
                    AuditAction.SETTINGS_CHANGED,
                    "settings",
                    "city",
                    before.facts(),
                    after.facts(),
                )
    except DomainError as err:
        _error(err)
        return _settings_page(form=values, status=400)
    settings.forget()
    readiness.forget_blocked()  # the calendar may have changed
    flash(_("The city's settings were saved.") if before != after else _("Nothing changed."), "ok")
    return redirect(url_for("admin.city_settings_page"), 303)


def init_app(app: Flask) -> None:
    """Register the administrators' pages."""
    app.register_blueprint(bp)
