"""Helpers the test packages share: a transaction rolled back at the end (for a test or a
whole module on a seeded demo city), points inside areas, real photos, a browser-like client
signed in through the real login form, and `require` for the tools and data tests need."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from flask import Flask, g, has_app_context
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.orm import Session
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.test import TestResponse

from gridmgmt import create_app
from gridmgmt.app import demo
from gridmgmt.kernel.db import EXTENSION as DB_EXTENSION
from gridmgmt.kernel.db import READ_EXTENSION as DB_READ_EXTENSION
from gridmgmt.kernel.db import db
from migrations.siblings import migration

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
ALLOW_MISSING = "GRIDMGMT_ALLOW_MISSING"
MISSING_KINDS = ("browser", "postgres", "data", "tools")


def allowed_missing() -> set[str]:
    """The kinds of missing things that $GRIDMGMT_ALLOW_MISSING lets tests skip: a comma list
    of `browser`, `postgres`, `data`, `tools` (nginx, openssl, systemd-analyze), or `all`.

    Raises:
        pytest.UsageError: an unknown kind (a typo must not turn into a silent skip later).
    """
    raw = {k.strip() for k in os.environ.get(ALLOW_MISSING, "").split(",") if k.strip()}
    if "all" in raw:
        return set(MISSING_KINDS)
    unknown = raw - set(MISSING_KINDS)
    if unknown:
        raise pytest.UsageError(
            f"{ALLOW_MISSING}: unknown kind {', '.join(sorted(unknown))}"
            f" (known: {', '.join(MISSING_KINDS)}, all)"
        )
    return raw


def require(kind: str, present: bool, why: str) -> None:
    """Fail the test when a tool or data it needs is missing (`present` false), so that CI
    never passes by silently skipping it; skip instead when $GRIDMGMT_ALLOW_MISSING names
    `kind`. Tests use this, never a bare pytest.skip, for a missing browser, PostgreSQL
    program or real data file.

    Args:
        kind: `browser`, `postgres`, `data` or `tools`.
        present: whether the thing is there.
        why: what is missing and how to get it, e.g. "no Chromium at /usr/bin/chromium".
    """
    if kind not in MISSING_KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(MISSING_KINDS)}")
    if present:
        return
    if kind in allowed_missing():
        pytest.skip(f"{why} (allowed by {ALLOW_MISSING})")
    pytest.fail(f"{why}; set {ALLOW_MISSING}={kind} to skip these tests instead", pytrace=False)


def fresh_request_globals() -> None:
    """Empty `g` before a test request, as a real request's own app context would be: the
    test's app context is reused by test requests, so Flask-Login's user and Flask-WTF's
    token would otherwise leak from one client to the next. Without an app context each test
    request has its own: nothing to do."""
    if has_app_context():
        vars(g._get_current_object()).clear()  # type: ignore[attr-defined]


@contextmanager
def rolled_back() -> Iterator[Connection]:
    """A connection in a transaction that is rolled back when the block ends; the app's
    session is bound to it, and the services' commits become savepoints inside it."""
    connection = db.engine.connect()
    outer = connection.begin()
    db.session.remove()
    db.session.configure(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield connection
    finally:
        fresh_request_globals()  # no signed-in user left for the next test
        db.session.remove()
        db.session.configure(bind=None, join_transaction_mode="conditional_savepoint")
        outer.rollback()
        connection.close()


@contextmanager
def seeded_demo(say: Callable[[str], None] = lambda _line: None) -> Iterator[Connection]:
    """The demo city, seeded in a transaction that is rolled back when the block ends (seed
    once for a module: a few seconds; `say` hears its progress). Inside, `db.session()` sees
    the city."""
    with rolled_back() as connection:
        session = db.session()
        assert not demo.is_seeded(session)
        demo.seed_demo(session, say=say)
        session.commit()  # releases the savepoint: the outer transaction keeps the city
        db.session.remove()
        yield connection


@contextmanager
def nested(connection: Connection) -> Iterator[Session]:
    """The app's session inside a savepoint of `connection`, rolled back after the block: one
    test's changes on a module's seeded city."""
    savepoint = connection.begin_nested()
    try:
        yield db.session()
    finally:
        fresh_request_globals()
        db.session.remove()
        if savepoint.is_active:
            savepoint.rollback()


def point_in(session: Session, area_code: str) -> tuple[float, float]:
    """A point (lon, lat) inside the area with this code."""
    lon, lat = session.execute(
        text("SELECT ST_X(p), ST_Y(p) FROM areas, ST_PointOnSurface(geom) p WHERE code = :code"),
        {"code": area_code},
    ).one()
    return float(lon), float(lat)


def jpeg(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (48, 32)) -> bytes:
    """A real JPEG made by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@dataclass
class Web:
    """A browser: a test client with its session cookie and CSRF token. Each call starts
    with fresh request globals, as a new request in a real server would."""

    client: FlaskClient
    token: str

    def get(self, url: str, **kwargs: Any) -> TestResponse:
        fresh_request_globals()
        return self.client.get(url, **kwargs)

    def post(self, url: str, data: dict[str, Any] | None = None) -> TestResponse:
        """A form post (multipart, as the pages send it) with the CSRF token, unless `data`
        brings its own (the one a page's form carries)."""
        fresh_request_globals()
        return self.client.post(
            url,
            data={"csrf_token": self.token, **(data or {})},
            content_type="multipart/form-data",
        )

    def api(self, url: str, body: dict[str, Any] | None = None) -> TestResponse:
        """A JSON API call with the CSRF header."""
        fresh_request_globals()
        return self.client.post(url, json=body or {}, headers={"X-CSRFToken": self.token})


def csrf_token(client: FlaskClient) -> str:
    """The CSRF token of the client's session, read from the login page."""
    fresh_request_globals()
    page = client.get("/login")
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.get_data(as_text=True))
    assert found, "no CSRF token on the login page"
    return found.group(1)


def browser(app: Flask, username: str | None = None) -> Web:
    """A client signed in as the demo login `username` through the login form (anonymous
    when None), holding its CSRF token."""
    client = app.test_client()
    web = Web(client, csrf_token(client))
    if username is not None:
        signed = web.post("/login", {"username": username, "password": demo.DEMO_PASSWORD})
        assert signed.status_code == 302, signed.get_data(as_text=True)[:500]
    return web


@contextmanager
def real_app(database: URL, redis_url: str, photo_dir: Path, **settings: Any) -> Iterator[Flask]:
    """The real app on `database`, storing photos in `photo_dir` (for a live server), with
    other `settings` of its config."""
    app = create_app(
        {
            "DATABASE_URL": database.render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "SECRET_KEY": "x",
            "PHOTO_DIR": str(photo_dir),
            **settings,
        }
    )
    yield app
    app.extensions[DB_EXTENSION].dispose()
    if replica := app.extensions.get(DB_READ_EXTENSION):
        replica.engine.dispose()


class QuietHandler(WSGIRequestHandler):
    """Werkzeug's request handler without the access log (pytest shows it on failures)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve `app` with werkzeug (a thread per request) on a free port; yields its base URL.
    Tests that attack the server over HTTP (security, browser) talk to it like any client."""
    server: BaseWSGIServer = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------- real processes


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, seconds: float = 30.0, **kwargs: Any) -> None:
    """Wait until `url` answers at all (any status)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            requests.get(url, timeout=2, **kwargs)
            return
        except (requests.ConnectionError, requests.Timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def app_environment(database: URL, redis_url: str, photo_dir: Path, **settings: str) -> dict:
    """The environment of an app process (gunicorn, `flask dispatch worker`...) on a test
    database: this process's environment, the URLs, a secret key and `GRIDMGMT_*` settings."""
    return {
        **os.environ,
        "FLASK_APP": "wsgi",
        "DATABASE_URL": database.render_as_string(hide_password=False),
        "REDIS_URL": redis_url,
        "GRIDMGMT_SECRET_KEY": "test-secret-for-processes",
        "GRIDMGMT_PHOTO_DIR": str(photo_dir),
        **{f"GRIDMGMT_{name}": value for name, value in settings.items()},
    }


def start_group(command: list[str], env: dict, log: Path) -> subprocess.Popen[bytes]:
    """Start `command` from the checkout as a process group of its own (so that a test can
    kill it with everything it forked), its output in `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def stop_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send `sig` to a process group and wait for its leader (gone already: nothing)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    process.wait(timeout=30)


def gunicorn(env: dict, port: int, log: Path, workers: int = 1) -> subprocess.Popen[bytes]:
    """The real gunicorn with the project's gunicorn.conf.py on 127.0.0.1:`port`, ready."""
    env = {**env, "GRIDMGMT_WEB_BIND": f"127.0.0.1:{port}", "GRIDMGMT_WEB_WORKERS": str(workers)}
    process = start_group([str(VENV_BIN / "gunicorn"), "--config", "gunicorn.conf.py",
                           "wsgi:app"], env, log)  # fmt: skip
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz")
    except BaseException:
        stop_group(process, signal.SIGKILL)
        raise
    return process


def copy_case(connection: Connection, model: str, count: int, prefix: str, step: str) -> None:
    """Insert `count` closed copies of the case numbered `model`, numbered `prefix` + 8 digits
    and reported in January 2001 (a period no other test reads), one every `step` (an SQL
    interval, e.g. '1 minute'): volume for the exports, in one statement."""
    columns = connection.execute(
        text(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'cases' AND column_name NOT IN"
            " ('id', 'number', 'reported_at', 'status', 'closed_at')"
            " AND is_generated = 'NEVER' ORDER BY ordinal_position"
        )
    ).scalars()
    names = list(columns)
    connection.execute(
        text(
            f"INSERT INTO cases (number, reported_at, status, closed_at, {', '.join(names)})"
            " SELECT :prefix || lpad(g::text, 8, '0'),"
            "        timestamptz '2001-01-02' + g * CAST(:step AS interval), 'closed',"
            "        timestamptz '2001-01-03' + g * CAST(:step AS interval),"
            f"       {', '.join(f'c.{n}' for n in names)}"
            " FROM (SELECT * FROM cases WHERE number = :model) c, generate_series(1, :n) g"
        ),
        {"prefix": prefix, "step": step, "model": model, "n": count},
    )


def sign_in_page(
    page: Any, base_url: str, username: str, password: str = demo.DEMO_PASSWORD
) -> None:
    """Sign a Playwright page in through the real login form."""
    page.goto(f"{base_url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    assert "/login" not in page.url, f"{username} could not sign in"


@contextmanager
def signed_in_contexts(
    browser: Any, base_url: str, defaults: dict[str, Any], timeout_ms: int
) -> Iterator[Callable[..., Any]]:
    """`make(username, **options)`: a new Playwright context on `base_url` with `defaults`
    (overridden by `options`), signed in as the demo login `username` (None: anonymous); all
    closed when the block ends."""
    opened: list[Any] = []

    def make(username: str | None, **options: Any) -> Any:
        context = browser.new_context(base_url=base_url, **{**defaults, **options})
        context.set_default_timeout(timeout_ms)
        opened.append(context)
        if username is not None:
            page = context.new_page()
            sign_in_page(page, base_url, username)
            page.close()
        return context

    try:
        yield make
    finally:
        for context in opened:
            context.close()


def screenshot_keeper() -> Callable[[Any, str], None]:
    """`take(page, name)`: keep a full-page PNG in $GRIDMGMT_SCREENSHOTS (when set)."""
    folder = os.environ.get("GRIDMGMT_SCREENSHOTS")

    def take(page: Any, name: str) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)

    return take


def migration_module(filename: str) -> ModuleType:
    """A migration file of migrations/versions loaded as a module: its SQL definitions are
    what tests compare the database with (e.g. a rollup against its full recount)."""
    return migration(filename)
