"""The dispatcher's part of the staff JSON API: dispatching a case, at the address of every
other action (`POST /api/cases/<id>/actions/dispatch`)."""

from __future__ import annotations

from flask import Blueprint, Flask
from flask.typing import ResponseReturnValue
from flask_login import current_user

from cases.api import perform_action
from dispatch import services

bp = Blueprint("dispatch_api", __name__, url_prefix="/api")


@bp.post("/cases/<int:case_id>/actions/dispatch")
def dispatch_case(case_id: int) -> ResponseReturnValue:
    """Dispatch a case to the routed unit, or to `unit_id`; answers with the case."""
    return perform_action(
        lambda session, data, context: services.dispatch_case(
            session, case_id, current_user, data, context
        )
    )


def init_app(app: Flask) -> None:
    """Register the dispatch endpoint of the JSON API."""
    app.register_blueprint(bp)
