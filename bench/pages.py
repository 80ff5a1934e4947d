"""Time every staff and public page at volume, one request at a time, to the last byte.

    .venv/bin/python bench/pages.py [-n 1000000] [--runs 15] [--reuse] [--database NAME]
                                    [--churn 2000] [--only PAGE[,PAGE...]] [--gc-young N] [--each]

Builds `gridmgmt_bench_pages` (the 99 LA councils, 250 m cells, the catalogue, the LA
calendar, one community unit each, one user per role) and loads N cases with COPY, as a city
a year into its life would have them: the real LA 311 points, reported over the last 365 days;
old cases closed but for a small backlog, the last two weeks spread over every status (waiting
for verification, filed, with a unit, returned, suspended, handled, being checked, closed,
refused, merged); each case with the events of the steps it went through (8 for a closed one)
and one case in five that was handled with a photo row. Then times each page with signed-in
users through the app's own test client (no network): a warm-up request, then `--runs`
requests; the map's cache is emptied before each map request (every one is built). Between
the rollups' refresh and the timing, `--churn` changes (2,000: ten minutes of a city of 20
million cases a year, the scheduler's interval) close, re-handle, hand back, answer and
re-time cases of past days, each in its own transaction, so the pages read a working city,
not a refreshed one.
The garbage collector is set as in a web worker (gridmgmt.kernel.collector); `--gc-young 700`
times the pages with Python's default thresholds instead.

Last line:
    pages: N cases, slowest PAGE p95 X ms, median of p95s Y ms
"""

from __future__ import annotations

import argparse
import io
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    base_points,
    bench_redis_url,
    fresh_database,
    load_la_territory,
    migrate,
    owner_of,
)

from cases.catalogue import load_catalogue
from gridmgmt import create_app
from gridmgmt.kernel.auth import create_user
from gridmgmt.kernel.calendar_store import load_calendar, shipped_calendar
from gridmgmt.kernel.collector import YOUNG, settle
from gridmgmt.kernel.config import Config
from maps.evaluation import refresh_rollup

BENCH_DB = "gridmgmt_bench_pages"  # --database names another (keep a 1 M and a 10 M one)
PASSWORD = "bench-pages-password-1"
# Recent cases (the last 14 days) by status, out of 100; older ones are closed but for 0.5 %.
RECENT = {"closed": 55, "dispatched": 8, "in_progress": 10, "handled": 4, "checking": 2,
          "checked": 2, "reported": 6, "verified": 2, "filed": 1, "returned": 1,
          "suspended": 2, "rejected": 4, "invalid": 2, "merged": 1}  # fmt: skip
# The steps a case in each status went through: (action, status after).
STEPS = {
    "reported": [("report", "reported")],
    "verified": [("report", "reported"), ("verify", "verified")],
    "rejected": [("report", "reported"), ("reject", "rejected")],
    "invalid": [("report", "reported"), ("invalidate", "invalid")],
    "merged": [("report", "reported"), ("merge", "merged")],
    "filed": [("report", "reported"), ("file", "filed")],
}
STEPS["dispatched"] = [*STEPS["filed"], ("dispatch", "dispatched")]
STEPS["returned"] = [*STEPS["dispatched"], ("return", "returned")]
STEPS["in_progress"] = [*STEPS["dispatched"], ("accept", "in_progress")]
STEPS["suspended"] = [*STEPS["in_progress"], ("request_suspension", "in_progress"),
                      ("approve_suspension", "suspended")]  # fmt: skip
STEPS["handled"] = [*STEPS["in_progress"], ("report_done", "handled")]
STEPS["checking"] = [*STEPS["handled"], ("assign_check", "checking")]
STEPS["checked"] = [*STEPS["checking"], ("check_pass", "checked")]
STEPS["closed"] = [*STEPS["checked"], ("close", "closed")]
ROLE_OF = {"report": "citizen", "verify": "inspector", "invalidate": "inspector",
           "check_pass": "inspector", "dispatch": "system", "accept": "unit_staff",
           "return": "unit_staff", "report_done": "unit_staff",
           "request_suspension": "unit_staff", "approve_suspension": "dispatcher"}  # fmt: skip
CASE_COLUMNS = ("id", "number", "source", "status", "category_id", "urgent", "description",
                "address", "location", "cell_id", "community_id", "unit_id", "reported_at",
                "filed_at", "dispatched_at", "deadline", "handled_at", "closed_at",
                "dispatch_state", "updated_at", "pending_request", "pending_value",
                "pending_unit")  # fmt: skip
EVENT_COLUMNS = ("id", "case_id", "action", "from_status", "to_status", "actor_role", "note",
                 "data", "created_at")  # fmt: skip
PHOTO_COLUMNS = ("case_id", "event_id", "kind", "sha256", "path", "thumb_path", "mime",
                 "width", "height", "size_bytes")  # fmt: skip
NULL = r"\N"
# The pages timed, in order (`--only` picks some by these names).
PAGES = ("inbox", "board", "queue", "case page", "case page (unit)", "tasks", "track",
         "open311 default", "open311 open", "open311 service+period", "open311 deep page",
         "open data month", "open data geojson", "map month", "map year", "map mid-month year",
         "evaluation month",
         "evaluation year", "dashboard", "search address", "search status+period",
         "search (unit)")  # fmt: skip
EXPORTS = ("open data month", "open data geojson")  # streamed files, not pages


def ts(value: datetime | None) -> str:
    return value.isoformat() if value is not None else NULL


def generate(
    n: int, points: list, categories: list[int], now: datetime
) -> Iterator[tuple[str, list[str], list[str]]]:
    """For each case: its COPY line, its events' lines and its photos' lines."""
    rng = random.Random(11)
    statuses = [s for s, share in RECENT.items() for _ in range(share)]
    event_id = 0
    for i in range(1, n + 1):
        lon, lat, cell, community, unit = points[i % len(points)]
        lon += rng.uniform(-0.00003, 0.00003)
        lat += rng.uniform(-0.00003, 0.00003)
        # Numbered and stored in the order they were reported, as a city's cases are: a table
        # of cases from random days of the year puts each page's recent cases on every page.
        year = 365 * 86400 - 60
        reported = now - timedelta(seconds=60 + year * (n - i + rng.random()) / n)
        if now - reported > timedelta(days=14):
            status = "in_progress" if rng.random() < 0.005 else "closed"
        else:
            status = rng.choice(statuses)
        steps = STEPS[status]
        end = min(now, reported + timedelta(hours=rng.uniform(2, 120)))
        times = sorted(reported + (end - reported) * rng.random() for _ in steps[1:])
        times = [reported, *times]
        at = dict(zip((a for a, _ in steps), times, strict=True))
        dispatched = at.get("dispatch")
        deadline = (
            dispatched + timedelta(hours=rng.choice((4, 8, 24, 40, 120))) if dispatched else None
        )
        unit_id = str(unit) if dispatched else NULL
        pending = (
            ("extension", "24", "hours")
            if status == "in_progress" and rng.random() < 0.05
            else (NULL,) * 3
        )
        case = "\t".join((
            str(i), f"P{i:012d}", rng.choice(("citizen", "inspector", "open311", "hotline")),
            status, str(rng.choice(categories)), "t" if rng.random() < 0.05 else "f",
            f"overflowing bin near stop {i % 977}", f"{i % 9000} S Main St",
            f"SRID=4326;POINT({lon:.7f} {lat:.7f})", str(cell), str(community), unit_id,
            ts(reported), ts(at.get("file")), ts(dispatched), ts(deadline),
            ts(at.get("report_done")), ts(at.get("close")),
            "done" if dispatched else ("queued" if status == "filed" else "none"),
            ts(times[-1]), *pending,
        ))  # fmt: skip
        events, photos = [], []
        before = NULL
        for (action, after), when in zip(steps, times, strict=True):
            event_id += 1
            note = "handled: bin emptied" if action == "report_done" else ""
            events.append("\t".join((
                str(event_id), str(i), action, before, after, ROLE_OF.get(action, "operator"),
                note, "{}", ts(when),
            )))  # fmt: skip
            before = after
            if action == "report_done" and i % 5 == 0:
                digest = f"{i:064x}"
                photos.append("\t".join((
                    str(i), str(event_id), "after", digest, f"{digest[:2]}/{digest}.jpg",
                    f"{digest[:2]}/{digest}.thumb.jpg", "image/jpeg", "1600", "1200", "180000",
                )))  # fmt: skip
        yield case, events, photos


def copy_all(url: str, n: int) -> None:
    """COPY N cases, their events and photos, with the secondary indexes rebuilt after."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    with Session(engine) as session:
        points = base_points(session)
        categories = list(session.scalars(text("SELECT id FROM categories")))
        # Unique constraints come back as constraints (ON CONFLICT names them), the rest as
        # plain indexes.
        constraints = session.execute(
            text("""SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
                    FROM pg_constraint
                    WHERE conrelid IN ('cases'::regclass, 'case_events'::regclass,
                                       'photos'::regclass)
                      AND contype = 'u' AND conparentid = 0""")
        ).all()
        indexes = session.execute(
            text("""SELECT indexname, indexdef FROM pg_indexes
                    WHERE tablename IN ('cases', 'case_events', 'photos')
                      AND indexname NOT LIKE 'pk_%'
                      AND indexname NOT IN (SELECT conname FROM pg_constraint
                                            WHERE contype IN ('u', 'p'))""")
        ).all()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for table, name, _ in constraints:
            cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cur.execute(f'DROP INDEX IF EXISTS "{name}"')
        raw.commit()
        started = time.perf_counter()
        rows = generate(n, points, categories, now)
        chunk = 100_000
        for done in range(0, n, chunk):
            cases, events, photos = io.StringIO(), io.StringIO(), io.StringIO()
            for _ in range(min(chunk, n - done)):
                case, case_events, case_photos = next(rows)
                cases.write(case + "\n")
                events.writelines(e + "\n" for e in case_events)
                photos.writelines(p + "\n" for p in case_photos)
            for table, columns, buffer in (("cases", CASE_COLUMNS, cases),
                                           ("case_events", EVENT_COLUMNS, events),
                                           ("photos", PHOTO_COLUMNS, photos)):  # fmt: skip
                buffer.seek(0)
                cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)
            raw.commit()
            share = (done + min(chunk, n - done)) / n
            bar = "#" * int(40 * share)
            took = time.perf_counter() - started
            print(f"\rCOPY [{bar:<40}] {share:6.1%} {took:6.0f} s", end="", file=sys.stderr)
        print(file=sys.stderr)
        started = time.perf_counter()
        for _name, definition in indexes:
            # A partitioned table's index reads "ON ONLY": made so, it would cover no partition.
            cur.execute(definition.replace(" ON ONLY ", " ON "))
            raw.commit()
        for table, name, definition in constraints:
            cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            raw.commit()
        built = len(indexes) + len(constraints)
        print(f"  {built} indexes: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for table in ("cases", "case_events", "photos"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))")  # fmt: skip
        raw.commit()
        raw.set_isolation_level(0)
        cur.execute("VACUUM ANALYZE cases, case_events, photos")
    finally:
        raw.close()
    engine.dispose()


def build(n: int, name: str = BENCH_DB) -> str:
    """A fresh database with the territory, the catalogue, the calendar, users and N cases."""
    url = fresh_database(name)
    engine = create_engine(url)
    with Session(engine) as session, session.begin():
        load_la_territory(session)
        load_catalogue(session)
        load_calendar(session, shipped_calendar("us_la"))
        unit = session.scalar(text("SELECT code FROM units WHERE community_id IS NOT NULL "
                                   "ORDER BY id LIMIT 1"))  # fmt: skip
        for role in ("operator", "dispatcher", "inspector", "leader"):
            create_user(session, role, PASSWORD, role)
        create_user(session, "staff", PASSWORD, "unit_staff", unit_code=unit)
    engine.dispose()
    copy_all(owner_of(url), n)
    return url


# A working city's changes between two refreshes, out of 100: what each does to a case.
# A city's changes to cases of past days, in pairs that undo each other's effect on the
# statuses (closings and re-handlings, hand-backs and answers), so that a database reused for
# run after run keeps cases of every kind to change: (share %, SET, WHERE).
RUNNING = "status IN ('dispatched', 'in_progress')"
CHURN = (
    (30, "status = 'closed', closed_at = now(), handled_at = COALESCE(handled_at, now())", RUNNING),
    (30, "status = 'dispatched', closed_at = NULL, deadline = now() + interval '3 days'",
     "status = 'closed'"),
    (15, "deadline = now() + interval '2 hours'", RUNNING),
    (10, "status = 'in_progress'", "status = 'handled'"),
    (10, "status = 'handled', handled_at = now()", "status = 'in_progress'"),
    (5, "status = 'in_progress', closed_at = NULL, deadline = now() - interval '1 hour'",
     "status = 'closed'"),
)  # fmt: skip


def working_city(url: str, changes: int) -> int:
    """`changes` changes to cases of the last 30 days, one transaction each (CHURN), each case
    changed once; the number made."""
    rng = random.Random(13)
    engine = create_engine(url)
    work: list[tuple[str, int]] = []
    with engine.connect() as conn:
        for share, what, where in CHURN:
            picked = conn.execute(
                text(f"""SELECT id FROM cases WHERE {where} AND NOT id = ANY(:taken)
                         AND reported_at >= now() - interval '30 days'
                         AND reported_at < date_trunc('day', now())
                         ORDER BY md5(id::text) LIMIT :n"""),
                {"n": changes * share // 100, "taken": [case for _, case in work]},
            ).scalars().all()  # fmt: skip
            work += [(what, case) for case in picked]
    rng.shuffle(work)
    with engine.connect() as conn:
        for what, case in work:
            with conn.begin():
                conn.execute(text(f"UPDATE cases SET {what} WHERE id = :id"), {"id": case})
    engine.dispose()
    return len(work)


def signed_in(app, username: str):
    """A test client signed in through the login form."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    answer = client.post("/login", data={"username": username, "password": PASSWORD,
                                         "csrf_token": token.group(1)})  # fmt: skip
    assert answer.status_code in (302, 303), answer.get_data(as_text=True)[:300]
    return client


def main() -> None:
    """Build (or reuse), then time each page; print one line per page and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="cases to load")
    parser.add_argument("--runs", type=int, default=15, help="timed requests per page")
    parser.add_argument(
        "--gc-young",
        type=int,
        default=YOUNG,
        help=f"allocations between young garbage collections (web workers: {YOUNG}; Python: 700)",
    )
    parser.add_argument("--each", action="store_true", help="print every request's time too")
    parser.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    parser.add_argument("--database", default=BENCH_DB, help="the bench database's name")
    parser.add_argument(
        "--churn", type=int, default=2000, help="changes to cases after the rollups' refresh"
    )
    parser.add_argument(
        "--only",
        default="",
        help="time only these pages, by name, comma-separated (e.g. 'map year,dashboard')",
    )
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := sorted(set(only) - set(PAGES)):
        parser.error(f"unknown pages {unknown}; pages are: {', '.join(PAGES)}")

    if args.reuse:  # kept, and brought to the newest migration
        url = Config.from_env().DATABASE_URL.rsplit("/", 1)[0] + f"/{args.database}"
        started = time.perf_counter()
        migrate(url)
        print(f"migrations: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    else:
        url = build(args.n, args.database)
    redis_url = bench_redis_url(4)
    app = create_app({"DATABASE_URL": url, "REDIS_URL": redis_url, "SECRET_KEY": "bench",
                      "SESSION_COOKIE_SECURE": False, "ADMIN_TOTP_REQUIRED": False,
                      "LOG_LEVEL": "WARNING"})  # fmt: skip
    app.config.update({f"RATE_{w}_PER_{s}": 10**9 for w in ("REPORTS", "ACTIONS", "READS")
                       for s in ("CLIENT", "ACCOUNT")})  # fmt: skip
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    engine = create_engine(url)
    with engine.connect() as conn:
        cases = conn.scalar(text("SELECT count(*) FROM cases"))
        closed_case = conn.scalar(text("SELECT max(id) FROM cases WHERE status = 'closed'"))
        number = conn.scalar(text("SELECT number FROM cases WHERE id = :i"), {"i": closed_case})
        service = conn.scalar(text("SELECT code FROM categories ORDER BY id LIMIT 1"))
    with app.app_context():
        from gridmgmt.kernel.db import db

        started = time.perf_counter()
        with db.transaction() as session:
            refresh_rollup(session)  # as the scheduler keeps it
        print(f"rollups refreshed: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    engine.dispose()
    started = time.perf_counter()
    made = working_city(url, args.churn)
    print(f"{made} changes since: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    people = {name: signed_in(app, name) for name in
              ("operator", "dispatcher", "inspector", "leader", "staff")}  # fmt: skip
    anonymous = app.test_client()
    with engine.connect() as conn:
        queue_case = conn.scalar(
            text(
                "SELECT c.id FROM cases c JOIN users u ON u.unit_id = c.unit_id"
                " WHERE u.username = 'staff' AND c.status IN ('dispatched', 'in_progress')"
                " ORDER BY c.id LIMIT 1"
            )
        )
    engine.dispose()
    today = date.today()
    month = f"start={today - timedelta(days=29)}&end={today}"
    year = f"start={today - timedelta(days=364)}&end={today}"
    # A year whose both ends fall mid-month (to the last 15th): the days of two half months
    # besides the whole ones, the most a period of a year reads from the daily rollups.
    fifteenth = today.replace(day=15) if today.day >= 15 else (
        today.replace(day=1) - timedelta(days=1)).replace(day=15)  # fmt: skip
    mid_year = f"start={fifteenth - timedelta(days=364)}&end={fifteenth}"
    w3c_start = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    o311 = "/open311/v2/requests.json"
    pages: list[tuple[str, object, str, Callable[[], None] | None]] = [
        ("inbox", people["operator"], "/inbox", None),
        ("board", people["dispatcher"], "/board", None),
        ("queue", people["staff"], "/queue", None),
        ("case page", people["operator"], f"/cases/{closed_case}", None),
        ("case page (unit)", people["staff"], f"/cases/{queue_case}", None),
        ("tasks", people["inspector"], "/tasks", None),
        ("track", anonymous, f"/track/{number}", None),
        ("open311 default", anonymous, o311, None),
        ("open311 open", anonymous, f"{o311}?status=open", None),
        (
            "open311 service+period",
            anonymous,
            f"{o311}?service_code={service}&start_date={w3c_start}",
            None,
        ),
        ("open311 deep page", anonymous, f"{o311}?page=40&page_size=100", None),
        ("open data month", anonymous, f"/open-data/cases.csv?{month}", None),
        ("open data geojson", anonymous, f"/open-data/cases.geojson?{month}", None),
        ("map month", people["leader"], f"/maps/frame?{month}", redis.flushdb),
        ("map year", people["leader"], f"/maps/frame?{year}", redis.flushdb),
        ("map mid-month year", people["leader"], f"/maps/frame?{mid_year}", redis.flushdb),
        ("evaluation month", people["leader"], f"/evaluation?{month}", None),
        ("evaluation year", people["leader"], f"/evaluation?{year}", None),
        ("dashboard", people["leader"], "/dashboard", None),
        ("search address", people["operator"], "/cases/search?address=1234+S+Main", None),
        (
            "search status+period",
            people["operator"],
            f"/cases/search?status=in_progress&reported_from={today - timedelta(days=29)}"
            f"&reported_to={today}",
            None,
        ),
        ("search (unit)", people["staff"], "/cases/search?status=closed", None),
    ]
    assert [label for label, *_ in pages] == list(PAGES)
    # As each web worker does once started (gunicorn.conf.py, post_worker_init).
    settle(args.gc_young)
    if only:
        pages = [page for page in pages if page[0] in only]
    p95s: dict[str, float] = {}
    for label, client, path, before in pages:
        times, size = [], 0
        for run in range(args.runs + 1):
            if before:
                before()
            started = time.perf_counter()
            answer = client.get(path)  # type: ignore[attr-defined]
            body = answer.get_data()  # to the last byte (streamed exports too)
            elapsed = (time.perf_counter() - started) * 1000
            assert answer.status_code == 200, (label, answer.status_code, body[:300])
            size = len(body)
            if run:  # the first is a warm-up
                times.append(elapsed)
        p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
        p95s[label] = p95
        print(f"{label:<24} p50 {statistics.median(times):8.1f} ms  p95 {p95:8.1f} ms  "
              f"{size / 1e3:9.1f} kB", file=sys.stderr)  # fmt: skip
        if args.each:
            print("    " + " ".join(f"{ms:.0f}" for ms in times), file=sys.stderr)
    # The exports are judged by their stream (constant memory, to the last byte), not by the
    # 300 ms of a page: a month of a city's cases is a hundred megabytes.
    exports = {label: p95s.pop(label) for label in EXPORTS if label in p95s}
    if exports:
        print("exports: " + ", ".join(f"{label} p95 {ms / 1000:.1f} s" for label, ms in
                                      exports.items()))  # fmt: skip
    if p95s:
        slowest = max(p95s, key=lambda k: p95s[k])
        print(f"pages: {cases} cases, slowest {slowest} p95 {p95s[slowest]:.0f} ms, "
              f"median of p95s {statistics.median(p95s.values()):.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
