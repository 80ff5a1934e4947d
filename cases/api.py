"""The staff and reporters' JSON API: report (idempotent), read a case, act on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, flash, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from geoalchemy2.shape import to_shape
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from cases import intake, lifecycle, queries
from cases.lifecycle import ActionInput, CaseContext
from cases.models import Case
from cases.views import (
    action_input,
    case_context,
    photo_root,
    report_input,
    signed_in,
    source_for,
)
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import Forbidden, InvalidInput
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.i18n import localized

bp = Blueprint("api", __name__, url_prefix="/api")


def case_json(case: Case, full: bool = True) -> dict[str, Any]:
    """A case as JSON (no reporter contact details, ever)."""
    point = to_shape(case.location)
    data: dict[str, Any] = {
        "id": case.id,
        "number": case.number,
        "status": case.status,
        "category": case.category.code,
        "category_name": localized(case.category, "name"),
        "lon": point.x,
        "lat": point.y,
        "address": case.address,
        "urgent": case.urgent,
        "deadline": case.deadline.isoformat() if case.deadline else None,
        "unit_id": case.unit_id,
        "version": case.version,
        "rework_count": case.rework_count,
        "reported_at": case.reported_at.isoformat(),
    }
    if full:
        data["events"] = [
            {
                "action": e.action,
                "from": e.from_status,
                "to": e.to_status,
                "role": e.actor_role,
                "note": e.note,
                "at": e.created_at.isoformat(),
            }
            for e in case.events
        ]
    return data


def _text(value: object) -> str:
    """A JSON value as a form field: booleans as true/false, null as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _form() -> MultiDict[str, str]:
    """Form fields, from multipart/form-encoded bodies or a JSON object."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise InvalidInput("the body must be a JSON object")
        return MultiDict({k: _text(v) for k, v in body.items()})
    return request.form


@bp.post("/reports")
def create_report() -> ResponseReturnValue:
    """Report a problem; 201 with the new case, 200 with the first case on a retried key."""
    user = signed_in()
    with db.transaction() as session:
        result = intake.report_case(
            session,
            report_input(_form(), request.files),
            user,
            source_for(user),
            photo_root(),
        )
        case = result.case
        body = case_json(case, full=False)
        target = (
            url_for("cases.case_page", case_id=case.id)
            if user is not None
            else url_for("cases.track_case", number=case.number)
        )
    body["url"] = target
    flash(_("Case {number} reported.", number=body["number"]), "ok")  # shown on the next page
    return jsonify(body), 201 if result.created else 200


@bp.get("/cases/<int:case_id>")
def get_case(case_id: int) -> ResponseReturnValue:
    """One case the signed-in user may see."""
    user = signed_in()
    if user is None:
        raise Forbidden("sign in to read cases")
    return jsonify(case_json(queries.get_case(db.session(), case_id, user)))


# How the API applies an action: (session, what the body gave, the city's context) → the case.
Perform = Callable[[Session, ActionInput, CaseContext], Case]


def perform_action(perform: Perform) -> ResponseReturnValue:
    """Apply an action for the signed-in user from the request body, in one transaction, and
    answer with the case."""
    if signed_in() is None:
        raise Forbidden("sign in to act on cases")
    data = action_input(_form(), request.files)
    with db.transaction() as session:
        case = perform(session, data, case_context(session))
        body = case_json(case)
    return jsonify(body)


@bp.post("/cases/<int:case_id>/actions/<action>")
def act(case_id: int, action: str) -> ResponseReturnValue:
    """Apply an action; the body carries reason, note, version, unit_id... as the form does
    (dispatching is the dispatcher's own endpoint, `dispatch.api`, at the same address)."""
    return perform_action(
        lambda session, data, context: lifecycle.act(
            session, case_id, action, current_user, data, context
        )
    )


def init_app(app: Flask) -> None:
    """Register the JSON API."""
    app.register_blueprint(bp)
