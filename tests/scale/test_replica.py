"""Reads on a hot standby: a real streaming replica of the shared PostgreSQL, made by
`scripts/stack.sh standby up` (pg_basebackup -R) in a folder and on a port of this run's own,
and the real app served with READ_DATABASE_URL on it.

Where each statement went is seen two ways: on the app's two engines (what each was sent) and
on the standby itself (its connections, its log: it logs every data-modifying statement it is
sent, and refuses them). The replica is made visibly different from the primary by pausing its
replay; it is stopped (`pg_ctl stop -m immediate`, as a crash) between requests and in the
middle of a streamed open-data export."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from gridmgmt.app.demo import DEMO_PASSWORD
from gridmgmt.kernel.auth import create_api_key
from gridmgmt.kernel.db import EXTENSION, READ_EXTENSION, Replica, replica_failure
from tests.conftest import admin_url, demo_clone, server_url
from tests.support import ROOT, copy_case, free_port, real_app, require, serving

STACK = ROOT / "scripts" / "stack.sh"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
GARBAGE = "E0102"  # a demo service without required attributes
HEALTH_SQL = "pg_is_in_recovery"
LISTING = "/open311/v2/requests.json"
GENEROUS = {
    f"RATE_{w}_PER_{s}": 100_000
    for w in ("REPORTS", "ACTIONS", "READS")
    for s in ("CLIENT", "ACCOUNT")
} | {"OPEN311_RATE_PER_KEY": 100_000, "OPEN311_RATE_PER_IP": 100_000}


# ---------------------------------------------------------------- the standby


@dataclass
class Standby:
    """A hot standby of the shared primary, in `directory`, on `port`."""

    directory: Path
    port: int

    def stack(self, *args: str) -> str:
        """`scripts/stack.sh standby ARGS` for this standby; its output."""
        env = {
            **os.environ,
            "GRIDMGMT_STANDBY_DIR": str(self.directory),
            "GRIDMGMT_STANDBY_PORT": str(self.port),
            "GRIDMGMT_PG_PORT": str(server_url().port),
        }
        done = subprocess.run(
            [str(STACK), "standby", *args], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def url(self, database: str) -> URL:
        """The app's URL of `database` on the standby (the script's READ_DATABASE_URL)."""
        line = next(x for x in self.stack("env").splitlines() if x.startswith("READ_"))
        return make_url(line.partition("=")[2]).set(database=database)

    @contextmanager
    def admin(self) -> Iterator[Any]:
        """The superuser on the standby (trusted on loopback, like the primary's)."""
        engine = create_engine(
            admin_url().set(port=self.port, database="postgres"),
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
        )
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()

    def log(self) -> str:
        """The standby's server log."""
        return (self.directory / "server.log").read_text(errors="replace")

    def pause(self) -> None:
        """Stop replaying (it still receives): from now on it shows the primary as it was."""
        with self.admin() as sql:
            sql.execute(text("SELECT pg_wal_replay_pause()"))
            wait_until(
                lambda: (
                    sql.execute(text("SELECT pg_get_wal_replay_pause_state()")).scalar() == "paused"
                )
            )

    def resume(self) -> None:
        """Replay again, and wait until it has replayed all the primary has written."""
        with self.admin() as sql:
            sql.execute(text("SELECT pg_wal_replay_resume()"))
        self.catch_up()

    def catch_up(self) -> None:
        """Wait until the standby has replayed everything the primary wrote until now."""
        primary = create_engine(
            admin_url().set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        with primary.connect() as sql:
            # Commits are asynchronous on the dev primary (synchronous_commit off): one
            # synchronous commit flushes the WAL written before it, which is then streamed.
            sql.execute(text("SET synchronous_commit = on"))
            sql.execute(text("SELECT txid_current()"))
            lsn = sql.execute(text("SELECT pg_current_wal_flush_lsn()")).scalar()
        primary.dispose()
        with self.admin() as sql:
            wait_until(
                lambda: sql.execute(
                    text("SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)"), {"lsn": lsn}
                ).scalar()
            )

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every connection dropped at once, as in a crash."""
        self.stack("down", "immediate")

    def start(self) -> None:
        """Start it again (crash recovery, then streaming) and let it catch up."""
        self.stack("up")
        self.catch_up()


def wait_until(condition: Callable[[], Any], seconds: float = 60.0) -> None:
    """Poll `condition` until it is true."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def replica_db(demo_database_url: URL) -> Iterator[URL]:
    """A clone of the demo city for this module, on the primary."""
    with demo_clone("replica", demo_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def primary(replica_db: URL) -> Iterator[Engine]:
    """An engine on the module's database on the primary, to see what is really there."""
    engine = create_engine(replica_db)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def trusted_key(primary: Engine) -> str:
    """A trusted Open311 key: its reports are filed, and listed, at once."""
    with Session(primary) as session, session.begin():
        return create_api_key(session, "replica-test", trusted=True).secret


@pytest.fixture(scope="module")
def standby(replica_db: URL, trusted_key: str) -> Iterator[Standby]:
    """A hot standby of the shared primary for this module (its own folder and port), made
    and started by the stack script and purged afterwards, whatever happened."""
    require("postgres", (PG_BIN / "pg_basebackup").exists(), f"no {PG_BIN}/pg_basebackup")
    require(
        "postgres",
        (ROOT / "var" / "pg" / "data" / "PG_VERSION").exists(),
        "the standby copies the private stack's PostgreSQL (scripts/stack.sh up)",
    )
    made = Standby(Path(tempfile.mkdtemp(prefix="gridmgmt-standby-")), free_port())
    try:
        made.stack("up")
        made.catch_up()  # the module's database and key are there
        yield made
    finally:
        made.stack("purge")
        shutil.rmtree(made.directory, ignore_errors=True)


# ---------------------------------------------------------------- the app


@dataclass
class Sent:
    """The statements the app sent to each of its engines while watched (health checks of
    the replica apart)."""

    primary: list[str] = field(default_factory=list)
    replica: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.primary.clear()
        self.replica.clear()

    def reads(self, table: str = "cases") -> tuple[int, int]:
        """How many statements naming `table` went to the (primary, replica)."""
        pattern = re.compile(rf"\b{table}\b")
        return (
            sum(1 for s in self.primary if pattern.search(s)),
            sum(1 for s in self.replica if pattern.search(s)),
        )

    def only_replica(self) -> bool:
        """The cases were read from the replica, not from the primary."""
        on_primary, on_replica = self.reads()
        return on_primary == 0 and on_replica >= 1

    def only_primary(self) -> bool:
        """The cases were read from the primary, not from the replica."""
        on_primary, on_replica = self.reads()
        return on_primary >= 1 and on_replica == 0


@dataclass
class Served:
    """The real app with READ_DATABASE_URL on the standby, served over HTTP."""

    app: Flask
    url: str
    sent: Sent

    @property
    def replica(self) -> Replica:
        return self.app.extensions[READ_EXTENSION]

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=60, **kwargs)

    def listing(self, **params: str) -> list[str]:
        """The numbers the Open311 listing shows."""
        answer = self.get(LISTING, params=params)
        assert answer.status_code == 200, answer.text[:300]
        return [r["service_request_id"] for r in answer.json()]


@contextmanager
def served(
    database: URL, standby: Standby, redis_url: str, photos: Path, **settings: Any
) -> Iterator[Served]:
    """The app on `database` reading from `standby`, served; every statement recorded."""
    sent = Sent()
    read_url = standby.url(database.database or "")
    with real_app(
        database,
        redis_url,
        photos,
        READ_DATABASE_URL=read_url.render_as_string(hide_password=False),
        **(GENEROUS | settings),
    ) as app:

        def record(into: list[str]) -> Callable[..., None]:
            def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
                if HEALTH_SQL not in statement:
                    into.append(statement)

            return before

        event.listen(app.extensions[EXTENSION], "before_cursor_execute", record(sent.primary))
        replica: Replica = app.extensions[READ_EXTENSION]
        event.listen(replica.engine, "before_cursor_execute", record(sent.replica))
        with serving(app) as url:
            yield Served(app, url, sent)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("photos")


@pytest.fixture(scope="module")
def lenient(replica_db: URL, standby: Standby, redis_url: str, photos: Path) -> Iterator[Served]:
    """The app with a replica it trusts up to an hour behind (so that a paused replica keeps
    serving), its verdict renewed every half second."""
    with served(
        replica_db, standby, redis_url, photos, READ_MAX_LAG_SECONDS=3600.0, READ_CHECK_SECONDS=0.5
    ) as app:
        yield app


@pytest.fixture(scope="module")
def inside(primary: Engine) -> tuple[float, float]:
    """A point (lon, lat) inside the demo city."""
    with primary.connect() as conn:
        lon, lat = conn.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM areas, ST_PointOnSurface(geom) p"
                " WHERE level = 'community' ORDER BY code LIMIT 1"
            )
        ).one()
    return float(lon), float(lat)


def report(app: Served, key: str, where: tuple[float, float], text_: str) -> str:
    """File a report through Open311 (a write); its number."""
    answer = requests.post(
        f"{app.url}/open311/v2/requests.json",
        data={"api_key": key, "service_code": GARBAGE, "long": where[0], "lat": where[1],
              "description": text_},
        timeout=60,
    )  # fmt: skip
    assert answer.status_code == 201, answer.text[:300]
    return answer.json()[0]["service_request_id"]


def stored_on_primary(primary: Engine, number: str) -> bool:
    with primary.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM cases WHERE number = :n"), {"n": number})
        return found.scalar() is not None


def sign_in(app: Served, username: str) -> requests.Session:
    """A requests session signed in through the real login form."""
    session = requests.Session()
    form = session.get(f"{app.url}/login", timeout=30).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    answer = session.post(
        f"{app.url}/login",
        data={"username": username, "password": DEMO_PASSWORD, "csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code in (302, 303), answer.text[:300]
    return session


def usable_soon(app: Served, seconds: float = 30.0) -> None:
    """Wait until the app's verdict on its replica is "usable"."""
    wait_until(app.replica.usable, seconds)


# ---------------------------------------------------------------- tests


def test_the_stack_standby_is_a_streaming_read_only_copy(standby: Standby, lenient: Served) -> None:
    with standby.admin() as sql:
        assert sql.execute(text("SELECT pg_is_in_recovery()")).scalar() is True
        receiver = sql.execute(text("SELECT status, sender_port FROM pg_stat_wal_receiver"))
        assert receiver.one() == ("streaming", server_url().port)
    health = lenient.replica.check()
    assert health.usable, health.reason
    with lenient.replica.engine.connect() as conn:  # the read engine's own settings
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "5s"
        assert conn.execute(text("SHOW default_transaction_read_only")).scalar() == "on"


def test_listings_maps_evaluation_dashboard_and_open_data_read_from_the_replica(
    standby: Standby, lenient: Served
) -> None:
    usable_soon(lenient)
    leader = sign_in(lenient, "leader")
    anonymous = requests.Session()
    pages = [
        (anonymous, LISTING),
        (anonymous, "/open311/v2/services.json"),
        (anonymous, f"/open311/v2/services/{GARBAGE}.json"),
        (anonymous, "/open-data/cases.csv"),
        (anonymous, "/open-data/cases.geojson"),
        (leader, "/maps"),
        (leader, "/maps/frame"),
        (leader, "/evaluation"),
        (leader, "/evaluation?format=csv&table=communities"),
        (leader, "/dashboard"),
    ]
    for client, path in pages:
        lenient.sent.clear()
        answer = client.get(f"{lenient.url}{path}", timeout=60)
        assert answer.status_code == 200, (path, answer.text[:300])
        assert lenient.sent.replica, f"{path}: nothing read from the replica"
        # The primary is asked who is signed in, nothing else.
        assert all(re.search(r"\bFROM users\b", s) for s in lenient.sent.primary), (
            path,
            lenient.sent.primary,
        )
    with standby.admin() as sql:  # ...and the standby saw the app's connections
        seen = sql.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gridmgmt-read'"
                " AND usename = 'gridmgmt_app' AND datname = :db"
            ),
            {"db": make_url(str(lenient.app.config["DATABASE_URL"])).database},
        ).scalar()
    assert seen >= 1


def test_a_paused_replica_serves_its_older_state_until_it_is_too_far_behind(
    replica_db: URL,
    standby: Standby,
    lenient: Served,
    primary: Engine,
    trusted_key: str,
    inside: tuple[float, float],
    redis_url: str,
    photos: Path,
) -> None:
    usable_soon(lenient)
    with served(
        replica_db, standby, redis_url, photos, READ_MAX_LAG_SECONDS=1.0, READ_CHECK_SECONDS=0.2
    ) as strict:
        usable_soon(strict)
        standby.pause()
        try:
            number = report(lenient, trusted_key, inside, "while the replica is paused")
            assert stored_on_primary(primary, number)
            today = datetime.now(UTC).date().isoformat()

            # The lenient app reads the paused replica: the new case is not there yet.
            assert lenient.replica.usable()
            assert number not in lenient.listing()
            export = lenient.get("/open-data/cases.csv", params={"start": today, "end": today})
            assert number not in export.text
            # What must see the client's own write does: its lookup (a miss on the replica is
            # asked again of the primary) and the tracking page (always the primary).
            lenient.sent.clear()
            looked_up = lenient.get(f"/open311/v2/requests/{number}.json")
            assert looked_up.status_code == 200
            assert looked_up.json()[0]["service_request_id"] == number
            on_primary, on_replica = lenient.sent.reads()
            assert on_primary >= 1 and on_replica >= 1  # missed on the replica, then found
            assert number in lenient.listing(service_request_id=number)
            lenient.sent.clear()
            assert lenient.get(f"/track/{number}").status_code == 200
            assert lenient.sent.replica == []

            # The strict app finds the replica too far behind (its last replayed commit is
            # over a second old while the primary has moved on): it reads the primary.
            wait_until(lambda: not strict.replica.usable(), 30)
            assert strict.replica.health.reason.startswith("behind"), strict.replica.health
            strict.sent.clear()
            assert number in strict.listing()
            assert strict.sent.only_primary() and strict.sent.replica == []
        finally:
            standby.resume()

        # Replayed: the replica has it, and the strict app trusts the replica again.
        assert number in lenient.listing()
        usable_soon(strict)
        strict.sent.clear()
        assert number in strict.listing()
        assert strict.sent.only_replica()


def test_writes_never_reach_the_replica(
    standby: Standby,
    lenient: Served,
    primary: Engine,
    trusted_key: str,
    inside: tuple[float, float],
) -> None:
    usable_soon(lenient)
    lenient.sent.clear()
    numbers = [report(lenient, trusted_key, inside, f"write {i}") for i in range(5)]
    operator = sign_in(lenient, "operator")
    form = operator.get(f"{lenient.url}/report", timeout=30).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    posted = operator.post(
        f"{lenient.url}/report",
        data={"csrf_token": token.group(1), "category": GARBAGE, "lon": inside[0],
              "lat": inside[1], "description": "a form report",
              "idempotency_key": f"replica-{time.time_ns()}"},
        allow_redirects=False,
        timeout=60,
    )  # fmt: skip
    assert posted.status_code in (302, 303), posted.text[:500]

    assert all(stored_on_primary(primary, n) for n in numbers)
    assert lenient.replica.health.usable  # the replica was there to be (wrongly) used
    assert lenient.sent.replica == []  # not one statement of the writes went there
    # ...all to the primary (a report's insert is prepared once a connection, then EXECUTEd)
    assert sum(bool(re.match(r"\s*(INSERT|EXECUTE)\b", s)) for s in lenient.sent.primary) >= 6
    # The standby logs every data-modifying statement it is sent (and refuses it): none.
    logged = standby.log()
    assert "read-only transaction" not in logged
    assert not re.search(r"gridmgmt[-\w]*@\S+ LOG:\s+statement:", logged)


def test_the_replica_stopped_between_requests(
    replica_db: URL, standby: Standby, lenient: Served, redis_url: str, photos: Path
) -> None:
    # An app that trusts its verdict for an hour: only a failing read can tell it.
    with served(replica_db, standby, redis_url, photos, READ_CHECK_SECONDS=3600.0) as sticky:
        usable_soon(sticky)
        standby.catch_up()  # the previous tests' reports are there too
        sticky.sent.clear()
        before = sticky.listing()
        assert sticky.sent.only_replica()
        try:
            standby.crash()
            sticky.sent.clear()
            started = time.monotonic()
            assert sticky.listing() == before  # answered, from the primary
            took = time.monotonic() - started
            assert sticky.sent.only_primary()
            assert not sticky.replica.health.usable
            assert sticky.replica.health.reason.startswith("failed"), sticky.replica.health
            assert took < 3.0  # refused at once: no connect timeout waited for
            sticky.sent.clear()
            assert sticky.listing() == before  # the replica is not even tried now
            assert sticky.sent.only_primary()
            # The lenient app's next check finds it down: it reads the primary as well.
            wait_until(lambda: not lenient.replica.usable(), 10)
            assert lenient.replica.health.reason.startswith(("unreachable", "failed"))
            assert lenient.listing() == before
        finally:
            standby.start()
    usable_soon(lenient)  # back: reads go to the replica again
    lenient.sent.clear()
    assert lenient.listing() == before
    assert lenient.sent.only_replica()


@pytest.fixture
def old_cases(
    primary: Engine,
    standby: Standby,
    lenient: Served,
    trusted_key: str,
    inside: tuple[float, float],
) -> int:
    """100,000 cases reported in 2001 (twenty chunks of the open-data export), copies of a
    new one, replayed."""
    count = 100_000
    model = report(lenient, trusted_key, inside, "the model of the old cases")
    with primary.begin() as conn:
        copy_case(conn, model, count, "2001020", "20 seconds")
    standby.catch_up()
    with lenient.replica.engine.connect() as conn:  # visible there, as on the primary
        wait_until(
            lambda: (
                conn.execute(
                    text("SELECT count(*) FROM cases WHERE number LIKE '2001020%'")
                ).scalar()
                == count
            )
        )
        conn.rollback()
    return count  # left in the module's own database (deleting them takes minutes)


def test_the_replica_stopped_in_the_middle_of_an_open_data_export(
    standby: Standby, lenient: Served, primary: Engine, old_cases: int
) -> None:
    usable_soon(lenient)
    chunks: dict[str, int] = {"primary": 0, "replica": 0}
    crashed_at: list[int] = []

    def count(where: str) -> Callable[..., None]:
        def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if "after_id" not in statement:  # not a chunk of the export
                return
            chunks[where] += 1
            if where == "replica" and chunks["replica"] == 3 and not crashed_at:
                # Two chunks came from the replica; the third is being asked of it when the
                # standby goes away, as in a crash: that statement fails on a dead connection.
                standby.crash()
                crashed_at.append(chunks["replica"])

        return before

    engines = {"primary": lenient.app.extensions[EXTENSION], "replica": lenient.replica.engine}
    listeners = {where: count(where) for where in engines}
    for where, engine in engines.items():
        event.listen(engine, "before_cursor_execute", listeners[where])
    params = {"start": "2001-01-01", "end": "2001-12-31"}
    try:
        answer = lenient.get("/open-data/cases.csv", params=params)
    finally:
        for where, engine in engines.items():
            event.remove(engine, "before_cursor_execute", listeners[where])
        standby.start()

    assert answer.status_code == 200
    rows = answer.text.splitlines()
    assert rows[0].startswith("number,category")
    with primary.connect() as conn:
        expected = list(
            conn.execute(
                text(
                    "SELECT number FROM cases WHERE reported_at >= '2001-01-01'"
                    " AND reported_at < '2002-01-01' ORDER BY reported_at, id"
                )
            ).scalars()
        )
    assert len(expected) == old_cases
    assert [r.split(",", 1)[0] for r in rows[1:]] == expected  # each row once, in order
    assert crashed_at == [3]  # the standby did die in the middle of the export...
    assert chunks["replica"] == 3  # ...after two chunks (the third failed there)...
    # ...the rest came from the primary: the third again, up to the twentieth, and the empty
    # read that ends the export
    assert chunks["primary"] == old_cases // 5000 - 2 + 1
    assert not lenient.replica.health.usable


def test_a_statement_timeout_on_the_replica_is_no_reason_to_ask_the_primary(
    replica_db: URL, standby: Standby, redis_url: str, photos: Path
) -> None:
    with (
        served(replica_db, standby, redis_url, photos, READ_STATEMENT_TIMEOUT_MS=200) as short,
        short.replica.engine.connect() as conn,
    ):
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "200ms"
        with pytest.raises(OperationalError, match="statement timeout") as raised:
            conn.execute(text("SELECT pg_sleep(2)"))  # the test's own statement
    assert not replica_failure(raised.value)
