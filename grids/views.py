"""Territory data for the maps of every page (served by the app: no internet needed)."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue

from gridmgmt.kernel.db import db
from grids import services

bp = Blueprint("grids", __name__)


@bp.get("/territory/communities.geojson")
def communities() -> ResponseReturnValue:
    """Community outlines (simplified). Browsers keep them 5 minutes; the server reads them
    each time, so an import shows without a restart (a few milliseconds for 100 areas)."""
    response = jsonify(services.community_outlines(db.session()))
    response.cache_control.max_age = 300
    return response


def init_app(app: Flask) -> None:
    """Register the territory endpoints."""
    app.register_blueprint(bp)
