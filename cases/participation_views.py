"""The public's part in the loop, as pages and JSON: reports near me (and the report page's
"this may already be reported" panel), adding one's support to a report, and the operators'
review of follow-up complaints (re-handling, 重办)."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select

from cases import nearby, rehandling, support
from cases.followup import FIXED_TEXT, SATISFACTION_TEXT, Fixed, Satisfaction
from cases.forms import request_fields
from cases.models import Case
from cases.views import case_context, signed_in
from gridmgmt.kernel import clock, ratelimit
from gridmgmt.kernel.db import db, reads_replica
from gridmgmt.kernel.errors import DomainError, InvalidInput
from gridmgmt.kernel.http_errors import LOCALIZED_HEADER
from gridmgmt.kernel.i18n import current_lang
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import Role, Unit
from gridmgmt.kernel.settings import city_settings
from gridmgmt.kernel.web import role_required
from grids.models import Area
from grids.services import territory_centre

bp = Blueprint("participation", __name__, template_folder="templates")
KEPT = ("lon", "lat", "radius", "community", "state", "category")


def _decimals() -> int:
    return int(current_app.config["PUBLIC_COORDINATE_DECIMALS"])


def _track_url(number: str) -> str:
    return url_for("cases.track_case", number=number)


def nearby_json(page: nearby.NearbyPage) -> dict[str, Any]:
    """A page of reports near a place as the JSON endpoint answers it."""
    lang = current_lang()
    items = [i.as_json(lang, _, _track_url(i.view.case.number)) for i in page.items]
    return {
        "items": items,
        "page": page.query.page,
        "page_size": page.query.page_size,
        "has_more": page.has_more,
        "radius_m": page.radius_m,
        "community": page.query.community,
    }


def _json_wanted() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


def json_error(err: DomainError) -> ResponseReturnValue:
    """A domain error as the JSON API answers it (`gridmgmt.kernel.http_errors`), for the JSON
    endpoints outside /api/."""
    body = {"code": err.code, "message": err.text.render(), **err.details}
    if request.headers.get(LOCALIZED_HEADER) == "1":  # the page shows it as it is
        body["localized"] = err.render(_)
    return jsonify(error=body), err.status


def _limit_reads() -> None:
    ratelimit.limit(
        "reads",
        per_client="RATE_READS_PER_CLIENT",
        per_account="RATE_READS_PER_ACCOUNT",
        account=ratelimit.account_of_user(),
    )


@bp.get("/nearby.json")
@reads_replica
def nearby_reports_json() -> ResponseReturnValue:
    """Reports near a point (`lon`, `lat`, `radius` in metres) or in a `community`, in their
    public view, newest first and paged; `duplicates=1&category=CODE`: the open reports of
    that class within its duplicate radius and window, nearest first."""
    try:
        _limit_reads()
        query = nearby.parse_query(request.args)
        found = nearby.find_nearby(db.session(), query, _decimals(), clock.now_utc())
    except DomainError as err:
        return json_error(err)
    return jsonify(nearby_json(found))


@bp.get("/nearby")
@reads_replica
def nearby_page() -> ResponseReturnValue:
    """Reports near me: a form (a point, a radius, or a community), the list and a small map.
    Without a place asked for, only the form (and "use my location")."""
    session = db.session()
    communities = list(
        session.scalars(select(Area).where(Area.level == "community").order_by(Area.code))
    )
    found = None
    if request.args.get("lon") or request.args.get("community"):
        _limit_reads()
        query = nearby.parse_query(request.args)
        found = nearby.find_nearby(session, query, _decimals(), clock.now_utc())
    return render_template(
        "cases/nearby.html",
        found=found,
        markers=nearby_json(found)["items"] if found else [],
        communities=communities,
        args=request.args,
        # the page links keep only the query's own parameters (never url_for's `_external`...)
        keep={k: request.args[k] for k in KEPT if request.args.get(k)},
        radii=(100, 250, 500, 1000, 2000),
        tiles=city_settings().tile_url,
        centre=territory_centre(session),
    )


def _limit_support() -> None:
    ratelimit.limit(
        "support",
        per_client="RATE_SUPPORT_PER_CLIENT",
        per_account="RATE_SUPPORT_PER_ACCOUNT",
        account=ratelimit.account_of_user(),
    )


@bp.post("/track/<number>/support")
def support_case(number: str) -> ResponseReturnValue:
    """Add my support to an open report instead of filing a duplicate: signed in, or with an
    e-mail or phone (JSON or a form). 201 when recorded, 200 when I already supported it."""
    try:
        _limit_support()  # a refusal is a 429, before any work
        fields = request_fields()
        data = support.SupportInput(
            email=str(fields.get("email") or ""),
            phone=str(fields.get("phone") or ""),
            name=str(fields.get("name") or ""),
            lang=current_lang(),
        )
        with db.transaction() as session:
            done = support.add_support(session, number, signed_in(), data, clock.now_utc())
            body = {
                "number": done.case.number,
                "created": done.created,
                "supporters": done.supporters,
                "url": _track_url(done.case.number),
            }
    except DomainError as err:
        if _json_wanted():
            return json_error(err)
        raise
    if _json_wanted():
        return jsonify(body), 201 if done.created else 200
    message = (
        _("Thank you: your support of case %(number)s is recorded.", number=body["number"])
        if done.created
        else _("You already support case %(number)s.", number=body["number"])
    )
    flash(message, "ok")
    return redirect(body["url"], code=303)


# ---------------------------------------------------------------- re-handling (重办)


def _queue(status: int = 200, error: str | None = None) -> ResponseReturnValue:
    session = db.session()
    pending = rehandling.pending_reviews(session)
    unit_ids = {p.case.unit_id for p in pending if p.case.unit_id}
    units = {u.id: u for u in session.scalars(select(Unit).where(Unit.id.in_(unit_ids)))}
    if error:
        flash(error, "error")
    return render_template(
        "cases/review.html",
        pending=pending,
        units=units,
        fixed_text=FIXED_TEXT,
        satisfaction_text=SATISFACTION_TEXT,
        Fixed=Fixed,
        Satisfaction=Satisfaction,
    ), status


@bp.get("/followup/review")
@role_required(Role.OPERATOR)
def review_queue() -> ResponseReturnValue:
    """The follow-up complaints waiting for an operator's judgement, oldest first."""
    return _queue()


def _version(raw: Any) -> int | None:
    text = "" if raw is None else str(raw).strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput("version must be a whole number", field="version")
    return int(text)


@bp.post("/followup/review/<int:answer_id>")
@role_required(Role.OPERATOR)
def review_complaint(answer_id: int) -> ResponseReturnValue:
    """Judge one complaint: `verdict` reasonable (the case is re-handled by the same unit) or
    unreasonable (`reason` required); `version`: the case's version the operator saw."""
    fields = request_fields()
    json_answer = _json_wanted()
    try:
        with db.transaction() as session:
            answer = rehandling.review_answer(
                session,
                answer_id,
                current_user,
                rehandling.parse_verdict(fields.get("verdict")),
                str(fields.get("reason") or ""),
                _version(fields.get("version")),
                case_context(session),
            )
            case = session.get(Case, answer.case_id)
            body = {
                "answer": answer.id,
                "review_state": answer.review_state,
                "case": case.number if case else None,
                "status": case.status if case else None,
                "version": case.version if case else None,
                "rehandle_count": case.rehandle_count if case else None,
            }
    except DomainError as err:
        if json_answer:
            return json_error(err)
        if err.status == 404:
            raise
        return _queue(err.status, err.render(_))
    if json_answer:
        return jsonify(body)
    flash(
        _("Case %(number)s is sent back to its unit for re-handling.", number=body["case"])
        if body["review_state"] == rehandling.Verdict.REASONABLE.value
        else _(
            "The complaint about case %(number)s is recorded as not reasonable.",
            number=body["case"],
        ),
        "ok",
    )
    return redirect(url_for("participation.review_queue"), code=303)


# ---------------------------------------------------------------- the case page's part


def case_participation(case: Case) -> dict[str, Any]:
    """What the case page shows of the public's part: the supporters' count (staff), and the
    follow-up answers with their reviews (the supervision side and leaders)."""
    session = db.session()
    role = current_user.role if current_user.is_authenticated else None
    sees_reviews = role in {r.value for r in rehandling.SEES_REVIEWS}
    return {
        "supporters": support.supporter_counts(session, [case.id]).get(case.id, 0),
        "answers": rehandling.reviews_of(session, case.id) if sees_reviews else [],
        "fixed_text": FIXED_TEXT,
        "satisfaction_text": SATISFACTION_TEXT,
    }


def init_app(app: Flask) -> None:
    """Register the pages and the case page's `case_participation`."""
    app.register_blueprint(bp)
    app.add_template_global(case_participation, "case_participation")
