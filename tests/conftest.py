"""Test fixtures on the real private PostGIS and Redis started by `make up`.

Databases: a migrated template `gridmgmt_test_tpl` (rebuilt when the migrations change) is
cloned into one database per test run (per xdist worker); each test runs in a transaction
that is rolled back. Redis: database 1 of the private server (8 + n for xdist worker n),
flushed by `redis_conn`.

Roles, as in production (scripts/stack.sh): the superuser `postgres` only creates and drops
databases; they belong to the owner role, which runs the migrations and builds the cached
databases; the apps and every URL the fixtures hand out connect as the app role (DATABASE_URL),
which may not alter a table, nor update or delete a case's history. With a DATABASE_URL of
its own and no MIGRATE_DATABASE_URL, one role does it all, as before.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask
from flask.testing import FlaskCliRunner
from playwright.sync_api import Browser, Playwright, expect, sync_playwright
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from gridmgmt import create_app
from gridmgmt.kernel.config import STACK_OWNER_ROLE, Config, stack_secret
from gridmgmt.kernel.db import db
from tests.support import allowed_missing, require, rolled_back

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("GRIDMGMT_SHARED_DATA", ROOT.parent / "shared" / "data"))
POSTGIS_TEMPLATE = "gridmgmt_postgis"
TEST_TEMPLATE = "gridmgmt_test_tpl"
ADMIN_ROLE = "postgres"
OWNER_ROLE = STACK_OWNER_ROLE
APP_ROLE = Config.APP_ROLE
# The test apps are served over plain HTTP: a Secure session cookie would never come back.
os.environ.setdefault("GRIDMGMT_SESSION_COOKIE_SECURE", "false")
# ...and outside the demo the app needs a secret key (`flask` subprocesses read this one).
os.environ.setdefault("GRIDMGMT_SECRET_KEY", "test-secret-for-subprocesses")
os.environ.setdefault("GRIDMGMT_ADMIN_TOTP_REQUIRED", "false")  # the demo admin has none


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a misspelt $GRIDMGMT_ALLOW_MISSING before any test runs."""
    allowed_missing()


def server_url() -> URL:
    """URL of the PostgreSQL server the tests use, as the app's role: DATABASE_URL, or the
    private stack's app role (its password in var/secrets)."""
    return make_url(Config.from_env().DATABASE_URL)


def split_roles() -> bool:
    """Whether the app connects as the app role (the private stack, or a server set up the
    same way), not as the owner or a superuser."""
    return server_url().username == APP_ROLE


def owner_url() -> URL:
    """The URL of the tables' owner (who runs migrations): MIGRATE_DATABASE_URL, the private
    stack's owner role when the app connects as the app role, else DATABASE_URL itself."""
    if "MIGRATE_DATABASE_URL" in os.environ:
        return make_url(os.environ["MIGRATE_DATABASE_URL"])
    if split_roles():
        return server_url().set(username=OWNER_ROLE, password=stack_secret("pg_owner"))
    return server_url()


def admin_url() -> URL:
    """The superuser's URL (CREATE/DROP DATABASE): $ADMIN_DATABASE_URL, `postgres` (trusted
    on the private stack's loopback) when the app connects as the app role, else DATABASE_URL
    itself."""
    if "ADMIN_DATABASE_URL" in os.environ:
        return make_url(os.environ["ADMIN_DATABASE_URL"])
    if split_roles():
        return server_url()._replace(username=ADMIN_ROLE, password=None)  # trusted: none
    return server_url()


def as_owner(url: URL) -> URL:
    """The same database as `url` (an app's URL), as the owner role."""
    if url.username != server_url().username:
        return url  # another server's (or role's) URL: left alone
    owner = owner_url()
    return url.set(username=owner.username, password=owner.password)


def admin_engine() -> Engine:
    """An autocommit engine on the `postgres` database, for CREATE/DROP DATABASE."""
    return create_engine(
        admin_url().set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=None
    )


def alembic_config(url: URL) -> AlembicConfig:
    """Alembic config pointing at `url`'s database, as its owner (migrations create tables)."""
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", as_owner(url).render_as_string(hide_password=False))
    cfg.attributes["skip_logging"] = True
    return cfg


def clone_database(name: str, template: str) -> URL:
    """(Re)create database `name` as a copy of `template`, owned by the owner role; its URL
    (as the app's role)."""
    owner = owner_url().username
    owned = f' OWNER "{owner}"' if owner and owner != admin_url().username else ""
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"{owned} TEMPLATE "{template}"'))
    engine.dispose()
    return server_url().set(database=name)


def drop_database(name: str) -> None:
    """Drop a test database."""
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@contextmanager
def demo_clone(kind: str, demo_database_url: URL) -> Iterator[URL]:
    """A database of its own for one kind of test: a clone of the committed demo city,
    dropped afterwards."""
    name = f"gridmgmt_test_{kind}_{os.getpid()}"
    assert demo_database_url.database is not None
    with template_lock():
        url = clone_database(name, demo_database_url.database)
    yield url
    drop_database(name)


def database_comment(name: str) -> str | None:
    """The comment of a database (where cached databases keep their key), or None."""
    engine = admin_engine()
    try:
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                    " WHERE datname = :n"
                ),
                {"n": name},
            ).scalar()
    finally:
        engine.dispose()


def set_database_comment(name: str, comment: str) -> None:
    """Mark a database as built for `comment` (a fingerprint)."""
    engine = admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'"))
    engine.dispose()


def migrations_fingerprint() -> str:
    """Changes whenever a migration file changes (edited in place or added), the app role's
    grants change, or the roles the databases are built for do."""
    migrations = sorted((ROOT / "migrations").rglob("*.py"))
    roles = f"{owner_url().username} {server_url().username}"
    return fingerprint(*migrations, ROOT / "gridmgmt" / "kernel" / "roles.py", roles)


def ensure_test_template() -> None:
    """Build the migrated template unless it was built from these very migration files."""
    key = migrations_fingerprint()
    if database_comment(TEST_TEMPLATE) == key:
        return
    url = clone_database(TEST_TEMPLATE, POSTGIS_TEMPLATE)
    command.upgrade(alembic_config(url), "head")  # as the owner; then the app role's grants
    set_database_comment(TEST_TEMPLATE, key)


def fingerprint(*parts: str | Path) -> str:
    """A hash of files' contents and plain strings: a cached database is rebuilt when it changes."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.read_bytes() if isinstance(part, Path) else part.encode())
    return digest.hexdigest()[:16]


def cached_database(name: str, key: str, build: Callable[[URL], None]) -> URL:
    """Return a database built once by `build` and kept while `key` stays the same.

    The key lives in the database's comment; a stale or half-built database is rebuilt.
    `build` writes as the owner; the URL returned is the app role's.
    """
    key = fingerprint(key, migrations_fingerprint())
    with template_lock():
        if database_comment(name) != key:
            ensure_test_template()  # another run may have rebuilt it meanwhile
            build(as_owner(clone_database(name, TEST_TEMPLATE)))
            set_database_comment(name, key)
    return server_url().set(database=name)


def _worker_id(config: pytest.Config) -> str:
    return getattr(config, "workerinput", {}).get("workerid", "main")


@contextmanager
def template_lock() -> Iterator[None]:
    """Serialise template building between xdist workers (and concurrent runs)."""
    lock = ROOT / "var" / "test-template.lock"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> Iterator[URL]:
    """A fresh migrated database for this test run (one per xdist worker)."""
    with template_lock():
        ensure_test_template()
        name = f"gridmgmt_test_{os.getpid()}_{_worker_id(request.config)}"
        url = clone_database(name, TEST_TEMPLATE)
    yield url
    drop_database(name)


def analyze_cases(url: URL) -> None:
    """ANALYZE the cases after a bulk insert, as autovacuum would later (only the owner may)."""
    engine = create_engine(as_owner(url), poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("ANALYZE cases"))
    engine.dispose()


@pytest.fixture(scope="session")
def owner_engine(database_url: URL) -> Iterator[Engine]:
    """An engine on this run's database as the tables' owner, for the few tests that need
    what the app's role may not do (move a sequence, meet the append-only trigger itself)."""
    engine = create_engine(as_owner(database_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """A database of the test Redis for this run: 1, or 8 + n for xdist worker `gw<n>`, so
    that workers never flush each other's queues (the app's own data lives in database 0,
    the benchmarks' in 3); GRIDMGMT_TEST_REDIS_DB gives a serial run its own (4-7)."""
    worker = _worker_id(request.config)
    number = 1 if worker == "main" else 8 + int(worker.removeprefix("gw"))
    if worker == "main" and os.environ.get("GRIDMGMT_TEST_REDIS_DB"):
        number = int(os.environ["GRIDMGMT_TEST_REDIS_DB"])  # runs side by side, one each
    if number > 15:
        raise pytest.UsageError("the test Redis has databases for 8 xdist workers at most")
    return f"{Config.from_env().REDIS_URL.rsplit('/', 1)[0]}/{number}"


@pytest.fixture(scope="session")
def app(database_url: URL, redis_url: str) -> Iterator[Flask]:
    """The app, configured for the test database and Redis."""
    application = create_app(
        {
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "TESTING": True,
            "SECRET_KEY": "test-secret",
        }
    )
    with application.app_context():  # for module-scoped fixtures; tests get a fresh one
        yield application
        db.engine.dispose()


@pytest.fixture(autouse=True)
def app_context(request: pytest.FixtureRequest) -> Iterator[None]:
    """A fresh app context per test that uses the app, on top of the session-wide one (so
    `g`, the signed-in user and the CSRF token never leak from one test to the next)."""
    if "app" not in request.fixturenames:
        yield
        return
    application: Flask = request.getfixturevalue("app")
    with application.app_context():
        yield


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    """The app's session inside a transaction that is rolled back after the test.

    Services may commit: their commits become savepoints of the outer transaction.
    """
    with rolled_back():
        yield db.session()


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[Redis]:
    """A clean Redis database."""
    conn = Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def cli(app: Flask, session: Session) -> FlaskCliRunner:
    """A CLI runner whose commands run inside the test's transaction."""
    return app.test_cli_runner()


@pytest.fixture
def photo_dir(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Photos of this test go to a temporary folder, for the services and the pages alike."""
    monkeypatch.setitem(app.config, "PHOTO_DIR", str(tmp_path))
    return tmp_path


def shared_file(name: str) -> Path:
    """A file of ../shared/data ($GRIDMGMT_SHARED_DATA); the test fails when it is absent,
    unless $GRIDMGMT_ALLOW_MISSING allows `data` (then it is skipped)."""
    path = SHARED_DATA / name
    require("data", path.exists(), f"real data {path} is not available")
    return path


LA_CELL_SIZE_M = 250  # the largest council (50 km²) then needs 944 cells: a DB11 code holds 999
LA_STREET = "990100006"


def build_la_territory(url: URL, councils: Path) -> None:
    """District and street (the councils' union), 99 communities, 250 m cells."""
    from shapely.geometry import mapping
    from shapely.ops import unary_union
    from sqlalchemy.orm import Session as OrmSession

    from grids import services
    from grids.geojson import load_layer, polygon_features

    layer = load_layer(councils)
    whole = mapping(unary_union([f.geometry for f in polygon_features(layer)]))
    engine = create_engine(url)
    with OrmSession(engine) as session, session.begin():
        for level, code, parent in (("district", "990100", None), ("street", LA_STREET, "990100")):
            feature = {"type": "Feature", "properties": {"code": code, "name": level}}
            one = {"type": "FeatureCollection", "features": [{**feature, "geometry": whole}]}
            services.import_units(session, one, level, "code", "name", parent_code=parent)
        services.import_units(session, layer, "community", "nc_id", "name", parent_code=LA_STREET)
        services.generate_cells(session, LA_CELL_SIZE_M)
    engine.dispose()


def seed_demo_city(url: URL) -> None:
    """Seed and commit the demo city in the database at `url`."""
    from gridmgmt.app.demo import seed_demo

    engine = create_engine(url)
    try:
        with Session(engine) as session, session.begin():
            seed_demo(session, say=lambda _line: None)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def demo_database_url(database_url: URL) -> URL:
    """A database holding the committed demo city, seeded once and kept while the code and
    data that seed it are unchanged. Tests that change it work on a clone
    (`clone_database(name, "gridmgmt_test_demo")`)."""
    sources = [
        path
        for package in ("gridmgmt", "grids", "cases", "dispatch")
        for path in sorted((ROOT / package).rglob("*"))
        if path.suffix in (".py", ".json", ".geojson")
    ]
    return cached_database("gridmgmt_test_demo", fingerprint(*sources), seed_demo_city)


def seed_demo_with_history(url: URL) -> None:
    """Seed and commit the demo city and its replayed year of real requests."""
    from cases.lifecycle import CaseContext
    from gridmgmt.app.demo import seed_demo
    from gridmgmt.app.demo_history import seed_history
    from gridmgmt.kernel.calendar_store import get_calendar

    engine = create_engine(url)
    try:
        with Session(engine) as session, session.begin():
            seed_demo(session, say=lambda _line: None)
            context = CaseContext(get_calendar(session, "us_la"), HISTORY_PHOTOS)
            seed_history(session, context, say=lambda _line: None, data=SHARED_DATA)
    finally:
        engine.dispose()


HISTORY_PHOTOS = ROOT / "var" / "test-history-photos"  # the units' placeholder photos


@pytest.fixture(scope="session")
def history_database_url(database_url: URL) -> URL:
    """A database holding the demo city with its year of real requests replayed through the
    lifecycle (about 20 s), seeded once and kept while the code and the data are unchanged.
    Tests that change it work on a clone (`demo_clone(kind, history_database_url)`)."""
    sources = [
        path
        for package in ("gridmgmt", "grids", "cases", "dispatch", "maps")
        for path in sorted((ROOT / package).rglob("*"))
        if path.suffix in (".py", ".json", ".geojson")
    ]
    # The replay ends yesterday: a history seeded on another day is rebuilt.
    today = date.today().isoformat()
    key = fingerprint(*sources, shared_file("la311_requests_2020-01.csv"), today)
    return cached_database("gridmgmt_test_history", key, seed_demo_with_history)


@pytest.fixture(scope="session")
def la_database_url(database_url: URL) -> URL:
    """A database holding the real LA territory (99 councils as communities, 250 m cells),
    built once and reused while the data and the gridding code are unchanged. Tests that
    change it must work on a clone (`clone_database(name, "gridmgmt_test_la")`)."""
    councils = shared_file("la_neighborhood_councils.geojson")
    code = [ROOT / "grids" / name for name in ("services.py", "gridding.py", "geojson.py")]
    key = fingerprint(councils, *code, str(LA_CELL_SIZE_M))
    return cached_database("gridmgmt_test_la", key, lambda u: build_la_territory(u, councils))


# Debian's Chromium, shared by every module that drives pages (one Playwright per process).
CHROMIUM = os.environ.get("GRIDMGMT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """The Playwright driver (sync API). Its expectations wait up to 15 s, not 5: on this
    2-core machine a page's answer can wait behind a second test worker, PostgreSQL and
    Chromium (an outbox item stayed "sending" for over 5 s under `-n 2`)."""
    expect.set_options(timeout=15_000)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless (Playwright's own browsers cannot be downloaded here)."""
    require(
        "browser", Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    )
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
