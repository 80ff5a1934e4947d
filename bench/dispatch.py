"""Benchmark the RQ dispatcher on the real Los Angeles territory.

    .venv/bin/python bench/dispatch.py [-n 20000] [--baseline 300] [--quiet 20]

Builds `gridmgmt_bench_dispatch` (99 LA councils as communities, 250 m cells, the default
catalogue with the demo's departments and routing rules), then, with Redis database 2:

1. quiet system: files single cases one at a time through the lifecycle service (commit, the
   doorbell rings, one non-forking worker dispatches) and times filed → dispatched;
2. burst: inserts N filed cases at the real LA 311 points (located by the dispatcher itself),
   rings once, and times one non-forking worker until every case is dispatched;
3. baseline: the same work as one job per case (`dispatch_cases([id], drain=False)`) on RQ's
   default forking worker, for --baseline cases.

Last line:
    dispatch: N cases, X cases/s, p95 filed->dispatched Y ms, per-case-job baseline Z cases/s
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis
from rq import Queue
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    bench_redis_url,
    fresh_database,
    la_311_cases,
    load_la_territory,
    owner_of,
)

from cases import intake, lifecycle
from cases.catalogue import load_catalogue
from cases.intake import ReportInput
from cases.lifecycle import ActionInput, CaseContext
from cases.models import CaseSource
from gridmgmt import create_app
from gridmgmt.app.demo import seed_departments, seed_routing_rules
from gridmgmt.kernel.auth import create_user
from gridmgmt.kernel.calendar_store import city_calendar, load_calendar, shipped_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import User
from gridmgmt.kernel.queue import DISPATCH_QUEUE

BENCH_DB = "gridmgmt_bench_dispatch"
CATEGORIES = ("E0102", "E0201", "C0101", "C0118", "E0501", "C0201", "E0401")


def redis_url() -> str:
    """Database 2 of the Redis the app uses: this benchmark flushes it."""
    return bench_redis_url(2)


def la_points() -> list[tuple[float, float]]:
    """The geocoded LA 311 case positions."""
    return [(lon, lat) for lon, lat, _ in la_311_cases()]


def start_worker(url: str, fork: bool = False) -> subprocess.Popen[bytes]:
    """`flask dispatch worker` on the bench database, in the background."""
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url(), "FLASK_APP": "wsgi"}
    args = [str(ROOT / ".venv" / "bin" / "flask"), "dispatch", "worker"]
    if fork:
        args.append("--fork")
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(worker: subprocess.Popen[bytes]) -> None:
    """Stop a worker and wait for it."""
    worker.terminate()
    try:
        worker.wait(10)
    except subprocess.TimeoutExpired:
        worker.kill()


def insert_filed(session: Session, points: list[tuple[float, float]], n: int) -> None:
    """N filed cases waiting for dispatch, not yet located (the dispatcher locates them)."""
    rng = random.Random(2020)
    ids = dict(session.execute(text("SELECT code, id FROM categories")).tuples().all())
    rows = [
        {"lon": lon, "lat": lat, "category_id": ids[rng.choice(CATEGORIES)]}
        for lon, lat in (points[i % len(points)] for i in range(n))
    ]
    session.execute(
        text("""
            INSERT INTO cases (source, status, category_id, location, filed_at, dispatch_state)
            VALUES ('open311', 'filed', :category_id, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326),
                    now(), 'queued')
        """),
        rows,
    )


def wait_until_dispatched(engine: object, expected: int, timeout: float = 600) -> float:
    """Seconds until `expected` cases are no longer waiting (dispatched or on the board)."""
    started = time.perf_counter()
    with engine.connect() as conn:  # type: ignore[attr-defined]
        while time.perf_counter() - started < timeout:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM cases"
                    " WHERE status = 'filed' AND dispatch_state = 'queued'"
                )
            ).scalar()
            conn.commit()
            if waiting == 0:
                return time.perf_counter() - started
            time.sleep(0.02)
    raise SystemExit(f"timeout: cases still waiting after {timeout} s")


def quiet_latency(url: str, count: int) -> list[float]:
    """File single cases through the service and time filed → dispatched (ms)."""
    app = create_app({"DATABASE_URL": url, "REDIS_URL": redis_url()})
    points = la_points()
    latencies: list[float] = []
    with app.app_context():
        operator = db.session.scalar(text("SELECT id FROM users WHERE username = 'bench-op'"))
        user = db.session.get(User, operator)
        for i in range(count):
            with db.transaction() as session:
                context = CaseContext(city_calendar(session), Path("/tmp/gridmgmt-bench-photos"))
                lon, lat = points[(i * 37) % len(points)]
                report = ReportInput(category_code="E0102", lon=lon, lat=lat)
                try:
                    case = intake.report_case(
                        session, report, user, CaseSource.OPERATOR, context.photo_root
                    ).case
                except Exception:  # a point outside every council: try the next one
                    continue
                case_id = case.id
            with db.transaction() as session:
                lifecycle.act(session, case_id, "file", user, ActionInput(), context)
                filed = time.perf_counter()
            while True:
                status = db.session.scalar(
                    text("SELECT status FROM cases WHERE id = :id"), {"id": case_id}
                )
                db.session.commit()
                if status == "dispatched":
                    latencies.append((time.perf_counter() - filed) * 1000)
                    break
                time.sleep(0.002)
            time.sleep(0.2)  # quiet: one case at a time
    return latencies


def main() -> None:
    """Build, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="cases in the burst")
    parser.add_argument("--baseline", type=int, default=300, help="cases, one job each")
    parser.add_argument("--quiet", type=int, default=20, help="single cases on a quiet system")
    args = parser.parse_args()

    url = fresh_database(BENCH_DB)
    engine = create_engine(url)
    with Session(engine) as session, session.begin():
        load_la_territory(session)
        load_catalogue(session)
        load_calendar(session, shipped_calendar("us_la"))
        seed_routing_rules(session, seed_departments(session))
        create_user(session, "bench-op", "bench-password", "operator")
    redis = Redis.from_url(redis_url())
    redis.flushdb()
    points = la_points()

    worker = start_worker(url)
    time.sleep(2)
    quiet = quiet_latency(url, args.quiet)
    print(
        f"quiet: {len(quiet)} single cases, filed->dispatched median "
        f"{statistics.median(quiet):.0f} ms, max {max(quiet):.0f} ms",
        file=sys.stderr,
    )

    with Session(engine) as session, session.begin():
        insert_filed(session, points, args.n)
    with create_engine(owner_of(url)).begin() as conn:  # only the owner may ANALYZE
        conn.execute(text("ANALYZE cases"))
    rang = time.perf_counter()
    rang_at = datetime.now(UTC)
    Queue(DISPATCH_QUEUE, connection=redis).enqueue("dispatch.jobs.dispatch_cases", [])
    elapsed = wait_until_dispatched(engine, args.n)
    stop(worker)
    with engine.connect() as conn:
        delays = [
            (row[0] - rang_at).total_seconds() * 1000
            for row in conn.execute(
                text("SELECT dispatched_at FROM cases WHERE dispatched_at >= :t"), {"t": rang_at}
            )
        ]
        board = conn.execute(
            text("SELECT count(*) FROM cases WHERE dispatch_state = 'manual'")
        ).scalar()
    rate = args.n / elapsed
    p95 = statistics.quantiles(delays, n=20)[-1]
    print(
        f"burst: {args.n} cases in {elapsed:.2f} s ({len(delays)} dispatched, {board} to the "
        f"board: outside every council) since the ring {time.perf_counter() - rang:.2f} s ago",
        file=sys.stderr,
    )

    # Baseline: one job per case on RQ's default forking worker.
    with Session(engine) as session, session.begin():
        insert_filed(session, points, args.baseline)
        ids = list(
            session.scalars(
                text("SELECT id FROM cases WHERE status = 'filed' AND dispatch_state = 'queued'")
            )
        )
    queue = Queue(DISPATCH_QUEUE, connection=redis)
    for case_id in ids:
        queue.enqueue("dispatch.jobs.dispatch_cases", [case_id], drain=False)
    forking = start_worker(url, fork=True)
    baseline_elapsed = wait_until_dispatched(engine, len(ids))
    stop(forking)
    baseline = len(ids) / baseline_elapsed
    print(
        f"dispatch: {args.n} cases, {rate:,.0f} cases/s, p95 filed->dispatched {p95:,.0f} ms, "
        f"per-case-job baseline {baseline:,.1f} cases/s"
    )


if __name__ == "__main__":
    main()
