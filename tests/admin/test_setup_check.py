"""The setup check (`dispatch.readiness`, `flask setup check`, `/readyz`): each missing
piece of a city is caught, and the demo city with a live worker passes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from redis import Redis
from rq import Worker
from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cases.models import Category
from dispatch import readiness
from dispatch.jobs import HEARTBEAT_KEY
from dispatch.readiness import Check
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import CalendarRecord, Role, Unit, User
from gridmgmt.kernel.queue import queues
from grids.models import Area, GridCell
from tests.support import nested, seeded_demo

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)  # the shipped calendars list 2025 and 2026
CODE = "us_la"


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def live_worker(redis: Redis, now: datetime | None = None) -> None:
    """A registered RQ worker on the dispatch queue with a fresh heartbeat, and the
    scheduler's heartbeat job run just now."""
    worker = Worker(["dispatch", "periodic"], connection=redis, name="setup-check-worker")
    worker.register_birth()
    redis.set(HEARTBEAT_KEY, (now or datetime.now(UTC)).isoformat(timespec="seconds"))


# ---------------------------------------------------------------- an empty database


def test_fresh_database_lacks_everything(session: Session, redis_conn: Redis) -> None:
    checks = by_name(readiness.run_checks(session, queues.redis, CODE, NOW))

    for name in ("territory", "cells", "catalogue", "calendar", "people_operator", "worker"):
        assert not checks[name].ok, name
        assert checks[name].blocking, name
        assert checks[name].fix is not None, name
    assert "flask grids import-units" in str(checks["territory"].fix)
    assert "flask categories load" in str(checks["catalogue"].fix)
    assert "flask calendar load" in str(checks["calendar"].fix)
    for name, page in [
        ("territory", "/admin/territory"),
        ("cells", "/admin/territory"),
        ("catalogue", "/admin/catalogue"),
        ("calendar", "/admin/calendar"),
    ]:
        assert page in str(checks[name].fix), name  # the page as well as the command
    assert "/admin/people" in str(checks["people_operator"].fix)
    assert "flask dispatch worker" in str(checks["worker"].fix)
    assert not checks["scheduler"].ok
    assert checks["failed_jobs"].ok
    assert not checks["people_inspector"].ok and not checks["people_inspector"].blocking


def test_cli_exits_1_and_names_what_blocks(cli, redis_conn: Redis) -> None:  # type: ignore[no-untyped-def]
    result = cli.invoke(args=["setup", "check"])

    assert result.exit_code == 1, result.output
    assert "PROBLEM  territory" in result.output
    assert "fix: import the territory on /admin/territory, or: flask grids import-units" in (
        result.output
    )
    assert "dispatch is blocked by: territory, cells, catalogue, calendar" in result.output


def test_readyz_not_configured(app: Flask, session: Session) -> None:
    app.extensions.pop(readiness.BLOCKED_CACHE, None)

    answer = app.test_client().get("/readyz")  # the test client is a loopback client

    assert answer.status_code == 503
    body = answer.get_json()
    assert body["status"] == "not configured"
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert body["not_configured"][:4] == ["territory", "cells", "catalogue", "calendar"]
    outsider = app.test_client().get("/readyz", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert outsider.status_code == 503
    assert outsider.get_json() == {"status": "not configured"}


# ---------------------------------------------------------------- the demo city


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[Connection]:
    with seeded_demo() as connection:
        yield connection


@pytest.fixture
def demo(city: Connection, redis_conn: Redis) -> Iterator[Session]:
    """The app's session on the seeded demo city, a live worker in Redis; rolled back after."""
    db.session.remove()
    live_worker(redis_conn)
    with nested(city) as session:
        yield session


def test_demo_city_with_a_worker_passes(demo: Session) -> None:
    checks = readiness.run_checks(demo, queues.redis, CODE, datetime.now(UTC))

    assert readiness.blocking_failures(checks) == []
    named = by_name(checks)
    assert all(named[n].ok for n in named if n != "calendar_coverage"), [
        (c.name, str(c.message)) for c in checks if not c.ok
    ]
    assert "8 communities" in str(named["territory"].message)


def test_demo_cli_exits_0(app: Flask, demo: Session) -> None:
    result = app.test_cli_runner().invoke(args=["setup", "check"])

    assert result.exit_code == 0, result.output
    assert "ok       routing" in result.output
    assert "nothing blocks dispatch" in result.output


def test_demo_readyz_ready(app: Flask, demo: Session) -> None:
    app.extensions.pop(readiness.BLOCKED_CACHE, None)

    answer = app.test_client().get("/readyz")

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


def test_no_worker_heartbeat(demo: Session, redis_conn: Redis) -> None:
    redis_conn.flushdb()  # no worker registered, no heartbeat

    checks = by_name(readiness.run_checks(demo, queues.redis, CODE, NOW))

    assert checks["worker"].blocks
    assert checks["scheduler"].blocks
    assert "never ran" in str(checks["scheduler"].message)


def test_stale_heartbeats(demo: Session) -> None:
    later = datetime.now(UTC) + timedelta(minutes=15)

    checks = by_name(readiness.run_checks(demo, queues.redis, CODE, later))

    assert checks["worker"].blocks  # rq's own heartbeat is 15 minutes old
    assert checks["scheduler"].blocks
    assert "s old" in str(checks["scheduler"].message)


def test_failed_jobs_are_a_warning(demo: Session, redis_conn: Redis) -> None:
    from rq import Queue
    from rq.registry import FailedJobRegistry

    queue = Queue("dispatch", connection=redis_conn)
    job = queue.enqueue("dispatch.jobs.heartbeat")
    FailedJobRegistry(queue=queue).add(job, ttl=600, exc_string="boom")

    check = by_name(readiness.run_checks(demo, queues.redis, CODE, NOW))["failed_jobs"]

    assert not check.ok and not check.blocking
    assert "dispatch 1" in str(check.message)


def test_without_catalogue(demo: Session) -> None:
    demo.execute(update(Category).values(active=False))

    check = readiness.check_catalogue(demo)

    assert check.blocks


def test_without_calendar(demo: Session) -> None:
    demo.execute(delete(CalendarRecord).where(CalendarRecord.code == CODE))

    checks = by_name(readiness.configuration_checks(demo, CODE, NOW.date()))

    assert checks["calendar"].blocks
    assert "us_la" in str(checks["calendar"].message)


def test_calendar_not_covering_the_next_12_months(demo: Session) -> None:
    # The shipped calendar lists 2025 to 2027: from mid-2027 the next 12 months reach 2028.
    checks = by_name(readiness.configuration_checks(demo, CODE, datetime(2027, 6, 1).date()))

    coverage = checks["calendar_coverage"]
    assert not coverage.ok and not coverage.blocking
    assert "2028" in str(coverage.message)
    assert (
        by_name(readiness.configuration_checks(demo, CODE, datetime(2027, 1, 1).date()))[
            "calendar_coverage"
        ].ok
        is False
    )  # Jan 2027 + 12 months reaches 2028 too
    assert by_name(readiness.configuration_checks(demo, CODE, datetime(2026, 1, 1).date()))[
        "calendar_coverage"
    ].ok


def test_community_without_cells(demo: Session) -> None:
    community = demo.scalar(select(Area).where(Area.code == "990100006046"))
    assert community is not None
    demo.execute(delete(GridCell).where(GridCell.community_id == community.id))

    check = readiness.check_cells(demo)

    assert check.blocks
    assert "990100006046" in str(check.message)


def test_a_community_partly_without_cells(demo: Session, redis_conn: Redis) -> None:
    community = demo.scalar(select(Area).where(Area.code == "990100006046"))
    assert community is not None
    assert readiness.check_cell_coverage(demo).ok  # the demo's cells cover it whole
    one = demo.scalar(select(GridCell.id).where(GridCell.community_id == community.id).limit(1))
    demo.execute(delete(GridCell).where(GridCell.id == one))

    coverage = readiness.check_cell_coverage(demo)
    checks = by_name(readiness.run_checks(demo, queues.redis, CODE, NOW))

    assert readiness.check_cells(demo).ok  # it still has cells
    assert not coverage.ok and not coverage.blocking  # the rest of the city is served
    assert "990100006046" in str(coverage.message)
    assert "/admin/territory/check" in str(coverage.fix)
    assert not checks["cell_coverage"].ok
    assert [c.name for c in readiness.run_checks(demo, queues.redis, CODE, NOW)][:3] == [
        "territory",
        "cells",
        "cell_coverage",
    ]


def test_class_unroutable_in_a_community(demo: Session) -> None:
    # The community unit of 990100006046 goes inactive: classes without a rule of their own
    # there have nowhere to go; classes with an active department rule still route.
    community = demo.scalar(select(Area).where(Area.code == "990100006046"))
    assert community is not None
    demo.execute(update(Unit).where(Unit.community_id == community.id).values(active=False))

    check = readiness.check_routing(demo)
    holes = readiness.routing_holes(demo)

    assert check.blocks
    assert holes and {community_code for _cls, community_code, _r in holes} == {"990100006046"}
    assert "inactive" in holes[0][2]
    assert f"{holes[0][0]} @ 990100006046" in str(check.message)
    routed_elsewhere = demo.scalar(text("SELECT count(*) FROM categories WHERE active"))
    assert len(holes) < routed_elsewhere  # some classes route by rule to a department


def test_no_operator(demo: Session) -> None:
    demo.execute(update(User).where(User.role == Role.OPERATOR.value).values(active=False))

    checks = by_name(readiness.check_people(demo))

    assert checks["people_operator"].blocks
    assert checks["people_dispatcher"].ok and checks["people_inspector"].ok


def test_no_dispatcher_or_inspector_is_a_warning(demo: Session) -> None:
    demo.execute(
        update(User)
        .where(User.role.in_([Role.DISPATCHER.value, Role.INSPECTOR.value]))
        .values(active=False)
    )

    checks = by_name(readiness.check_people(demo))

    assert not checks["people_dispatcher"].ok and not checks["people_dispatcher"].blocking
    assert not checks["people_inspector"].ok and not checks["people_inspector"].blocking
