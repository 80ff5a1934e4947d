"""Territory data for the maps of every page (served by the app: no internet needed)."""

from __future__ import annotations

import math

from flask import Blueprint, Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue

from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import InvalidInput
from grids import services

bp = Blueprint("grids", __name__)

# The largest box of cells one request may ask for, in degrees a side (~5 km: a desktop
# screen at zoom 15; the maps ask for 0.01° chunks from zoom 17 on).
BOX_MAX_DEG = 0.05
# Territory data changes with an import, not by the minute: browsers may keep it this long.
CACHE_SECONDS = 300

Box = tuple[float, float, float, float]


@bp.get("/territory/communities.geojson")
def communities() -> ResponseReturnValue:
    """Community outlines (simplified). Browsers keep them 5 minutes; the server reads them
    each time, so an import shows without a restart (a few milliseconds for 100 areas)."""
    response = jsonify(services.community_outlines(db.session()))
    response.cache_control.max_age = CACHE_SECONDS
    return response


def parse_box(raw: str | None) -> Box:
    """`west,south,east,north` in degrees (lon, lat), as the `bbox` parameter gives it.

    Raises:
        InvalidInput: missing, not four numbers, off the globe, empty or wider than
            BOX_MAX_DEG a side.
    """
    if not raw:
        raise InvalidInput("bbox is required: west,south,east,north in degrees", field="bbox")
    try:
        west, south, east, north = (float(part) for part in raw.split(","))
    except ValueError:
        raise InvalidInput(
            "bbox must be four numbers: west,south,east,north in degrees", field="bbox"
        ) from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise InvalidInput(
            "bbox must be four numbers: west,south,east,north in degrees", field="bbox"
        )
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise InvalidInput(
            "bbox must have west < east within ±180 and south < north within ±90", field="bbox"
        )
    if east - west > BOX_MAX_DEG or north - south > BOX_MAX_DEG:
        raise InvalidInput(
            "bbox is at most %(most)s degrees a side: ask for a smaller box",
            field="bbox",
            most=BOX_MAX_DEG,
        )
    return west, south, east, north


@bp.get("/territory/cells.geojson")
def cells() -> ResponseReturnValue:
    """The unit grid cells in `?bbox=west,south,east,north` with their codes, for the maps'
    labels at street level (at most services.CELLS_MAX; `truncated` says there were more).
    Cacheable: the same box is the same URL, with an ETag for the browser to ask again.
    A bad box is a 400 in the JSON error format, whatever the Accept header says."""
    try:
        box = parse_box(request.args.get("bbox"))
    except InvalidInput as err:
        return jsonify(error={"code": err.code, "message": err.message, **err.details}), 400
    response: Response = jsonify(services.cells_in_box(db.session(), box))
    response.cache_control.public = True
    response.cache_control.max_age = CACHE_SECONDS
    response.add_etag()
    return response.make_conditional(request)


def init_app(app: Flask) -> None:
    """Register the territory endpoints."""
    app.register_blueprint(bp)
