"""Fixtures of the dispatcher's tests: seeded databases cloned per test, LA 311 cases, private
Redis servers and `flask dispatch worker` subprocesses.

Cloning a database takes about 0.2 s, seeding the demo city about 2.5 s: the seeded databases
are built once per run and every test gets its own clone, so jobs commit as they do in
production and several connections (threads, a worker process) see each other's work.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from cases.catalogue import load_catalogue
from gridmgmt.app.demo import seed_departments, seed_routing_rules
from gridmgmt.kernel.auth import create_user
from gridmgmt.kernel.calendar_store import load_calendar, shipped_calendar
from gridmgmt.kernel.models import Role
from tests.conftest import (
    LA_STREET,  # the councils' street: council 47 is community 990100006047
    ROOT,
    clone_database,
    drop_database,
    shared_file,
    template_lock,
)

FLASK = ROOT / ".venv" / "bin" / "flask"
OPERATOR = "fault-operator"
OPERATOR_PASSWORD = "fault-operator-password"
DISPATCHER = "fault-dispatcher"
DISPATCHER_PASSWORD = "fault-dispatcher-password"
OBJECT_IN_USE = "55006"  # PostgreSQL: the template database has other sessions


def clone_when_free(name: str, template: str, timeout: float = 30.0) -> URL:
    """`clone_database`, waiting while another session (another test run) uses the template."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return clone_database(name, template)
        except OperationalError as exc:
            if getattr(exc.orig, "pgcode", None) != OBJECT_IN_USE or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
    """Poll `check` until it is true; the seconds it took.

    Raises:
        AssertionError: still false after `timeout` seconds (the message says `what`).
    """
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- seeded databases


@pytest.fixture(scope="session")
def demo_template(demo_database_url: URL) -> Iterator[str]:
    """This run's copy of the committed demo city (8 LA councils, catalogue, rules, logins),
    the template of each test's clone."""
    name = f"gridmgmt_test_dispatch_demo_{os.getpid()}"
    assert demo_database_url.database is not None
    with template_lock():
        clone_database(name, demo_database_url.database)
    yield name
    drop_database(name)


@pytest.fixture
def demo_db(demo_template: str) -> Iterator[URL]:
    """A clone of the demo city for this test alone."""
    name = f"{demo_template}_t"
    url = clone_database(name, demo_template)
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def la_template(la_database_url: URL) -> Iterator[str]:
    """The real LA territory (99 councils, 250 m cells) with the catalogue, the us_la calendar,
    the demo's departments and routing rules, an operator and a dispatcher login."""
    name = f"gridmgmt_test_dispatch_la_{os.getpid()}"
    assert la_database_url.database is not None
    url = clone_when_free(name, la_database_url.database)
    engine = create_engine(url)
    try:
        with Session(engine) as session, session.begin():
            load_catalogue(session)
            load_calendar(session, shipped_calendar("us_la"))
            seed_routing_rules(session, seed_departments(session))
            create_user(session, OPERATOR, OPERATOR_PASSWORD, Role.OPERATOR)
            create_user(session, DISPATCHER, DISPATCHER_PASSWORD, Role.DISPATCHER)
    finally:
        engine.dispose()
    yield name
    drop_database(name)


@pytest.fixture
def la_db(la_template: str) -> Iterator[URL]:
    """A clone of the seeded LA territory for this test alone."""
    name = f"{la_template}_t"
    url = clone_database(name, la_template)
    yield url
    drop_database(name)


# ---------------------------------------------------------------- LA 311 cases


@dataclass(frozen=True)
class LaRequest:
    """A geocoded MyLA311 request and the neighborhood council the city recorded for it."""

    srnumber: str
    lon: float
    lat: float
    nc: str

    @property
    def council_code(self) -> str:
        """The community code of the recorded council ('' when none was recorded)."""
        return LA_STREET + self.nc.strip().zfill(3) if self.nc.strip() else ""


def la_requests() -> list[LaRequest]:
    """Every geocoded request of ../shared/data/la311_requests_2020-01.csv."""
    with open(shared_file("la311_requests_2020-01.csv"), newline="") as fh:
        return [
            LaRequest(row["srnumber"], float(row["longitude"]), float(row["latitude"]), row["nc"])
            for row in csv.DictReader(fh)
            if row["latitude"] and row["longitude"]
        ]


def insert_filed(conn: Connection | Session, requests: Sequence[LaRequest], category: str) -> None:
    """File the requests as cases waiting for dispatch, without a cell (the dispatcher locates
    them), as the bench does; each case's description is its request number."""
    category_id = conn.execute(
        text("SELECT id FROM categories WHERE code = :code"), {"code": category}
    ).scalar_one()
    conn.execute(
        text("""
            INSERT INTO cases (source, status, category_id, location, description, filed_at,
                               dispatch_state)
            VALUES ('open311', 'filed', :category_id, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326),
                    :number, now(), 'queued')
        """),
        [
            {"category_id": category_id, "lon": r.lon, "lat": r.lat, "number": r.srnumber}
            for r in requests
        ],
    )


# ---------------------------------------------------------------- Redis and workers


@dataclass
class RedisServer:
    """A private `redis-server` (no persistence) that a test may stop and start again."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Redis:
        """A client (connects on first command)."""
        return Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)

    def answers(self) -> bool:
        """True when it answers PING."""
        try:
            with self.client() as conn:
                return bool(conn.ping())
        except RedisError:
            return False

    def start(self) -> None:
        """Start it and wait until it answers."""
        assert self.process is None, "already running"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self.answers, 10, f"redis-server on port {self.port}")

    def stop(self) -> None:
        """Stop it (its data is gone: no persistence) and wait until the port is closed."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None
        assert not self.answers()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test alone, started; stopped at the end."""
    server = RedisServer(free_port(), tmp_path / "redis.log")
    server.start()
    yield server
    server.stop()


def flask_env(database_url: URL | str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `flask --app wsgi ...` subprocess on this database and Redis."""
    url = (
        database_url.render_as_string(hide_password=False)
        if isinstance(database_url, URL)
        else database_url
    )
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "FLASK_APP": "wsgi",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@dataclass
class WorkerProcess:
    """A `flask dispatch worker` subprocess and its log."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    def alive(self) -> bool:
        """True while it runs."""
        return self.process.poll() is None

    def output(self, tail: int = 4000) -> str:
        """The end of what it printed (for assertion messages)."""
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup, no warm shutdown."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not go."""
        if not self.alive():
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


SpawnWorker = Callable[..., WorkerProcess]


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[SpawnWorker]:
    """`spawn_worker(database_url, redis_url, **env)`: start `flask dispatch worker` in the
    background; every worker still running is stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def spawn(database_url: URL | str, redis_url: str, **env: str) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started) + 1}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(FLASK), "dispatch", "worker"],
                cwd=ROOT,
                env=flask_env(database_url, redis_url, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(WorkerProcess(process, log))
        return started[-1]

    yield spawn
    for worker in started:
        worker.stop()


def run_flask(database_url: URL | str, redis_url: str, *args: str) -> str:
    """Run `flask --app wsgi ARGS` to completion; its output.

    Raises:
        AssertionError: the command failed.
    """
    done = subprocess.run(
        [str(FLASK), *args],
        cwd=ROOT,
        env=flask_env(database_url, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
