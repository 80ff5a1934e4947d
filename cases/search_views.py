"""The staff's case search page (`/cases/search`) and its CSV (`/cases/search.csv`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    Response,
    flash,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select

from cases import search
from cases.models import Category, MajorClass
from cases.search import CaseQuery, Cursor, SearchPage
from cases.status import CaseStatus
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import DomainError
from gridmgmt.kernel.i18n import current_lang, display_timezone
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import Role, Unit
from gridmgmt.kernel.web import role_required
from grids.models import Area

bp = Blueprint("case_search", __name__, template_folder="templates")
NO_STORE = {"Cache-Control": "no-store"}  # results may come from a reporter's contact


def _choices(role: str) -> dict[str, Any]:
    """The form's lists: classes, statuses, units (not for unit staff: theirs only), and
    communities."""
    session = db.session()
    categories = session.execute(
        select(Category).join(MajorClass).order_by(MajorClass.kind, MajorClass.code, Category.code)
    ).scalars()
    return {
        "categories": list(categories),
        "statuses": list(CaseStatus),
        "units": []
        if role == Role.UNIT_STAFF
        else list(session.scalars(select(Unit).order_by(Unit.code))),
        "communities": list(
            session.scalars(select(Area).where(Area.level == "community").order_by(Area.name))
        ),
        "may_search_contact": role in search.CONTACT_ROLES,
    }


def _form(
    query: CaseQuery | None, page: SearchPage | None, status: int = 200, after: str = ""
) -> ResponseReturnValue:
    """The page: the form (filled with what was asked) and the results, if any."""
    asked = query.args() if query else {k: v for k, v in request.args.items() if k != "after"}
    return (
        render_template(
            "cases/search.html",
            asked=asked,
            page=page,
            after=after,
            next_url=(search_url(asked, after=page.next.encode()) if page and page.next else None),
            first_url=search_url(asked) if after else None,
            csv_url=search_url(asked, endpoint="case_search.export") if page else None,
            cap=search.EXPORT_CAP,
            **_choices(current_user.role),
        ),
        status,
        NO_STORE,
    )


def search_url(
    args: dict[str, str], endpoint: str = "case_search.search_page", **extra: str
) -> str:
    """A link to the page (or the CSV) with these filters."""
    return url_for(endpoint, **args, **extra)


def _zone() -> ZoneInfo:
    return ZoneInfo(display_timezone())


@bp.get("/cases/search")
@role_required(*search.SEARCH_ROLES)
def search_page() -> ResponseReturnValue:
    """Search cases; with no filter at all, the form alone."""
    if not any(v.strip() for k, v in request.args.items() if k != "after"):
        return _form(None, None)
    try:
        query = search.parse_query(request.args)
        raw_after = request.args.get("after", "")
        after = Cursor.decode(raw_after) if raw_after else None
        session = db.session()
        search.prepare(session, current_user, query)
        page = search.find_cases(session, current_user, query, _zone(), after)
    except DomainError as err:
        flash(err.render(_), "error")
        return _form(None, None, err.status)
    return _form(query, page, after=raw_after)


@bp.get("/cases/search.csv")
@role_required(*search.SEARCH_ROLES)
def export() -> ResponseReturnValue:
    """The whole result as CSV (at most `EXPORT_CAP` rows; a last line says when there were
    more), streamed a chunk at a time, each read on a connection given back before it is sent."""
    try:
        query = search.parse_query(request.args)
        search.prepare(db.session(), current_user, query, export=True)
    except DomainError as err:
        flash(err.render(_), "error")
        return _form(None, None, err.status)
    user, zone, lang = current_user._get_current_object(), _zone(), current_lang()
    db.session.close()  # the checks' connection back now, not after the last byte

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([header for header, _field in search.EXPORT_COLUMNS])
        for row in search.export_cases(db.read, user, query, zone, lang):
            if row is None:
                writer.writerow(
                    [
                        _(
                            "Only the newest %(cap)s cases: narrow the search to have the rest.",
                            cap=search.EXPORT_CAP,
                        )
                    ]
                )
            else:
                writer.writerow(row.values())
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    response = Response(stream_with_context(lines()), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="cases-search.csv"'
    response.headers.update(NO_STORE)
    return response


def init_app(app: Flask) -> None:
    """Register the search pages."""
    app.register_blueprint(bp)
