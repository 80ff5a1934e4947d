"""The administrators' pages of dispatch: units (`/admin/units`), routing rules
(`/admin/routing`) and the "who gets this?" tester (`/admin/routing/test`, and `.json`).

Every change goes through `dispatch.administration`, which writes its audit row in the same
transaction. Administrators only: anyone else gets 403, the anonymous the login page. A
refused change answers 400-409 with the form again and the reason flashed; nothing is written.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from cases.models import Category, MajorClass
from dispatch import administration
from dispatch.administration import RuleInput
from dispatch.models import RoutingRule
from gridmgmt.kernel.audit import ACTION_LABELS, AdminAudit, AuditAction
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import N_, DomainError
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import Role, Unit, UnitKind, UnitType, User
from gridmgmt.kernel.settings import city_settings
from gridmgmt.kernel.web import role_required
from grids.models import Area, AreaLevel, GridCell
from grids.services import territory_centre

bp = Blueprint("dispatch_admin", __name__, url_prefix="/admin", template_folder="templates")
NO_STORE = {"Cache-Control": "no-store"}
MAX_FILTER = 100
PAGE_SIZE = 200

KIND_LABELS: dict[str, str] = {
    UnitKind.COMMUNITY.value: N_("Community unit"),
    UnitKind.DEPARTMENT.value: N_("Department"),
}
TYPE_LABELS: dict[str, str] = {
    UnitType.COMMUNITY.value: N_("Community"),
    UnitType.SANITATION.value: N_("Sanitation"),
    UnitType.WATER.value: N_("Water supply"),
    UnitType.DRAINAGE.value: N_("Drainage"),
    UnitType.GAS.value: N_("Gas"),
    UnitType.POWER.value: N_("Power"),
    UnitType.TELECOM.value: N_("Telecoms"),
    UnitType.ROADS.value: N_("Roads"),
    UnitType.TRAFFIC.value: N_("Traffic"),
    UnitType.LIGHTING.value: N_("Street lighting"),
    UnitType.GREENERY.value: N_("Greenery"),
    UnitType.HOUSING.value: N_("Housing"),
    UnitType.ENFORCEMENT.value: N_("City enforcement"),
    UnitType.EMERGENCY.value: N_("Emergency"),
}
LEVEL_LABELS: dict[str, str] = {
    AreaLevel.DISTRICT.value: N_("District"),
    AreaLevel.STREET.value: N_("Street"),
    AreaLevel.COMMUNITY.value: N_("Community"),
}


def kind_label(kind: str) -> str:
    """A unit kind in the reader's language."""
    return _(KIND_LABELS[kind]) if kind in KIND_LABELS else kind


def type_label(unit_type: str) -> str:
    """A unit type in the reader's language."""
    return _(TYPE_LABELS[unit_type]) if unit_type in TYPE_LABELS else unit_type


def level_label(level: str) -> str:
    """An area level in the reader's language."""
    return _(LEVEL_LABELS[level]) if level in LEVEL_LABELS else level


def _actor() -> User:
    return db.session.get(User, current_user.id)  # type: ignore[return-value]


def _text(name: str, limit: int = 200) -> str:
    return request.form.get(name, "").strip()[:limit]


def _arg(name: str) -> str:
    return request.args.get(name, "").strip()[:MAX_FILTER]


def _refused(err: DomainError) -> int:
    flash(err.render(_), "error")
    return err.status


# ---------------------------------------------------------------- units


def _units_page(
    form: dict[str, Any] | None = None, status: int = 200, open_unit: int | None = None
) -> ResponseReturnValue:
    session = db.session()
    query, kind, state = _arg("q"), _arg("kind"), _arg("state")
    rows = administration.find_units(session, query, kind, state)
    page = render_template(
        "dispatch/admin_units.html",
        rows=rows[:PAGE_SIZE],
        more=len(rows) > PAGE_SIZE,
        q=query,
        kind=kind,
        state=state,
        kinds=[(k, kind_label(k)) for k in KIND_LABELS],
        department_types=[(t, type_label(t)) for t in TYPE_LABELS if t != UnitType.COMMUNITY],
        kind_label=kind_label,
        type_label=type_label,
        unowned=administration.communities_without_unit(session),
        form=form or {},
        open_unit=open_unit,
    )
    return page, status, NO_STORE


@bp.get("/units")
@role_required(Role.ADMIN)
def units() -> ResponseReturnValue:
    """Community units and departments, searchable, with the forms that add and change them."""
    return _units_page()


@bp.post("/units/department")
@role_required(Role.ADMIN)
def create_department() -> ResponseReturnValue:
    """Add a department."""
    try:
        with db.transaction() as session:
            unit = administration.create_department(
                session, _actor(), _text("code", 64), _text("name", 400), _text("unit_type", 32)
            )
            code = unit.code
    except DomainError as err:
        return _units_page(form={"form": "department", **request.form}, status=_refused(err))
    flash(_("The unit %(code)s was created.", code=code), "ok")
    return redirect(url_for("dispatch_admin.units", q=code), 303)


@bp.post("/units/community")
@role_required(Role.ADMIN)
def create_community_unit() -> ResponseReturnValue:
    """Add the unit of a community that has none."""
    try:
        with db.transaction() as session:
            unit = administration.create_community_unit(
                session,
                _actor(),
                _text("community", 32),
                _text("code", 64),
                _text("name", 400),
            )
            code = unit.code
    except DomainError as err:
        return _units_page(form={"form": "community", **request.form}, status=_refused(err))
    flash(_("The unit %(code)s was created.", code=code), "ok")
    return redirect(url_for("dispatch_admin.units", q=code), 303)


def _warn_if_loaded(session: Session, unit: Unit) -> None:
    """After a unit is deactivated: what that means for the cases and rules resting on it."""
    load = administration.load_of(session, unit.id)
    if load.open_cases:
        flash(
            _(
                "%(code)s keeps its %(count)s open cases: its staff still see them; reassign "
                "them from the dispatch board if nobody will handle them.",
                code=unit.code,
                count=load.open_cases,
            ),
            "warning",
        )
    if load.active_rules:
        flash(
            _(
                "%(count)s active routing rules name %(code)s: the dispatcher skips them now, "
                "and their cases go to the next matching rule or the community's unit.",
                code=unit.code,
                count=load.active_rules,
            ),
            "warning",
        )
    if unit.kind == UnitKind.COMMUNITY.value:
        flash(
            _(
                "Cases in %(code)s that no rule routes cannot be dispatched while its "
                "community unit is inactive.",
                code=unit.community.code if unit.community else unit.code,
            ),
            "warning",
        )


@bp.post("/units/<int:unit_id>")
@role_required(Role.ADMIN)
def change_unit(unit_id: int) -> ResponseReturnValue:
    """Rename a unit or change a department's type."""
    try:
        with db.transaction() as session:
            unit = administration.change_unit(
                session,
                _actor(),
                unit_id,
                name=_text("name", 400),
                unit_type=_text("unit_type", 32) or None,
            )
            code = unit.code
    except DomainError as err:
        return _units_page(status=_refused(err), open_unit=unit_id)
    flash(_("The unit %(code)s was saved.", code=code), "ok")
    return redirect(url_for("dispatch_admin.units", q=code), 303)


@bp.post("/units/<int:unit_id>/active")
@role_required(Role.ADMIN)
def set_unit_active(unit_id: int) -> ResponseReturnValue:
    """Deactivate or reactivate a unit (deactivating one with open cases or rules is allowed:
    the page says what it means)."""
    active = request.form.get("active") == "1"
    try:
        with db.transaction() as session:
            unit = administration.change_unit(session, _actor(), unit_id, active=active)
            code = unit.code
    except DomainError as err:
        return _units_page(status=_refused(err), open_unit=unit_id)
    session = db.session()
    if active:
        flash(_("The unit %(code)s was reactivated.", code=code), "ok")
    else:
        flash(_("The unit %(code)s was deactivated.", code=code), "ok")
        _warn_if_loaded(session, session.get_one(Unit, unit_id))
    return redirect(url_for("dispatch_admin.units", q=code), 303)


# ---------------------------------------------------------------- routing rules


def _choices(session: Session) -> dict[str, Any]:
    """What the rule forms and filters offer: classes by major class, areas, units."""
    majors = list(
        session.scalars(
            select(MajorClass)
            .options(selectinload(MajorClass.categories))
            .order_by(MajorClass.kind, MajorClass.code)
        )
    )
    areas = list(
        session.scalars(
            select(Area).order_by(
                # districts, streets, then communities: the order of the hierarchy
                (Area.level == AreaLevel.COMMUNITY.value),
                (Area.level == AreaLevel.STREET.value),
                Area.code,
            )
        )
    )
    all_units = list(session.scalars(select(Unit).order_by(Unit.kind.desc(), Unit.code)))
    return {
        "majors": majors,
        "areas": areas,
        "units": [u for u in all_units if u.active],
        "all_units": all_units,
        "level_label": level_label,
    }


def _rules_page(form: dict[str, Any] | None = None, status: int = 200) -> ResponseReturnValue:
    session = db.session()
    category, unit, state = _arg("category"), _arg("unit"), _arg("state")
    rules = administration.find_rules(session, category, unit, state)
    page = render_template(
        "dispatch/admin_routing.html",
        rules=rules[:PAGE_SIZE],
        more=len(rules) > PAGE_SIZE,
        total=len(rules),
        category=category,
        unit=unit,
        state=state,
        form=form or {},
        default_priority=administration.DEFAULT_PRIORITY,
        priority_range=(administration.MIN_PRIORITY, administration.MAX_PRIORITY),
        **_lookups(session),
        **_choices(session),
    )
    return page, status, NO_STORE


def _lookups(session: Session) -> dict[str, Any]:
    """Id → object maps the rule lists read (a few hundred small rows)."""
    return {
        "category_of": {c.id: c for c in session.scalars(select(Category))},
        "area_of": {a.id: a for a in session.scalars(select(Area))},
    }


def _rule_input() -> RuleInput:
    return RuleInput(
        category=_text("category", 16),
        area=_text("area", 16),
        unit=_text("unit", 64),
        priority=_text("priority", 16),
        note=request.form.get("note", "")[: administration.MAX_NOTE + 1],
    )


@bp.get("/routing")
@role_required(Role.ADMIN)
def routing() -> ResponseReturnValue:
    """Routing rules, filtered by class, unit and state, and the form that adds one."""
    return _rules_page()


@bp.post("/routing")
@role_required(Role.ADMIN)
def create_rule() -> ResponseReturnValue:
    """Add a routing rule."""
    try:
        with db.transaction() as session:
            rule = administration.create_rule(session, _actor(), _rule_input())
            rule_id, code = rule.id, session.get_one(Category, rule.category_id).code
    except DomainError as err:
        return _rules_page(form=dict(request.form), status=_refused(err))
    flash(_("Routing rule %(id)s was added.", id=rule_id), "ok")
    return redirect(url_for("dispatch_admin.routing", category=code), 303)


def _rule_page(rule_id: int, status: int = 200, form: dict[str, Any] | None = None) -> Any:
    session = db.session()
    rule = session.get(RoutingRule, rule_id)
    if rule is None:
        abort(404)
    facts = administration.rule_facts(session, rule)
    history = session.scalars(
        select(AdminAudit)
        .where(AdminAudit.target_type == administration.RULE_TARGET)
        .where(AdminAudit.target_id == str(rule.id))
        .order_by(AdminAudit.id.desc())
        .limit(20)
    )
    page = render_template(
        "dispatch/admin_rule.html",
        rule=rule,
        facts=facts,
        history=list(history),
        action_label=lambda value: (
            _(ACTION_LABELS[AuditAction(value)])
            if value in {a.value for a in AuditAction}
            else value
        ),
        form=form or facts,
        priority_range=(administration.MIN_PRIORITY, administration.MAX_PRIORITY),
        **_lookups(session),
        **_choices(session),
    )
    return page, status, NO_STORE


@bp.get("/routing/<int:rule_id>")
@role_required(Role.ADMIN)
def rule(rule_id: int) -> ResponseReturnValue:
    """One rule, and the forms that edit, deactivate or reactivate it."""
    return _rule_page(rule_id)


@bp.post("/routing/<int:rule_id>")
@role_required(Role.ADMIN)
def change_rule(rule_id: int) -> ResponseReturnValue:
    """Edit a rule's class, area, unit, priority and note."""
    try:
        with db.transaction() as session:
            administration.change_rule(session, _actor(), rule_id, _rule_input())
    except DomainError as err:
        if err.status == 404:
            abort(404)
        return _rule_page(rule_id, status=_refused(err), form=dict(request.form))
    flash(_("Routing rule %(id)s was saved.", id=rule_id), "ok")
    return redirect(url_for("dispatch_admin.rule", rule_id=rule_id), 303)


@bp.post("/routing/<int:rule_id>/active")
@role_required(Role.ADMIN)
def set_rule_active(rule_id: int) -> ResponseReturnValue:
    """Deactivate or reactivate a rule."""
    active = request.form.get("active") == "1"
    try:
        with db.transaction() as session:
            administration.set_rule_active(session, _actor(), rule_id, active)
    except DomainError as err:
        if err.status == 404:
            abort(404)
        return _rule_page(rule_id, status=_refused(err))
    flash(
        _("Routing rule %(id)s was reactivated.", id=rule_id)
        if active
        else _("Routing rule %(id)s was deactivated: the dispatcher ignores it.", id=rule_id),
        "ok",
    )
    return redirect(url_for("dispatch_admin.rule", rule_id=rule_id), 303)


# ---------------------------------------------------------------- who gets this?


@bp.get("/routing/test")
@role_required(Role.ADMIN)
def routing_test() -> ResponseReturnValue:
    """Pick a class and a point: the cell, the community, the deciding rule and the unit, as
    the dispatcher would choose them (or why it cannot)."""
    session = db.session()
    category, lon, lat = _arg("category"), _arg("lon"), _arg("lat")
    answer, status, cell = None, 200, None
    if category or lon or lat:
        try:
            answer = administration.who_gets(session, category, lon, lat)
        except DomainError as err:
            status = _refused(err)
    if answer is not None:  # the cell's outline, drawn on the map
        cell = session.scalar(
            select(func.ST_AsGeoJSON(GridCell.geom)).where(GridCell.id == answer.location.cell_id)
        )
    page = render_template(
        "dispatch/admin_routing_test.html",
        answer=answer,
        cell=cell,
        category=category,
        lon=lon,
        lat=lat,
        majors=_choices(session)["majors"],
        level_label=level_label,
        kind_label=kind_label,
        tiles=city_settings().tile_url,
        centre=territory_centre(session),
    )
    return page, status, NO_STORE


def answer_json(answer: administration.Answer) -> dict[str, Any]:
    """The tester's answer as JSON (codes, ids and English reasons)."""

    def unit_json(unit: Unit | None) -> dict[str, Any] | None:
        if unit is None:
            return None
        return {"code": unit.code, "name": unit.name, "kind": unit.kind, "active": unit.active}

    rule = answer.rule
    return {
        "category": answer.category.code,
        "lon": answer.lon,
        "lat": answer.lat,
        "cell": answer.location.cell_code,
        "community": {"code": answer.community.code, "name": answer.community.name},
        "routable": answer.routable,
        "decided_by": answer.why,
        "reason": answer.route.reason,
        "unit": unit_json(answer.unit),
        "rule": None
        if rule is None
        else {
            "id": rule.id,
            "area": next((c.area.code for c in answer.candidates if c.decides and c.area), None),
            "priority": rule.priority,
            "note": rule.note,
        },
        "community_unit": unit_json(answer.community_unit),
        "candidates": [
            {
                "rule": c.rule.id,
                "area": c.area.code if c.area else None,
                "unit": c.unit.code,
                "unit_active": c.unit.active,
                "priority": c.rule.priority,
                "decides": c.decides,
            }
            for c in answer.candidates
        ],
    }


@bp.get("/routing/test.json")
@role_required(Role.ADMIN)
def routing_test_json() -> ResponseReturnValue:
    """The tester as JSON: `?category=CODE&lon=..&lat=..`; errors in the JSON error format."""
    try:
        answer = administration.who_gets(db.session(), _arg("category"), _arg("lon"), _arg("lat"))
    except DomainError as err:
        body = {"error": {"code": err.code, "message": err.message, **err.details}}
        return jsonify(body), err.status, NO_STORE
    return jsonify(answer_json(answer)), 200, NO_STORE


def init_app(app: Flask) -> None:
    """Register the units and routing pages."""
    app.register_blueprint(bp)
