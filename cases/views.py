"""Server-rendered pages of the loop: report, lists per role, the case page, tracking."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from geoalchemy2.shape import to_shape
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session, selectinload

from cases import intake, lifecycle, public, public_views, queries
from cases import photos as photo_store
from cases.catalogue import urgent_policy
from cases.forms import action_input, report_input
from cases.lifecycle import (
    Action,
    ActionInput,
    CaseContext,
    RejectReason,
    allowed_actions,
    is_overdue,
)
from cases.models import Case, CaseSource, CaseStatus, Category, MajorClass, Photo
from gridmgmt.kernel import clock, ratelimit
from gridmgmt.kernel.calendar_store import city_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import DomainError
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.i18n import is_local_path, status_label, words
from gridmgmt.kernel.models import Role, Unit, User
from gridmgmt.kernel.settings import city_settings
from gridmgmt.kernel.web import role_required
from grids.services import territory_centre

bp = Blueprint("cases", __name__, template_folder="templates")

UNIT_QUEUE = (CaseStatus.DISPATCHED, CaseStatus.IN_PROGRESS, CaseStatus.SUSPENDED)
SOURCE_OF_ROLE = {
    Role.INSPECTOR: CaseSource.INSPECTOR,
    Role.OPERATOR: CaseSource.OPERATOR,
}


def photo_root() -> Path:
    """The folder photos are stored in (`PHOTO_DIR`): all a report needs of the settings."""
    return Path(current_app.config["PHOTO_DIR"])


def case_context(session: Session) -> CaseContext:
    """The city's calendar, the photo folder and the reopen period, from the app's config."""
    return CaseContext(
        calendar=city_calendar(session),
        photo_root=photo_root(),
        reopen_within=timedelta(days=int(current_app.config["REOPEN_DAYS"])),
    )


def signed_in() -> User | None:
    """The signed-in user, or None for an anonymous visitor."""
    return current_user if current_user.is_authenticated else None  # type: ignore[return-value]


def source_for(user: User | None) -> CaseSource:
    """The channel of a web report."""
    if user is None:
        return CaseSource.CITIZEN
    return SOURCE_OF_ROLE.get(Role(user.role), CaseSource.CITIZEN)


def catalogue(session: Session) -> list[MajorClass]:
    """Major classes with their active minor classes, for the category picker."""
    return list(
        session.scalars(
            select(MajorClass)
            .options(selectinload(MajorClass.categories))
            .order_by(MajorClass.kind, MajorClass.code)
        )
    )


@bp.get("/report")
def report_form() -> ResponseReturnValue:
    """The report page: position, category, description, photos."""
    return render_template(
        "cases/report.html",
        majors=catalogue(db.session()),
        idempotency_key=uuid.uuid4().hex,
        tiles=city_settings().tile_url,
        centre=territory_centre(db.session()),
        may_mark_urgent=may_mark_urgent(),
    )


def may_mark_urgent() -> bool:
    """Whether the report form offers "urgent" to this reporter (the catalogue's policy; the
    service ignores anyone else's flag anyway)."""
    role = current_user.role if current_user.is_authenticated else None
    return urgent_policy().allows(role)


def limit_reports() -> None:
    """Count a report against the limits per client address and per signed-in account.

    Raises:
        TooManyRequests: past a limit (429 with Retry-After).
    """
    ratelimit.limit(
        "reports",
        per_client="RATE_REPORTS_PER_CLIENT",
        per_account="RATE_REPORTS_PER_ACCOUNT",
        account=ratelimit.account_of_user(),
    )


@bp.post("/report")
def report_submit() -> ResponseReturnValue:
    """The report form without JavaScript: same service, then the case or tracking page."""
    user = signed_in()
    limit_reports()  # a refusal is the error page, before any work
    try:
        with db.transaction() as session:
            result = intake.report_case(
                session,
                report_input(request.form, request.files),
                user,
                source_for(user),
                photo_root(),
            )
            case_id, number = result.case_id, result.number
    except DomainError as err:
        flash(err.render(_), "error")
        return render_template(
            "cases/report.html",
            majors=catalogue(db.session()),
            idempotency_key=request.form.get("idempotency_key") or uuid.uuid4().hex,
            tiles=city_settings().tile_url,
            centre=territory_centre(db.session()),
            may_mark_urgent=may_mark_urgent(),
            form=request.form,
        ), err.status
    flash(_("Case %(number)s reported.", number=number), "ok")
    if user is None or user.role == Role.CITIZEN:
        flash(public_views.reporter_code_message(case_id), "ok")  # shown this once
    if user is None:
        return redirect(url_for("cases.track_case", number=number))
    return redirect(url_for("cases.case_page", case_id=case_id))


LIST_LIMIT = 200  # cases shown in each list of a page
# What a list shows of each case, read as plain rows with the category's names: a mapped case
# (40 columns, two JSON documents and a point) cost six times as much to load.
LIST_COLUMNS = (
    Case.id,
    Case.number,
    Case.status,
    Case.version,
    Case.source,
    Case.urgent,
    Case.rework_count,
    Case.pending_request,
    Case.description,
    Case.address,
    Case.reported_at,
    Case.deadline,
    Category.name_zh.label("category_name_zh"),
    Category.name_en.label("category_name_en"),
)


@dataclass(slots=True)
class ListedCase:
    """A case as the lists show it: its row of `LIST_COLUMNS`, and its page, category, status
    and deadline as the reader sees them, worked out here with the page's `words()` rather
    than by template calls per row (a page lists up to 800 cases)."""

    id: int
    number: str
    status: str
    version: int
    source: str
    urgent: bool
    rework_count: int
    pending_request: str | None
    description: str
    address: str | None
    reported_at: datetime
    deadline: datetime | None
    url: str
    category: str
    status_label: str
    pending_label: str  # "Asks for extension"... in the reader's language, or ""
    deadline_shown: str  # in the display zone, or ""
    late: bool  # past its deadline while the deadline counts


def listed_cases(rows: Iterable[Row[Any]], now: datetime) -> list[ListedCase]:
    """`ListedCase`s of rows of `LIST_COLUMNS`, overdue as of `now`."""
    w = words()
    return [
        ListedCase(
            *row[:-2],  # its own columns (the category's names are the last two)
            url=url_for("cases.case_page", case_id=row.id),
            category=w.localized(row, "category_name"),
            status_label=w.status(row.status),
            pending_label=w("Asks for " + row.pending_request) if row.pending_request else "",
            deadline_shown=w.localtime(row.deadline),
            late=is_overdue(row.status, row.deadline, now),
        )
        for row in rows
    ]


def list_cases(*where: Any, order: Any, limit: int = LIST_LIMIT) -> list[ListedCase]:
    """The first `limit` cases matching `where`, in `order` (a column or a tuple of them): what
    the lists of the pages show of them."""
    rows = db.session.execute(
        select(*LIST_COLUMNS)
        .join(Category, Category.id == Case.category_id)
        .where(*where)
        .order_by(*(order if isinstance(order, tuple) else (order,)))
        .limit(limit)
    )
    return listed_cases(rows, clock.now_utc())


SECTION_LIMIT = 50  # cases shown in each list of a page of work (inbox, board); the rest counted


@dataclass(frozen=True)
class Section:
    """The first cases of one list of a page of work, and how many there are in all: an
    operator or a dispatcher works from the oldest, and a page of hundreds of cards, each
    with its forms, is slow to send and to read."""

    cases: list[Any]
    total: int


def counted(cases: list[Any], *where: Any) -> Section:
    """A section of the first cases matching `where`, counting them all only when the first
    ones fill the section."""
    if len(cases) < SECTION_LIMIT:
        return Section(cases, len(cases))
    return Section(cases, db.session.scalar(select(func.count()).select_from(Case).where(*where)))


def list_section(*where: Any, order: Any) -> Section:
    """The first `SECTION_LIMIT` cases matching `where` (`list_cases`), and their count."""
    return counted(list_cases(*where, order=order, limit=SECTION_LIMIT), *where)


@bp.get("/cases/mine")
@role_required(Role.INSPECTOR, Role.CITIZEN)
def my_cases() -> ResponseReturnValue:
    """The cases I reported, newest first."""
    cases = list_cases(Case.reporter_id == current_user.id, order=Case.id.desc())
    return render_template("cases/list.html", title=_("My cases"), sections=[("", cases)])


@bp.get("/tasks")
@role_required(Role.INSPECTOR)
def verification_tasks() -> ResponseReturnValue:
    """Citizen reports to verify and handled cases to check on site (mine or anyone's)."""
    to_verify = list_cases(Case.status == CaseStatus.REPORTED, order=Case.reported_at)
    to_check = list_cases(
        Case.status == CaseStatus.CHECKING,
        (Case.check_inspector_id == current_user.id) | Case.check_inspector_id.is_(None),
        order=Case.handled_at,
    )
    return render_template(
        "cases/list.html",
        title=_("Verification tasks"),
        sections=[(_("Reports to verify"), to_verify), (_("Results to check on site"), to_check)],
    )


@bp.get("/inbox")
@role_required(Role.OPERATOR, Role.ADMIN)
def inbox() -> ResponseReturnValue:
    """New reports with duplicate suggestions; handled cases to check; checked cases to close."""
    session = db.session()
    new = list_section(
        Case.status.in_([CaseStatus.REPORTED, CaseStatus.VERIFIED]), order=Case.reported_at
    )
    duplicates = queries.duplicates_of(session, [c.id for c in new.cases])
    handled = list_section(Case.status == CaseStatus.HANDLED, order=Case.handled_at)
    checking = list_section(Case.status == CaseStatus.CHECKING, order=Case.id)
    checked = list_section(Case.status == CaseStatus.CHECKED, order=Case.id)
    return render_template(
        "cases/inbox.html",
        new=new,
        duplicates=duplicates,
        sections=[
            (_("Handled: send an inspector to check"), handled),
            (_("Being checked on site"), checking),
            (_("Checked: ready to close"), checked),
        ],
        reject_reasons=list(RejectReason),
    )


@bp.get("/queue")
@role_required(Role.UNIT_STAFF)
def work_queue() -> ResponseReturnValue:
    """My unit's open cases, earliest deadline first; overdue ones marked."""
    cases = list_cases(
        Case.unit_id == current_user.unit_id,
        Case.status.in_(UNIT_QUEUE),
        order=(Case.deadline.asc().nulls_last(), Case.id),
    )
    return render_template("cases/list.html", title=_("Work queue"), sections=[("", cases)])


@bp.get("/cases/<int:case_id>")
@role_required(*Role)
def case_page(case_id: int) -> ResponseReturnValue:
    """One case: details, timeline, photos, map, deadline and the actions I may take."""
    session = db.session()
    case = queries.get_case(session, case_id, current_user)
    now = clock.now_utc()
    actions = allowed_actions(lifecycle.case_state(case), lifecycle.actor_of(current_user), now)
    point = to_shape(case.location)
    named = {
        e.actor_id
        for e in case.events
        if e.actor_id
        and public.names_actor(current_user.role, e.actor_role, e.actor_id == current_user.id)
    }
    people = {u.id: u for u in session.scalars(select(User).where(User.id.in_(named)))}
    return render_template(
        "cases/case.html",
        case=case,
        shown=queries.public_case(session, case),
        unit=session.get(Unit, case.unit_id) if case.unit_id else None,
        actions=actions,
        people=people,
        lon=point.x,
        lat=point.y,
        now=now,
        inspectors=list(
            session.scalars(select(User).where(User.role == Role.INSPECTOR, User.active))
        )
        if Action.ASSIGN_CHECK in actions
        else [],
        units=list(session.scalars(select(Unit).where(Unit.active).order_by(Unit.code)))
        if Action.DISPATCH in actions
        else [],
        duplicates=queries.find_duplicates(session, case) if Action.MERGE in actions else [],
        reject_reasons=list(RejectReason),
        tiles=city_settings().tile_url,
    )


# How a page applies an action: (session, what the form gave, the city's context) → the case.
Perform = Callable[[Session, ActionInput, CaseContext], Case]


def run_action(case_id: int, perform: Perform) -> ResponseReturnValue:
    """Apply an action from a page's form in one transaction, say how it went, and go back
    to where the form came from (the case page by default)."""
    form = request.form
    data = action_input(form, request.files)
    try:
        with db.transaction() as session:
            case = perform(session, data, case_context(session))
            flash(
                _(
                    "Case %(number)s: %(status)s.",
                    number=case.number,
                    status=status_label(case.status),
                ),
                "ok",
            )
    except DomainError as err:
        if err.status == 404:
            abort(404)
        flash(err.render(_), "error")
    target = form.get("next", "")
    return redirect(
        target if is_local_path(target) else url_for("cases.case_page", case_id=case_id)
    )


@bp.post("/cases/<int:case_id>/<action>")
@role_required(*Role)
def case_action(case_id: int, action: str) -> ResponseReturnValue:
    """Apply an action from a case page or a list (dispatching is the dispatcher's own page,
    `dispatch.views.dispatch_case`, at the same address)."""
    return run_action(
        case_id,
        lambda session, data, context: lifecycle.act(
            session, case_id, action, current_user, data, context
        ),
    )


@bp.get("/track")
def track() -> ResponseReturnValue:
    """Find a case by its number."""
    number = request.args.get("number", "").strip()
    if number:
        return redirect(url_for("cases.track_case", number=number))
    return render_template("cases/track.html", case=None)


@bp.get("/track/<number>")
def track_case(number: str) -> ResponseReturnValue:
    """Public tracking: the public view of a case (`cases.public`) and its public timeline;
    a report merged into another case shows that case. Never the reporter's details, never
    an internal note."""
    session = db.session()
    try:
        case = queries.find_by_number(session, number)
    except DomainError:
        return render_template("cases/track.html", case=None, missing=number), 404
    shown = queries.public_case(session, case)
    decimals = current_app.config["PUBLIC_COORDINATE_DECIMALS"]
    views = queries.public_cases(session, [case, shown] if shown is not case else [case], decimals)
    return render_template(
        "cases/track.html",
        case=case,
        view=views[0],
        shown=views[-1],
        steps=public.public_steps(
            (e.created_at, e.to_status, e.note if e.data.get(public.PUBLIC_NOTE) else "")
            for e in shown.events
        ),
    )


@bp.get("/photos/<int:photo_id>")
@bp.get("/photos/<int:photo_id>/<any(thumb):size>")
@role_required(*Role)
def photo(photo_id: int, size: str = "") -> ResponseReturnValue:
    """A photo (or its thumbnail) of a case the user may see."""
    session = db.session()
    row = session.get(Photo, photo_id)
    if row is None:
        abort(404)
    queries.get_case(session, row.case_id, current_user)
    path = photo_store.open_stored(photo_root(), row.thumb_path if size else row.path)  # or 404
    answer = send_file(path, mimetype="image/jpeg" if size else row.mime, max_age=86400)
    answer.cache_control.public = False  # a case's photo: this browser only, never a cache
    answer.cache_control.private = True
    return answer


def init_app(app: Flask) -> None:
    """Register the case pages and what their templates use."""
    app.register_blueprint(bp)
    app.add_template_global(clock.now_utc, "now_utc")
    app.add_template_global(is_overdue, "is_overdue")
    app.add_template_global(Action, "ACTION")
    app.add_template_global(public.PUBLIC_TEXT, "PUBLIC_TEXT")
