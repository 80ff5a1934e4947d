"""Territory data for the maps of every page (served by the app: no internet needed)."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from gridmgmt.db import db
from grids import services

bp = Blueprint("grids", __name__)


@bp.get("/territory/communities.geojson")
def communities() -> ResponseReturnValue:
    """Community outlines (simplified), cached in the process: they change only on import."""
    cache = current_app.extensions.setdefault("gridmgmt.outlines", {})
    if "communities" not in cache:
        cache["communities"] = services.community_outlines(db.session())
    response = jsonify(cache["communities"])
    response.cache_control.max_age = 300
    return response


def init_app(app: Flask) -> None:
    """Register the territory endpoints."""
    app.register_blueprint(bp)
