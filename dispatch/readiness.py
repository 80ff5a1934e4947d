"""What a working city needs to dispatch, checked: `flask setup check`, `/admin/setup`,
`/readyz` and the dispatcher's board (its banner while dispatch is blocked).

Each check is a function of the session (or of Redis) returning a `Check`: its name, whether
it passed, whether its failure blocks dispatch, what it found and what fixes it (a command or
a page). Messages are `Message`s, rendered in the reader's language at the edge (English on
the command line). Routability uses the dispatcher's own routing (`dispatch.services
.RoutingData`), so a hole here is a case that would land on the board.

Configuration checks (territory, cells, catalogue, calendar, routing, people) depend only on
the database: `/readyz` answers "not configured" while a blocking one fails. Runtime checks
(worker, scheduler, failed jobs) depend on processes and Redis: they are shown by the page and
the command, not by `/readyz`, whose answer must not flap with a worker's restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cases.models import Category
from dispatch.jobs import HEARTBEAT_KEY
from dispatch.routing import Unroutable
from dispatch.services import RoutingData
from gridmgmt.kernel.clock import now_utc
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import N_, Message, word
from gridmgmt.kernel.metrics import age_seconds
from gridmgmt.kernel.models import CalendarDay, CalendarRecord, Role, User
from gridmgmt.kernel.queue import DISPATCH_QUEUE, PERIODIC_QUEUE
from gridmgmt.kernel.settings import city_settings
from grids.models import Area, AreaLevel, GridCell
from grids.services import check_territory as check_coverage

SHOWN = 10  # problems listed by name in a message; the rest are counted
COVERAGE_DAYS = 365  # the calendar should know the holidays of the next 12 months
WORKER_HEARTBEAT_MAX_S = 600.0  # rq refreshes a worker's heartbeat at least every 405 s
SCHEDULER_HEARTBEAT_MAX_S = 180.0  # the heartbeat job runs every 60 s
PEOPLE_PAGE = "/admin/people"
TERRITORY_PAGE = "/admin/territory"
CATALOGUE_PAGE = "/admin/catalogue"
CALENDAR_PAGE = "/admin/calendar"
ROUTING_PAGE = "/admin/routing"
GAP_TOLERANCE_M2 = 1.0  # as `flask grids check`: smaller slivers are precision, not gaps

# What the page calls each check (`_(title)` there).
TITLES: dict[str, str] = {
    "territory": N_("Territory imported"),
    "cells": N_("Every community has cells"),
    "cell_coverage": N_("Cells cover every community whole"),
    "catalogue": N_("Catalogue loaded"),
    "calendar": N_("City calendar loaded"),
    "calendar_coverage": N_("Calendar covers the next 12 months"),
    "routing": N_("Every class routable in every community"),
    "people_operator": N_("An operator"),
    "people_dispatcher": N_("A dispatcher"),
    "people_inspector": N_("An inspector"),
    "worker": N_("Dispatch worker alive"),
    "scheduler": N_("Scheduler alive"),
    "failed_jobs": N_("No failed jobs"),
}


@dataclass(frozen=True)
class Check:
    """One thing a working city needs: passed or not, and what to do about it.

    Attributes:
        name: a short stable name (`territory`, `routing`, ...), also the machine's key.
        ok: it passed.
        blocking: when it fails, dispatch cannot work (the command exits 1).
        message: what was found.
        fix: the command or page that fixes it (None when it passed).
        configuration: it depends on the database only (what `/readyz` looks at).
    """

    name: str
    ok: bool
    blocking: bool
    message: Message
    fix: Message | None = None
    configuration: bool = True
    details: list[str] = field(default_factory=list)

    @property
    def blocks(self) -> bool:
        """It failed and its failure blocks dispatch."""
        return not self.ok and self.blocking


def _names(items: list[str]) -> str:
    """The first few of `items`, then how many more."""
    shown = ", ".join(items[:SHOWN])
    return shown + (f" (+{len(items) - SHOWN})" if len(items) > SHOWN else "")


# ---------------------------------------------------------------- configuration


def check_territory(session: Session) -> Check:
    """Communities have been imported."""
    count = session.scalar(
        select(func.count()).select_from(Area).where(Area.level == AreaLevel.COMMUNITY)
    )
    if not count:
        return Check(
            "territory",
            False,
            True,
            Message("no community has been imported: reports cannot be located"),
            Message(
                "import the territory on %(page)s, or: %(command)s",
                {
                    "page": TERRITORY_PAGE,
                    "command": "flask grids import-units FILE.geojson --level community "
                    "--code-field F --name-field F --parent-code CODE",
                },
            ),
        )
    return Check("territory", True, True, Message("%(count)s communities", {"count": count}))


def check_cells(session: Session) -> Check:
    """Every community has unit grid cells (a point in a community without cells cannot be
    located, so nobody can report there)."""
    communities = session.scalar(
        select(func.count()).select_from(Area).where(Area.level == AreaLevel.COMMUNITY)
    )
    bare = list(
        session.scalars(
            select(Area.code)
            .where(
                Area.level == AreaLevel.COMMUNITY,
                ~select(GridCell.id).where(GridCell.community_id == Area.id).exists(),
            )
            .order_by(Area.code)
        )
    )
    cells = session.scalar(select(func.count()).select_from(GridCell)) or 0
    if not communities or bare or not cells:
        found = (
            Message("communities without cells: %(codes)s", {"codes": _names(bare)})
            if bare
            else Message("no unit grid cells")
        )
        return Check(
            "cells",
            False,
            True,
            found,
            Message(
                "generate the cells on %(page)s, or: %(command)s",
                {
                    "page": TERRITORY_PAGE,
                    "command": "flask grids generate-cells [--community CODE] [--size 100]",
                },
            ),
            details=bare,
        )
    return Check(
        "cells",
        True,
        True,
        Message(
            "%(cells)s cells in all %(communities)s communities",
            {"cells": cells, "communities": communities},
        ),
    )


def check_cell_coverage(session: Session) -> Check:
    """No part of a community is left without a cell (a report there is refused: it cannot be
    located). The territory check's own query (`flask grids check`), for gaps only; a few
    hundred ms on a city of 100 communities, so the page and the command run it, not the
    probes. It does not block dispatch: the rest of the city is served."""
    gaps = check_coverage(session, GAP_TOLERANCE_M2, kinds=("community_gap",)).problems
    if gaps:
        communities = sorted({gap.first for gap in gaps})
        return Check(
            "cell_coverage",
            False,
            False,
            Message(
                "%(count)s parts of communities have no cell (%(m2)s m² in all): %(codes)s",
                {
                    "count": len(gaps),
                    "m2": f"{sum(gap.area_m2 for gap in gaps):,.0f}",
                    "codes": _names(communities),
                },
            ),
            Message(
                "generate their cells again on %(page)s (the problems are on its map), or: "
                "%(command)s",
                {
                    "page": f"{TERRITORY_PAGE}/check",
                    "command": "flask grids generate-cells --community CODE",
                },
            ),
            details=[gap.describe() for gap in gaps],
        )
    return Check("cell_coverage", True, False, Message("no part of a community without a cell"))


def check_catalogue(session: Session) -> Check:
    """Active classes exist (reports name one)."""
    count = session.scalar(select(func.count()).select_from(Category).where(Category.active))
    if not count:
        return Check(
            "catalogue",
            False,
            True,
            Message("no active class in the catalogue: nothing can be reported"),
            Message(
                "load the catalogue on %(page)s, or: %(command)s",
                {"page": CATALOGUE_PAGE, "command": "flask categories load [FILE]"},
            ),
        )
    return Check("catalogue", True, True, Message("%(count)s active classes", {"count": count}))


def check_calendar(session: Session, code: str, today: date) -> list[Check]:
    """The city's calendar (`CALENDAR_CODE`) is loaded (deadlines need it), and lists the
    holidays of every year of the next 12 months (else deadlines there ignore them)."""
    record = session.scalar(select(CalendarRecord).where(CalendarRecord.code == code))
    load = Message(
        "load it on %(page)s, or: %(command)s",
        {
            "page": CALENDAR_PAGE,
            "command": f"flask calendar load FILE | --shipped cn|us_la ({code})",
        },
    )
    if record is None:
        return [
            Check(
                "calendar",
                False,
                True,
                Message(
                    "the city calendar %(code)s (CALENDAR_CODE) is not loaded: deadlines "
                    "cannot be computed",
                    {"code": code},
                ),
                load,
            )
        ]
    loaded = Check("calendar", True, True, Message("calendar %(code)s loaded", {"code": code}))
    years = set(
        session.scalars(
            select(func.distinct(func.extract("year", CalendarDay.day))).where(
                CalendarDay.calendar_id == record.id
            )
        )
    )
    listed = {int(year) for year in years}
    needed = set(range(today.year, (today + timedelta(days=COVERAGE_DAYS)).year + 1))
    missing = sorted(needed - listed)
    if missing:
        return [
            loaded,
            Check(
                "calendar_coverage",
                False,
                False,
                Message(
                    "calendar %(code)s lists no holidays for %(years)s: deadlines then "
                    "ignore public holidays",
                    {"code": code, "years": ", ".join(str(y) for y in missing)},
                ),
                Message(
                    "add the coming year's holidays on %(page)s, or to the calendar file and "
                    "load it again: %(command)s",
                    {"page": CALENDAR_PAGE, "command": "flask calendar load FILE"},
                ),
            ),
        ]
    return [
        loaded,
        Check(
            "calendar_coverage",
            True,
            False,
            Message(
                "holidays listed for %(years)s",
                {"years": ", ".join(str(y) for y in sorted(needed))},
            ),
        ),
    ]


def routing_holes(session: Session) -> list[tuple[str, str, str]]:
    """(class code, community code, reason) of every active class that the dispatcher
    cannot route in a community: such a case would wait on the board for a person."""
    routing = RoutingData.load(session)
    classes = session.execute(
        select(Category.id, Category.code).where(Category.active).order_by(Category.code)
    ).all()
    communities = session.execute(
        select(Area.id, Area.code).where(Area.level == AreaLevel.COMMUNITY).order_by(Area.code)
    ).all()
    holes = []
    for community_id, community_code in communities:
        for category_id, category_code in classes:
            route = routing.route(category_id, community_id)
            if isinstance(route, Unroutable):
                holes.append((category_code, community_code, route.reason))
    return holes


def check_routing(session: Session) -> Check:
    """Every active class is routable in every community."""
    holes = routing_holes(session)
    if holes:
        listed = [f"{cls} @ {community}" for cls, community, _reason in holes]
        return Check(
            "routing",
            False,
            True,
            Message(
                "%(count)s class and community pairs cannot be routed: %(pairs)s",
                {"count": len(holes), "pairs": _names(listed)},
            ),
            Message(
                'add a routing rule for them on %(page)s ("Who gets this?" tries one), or '
                "reactivate their community unit on %(units)s (first reason: %(reason)s)",
                {"page": ROUTING_PAGE, "units": "/admin/units", "reason": holes[0][2]},
            ),
            details=[f"{cls} @ {community}: {reason}" for cls, community, reason in holes],
        )
    return Check(
        "routing", True, True, Message("every active class is routable in every community")
    )


# Who must exist, and whether their absence blocks dispatch: nothing is filed without an
# operator; without a dispatcher or an inspector cases are dispatched but some steps wait.
PEOPLE: tuple[tuple[Role, bool], ...] = (
    (Role.OPERATOR, True),
    (Role.DISPATCHER, False),
    (Role.INSPECTOR, False),
)


def check_people(session: Session) -> list[Check]:
    """At least one active operator, dispatcher and inspector."""
    found = session.execute(select(User.role, func.count()).where(User.active).group_by(User.role))
    counts = {str(role): int(count) for role, count in found}
    checks = []
    for role, blocking in PEOPLE:
        count = counts.get(role.value, 0)
        name = f"people_{role.value}"
        if count:
            checks.append(
                Check(
                    name,
                    True,
                    blocking,
                    Message(
                        "active %(role)s: %(count)s", {"count": count, "role": word(role.value)}
                    ),
                )
            )
        else:
            checks.append(
                Check(
                    name,
                    False,
                    blocking,
                    Message("no active %(role)s", {"role": word(role.value)}),
                    Message(
                        "create one on %(page)s or with %(command)s",
                        {
                            "page": PEOPLE_PAGE,
                            "command": f"flask users create NAME --role {role.value}",
                        },
                    ),
                )
            )
    return checks


def configuration_checks(session: Session, calendar_code: str, today: date) -> list[Check]:
    """The checks that depend on the database only, in the order a city is set up."""
    return [
        check_territory(session),
        check_cells(session),
        check_catalogue(session),
        *check_calendar(session, calendar_code, today),
        check_routing(session),
        *check_people(session),
    ]


# ---------------------------------------------------------------- runtime


def _unreachable(name: str, exc: Exception) -> Check:
    return Check(
        name,
        False,
        True,
        Message("Redis is unreachable: %(error)s", {"error": type(exc).__name__}),
        Message("start Redis and check REDIS_URL"),
        configuration=False,
    )


def check_worker(redis: Redis, now: datetime) -> Check:
    """An RQ worker listening to the dispatch queue, with a recent heartbeat of its own."""
    try:
        workers = Worker.all(connection=redis)
    except RedisError as exc:
        return _unreachable("worker", exc)
    alive = [
        w
        for w in workers
        if DISPATCH_QUEUE in w.queue_names()
        and age_seconds(w.last_heartbeat, now) <= WORKER_HEARTBEAT_MAX_S
    ]
    if not alive:
        return Check(
            "worker",
            False,
            True,
            Message("no live worker listens to the dispatch queue: filed cases wait"),
            Message("start one: %(command)s", {"command": "flask dispatch worker"}),
            configuration=False,
        )
    return Check(
        "worker",
        True,
        True,
        Message("live workers: %(count)s", {"count": len(alive)}),
        configuration=False,
    )


def check_scheduler(redis: Redis, now: datetime) -> Check:
    """The scheduler's heartbeat job ran lately (it enqueues the sweeps and deadline watch)."""
    try:
        raw = redis.get(HEARTBEAT_KEY)
    except RedisError as exc:
        return _unreachable("scheduler", exc)
    age = age_seconds(datetime.fromisoformat(raw.decode()) if raw else None, now)
    if age > SCHEDULER_HEARTBEAT_MAX_S:
        found = (
            Message("the scheduler's heartbeat never ran")
            if raw is None
            else Message(
                "the scheduler's last heartbeat is %(seconds)s s old", {"seconds": int(age)}
            )
        )
        return Check(
            "scheduler",
            False,
            True,
            found,
            Message(
                "start the scheduler (%(command)s) and a worker for its jobs",
                {"command": "flask dispatch scheduler"},
            ),
            configuration=False,
        )
    return Check(
        "scheduler",
        True,
        True,
        Message("last heartbeat %(seconds)s s ago", {"seconds": int(age)}),
        configuration=False,
    )


def check_failed_jobs(redis: Redis) -> Check:
    """No job in the queues' failed registries (they are not retried by themselves)."""
    try:
        counts = {
            name: FailedJobRegistry(queue=Queue(name, connection=redis)).get_job_count(
                cleanup=False
            )
            for name in (DISPATCH_QUEUE, PERIODIC_QUEUE)
        }
    except RedisError as exc:
        return _unreachable("failed_jobs", exc)
    failed = {name: n for name, n in counts.items() if n}
    if failed:
        return Check(
            "failed_jobs",
            False,
            False,
            Message(
                "failed jobs: %(counts)s",
                {"counts": ", ".join(f"{name} {n}" for name, n in failed.items())},
            ),
            Message(
                "read why in the worker's log (%(command)s lists them), fix, then requeue",
                {"command": "rq info --url REDIS_URL"},
            ),
            configuration=False,
        )
    return Check("failed_jobs", True, False, Message("no failed jobs"), configuration=False)


def runtime_checks(redis: Redis, now: datetime) -> list[Check]:
    """The checks of the processes behind the queue."""
    return [check_worker(redis, now), check_scheduler(redis, now), check_failed_jobs(redis)]


def run_checks(
    session: Session,
    redis: Redis,
    calendar_code: str,
    now: datetime | None = None,
) -> list[Check]:
    """Every check, configuration first (`now`: the time to judge ages and coverage by)."""
    moment = now or now_utc()
    checks = configuration_checks(session, calendar_code, moment.date())
    after_cells = next(i for i, check in enumerate(checks) if check.name == "cells") + 1
    checks.insert(after_cells, check_cell_coverage(session))  # not for the probes: slower
    return [*checks, *runtime_checks(redis, moment)]


def blocking_failures(checks: list[Check]) -> list[Check]:
    """The checks whose failure blocks dispatch."""
    return [check for check in checks if check.blocks]


# Probes and the board ask often; the configuration changes rarely (the routing check reads
# the areas, rules and classes: a few ms on a city of 100 communities).
BLOCKED_CACHE = "dispatch.readiness.blocked"
BLOCKED_CACHE_SECONDS = 10.0


def blocked_by() -> list[Check]:
    """The configuration checks that fail and block dispatch now, in this process's app
    (cached `BLOCKED_CACHE_SECONDS`; read in the app's session, which it only reads)."""
    cached = current_app.extensions.get(BLOCKED_CACHE)
    if cached is not None and time.monotonic() - cached[0] < BLOCKED_CACHE_SECONDS:
        return list(cached[1])
    session = db.session()
    checks = configuration_checks(session, city_settings().calendar_code, now_utc().date())
    failing = blocking_failures(checks)
    current_app.extensions[BLOCKED_CACHE] = (time.monotonic(), failing)
    return list(failing)


def forget_blocked() -> None:
    """Check again next time (after a change made in this process)."""
    current_app.extensions.pop(BLOCKED_CACHE, None)


def as_json(check: Check, render: Callable[[str], str] | None = None) -> dict[str, Any]:
    """A check as a JSON object (messages rendered with `render`, English by default)."""
    translate = render or (lambda s: s)
    return {
        "name": check.name,
        "ok": check.ok,
        "blocking": check.blocking,
        "message": check.message.render(translate),
        "fix": check.fix.render(translate) if check.fix else None,
    }
