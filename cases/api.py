"""The staff and reporters' JSON API: report (idempotent), read a case, act on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, flash, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy.orm import Session

from cases import intake, lifecycle, public_views, queries
from cases.forms import action_input, report_input, request_fields
from cases.lifecycle import ActionInput, CaseContext
from cases.models import Case
from cases.schemas import CaseDetail, CaseSummary, ReportedCase
from cases.views import case_context, limit_reports, photo_root, signed_in, source_for
from gridmgmt.kernel import ratelimit
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import Forbidden
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import Role

bp = Blueprint("api", __name__, url_prefix="/api")
# A report's sender asks with "X-Flash: 1" that the next page say "Case N reported" (and show
# a citizen's follow-up code): the report page does, as it goes to the case next.
FLASH_HEADER = "X-Flash"


def case_json(case: Case, full: bool = True) -> dict[str, Any]:
    """A case as JSON (no reporter contact details, ever): `CaseDetail`, or `CaseSummary`."""
    return (CaseDetail if full else CaseSummary).of(case).json_body()


@bp.post("/reports")
def create_report() -> ResponseReturnValue:
    """Report a problem; 201 with the new case, 200 with the first case on a retried key or
    submission UUID."""
    user = signed_in()
    limit_reports()
    with db.transaction() as session:
        result = intake.report_case(
            session,
            report_input(request_fields(), request.files),
            user,
            source_for(user),
            photo_root(),
        )
        case = result.case
        target = (
            url_for("cases.case_page", case_id=case.id)
            if user is not None
            else url_for("cases.track_case", number=case.number)
        )
        body = ReportedCase.reported(case, target).json_body()
    if request.headers.get(FLASH_HEADER) == "1":
        # The sending page goes to the case next: say it there. Other clients (an outbox
        # sending in the background) have it all in the body: nothing piles up for later.
        flash(_("Case %(number)s reported.", number=body["number"]), "ok")
        if user is None or user.role == Role.CITIZEN:
            flash(public_views.reporter_code_message(body["id"]), "ok")  # shown this once
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
    ratelimit.limit(
        "actions",
        per_client="RATE_ACTIONS_PER_CLIENT",
        per_account="RATE_ACTIONS_PER_ACCOUNT",
        account=ratelimit.account_of_user(),
    )
    if signed_in() is None:
        raise Forbidden("sign in to act on cases")
    data = action_input(request_fields(), request.files)
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
