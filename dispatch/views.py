"""The dispatcher's pages: the board (filed cases with their routed unit, returns, requests,
overdue cases, hotspots), dispatching a case, and the queue's failed jobs (with retry)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Blueprint, Flask, abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select, text
from sqlalchemy.orm import selectinload

from cases.models import Case, CaseStatus
from cases.queries import last_notes
from cases.status import DEADLINE_RUNS
from cases.views import SECTION_LIMIT, Section, counted, list_section, run_action
from dispatch import readiness, services
from dispatch.routing import Unroutable
from dispatch.services import RoutingData, route_case
from gridmgmt.kernel.db import db
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.models import Role, Unit
from gridmgmt.kernel.queue import DISPATCH_QUEUE, PERIODIC_QUEUE, queues
from gridmgmt.kernel.web import role_required

bp = Blueprint("dispatch", __name__, template_folder="templates")
QUEUES = (DISPATCH_QUEUE, PERIODIC_QUEUE)


@dataclass(frozen=True)
class FailedJob:
    """A failed job as the page shows it."""

    id: str
    queue: str
    function: str
    args: str
    ended_at: datetime | None
    reason: str


def failed_jobs(limit: int = 100) -> list[FailedJob]:
    """Failed jobs of the dispatcher's queues, newest first, with the last line of the error."""
    jobs: list[FailedJob] = []
    for name in QUEUES:
        registry = FailedJobRegistry(queue=queues.get(name))
        for job in Job.fetch_many(registry.get_job_ids(0, limit - 1), connection=queues.redis):
            if job is None:
                continue
            result = job.latest_result()
            error = (result.exc_string if result else "") or ""
            lines = [line for line in error.strip().splitlines() if line.strip()]
            jobs.append(
                FailedJob(
                    job.id,
                    name,
                    job.func_name,
                    ", ".join(repr(a) for a in job.args)[:200],
                    job.ended_at,
                    lines[-1] if lines else "",
                )
            )
    never = datetime.min.replace(tzinfo=UTC)  # a job abandoned by a killed worker has no end
    return sorted(jobs, key=lambda j: j.ended_at or never, reverse=True)[:limit]


@bp.get("/board/failed")
@role_required(Role.DISPATCHER, Role.ADMIN)
def failed() -> ResponseReturnValue:
    """Failed jobs, with their reason and a retry button."""
    return render_template("dispatch/failed.html", jobs=failed_jobs())


@bp.post("/board/failed/<job_id>/retry")
@role_required(Role.DISPATCHER, Role.ADMIN)
def retry(job_id: str) -> ResponseReturnValue:
    """Put a failed job back on its queue."""
    for name in QUEUES:
        registry = FailedJobRegistry(queue=queues.get(name))
        if job_id in registry.get_job_ids():
            try:
                registry.requeue(job_id)
            except NoSuchJobError:
                abort(404)
            flash(_("Job %(job)s is queued again.", job=job_id), "ok")
            return redirect(url_for("dispatch.failed"))
    abort(404)


def recent_hotspots(hours: int = 24) -> list[dict[str, object]]:
    """Hotspots found in the last `hours`, with their place's code and name."""
    rows = db.session.execute(
        text("""
            SELECT h.window_end, h.count, h.baseline,
                   COALESCE(a.code, g.code) AS code, COALESCE(a.name, ga.name) AS name,
                   CASE WHEN h.cell_id IS NULL THEN 'community' ELSE 'cell' END AS kind
            FROM hotspots h
            LEFT JOIN areas a ON a.id = h.area_id
            LEFT JOIN grid_cells g ON g.id = h.cell_id
            LEFT JOIN areas ga ON ga.id = g.community_id
            WHERE h.window_end >= now() - make_interval(hours => :hours)
            ORDER BY h.window_end DESC, h.count DESC
            LIMIT 50
        """),
        {"hours": hours},
    ).mappings()
    return [dict(r) for r in rows]


def filed_section() -> Section:
    """The filed cases waiting for dispatch, oldest first, as mapped cases: each is routed
    (`route_case` reads its place and category)."""
    cases = db.session.scalars(
        select(Case)
        .where(Case.status == CaseStatus.FILED)
        .options(selectinload(Case.category))
        .order_by(Case.filed_at)
        .limit(SECTION_LIMIT)
    )
    return counted(list(cases), Case.status == CaseStatus.FILED)


@bp.get("/board")
@role_required(Role.DISPATCHER, Role.ADMIN)
def board() -> ResponseReturnValue:
    """Filed cases to dispatch (with the routed unit or why none), returns, requests; and, while
    the city's configuration blocks dispatch, a banner that says what and how to fix it."""
    session = db.session()
    filed = filed_section()
    routing = RoutingData.load(session)
    routes = {c.id: route_case(session, c, routing) for c in filed.cases}
    returned = list_section(Case.status == CaseStatus.RETURNED, order=Case.id)
    unroutable = {cid for cid, r in routes.items() if isinstance(r, Unroutable)}
    # The list of units is long (a city has hundreds): only the cases that need a person's
    # choice carry it; a routed case is dispatched to its unit, or another chosen on its page.
    units = (
        list(session.scalars(select(Unit).where(Unit.active).order_by(Unit.kind, Unit.code)))
        if unroutable or returned.cases
        else []
    )
    return render_template(
        "dispatch/board.html",
        blocked=readiness.blocked_by(),
        titles=readiness.TITLES,
        render=lambda message: message.render(_),
        filed=filed,
        routes=routes,
        unit_names=routing.units,
        unroutable=unroutable,
        returned=returned,
        notes=last_notes(session, [c.id for c in returned.cases]),
        requests=list_section(Case.pending_request.isnot(None), order=Case.updated_at),
        suspended=list_section(Case.status == CaseStatus.SUSPENDED, order=Case.id),
        overdue=list_section(
            Case.overdue_at.isnot(None), Case.status.in_(DEADLINE_RUNS), order=Case.deadline
        ),
        units=units,
    )


@bp.post("/cases/<int:case_id>/dispatch")
@role_required(*Role)
def dispatch_case(case_id: int) -> ResponseReturnValue:
    """Dispatch a case from its page or the board, to the routed unit or the one chosen
    (the address of every other action of the case page)."""
    return run_action(
        case_id,
        lambda session, data, context: services.dispatch_case(
            session, case_id, current_user, data, context
        ),
    )


def init_app(app: Flask) -> None:
    """Register the dispatcher's queue pages."""
    app.register_blueprint(bp)
    app.add_template_global(recent_hotspots, "recent_hotspots")
