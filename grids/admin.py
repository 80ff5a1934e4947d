"""The administrators' territory page (`/admin/territory`): what the territory holds, the
import of a GeoJSON layer of districts, streets or communities, the generation of cells, and
the territory check (`/admin/territory/check`) as a list and on a map.

The same services as `flask grids import-units`, `generate-cells` and `check` do the work; a
change writes its audit row in its own transaction (`grids.services.upload_units`,
`make_cells`). Administrators only: anyone else gets 403, the anonymous the login page. A
refused change answers 400-413 with the form again and the reason flashed (for a layer, every
problem of every feature listed); nothing is written.

Generating the demo city's cells (8 communities, 100 m: 2,607 cells) takes 0.9 s and its check
0.5 s, so both run in the request, not as a job. The 99 councils of all Los Angeles (250 m,
20,922 cells) take 16.5 s and 15.5 s on an idle 2-core server (the check about 40 s under a
load of 10), under gunicorn's 60 s timeout; a much larger city would want an RQ job for them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Blueprint, Flask, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge

from gridmgmt.kernel import web
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import N_, DomainError, InvalidInput
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.i18n import number
from gridmgmt.kernel.models import Role, User
from gridmgmt.kernel.settings import city_settings
from grids import gridding, services
from grids.geojson import parse_layer
from grids.models import AreaLevel

bp = Blueprint("grids_admin", __name__, url_prefix="/admin/territory", template_folder="templates")
NO_STORE = {"Cache-Control": "no-store"}
# A layer the page takes; larger ones go through `flask grids import-units` (the 99 Los
# Angeles councils are 2.5 MB; MAX_CONTENT_LENGTH, 40 MB, bounds every request anyway).
UPLOAD_MAX_BYTES = 32 * 1024 * 1024
MAX_PROBLEMS_SHOWN = 1000  # of a check: the largest first
MAX_FEATURE_PROBLEMS_SHOWN = 500  # of a refused layer
DEFAULT_CELL_SIZE_M = 100.0
DEFAULT_TOLERANCE_M2 = 1.0

LEVEL_LABELS: dict[str, str] = {
    AreaLevel.DISTRICT.value: N_("Districts"),
    AreaLevel.STREET.value: N_("Streets"),
    AreaLevel.COMMUNITY.value: N_("Communities"),
}
PROBLEM_LABELS: dict[str, str] = {
    "cell_overlap": N_("Cells overlap"),
    "cell_outside": N_("Cell outside its community"),
    "community_gap": N_("Part of a community without cells"),
    "community_overlap": N_("Communities overlap"),
}


def _actor() -> User:
    return db.session.get(User, current_user.id)  # type: ignore[return-value]


def _text(name: str, limit: int = 64) -> str:
    return request.form.get(name, "").strip()[:limit]


def _refused(err: DomainError) -> int:
    flash(err.render(_), "error")
    return err.status


def _upload_limit() -> int:
    return int(current_app.config.get("TERRITORY_UPLOAD_MAX_BYTES", UPLOAD_MAX_BYTES))


def _page(
    form: dict[str, Any] | None = None,
    status: int = 200,
    rejected: services.LayerImport | None = None,
) -> ResponseReturnValue:
    areas = services.territory_summary(db.session())
    by_level = {level.value: [a for a in areas if a.level == level.value] for level in AreaLevel}
    communities = by_level[AreaLevel.COMMUNITY.value]
    page = render_template(
        "grids/admin_territory.html",
        by_level=by_level,
        level_labels={k: _(v) for k, v in LEVEL_LABELS.items()},
        without_cells=[a for a in communities if a.cells == 0],
        without_unit=[a for a in communities if a.unit_code is None],
        total_cells=sum(a.cells for a in communities),
        form=form or {},
        rejected=rejected,
        problems=(rejected.problems[:MAX_FEATURE_PROBLEMS_SHOWN] if rejected else []),
        render=lambda err: err.render(_),
        limit_mb=_upload_limit() // (1024 * 1024),
        default_size=DEFAULT_CELL_SIZE_M,
        code_lengths=sorted(gridding.SEQUENCE_WIDTH, reverse=True),
        default_code_length=gridding.DEFAULT_CELL_CODE_LENGTH,
    )
    return page, status, NO_STORE


@bp.get("")
@web.role_required(Role.ADMIN)
def territory() -> ResponseReturnValue:
    """What the territory holds, and the forms that import areas and generate cells."""
    return _page()


def _uploaded_layer() -> tuple[dict[str, Any], str]:
    """The uploaded file's layer and name.

    Raises:
        InvalidInput: no file, or not a GeoJSON FeatureCollection in EPSG:4326.
        RequestEntityTooLarge: a file over the page's limit.
    """
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise InvalidInput("choose a GeoJSON file to import")
    data = upload.read(_upload_limit() + 1)
    if len(data) > _upload_limit():
        raise RequestEntityTooLarge()
    name = upload.filename[:200]
    return parse_layer(data, name), name


def _too_large(form: dict[str, Any]) -> ResponseReturnValue:
    flash(
        _(
            "The file is larger than the %(limit)s MB this page takes: import it with "
            "flask grids import-units.",
            limit=_upload_limit() // (1024 * 1024),
        ),
        "error",
    )
    return _page(form=form, status=413)


@bp.post("/import")
@web.role_required(Role.ADMIN)
def import_layer() -> ResponseReturnValue:
    """Import a GeoJSON layer of one level, as `flask grids import-units` does; a layer with a
    problem in any feature is refused whole, each problem listed."""
    form = {"form": "import", **request.form}
    if (request.content_length or 0) > _upload_limit() + 64 * 1024:  # + the form's fields
        return _too_large(form)
    level = _text("level", 16)
    parent_code = _text("parent_code", 12) or None
    try:
        if level not in LEVEL_LABELS:
            raise InvalidInput(
                "unknown level %(level)r; use district, street or community", level=level
            )
        code_field, name_field = _text("code_field"), _text("name_field")
        if not code_field or not name_field:
            raise InvalidInput("name the properties that hold each area's code and name")
        try:
            layer, source = _uploaded_layer()
        except RequestEntityTooLarge:
            return _too_large(form)
        with db.transaction() as session:
            outcome = services.upload_units(
                session,
                _actor(),
                layer,
                level,
                code_field,
                name_field,
                parent_code=parent_code,
                make_valid=request.form.get("make_valid") == "1",
                source=source,
            )
    except DomainError as err:
        return _page(form=form, status=_refused(err))
    if outcome.result is None:
        flash(
            _(
                "Features with problems: %(count)s of %(total)s. Nothing was imported.",
                count=number(outcome.rejected),
                total=number(outcome.total),
            ),
            "error",
        )
        return _page(form=form, status=400, rejected=outcome)
    flash(
        _(
            "%(file)s: %(created)s created, %(updated)s updated.",
            file=source,
            created=number(outcome.result.created),
            updated=number(outcome.result.updated),
        ),
        "ok",
    )
    return redirect(url_for("grids_admin.territory"), 303)


@bp.post("/cells")
@web.role_required(Role.ADMIN)
def generate() -> ResponseReturnValue:
    """Generate the cells of one community or of all, as `flask grids generate-cells` does."""
    form = {"form": "cells", **request.form}
    community = _text("community", 12) or None
    try:
        try:
            size = float(_text("size", 16))
        except ValueError:
            raise InvalidInput("the cell size must be a number of metres") from None
        length = _text("code_length", 2) or str(gridding.DEFAULT_CELL_CODE_LENGTH)
        if not length.isdigit():
            raise InvalidInput("cell codes are 14 or 15 digits, not %(length)s", length=length)
        code_length = int(length)
        if not math.isfinite(size):
            raise InvalidInput("the cell size must be a number of metres")
        with db.transaction() as session:
            made = services.make_cells(session, _actor(), size, community, code_length)
    except DomainError as err:
        return _page(form=form, status=_refused(err))
    if community is not None:
        name = made.communities.get(community, ("", 0))[0]
        flash(
            _(
                "%(code)s %(name)s: cells of %(size)s m made: %(count)s.",
                code=community,
                name=name,
                count=number(made.total),
                size=number(size),
            ),
            "ok",
        )
    else:
        flash(
            _(
                "Cells of %(size)s m made: %(count)s, in %(communities)s communities.",
                count=number(made.total),
                size=number(size),
                communities=number(len(made.communities)),
            ),
            "ok",
        )
    return redirect(url_for("grids_admin.territory"), 303)


@bp.get("/check")
@web.role_required(Role.ADMIN)
def check() -> ResponseReturnValue:
    """The territory check (`flask grids check`): its problems as a list and on a map."""
    raw = request.args.get("tolerance", "").strip()[:16]
    status = 200
    try:
        tolerance = float(raw) if raw else DEFAULT_TOLERANCE_M2
        if not (math.isfinite(tolerance) and 0 <= tolerance <= 1_000_000):
            raise ValueError
    except ValueError:
        flash(_("The tolerance must be a number of m² between 0 and 1000000."), "error")
        tolerance, status = DEFAULT_TOLERANCE_M2, 400
    report = services.check_territory(db.session(), tolerance, shapes=True)
    problems = sorted(report.problems, key=lambda p: -p.area_m2)[:MAX_PROBLEMS_SHOWN]
    kinds: dict[str, int] = {}
    for problem in report.problems:
        kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
    settings = city_settings()
    page = render_template(
        "grids/admin_check.html",
        report=report,
        problems=problems,
        kinds=kinds,
        labels={k: _(v) for k, v in PROBLEM_LABELS.items()},
        tolerance=tolerance,
        tiles=settings.tile_url,
        attribution=settings.tile_attribution,
        points=[
            {
                "kind": p.kind,
                "label": _(PROBLEM_LABELS[p.kind]),
                "first": p.first,
                "second": p.second,
                "m2": round(p.area_m2, 1),
                "lon": p.lon,
                "lat": p.lat,
                "shape": json.loads(p.shape) if p.shape else None,
            }
            for p in problems
        ],
    )
    return page, status, NO_STORE


def init_app(app: Flask) -> None:
    """Register the territory administration page."""
    app.register_blueprint(bp)
