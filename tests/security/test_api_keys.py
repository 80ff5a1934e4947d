"""Open311 api keys revoked from the command line (`flask apikey revoke`, `flask apikey list`):
a revoked key is refused by Open311 everywhere (POST and GET, JSON and XML, in the spec's error
list) and each refusal is a security event naming the key, never its secret. And a key (or a
token, or a password) in a query string never reaches gunicorn's access log: the real
gunicorn, with the shipped gunicorn.conf.py, serving the app and writing its log to a file."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from gridmgmt.kernel.security_events import SecurityEventKind
from tests.security.test_security_events import events_from, from_address

ROOT = Path(__file__).resolve().parents[2]
OPEN311 = "/open311/v2"


def cli(app: Flask, *args: str) -> Any:
    """Run a `flask` command of the served app (its own database)."""
    with app.app_context():
        return app.test_cli_runner().invoke(args=list(args))


@pytest.fixture
def key(security_app: Flask) -> tuple[str, str]:
    """A new api key: its name and its secret (printed once by `flask apikey create`)."""
    name = f"client-{uuid.uuid4().hex[:8]}"
    made = cli(security_app, "apikey", "create", name)
    assert made.exit_code == 0, made.output
    return name, made.stdout.splitlines()[0]


def key_row(engine: Engine, name: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT id, active, revoked_at FROM api_keys WHERE name = :n"), {"n": name}
        ).one()


def post(server: str, http: requests.Session, secret: str, fmt: str = "json") -> Any:
    return http.post(
        f"{server}{OPEN311}/requests.{fmt}",
        data={"api_key": secret, "service_code": "E0102", "lat": "0", "long": "0"},
    )


# ---------------------------------------------------------------- revoking


def test_revoke_refuses_the_key_everywhere_and_records_each_refusal(
    server: str, security_app: Flask, engine: Engine, key: tuple[str, str]
) -> None:
    name, secret = key
    http, address = from_address()
    listing = f"{server}{OPEN311}/requests.json"
    assert http.get(listing, params={"api_key": secret, "service_request_id": "0"}).ok

    revoked = cli(security_app, "apikey", "revoke", name)

    assert revoked.exit_code == 0, revoked.output
    assert f"API key {name!r} revoked" in revoked.output
    row = key_row(engine, name)
    assert row.revoked_at is not None and row.active is False
    answers = {
        "post json": post(server, http, secret),
        "post xml": post(server, http, secret, "xml"),
        "get json": http.get(listing, params={"api_key": secret, "service_request_id": "0"}),
        "get one": http.get(f"{server}{OPEN311}/requests/0.json", params={"api_key": secret}),
    }
    assert {what: a.status_code for what, a in answers.items()} == dict.fromkeys(answers, 403)
    revoked_error = [{"code": 403, "description": "api_key has been revoked"}]
    assert answers["post json"].json() == revoked_error
    assert answers["get json"].json() == revoked_error
    xml = answers["post xml"].text
    assert xml.startswith("<?xml") and "<errors><error><code>403</code>" in xml
    events = events_from(engine, address, SecurityEventKind.API_KEY_REFUSED)
    assert events, "each refusal is an event (sampled: the 1st, 2nd, 4th... of a minute)"
    assert {(e.api_key_id, e.detail["reason"]) for e in events} == {(row.id, "revoked")}
    assert all(secret not in str(tuple(e)) for e in events)


def test_revoke_by_id_and_twice(security_app: Flask, engine: Engine, key: tuple[str, str]) -> None:
    name, _ = key
    key_id = key_row(engine, name).id

    first = cli(security_app, "apikey", "revoke", str(key_id))
    when = key_row(engine, name).revoked_at
    second = cli(security_app, "apikey", "revoke", name)

    assert (first.exit_code, second.exit_code) == (0, 0)
    assert key_row(engine, name).revoked_at == when  # revoked once, when it was first revoked


def test_revoking_an_unknown_key_changes_nothing(security_app: Flask) -> None:
    answer = cli(security_app, "apikey", "revoke", "no-such-client")
    assert answer.exit_code == 1
    assert "no API key named 'no-such-client'" in answer.output


def test_list_shows_revoked_keys(security_app: Flask, key: tuple[str, str]) -> None:
    name, secret = key
    cli(security_app, "apikey", "revoke", name)

    listed = cli(security_app, "apikey", "list")

    assert listed.exit_code == 0, listed.output
    (line,) = [line for line in listed.output.splitlines() if f" {name} " in line]
    assert "REVOKED" in line
    assert secret not in listed.output and secret[:8] in line  # the first characters only
    demo = [line for line in listed.output.splitlines() if " demo" in line]
    assert demo and "REVOKED" not in demo[0]


def test_the_demo_key_still_works(server: str) -> None:
    from gridmgmt.app.demo import DEMO_API_KEY

    answer = requests.get(
        f"{server}{OPEN311}/requests.json",
        params={"api_key": DEMO_API_KEY, "service_request_id": "0"},
    )
    assert answer.status_code == 200


# ---------------------------------------------------------------- the access log


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def gunicorn_server(
    security_db: URL, security_app: Flask, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, Path]]:
    """The real gunicorn serving wsgi:app with the shipped gunicorn.conf.py (one worker), its
    access log and error log in files: (base URL, access log, error log)."""
    folder = tmp_path_factory.mktemp("gunicorn")
    access, errors = folder / "access.log", folder / "error.log"
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": security_db.render_as_string(hide_password=False),
        "REDIS_URL": security_app.config["REDIS_URL"],
        "GRIDMGMT_SECRET_KEY": "gunicorn-test",
        "GRIDMGMT_PHOTO_DIR": str(folder / "photos"),
        "GRIDMGMT_WEB_WORKERS": "1",
        "GRIDMGMT_WEB_THREADS": "2",
    }
    command = [
        str(ROOT / ".venv" / "bin" / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        str(access),
        "--error-logfile",
        str(errors),
        "wsgi:app",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if requests.get(f"{base}/healthz", timeout=5).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert process.poll() is None, errors.read_text() if errors.exists() else "no log"
            time.sleep(0.1)
        else:
            pytest.fail(f"gunicorn did not answer at {base}")
        yield base, access, errors
    finally:
        process.terminate()
        process.wait(timeout=30)


def logged(access: Path, marker: str, count: int = 1) -> list[str]:
    """The access log's lines that mention `marker`, once `count` of them are there (the log
    is written as requests end) or after 5 s."""
    lines: list[str] = []
    for _ in range(50):
        lines = [line for line in access.read_text().splitlines() if marker in line]
        if len(lines) >= count:
            return lines
        time.sleep(0.1)
    return lines


def test_a_key_in_a_query_string_is_redacted_from_the_access_log(
    gunicorn_server: tuple[str, Path, Path],
) -> None:
    base, access, errors = gunicorn_server
    secret, token, password = (f"s3cret-{uuid.uuid4().hex}" for _ in range(3))
    marker = uuid.uuid4().hex

    answer = requests.get(
        f"{base}{OPEN311}/requests.json",
        params={"service_request_id": marker, "api_key": secret},
        headers={"Referer": f"https://client.example/app?api_key={secret}&page=1"},
    )
    requests.get(f"{base}/login", params={"token": token, "password": password, "m": marker})

    assert answer.status_code == 403  # not a key of this city: refused, and still logged
    lines = logged(access, marker, count=2)
    assert len(lines) == 2, access.read_text()[-2000:]
    text_of_logs = access.read_text() + errors.read_text()
    for value in (secret, token, password):
        assert value not in text_of_logs
    assert f"service_request_id={marker}&api_key=[redacted]" in lines[0]
    assert "client.example/app?api_key=[redacted]&page=1" in lines[0]  # the Referer
    assert "token=[redacted]&password=[redacted]&m=" in lines[1]


def test_the_redaction_rule() -> None:
    redact = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["redact"]
    cases = {
        "GET /x?api_key=abc&b=1 HTTP/1.1": "GET /x?api_key=[redacted]&b=1 HTTP/1.1",
        "GET /x?API%5FKEY=abc HTTP/1.1": "GET /x?API%5FKEY=[redacted] HTTP/1.1",
        "/x?a=1&access_token=t;new_password=p#f": "/x?a=1&access_token=[redacted];"
        "new_password=[redacted]#f",
        "api_key=abc": "api_key=[redacted]",
        "/x?monkey=1&keys=2": "/x?monkey=1&keys=2",
        "/open311/v2/tokens/2026-0001.json": "/open311/v2/tokens/2026-0001.json",
    }
    assert {raw: redact(raw) for raw in cases} == cases
