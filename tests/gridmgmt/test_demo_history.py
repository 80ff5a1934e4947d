"""The demo city's past (gridmgmt.app.demo_history): real MyLA311 requests replayed through
the lifecycle's services, so that a first look at the product finds a lived-in city."""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from cases.lifecycle import CaseContext
from cases.models import Case, CaseEvent
from cases.status import DEADLINE_RUNS
from cases.views import UNIT_QUEUE
from gridmgmt.app import demo, demo_history
from gridmgmt.kernel.calendar_store import get_calendar
from gridmgmt.kernel.models import Role, Unit, User
from tests.conftest import HISTORY_PHOTOS, SHARED_DATA, demo_clone, shared_file
from tests.support import browser, real_app

pytestmark = pytest.mark.slow

# The order of a case's life, as the replay takes it (returns, extensions, suspensions and
# reworks add their own steps in between).
LOOP = ["report", "file", "dispatch", "accept", "report_done", "assign_check", "check_pass",
        "close"]  # fmt: skip


@pytest.fixture(scope="module")
def session(history_database_url: URL) -> Iterator[Session]:
    # No pool: once its transaction ends, no connection is left on the history database,
    # which a clone of it needs (`history_app`).
    engine = create_engine(history_database_url, poolclass=NullPool)
    with Session(engine) as session:
        yield session
    engine.dispose()


def real_requests_in_territory(session: Session) -> list[demo_history.Request311]:
    requests = demo_history.read_requests(shared_file(demo_history.LA_311))
    return [requests[i] for i in demo_history.inside_territory(session, requests)]


def test_every_real_request_in_the_territory_is_one_case(session: Session) -> None:
    real = real_requests_in_territory(session)
    numbers = session.scalars(select(Case.description)).all()
    assert len(real) > 400
    assert sorted(n.rsplit(" ", 1)[1].rstrip(")") for n in numbers) == sorted(
        r.number for r in real
    )
    # Classes from the request types: the catalogue's codes, as LA_CLASSES maps them.
    kinds = dict(
        session.execute(
            text(
                "SELECT g.code, count(*) FROM cases c"
                " JOIN categories g ON g.id = c.category_id GROUP BY 1"
            )
        ).all()
    )
    assert kinds == dict(Counter(demo_history.LA_CLASSES[r.kind] for r in real))


def start_of_today() -> datetime:
    """Midnight of today in the demo city (Los Angeles), in UTC."""
    today = datetime.now(demo_history.LA_TIME).date()
    return datetime.combine(today, time(0), demo_history.LA_TIME).astimezone(UTC)


def test_a_year_that_ends_yesterday(session: Session) -> None:
    """The reports end yesterday (the city's day); what follows them (accepting, closing,
    the watch's marks) may run to today, as it would in a working city."""
    first, last = session.execute(
        select(func.min(Case.reported_at), func.max(Case.reported_at))
    ).one()
    now = datetime.now(UTC)
    assert now - timedelta(days=367) < first < now - timedelta(days=330)
    assert start_of_today() - timedelta(days=1) <= last < start_of_today()
    months = session.scalar(
        select(func.count(func.distinct(func.date_trunc("month", Case.reported_at))))
    )
    assert months >= 12


def test_each_case_went_through_the_loop_in_order(session: Session) -> None:
    events: dict[int, list[tuple[datetime, str]]] = {}
    for case_id, at, action in session.execute(
        select(CaseEvent.case_id, CaseEvent.created_at, CaseEvent.action).order_by(CaseEvent.id)
    ):
        events.setdefault(case_id, []).append((at, action))
    closed = session.execute(select(Case.id, Case.reported_at, Case.closed_at).where(
        Case.status == "closed")).all()  # fmt: skip
    assert len(closed) > 300
    for case_id, reported_at, closed_at in closed:
        times = [at for at, _ in events[case_id]]
        assert times == sorted(times), case_id  # the events happened in the order written
        actions = [a for _, a in events[case_id]]
        while actions[-1] == "dismiss_complaint":  # a follow-up complaint judged unreasonable
            actions.pop()
            times.pop()
        assert times[0] == reported_at and times[-1] == closed_at
        assert [a for a in actions if a in LOOP and a != "verify"][:3] == LOOP[:3]
        assert actions[-3:] == ["assign_check", "check_pass", "close"]


def test_the_real_time_to_close_is_kept(session: Session) -> None:
    """The request's own created → closed time in Los Angeles is the unit's time to report
    it done (later only when the steps before it took longer)."""
    took = {r.number: r.took for r in real_requests_in_territory(session) if r.took is not None}
    rows = session.execute(
        text("""
            SELECT c.description, c.reported_at,
                   (SELECT min(e.created_at) FROM case_events e
                    WHERE e.case_id = c.id AND e.action = 'report_done') AS done
            FROM cases c WHERE c.status = 'closed'
        """)
    ).all()
    kept = 0
    for description, reported_at, done in rows:
        real = took[description.rsplit(" ", 1)[1].rstrip(")")]
        assert done - reported_at >= real - timedelta(seconds=1)
        kept += abs((done - reported_at) - real) < timedelta(minutes=1)
    assert kept > 0.5 * len(rows)  # the others: the steps before took longer here


def test_returns_reworks_extensions_suspensions_and_lateness(session: Session) -> None:
    actions = dict(
        session.execute(select(CaseEvent.action, func.count()).group_by(CaseEvent.action)).all()
    )
    for action in ("return", "check_fail", "approve_extension", "approve_suspension", "resume",
                   "invalidate"):  # fmt: skip
        assert actions.get(action, 0) > 0, action
    # The city's rework count and lateness come out of the lifecycle's own effects.
    assert (
        session.scalar(select(func.count()).where(Case.rework_count > 0)) == actions["check_fail"]
    )
    late = session.scalar(
        select(func.count()).where(func.coalesce(Case.handled_at, Case.closed_at) > Case.deadline)
    )
    closed = session.scalar(select(func.count()).where(Case.status == "closed"))
    assert 0.1 * closed < late < 0.9 * closed


def test_every_role_has_work_today(session: Session) -> None:
    open_now = dict(
        session.execute(
            select(Case.status, func.count())
            .where(Case.closed_at.is_(None), Case.status != "invalid")
            .group_by(Case.status)
        ).all()
    )
    assert sum(open_now.values()) >= 15
    assert open_now.get("in_progress", 0) + open_now.get("dispatched", 0) > 0  # units
    for_checks = open_now.get("checking", 0) + open_now.get("handled", 0)
    assert for_checks + open_now.get("reported", 0) > 0  # inspectors and operators


def test_report_moments_end_yesterday_and_keep_the_open_ones_open(session: Session) -> None:
    """Placed at any hour (here the Monday after Thanksgiving, 00:30 in Los Angeles: the four
    days before it are not working days), every report is before today's midnight, and the
    requests kept open today reached their unit in working time and are not done by now."""
    calendar = get_calendar(session, "us_la")
    requests = real_requests_in_territory(session)
    community = demo_history.communities(session, requests)
    keep = demo_history.open_today(requests, community)
    assert {community[i] for i in keep} == set(community)  # each community's slowest
    for local in (datetime(2026, 11, 30, 0, 30), datetime(2026, 7, 15, 23, 59)):
        now = local.replace(tzinfo=demo_history.LA_TIME).astimezone(UTC)
        midnight = datetime.combine(local.date(), time(0), demo_history.LA_TIME)
        moments = demo_history.report_moments(
            requests, now, demo_history.Rates(), random.Random(1), calendar, keep
        )
        assert max(moments) < midnight
        assert min(moments) >= midnight - timedelta(days=365)
        for i in keep:
            reached = calendar.add_working_hours(moments[i], demo_history.REACHES_UNIT_HOURS)
            assert reached <= now, requests[i]
            took = requests[i].took
            assert took is None or moments[i] + took > now, requests[i]


def test_water_waste_reaches_the_water_department(session: Session) -> None:
    """LADWP's water-waste reports (closed by MyLA311 the minute it handed them on) are
    leaks for the water department, still in its hands."""
    rows = session.execute(
        text("""
            SELECT u.code, c.status FROM cases c JOIN units u ON u.id = c.unit_id
            WHERE c.description LIKE 'Report Water Waste (%'
        """)
    ).all()
    assert rows and all(code == "DEPT-WATER" for code, _ in rows)
    assert all(status in UNIT_QUEUE for _, status in rows)


def test_every_unit_login_and_community_has_open_cases(session: Session) -> None:
    """Each unit-staff demo login's unit, and each community, has cases in its queue now."""
    queued = dict(
        session.execute(
            select(Unit.code, func.count())
            .join(Case, Case.unit_id == Unit.id)
            .where(Case.status.in_(UNIT_QUEUE))
            .group_by(Unit.code)
        ).all()
    )
    logins = [u for u in demo.demo_logins("990100006046") if u.role == Role.UNIT_STAFF]
    staff_units = session.scalars(
        select(Unit.code).join(User, User.unit_id == Unit.id).where(
            User.username.in_([u.username for u in logins]))
    ).all()  # fmt: skip
    assert len(staff_units) == len(logins) >= 2
    communities = session.scalars(select(Unit.code).where(Unit.kind == "community")).all()
    assert len(communities) == 8
    for code in [*staff_units, *communities]:
        assert queued.get(code, 0) > 0, code


def test_some_open_cases_are_overdue_now(session: Session) -> None:
    """Open cases past their deadline, marked overdue by the dispatcher's watch a minute
    after it (one event each), as the unit's queue and the dispatcher's board show them."""
    now = datetime.now(UTC)
    rows = session.execute(
        select(Case.id, Case.deadline, Case.overdue_at).where(
            Case.status.in_(DEADLINE_RUNS), Case.deadline < now)
    ).all()  # fmt: skip
    assert len(rows) >= 5
    marked = {i: (d, o) for i, d, o in rows if o is not None}
    assert len(marked) >= 5
    assert all(o == d + demo_history.WATCH_EVERY for d, o in marked.values())
    # Each has its watch's event (a case may have more: an earlier mark, cleared when the
    # deadline moved, e.g. by an extension or a rework).
    with_event = session.scalars(
        select(CaseEvent.case_id)
        .where(CaseEvent.action == "mark_overdue", CaseEvent.case_id.in_(list(marked)))
        .distinct()
    ).all()
    assert set(with_event) == set(marked)


@pytest.fixture(scope="module")
def history_app(
    session: Session,
    history_database_url: URL,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Flask]:
    """The real app on a clone of the history (signing in writes)."""
    session.rollback()  # the module's reading session lets go of the database to clone
    with (
        demo_clone("history_pages", history_database_url) as url,
        real_app(url, redis_url, tmp_path_factory.mktemp("photos")) as app,
    ):
        yield app


WORK_PAGES = {  # login: its work page, every case on it a `data-case` row or card
    "inspector": "/tasks",
    "operator": "/inbox",
    "dispatcher": "/board",
    "staff": "/queue",
    "water": "/queue",
}


@pytest.mark.parametrize("login", WORK_PAGES)
def test_each_login_finds_work_on_its_page(history_app: Flask, login: str) -> None:
    """The first hour: the inspector's tasks, the operator's inbox, the dispatcher's board and
    every unit's queue have cases in them (not "Nothing here.")."""
    web = browser(history_app, login)
    page = web.get(WORK_PAGES[login])
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert body.count("data-case=") >= 1, login
    if login in ("staff", "water"):
        assert "Nothing here." not in body


def test_units_differ_in_their_on_time_rates(session: Session) -> None:
    rates = session.execute(
        text("""
            SELECT u.code, avg((c.handled_at <= c.deadline)::int)
            FROM cases c JOIN units u ON u.id = c.unit_id
            WHERE c.status = 'closed' GROUP BY 1 HAVING count(*) >= 10
        """)
    ).all()
    assert len(rates) >= 6
    values = sorted(float(r) for _, r in rates)
    assert values[-1] - values[0] > 0.3  # the best and the worst units stand apart


def test_the_rollup_holds_the_year(session: Session) -> None:
    """The evaluation's rollup was refreshed after the replay: long periods read from it."""
    due, handled = session.execute(text("SELECT sum(due), sum(handled) FROM evaluation_days")).one()
    assert due > 400 and handled > 400


def test_seeding_again_changes_nothing(history_database_url: URL) -> None:
    engine = create_engine(history_database_url)
    try:
        with Session(engine) as session:
            before = session.scalar(select(func.count()).select_from(CaseEvent))
            context = CaseContext(get_calendar(session, "us_la"), HISTORY_PHOTOS)
            said: list[str] = []
            assert (
                demo_history.seed_history(session, context, said.append, data=SHARED_DATA) is None
            )
            assert "already has cases" in said[0]
            assert session.scalar(select(func.count()).select_from(CaseEvent)) == before
            session.rollback()
    finally:
        engine.dispose()


def test_the_mapping_covers_the_requests_it_names() -> None:
    with open(shared_file(demo_history.LA_311), newline="") as fh:
        kinds = Counter(row["requesttype"] for row in csv.DictReader(fh))
    assert set(demo_history.LA_CLASSES) <= set(kinds)
    # Together the mapped kinds are most of what Los Angeles is asked to do.
    mapped = sum(n for kind, n in kinds.items() if kind in demo_history.LA_CLASSES)
    assert mapped > 0.9 * sum(kinds.values())


def test_reachable_reporters_answered_the_follow_up(session: Session) -> None:
    """The follow-up (回访): only reporters who can be reached answer (the demo citizen on the
    link, hotline callers by phone to the operator), once per round, after the closing;
    complaints with a reason were reviewed, the reasonable ones re-handled (重办)."""
    rows = session.execute(
        text("""
            SELECT a.channel, c.source, a.answered_at > c.closed_at - interval '1 second'
                   OR c.rehandle_count > 0, a.review_state, c.rehandle_count
            FROM followup_answers a JOIN cases c ON c.id = a.case_id
        """)
    ).all()
    assert len(rows) > 50
    assert {(channel, source) for channel, source, *_ in rows} == {
        ("link", "citizen"),
        ("phone", "hotline"),
    }
    assert all(after for _, _, after, _, _ in rows)
    reviews = Counter(state for *_, state, _ in rows)
    assert reviews["reasonable"] > 0 and reviews["unreasonable"] > 0
    rehandled = [count for *_, state, count in rows if state == "reasonable"]
    assert all(count == 1 for count in rehandled)
    actions = dict(
        session.execute(select(CaseEvent.action, func.count()).group_by(CaseEvent.action)).all()
    )
    assert actions["rehandle"] == reviews["reasonable"]
    assert actions["dismiss_complaint"] == reviews["unreasonable"]


HOMES = {  # demo login: where `/` takes it (its work: the first page of its menu)
    "inspector": "/report",
    "operator": "/inbox",
    "dispatcher": "/board",
    "staff": "/queue",
    "water": "/queue",
    "leader": "/maps",
    "admin": "/admin/setup",
    "citizen": "/report",
}


def test_home_of_each_demo_login_is_its_work(history_app: Flask) -> None:
    """`/` takes every demo login to its work page, which opens in the common layout."""
    assert set(HOMES) == {login.username for login in demo.demo_logins("")}
    for login, work in HOMES.items():
        web = browser(history_app, login)
        home = web.get("/")
        assert home.status_code == 302 and home.headers["Location"] == work, login
        page = web.get(work)
        assert page.status_code == 200, login
        body = page.get_data(as_text=True)
        assert 'aria-current="page"' in body and "<nav" in body, login
