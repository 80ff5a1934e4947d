"""The dispatcher under faults: a worker killed mid-batch, Redis down while cases are filed,
PostgreSQL restarted under a running worker and web app, and the failed jobs page after a
worker died holding a job.

The database is the record and Redis only the doorbell: whatever fails, every filed case ends
dispatched (or on the board) exactly once. Each test has its own database (a clone of the LA
territory, or a private PostgreSQL cluster) and its own Redis server, and a real
`flask dispatch worker` subprocess.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from itertools import cycle, islice
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, Request, build_opener

import pytest
from alembic import command
from flask import Flask
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from gridmgmt import create_app
from gridmgmt.app.demo import DEMO_PASSWORD, seed_demo
from gridmgmt.kernel.db import EXTENSION as DB_EXTENSION
from gridmgmt.kernel.queue import DISPATCH_QUEUE, PERIODIC_QUEUE
from tests.conftest import alembic_config, analyze_cases
from tests.dispatch.conftest import (
    DISPATCHER,
    DISPATCHER_PASSWORD,
    OPERATOR,
    OPERATOR_PASSWORD,
    RedisServer,
    SpawnWorker,
    free_port,
    insert_filed,
    la_requests,
    run_flask,
    wait_until,
)
from tests.support import require

pytestmark = pytest.mark.slow

COMMUNITY_CLASS = "E0102"  # exposed garbage: dispatched to the council's community unit
OUTSIDE = "outside every unit grid cell"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


# ---------------------------------------------------------------- what the database says


def counts(engine: Engine) -> dict[str, int]:
    """Cases waiting, dispatched and on the board, and dispatch events (total, duplicated)."""
    with engine.connect() as conn:
        row = conn.execute(
            text("""
                SELECT count(*) FILTER (WHERE status = 'filed' AND dispatch_state = 'queued'),
                       count(*) FILTER (WHERE status = 'dispatched'),
                       count(*) FILTER (WHERE status = 'filed' AND dispatch_state = 'manual'),
                       count(*),
                       (SELECT count(*) FROM case_events WHERE action = 'dispatch'),
                       (SELECT count(*) FROM (SELECT case_id FROM case_events
                        WHERE action = 'dispatch' GROUP BY case_id HAVING count(*) > 1) AS d)
                FROM cases
            """)
        ).one()
    return dict(
        zip(["waiting", "dispatched", "manual", "total", "events", "twice"], row, strict=True)
    )


def assert_each_case_dispatched_once(engine: Engine) -> dict[str, int]:
    """Nothing waits, nothing is lost, one dispatch event per dispatched case and no other."""
    now = counts(engine)
    assert now["waiting"] == 0, now
    assert now["dispatched"] + now["manual"] == now["total"], now
    assert now["events"] == now["dispatched"], now
    assert now["twice"] == 0, now
    with engine.connect() as conn:
        orphans = conn.execute(
            text("""SELECT count(*) FROM case_events e JOIN cases c ON c.id = e.case_id
                    WHERE e.action = 'dispatch' AND c.status <> 'dispatched'""")
        ).scalar_one()
        reasons = conn.execute(
            text("SELECT DISTINCT dispatch_error FROM cases WHERE dispatch_state = 'manual'")
        ).scalars()
        assert orphans == 0
        assert set(reasons) <= {OUTSIDE}
        misrouted = conn.execute(
            text("""SELECT count(*) FROM cases c JOIN units u ON u.id = c.unit_id
                    WHERE c.status = 'dispatched' AND u.community_id IS DISTINCT FROM
                    c.community_id""")
        ).scalar_one()
        assert misrouted == 0, "a community class goes to the unit of the case's community"
    return now


def wait_dispatched(
    engine: Engine,
    ring: Callable[[], object] | None = None,
    timeout: float = 30.0,
    ring_every: float = 5.0,
) -> float:
    """Seconds until no case waits; `ring()` again every `ring_every` s meanwhile, as the
    periodic sweep does (every 15 s in production)."""
    started = last_ring = time.monotonic()
    while counts(engine)["waiting"]:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"cases still waiting after {timeout:g} s: {counts(engine)}")
        if ring is not None and time.monotonic() - last_ring > ring_every:
            ring()
            last_ring = time.monotonic()
        time.sleep(0.1)
    return time.monotonic() - started


def inside_points(engine: Engine, count: int) -> list[tuple[float, float]]:
    """(lon, lat) of points each inside exactly one cell, spread over the territory."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("""
                SELECT ST_X(p), ST_Y(p)
                FROM grid_cells g, ST_PointOnSurface(g.geom) p
                WHERE NOT EXISTS (SELECT 1 FROM grid_cells o
                                  WHERE o.id <> g.id AND ST_Intersects(o.geom, p))
                ORDER BY md5(g.code) LIMIT :n
            """),
            {"n": count},
        ).all()
    return [(float(x), float(y)) for x, y in rows]


# ---------------------------------------------------------------- a live web app


class QuietHandler(WSGIRequestHandler):
    """Werkzeug's request handler without the access log."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class LiveServer:
    """The real app served by werkzeug (a thread per request) on a free port."""

    app: Flask
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        """Stop serving and close the app's database pool."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.app.extensions[DB_EXTENSION].dispose()


def serve(database_url: URL, redis_url: str, photos: Path) -> LiveServer:
    """Serve a new app on this database and Redis."""
    app = create_app(
        {
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "SECRET_KEY": "fault-tests",
            "PHOTO_DIR": str(photos),
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    return LiveServer(app, server, thread)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[list[LiveServer]]:
    """Servers started by the test (`live.append(serve(...))`), closed at its end."""
    servers: list[LiveServer] = []
    yield servers
    for server in servers:
        server.close()


@dataclass
class Answer:
    """An HTTP answer: status (0: no answer at all), body, and how long it took."""

    status: int
    body: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebUser:
    """A signed-in person's browser on the live app: a cookie jar and the session's CSRF token."""

    base: str
    opener: Any = field(default_factory=lambda: build_opener(HTTPCookieProcessor(CookieJar())))
    token: str = ""

    def call(self, path: str, body: dict[str, Any] | None = None, form: bool = False) -> Answer:
        """GET `path`, or POST `body` as JSON (or as a form) with the CSRF token."""
        headers = {"X-CSRFToken": self.token}
        data = None
        if body is not None and form:
            data = urlencode({**body, "csrf_token": self.token}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            request = Request(self.base + path, data=data, headers=headers)
            with self.opener.open(request, timeout=30) as response:
                status, text_ = response.status, response.read().decode()
        except HTTPError as error:
            status, text_ = error.code, error.read().decode(errors="replace")
        except (URLError, OSError) as error:
            status, text_ = 0, repr(error)
        return Answer(status, text_, time.monotonic() - started)

    def sign_in(self, username: str, password: str) -> None:
        """Through the real login form."""
        page = self.call("/login")
        found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.body)
        assert found, page.body[:500]
        self.token = found.group(1)
        signed = self.call("/login", {"username": username, "password": password}, form=True)
        assert signed.status == 200 and "Wrong username" not in signed.body, signed.body[:500]

    def report_and_file(self, lon: float, lat: float) -> tuple[list[Answer], int | None]:
        """Report a problem through the JSON API and file it; the answers and the case id."""
        reported = self.call("/api/reports", {"category": COMMUNITY_CLASS, "lon": lon, "lat": lat})
        if reported.status != 201:
            return [reported], None
        case_id = int(reported.json()["id"])
        filed = self.call(f"/api/cases/{case_id}/actions/file", {})
        return [reported, filed], case_id if filed.status == 200 else None


# ---------------------------------------------------------------- a) SIGKILL


def test_a_worker_killed_mid_drain_loses_and_duplicates_nothing(
    la_db: URL, private_redis: RedisServer, spawn_worker: SpawnWorker
) -> None:
    total = 5000
    engine = create_engine(la_db, poolclass=NullPool)
    with engine.begin() as conn:
        insert_filed(conn, list(islice(cycle(la_requests()), total)), COMMUNITY_CLASS)
    analyze_cases(la_db)
    first = spawn_worker(la_db, private_redis.url)
    with private_redis.client() as redis:
        Queue(DISPATCH_QUEUE, connection=redis).enqueue("dispatch.jobs.dispatch_cases", [])

    wait_until(lambda: counts(engine)["dispatched"] > 0, 60, "the first batch", every=0.005)
    first.kill()

    at_kill = counts(engine)
    assert 0 < at_kill["dispatched"] + at_kill["manual"] < total, (at_kill, first.output())
    assert at_kill["events"] == at_kill["dispatched"], "a batch commits its events with it"

    second = spawn_worker(la_db, private_redis.url)
    run_flask(la_db, private_redis.url, "dispatch", "ring")
    took = wait_dispatched(
        engine, lambda: run_flask(la_db, private_redis.url, "dispatch", "ring"), timeout=45
    )

    final = assert_each_case_dispatched_once(engine)
    print(
        f"SIGKILL: {total} cases; killed the worker after {at_kill['dispatched']} dispatched "
        f"and {at_kill['manual']} put on the board; a new worker finished in {took:.1f} s: "
        f"{final['dispatched']} dispatched once each, {final['manual']} on the board"
    )
    assert final["total"] == total
    assert second.alive(), second.output()


# ---------------------------------------------------------------- b) Redis down


def test_cases_filed_while_redis_is_down_are_dispatched_by_the_sweep(
    la_db: URL,
    private_redis: RedisServer,
    spawn_worker: SpawnWorker,
    live: list[LiveServer],
    tmp_path: Path,
) -> None:
    engine = create_engine(la_db, poolclass=NullPool)
    points = inside_points(engine, 12)
    web = serve(la_db, private_redis.url, tmp_path / "photos")
    live.append(web)
    operator = WebUser(web.url)
    operator.sign_in(OPERATOR, OPERATOR_PASSWORD)
    assert operator.call("/readyz").status == 200

    private_redis.stop()
    not_ready = operator.call("/readyz")
    answers: list[Answer] = []
    filed: list[int] = []
    for lon, lat in points:
        replies, case_id = operator.report_and_file(lon, lat)
        answers += replies
        if case_id is not None:
            filed.append(case_id)

    assert not_ready.status == 503
    assert not_ready.json()["checks"]["redis"].startswith("unreachable")
    assert [a.status for a in answers] == [201, 200] * len(points), [a.body for a in answers]
    assert all(a.json()["status"] == "filed" for a in answers[1::2])
    assert counts(engine) == {"waiting": len(points), "dispatched": 0, "manual": 0,
                              "total": len(points), "events": 0, "twice": 0}  # fmt: skip

    private_redis.start()  # empty: the rings of the outage are gone for good
    worker = spawn_worker(la_db, private_redis.url, GRIDMGMT_DISPATCH_GRACE_SECONDS="0")
    with private_redis.client() as redis:
        assert Queue(DISPATCH_QUEUE, connection=redis).count == 0
        sweep = Queue(PERIODIC_QUEUE, connection=redis).enqueue("dispatch.jobs.sweep_filed")
        took = wait_dispatched(engine, timeout=30)
        wait_until(lambda: sweep.get_status(refresh=True) == "finished", 10, "the sweep job")
        assert sweep.return_value() == len(points)

    assert_each_case_dispatched_once(engine)
    # Redis is back: the next filing rings the doorbell again, no sweep needed.
    replies, case_id = operator.report_and_file(*points[0])
    assert [a.status for a in replies] == [201, 200]
    wait_dispatched(engine, timeout=20)
    assert_each_case_dispatched_once(engine)
    slowest = max(a.seconds for a in answers)
    print(
        f"Redis down: {len(points)} cases reported and filed (slowest request {slowest:.2f} s), "
        f"dispatched {took:.1f} s after the sweep was enqueued"
    )
    assert worker.alive(), worker.output()


# ---------------------------------------------------------------- c) PostgreSQL restart


@dataclass
class PrivatePostgres:
    """A PostgreSQL 15 cluster of one test, in a folder of its own."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> URL:
        return URL.create(
            "postgresql+psycopg2", "postgres", host="127.0.0.1", port=self.port, database=database
        )

    def run(self, program: str, *args: str) -> None:
        """Run a server program as the owner of the cluster (initdb refuses root)."""
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, str(PG_BIN / program), *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{program} {args}: {done.stdout}{done.stderr}"

    def pg_ctl(self, action: str, *args: str) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", action, *args)

    def restart(self) -> None:
        """Restart (fast: sessions are cut); the server log stays in the cluster's folder."""
        self.pg_ctl("restart", "-m", "fast", "-l", str(self.root / "server.log"))

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c jit=off -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self.pg_ctl("start", "-l", str(self.root / "server.log"), "-o", options)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh cluster on a free port; stopped and deleted at the end of the test."""
    require(
        "postgres", (PG_BIN / "initdb").exists(), f"no PostgreSQL 15 server programs in {PG_BIN}"
    )
    # Not under tmp_path: pytest's folders are private to root, the server runs as postgres
    # and must traverse every parent of its data folder.
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="gridmgmt-test-pg-", dir="/tmp" if as_root else None))
    if as_root:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = PrivatePostgres(root, free_port())
    try:
        cluster.run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
                    "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8")  # fmt: skip
        cluster.start()
        yield cluster
    finally:
        try:
            if (cluster.data / "postmaster.pid").exists():
                cluster.pg_ctl("stop", "-m", "fast")
        finally:
            shutil.rmtree(root, ignore_errors=True)


def test_a_postgres_restart_under_a_running_worker_and_web_app_loses_nothing(
    private_postgres: PrivatePostgres,
    private_redis: RedisServer,
    spawn_worker: SpawnWorker,
    live: list[LiveServer],
    tmp_path: Path,
) -> None:
    admin = create_engine(private_postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE gridmgmt"))
    admin.dispose()
    url = private_postgres.url("gridmgmt")
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION postgis"))
    command.upgrade(alembic_config(url), "head")
    with Session(engine) as session:
        seed_demo(session, say=lambda _line: None)
        session.commit()
    points = inside_points(engine, 6)

    worker = spawn_worker(url, private_redis.url)
    web = serve(url, private_redis.url, tmp_path / "photos")
    live.append(web)
    operator = WebUser(web.url)
    operator.sign_in("operator", DEMO_PASSWORD)
    replies, _ = operator.report_and_file(*points[0])
    assert [a.status for a in replies] == [201, 200], [a.body for a in replies]
    wait_dispatched(engine, timeout=30)
    assert counts(engine)["dispatched"] == 1

    private_postgres.restart()

    answers: list[Answer] = []
    filed: list[int] = []
    for lon, lat in points[1:]:
        replies, case_id = operator.report_and_file(lon, lat)
        answers += replies
        if case_id is not None:
            filed.append(case_id)
    statuses = [a.status for a in answers]
    failures = [a for a in answers if a.status not in (200, 201)]
    assert 0 not in statuses, "every request after the restart is answered"
    assert 500 not in statuses, [a.body[:300] for a in failures]
    assert len(failures) <= 1, [a.body[:300] for a in failures]
    assert len(filed) >= len(points[1:]) - 1

    took = wait_dispatched(engine, timeout=30)
    final = assert_each_case_dispatched_once(engine)
    assert final["dispatched"] == 1 + len(filed)
    assert worker.alive(), "the same worker process dispatched them"
    print(
        f"PostgreSQL restart: {len(answers)} requests after it ({len(failures)} failed), "
        f"{len(filed)} cases filed and dispatched by the same worker within {took:.1f} s"
    )
    with Redis.from_url(private_redis.url) as redis:
        assert Queue(DISPATCH_QUEUE, connection=redis).count == 0


# ---------------------------------------------------------------- d) the failed jobs page


def test_the_failed_jobs_page_lists_a_job_abandoned_by_a_killed_worker(
    la_db: URL,
    private_redis: RedisServer,
    spawn_worker: SpawnWorker,
    live: list[LiveServer],
    tmp_path: Path,
) -> None:
    with private_redis.client() as redis:
        # Periodic jobs (the sweep, the deadline watch...) have no Retry: one failure is final.
        queue = Queue(PERIODIC_QUEUE, connection=redis)
        failed = queue.enqueue("tests.dispatch.failing_jobs.boom", 4242)
        SimpleWorker([queue], connection=redis).work(burst=True)
        worker = spawn_worker(la_db, private_redis.url)
        stuck = queue.enqueue("time.sleep", 60, job_timeout=120)
        wait_until(
            lambda: stuck.get_status(refresh=True) == JobStatus.STARTED, 30, "the job to start"
        )
        worker.kill()
        # RQ gives the job up once its entry in the started registry expires (the job timeout
        # and a margin after the worker's last heartbeat): as it will an hour later.
        StartedJobRegistry(queue=queue).cleanup(timestamp=time.time() + 3600)
        assert sorted(FailedJobRegistry(queue=queue).get_job_ids()) == sorted([failed.id, stuck.id])
        assert stuck.get_status(refresh=True) == JobStatus.FAILED
    web = serve(la_db, private_redis.url, tmp_path / "photos")
    live.append(web)
    dispatcher = WebUser(web.url)
    dispatcher.sign_in(DISPATCHER, DISPATCHER_PASSWORD)

    page = dispatcher.call("/board/failed")

    assert page.status == 200, page.body[:300]
    assert f'data-job="{failed.id}"' in page.body
    assert f'data-job="{stuck.id}"' in page.body
    assert "AbandonedJobError" in page.body
