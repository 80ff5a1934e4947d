"""Abuse limits, attacked over HTTP against the real server: floods of reports through the
form, the JSON API and Open311, of case actions, of the expensive public reads (Open311's
listing, the open data exports), per client address and per account or api key; answered 429
with Retry-After in each interface's format. A client cannot escape its limit with a forged
X-Forwarded-For; behind a trusted proxy the forwarded address is the one limited; without
Redis the limits let reports through.

Limits are set small on the running app's config for a test (and restored); the counters
(`gridmgmt:rate:*`) are deleted before and after each test, so tests never starve each other.
"""

from __future__ import annotations

import html
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from babel.messages.pofile import read_po
from flask import Flask
from redis import Redis
from requests.adapters import HTTPAdapter
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from gridmgmt import create_app
from gridmgmt.app.demo import DEMO_API_KEY
from gridmgmt.kernel.config import Config
from gridmgmt.kernel.db import EXTENSION as DB_EXTENSION
from gridmgmt.kernel.errors import Message
from gridmgmt.kernel.ratelimit import PREFIX
from tests.gridmgmt.test_translations import PO
from tests.security.conftest import sign_in
from tests.security.test_reports import Reporter, csrf_of
from tests.support import serving

GARBAGE = "E0102"
OPEN311 = "/open311/v2"
NO_SUCH_CASE = 987_654_321
PER_MINUTE = "too many requests: at most %(limit)s a minute"


# ---------------------------------------------------------------- helpers and fixtures


def forget_counters(redis_url: str) -> None:
    """Delete every rate counter of this Redis database."""
    conn = Redis.from_url(redis_url)
    try:
        keys = list(conn.scan_iter(f"{PREFIX}*"))
        if keys:
            conn.delete(*keys)
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def fresh_counters(security_app: Flask) -> Iterator[None]:
    forget_counters(security_app.config["REDIS_URL"])
    yield
    forget_counters(security_app.config["REDIS_URL"])


@pytest.fixture
def limits(security_app: Flask, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set limits on the running app for this test (restored after it)."""

    def set_limits(**values: int) -> None:
        for name, value in values.items():
            assert name in security_app.config, name
            monkeypatch.setitem(security_app.config, name, value)

    return set_limits


def fresh_window(seconds: int = 60, need: float = 8.0) -> None:
    """Wait for the next fixed window when less than `need` seconds are left in this one, so
    that a burst of requests is counted in one window."""
    left = seconds - time.time() % seconds
    if left < need:
        time.sleep(left + 0.05)


def retry_after(answer: requests.Response, window: int = 60) -> int:
    """The Retry-After of a 429: whole seconds, within the window."""
    assert answer.status_code == 429, (answer.status_code, answer.text[:300])
    seconds = int(answer.headers["Retry-After"])
    assert 1 <= seconds <= window
    return seconds


class FromAddress(HTTPAdapter):
    """Connections from a source address of our own: 127.0.0.0/8 is all loopback, so each test
    is a client of its own to the server (and to concurrent runs on the same Redis)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def new_address() -> str:
    """A loopback address no other test uses."""
    raw = uuid.uuid4().bytes
    return f"127.{raw[0]}.{raw[1]}.{1 + raw[2] % 254}"


def client(http: requests.Session | None = None) -> requests.Session:
    """A requests session (a new one, or `http`) connecting from a fresh loopback address."""
    http = http or requests.Session()
    http.mount("http://", FromAddress(new_address()))
    return http


def anonymous_reporter(server: str) -> Reporter:
    """An anonymous browser of its own address."""
    reporter = Reporter(server)
    client(reporter.http)
    return reporter


def fields(point: tuple[float, float], marker: str) -> dict[str, Any]:
    return {"category": GARBAGE, "lon": point[0], "lat": point[1], "description": marker}


def open311_fields(point: tuple[float, float], marker: str, key: str = DEMO_API_KEY) -> dict:
    return {
        "api_key": key,
        "service_code": GARBAGE,
        "lat": point[1],
        "long": point[0],
        "description": marker,
    }


def cases_with(engine: Engine, marker: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(
                text("SELECT count(*) FROM cases WHERE description = :d"), {"d": marker}
            )
        )


def translated(lang: str) -> Callable[[str], str]:
    """The catalogue's translation of a message id (the id itself until it is translated)."""
    if lang == "en":
        return lambda text: text
    with PO.open("rb") as file:
        catalogue = read_po(file)

    def translate(text: str) -> str:
        entry = catalogue.get(text)
        return str(entry.string) if entry is not None and entry.string else text

    return translate


@dataclass
class Served:
    url: str
    app: Flask


@pytest.fixture(scope="module")
def proxied(
    security_db: URL, security_app: Flask, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A second server on the same database and Redis, behind one trusted proxy hop."""
    app = create_app(
        {
            "DATABASE_URL": security_db.render_as_string(hide_password=False),
            "REDIS_URL": security_app.config["REDIS_URL"],
            "SECRET_KEY": "x",
            "PHOTO_DIR": str(tmp_path_factory.mktemp("proxied-photos")),
            "TRUSTED_PROXIES": 1,
        }
    )
    with serving(app) as url:
        yield Served(url, app)
    app.extensions[DB_EXTENSION].dispose()


@pytest.fixture
def proxied_limits(proxied: Served, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set limits on the proxied server for this test (restored after it)."""

    def set_limits(**values: int) -> None:
        for name, value in values.items():
            monkeypatch.setitem(proxied.app.config, name, value)

    return set_limits


# ---------------------------------------------------------------- the web report form


def test_forty_anonymous_form_reports_are_not_all_accepted(
    server: str,
    security_app: Flask,
    limits: Callable[..., None],
    engine: Engine,
    inside: tuple[float, float],
) -> None:
    """The issue's attack with the production default (other modules of this server may run
    with generous limits): the report past the limit is a page."""
    most = Config().RATE_REPORTS_PER_CLIENT
    assert 0 < most < 40
    limits(RATE_REPORTS_PER_CLIENT=most)
    for _attempt in range(2):  # again if the burst ran over the end of its window
        marker = f"flood-{uuid.uuid4().hex}"
        forget_counters(security_app.config["REDIS_URL"])
        fresh_window(need=20)
        window = time.time() // 60
        anonymous = anonymous_reporter(server)
        answers = []
        for _ in range(40):
            answers.append(anonymous.form(fields(inside, marker)))
            if answers[-1].status_code == 429:
                break
        if time.time() // 60 == window:
            break

    assert [a.status_code for a in answers[:most]] == [302] * most
    refused = answers[most]
    retry_after(refused)
    assert refused.headers["Content-Type"].startswith("text/html")
    assert html.escape(Message(PER_MINUTE, {"limit": most}).render()) in refused.text
    assert cases_with(engine, marker) == most


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_refused_form_is_a_page_in_the_readers_language(
    server: str, limits: Callable[..., None], inside: tuple[float, float], lang: str
) -> None:
    limits(RATE_REPORTS_PER_CLIENT=1)
    fresh_window()
    reader = anonymous_reporter(server)
    reader.http.cookies.set("lang", lang)
    marker = f"lang-{uuid.uuid4().hex}"

    assert reader.form(fields(inside, marker)).status_code == 302
    refused = reader.form(fields(inside, marker))

    retry_after(refused)
    assert f'<html lang="{lang}">' in refused.text
    translate = translated(lang)
    assert translate("Too many requests") in refused.text  # the page's title
    shown = Message(PER_MINUTE, {"limit": 1}).render(translate)
    assert html.escape(shown) in refused.text
    assert "429" in refused.text


# ---------------------------------------------------------------- the JSON API


def test_the_json_api_past_the_limit_is_a_json_error(
    server: str, limits: Callable[..., None], engine: Engine, inside: tuple[float, float]
) -> None:
    limits(RATE_REPORTS_PER_CLIENT=2)
    fresh_window()
    anonymous = anonymous_reporter(server)
    marker = f"api-{uuid.uuid4().hex}"

    answers = [anonymous.api(fields(inside, marker)) for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [201, 201]
    retry_after(answers[2])
    assert answers[2].json() == {
        "error": {
            "code": "too_many_requests",
            "message": "too many requests: at most 2 a minute",
        }
    }
    assert cases_with(engine, marker) == 2


def test_the_form_and_the_api_share_the_reports_limit(
    server: str, limits: Callable[..., None], inside: tuple[float, float]
) -> None:
    """Switching from the form to the API does not reset a client's count."""
    limits(RATE_REPORTS_PER_CLIENT=1)
    fresh_window()
    anonymous = anonymous_reporter(server)
    marker = f"share-{uuid.uuid4().hex}"

    assert anonymous.form(fields(inside, marker)).status_code == 302
    retry_after(anonymous.api(fields(inside, marker)))


def test_case_actions_past_the_account_limit_are_429(
    server: str, limits: Callable[..., None]
) -> None:
    """Every action path counts, the dispatcher's `dispatch` too, before the case is read."""
    limits(RATE_ACTIONS_PER_ACCOUNT=2)
    fresh_window()
    dispatcher = sign_in(server, "dispatcher")
    headers = {"X-CSRFToken": csrf_of(dispatcher, server)}
    base = f"{server}/api/cases/{NO_SUCH_CASE}/actions"

    first = dispatcher.post(f"{base}/return", json={"version": 1}, headers=headers)
    second = dispatcher.post(f"{base}/dispatch", json={"version": 1}, headers=headers)
    third = dispatcher.post(f"{base}/dispatch", json={"version": 1}, headers=headers)
    fourth = dispatcher.post(f"{base}/return", json={"version": 1}, headers=headers)

    assert first.status_code != 429 and second.status_code != 429
    for refused in (third, fourth):
        retry_after(refused)
        assert refused.json()["error"]["code"] == "too_many_requests"


# ---------------------------------------------------------------- Open311


def test_open311_posts_past_the_key_limit_are_429_in_open311s_format(
    server: str, security_app: Flask, limits: Callable[..., None], inside: tuple[float, float]
) -> None:
    """Open311 counts in one-second windows (OPEN311_RATE_PER_KEY); the answer is the spec's
    error list, in the format the path asks for."""
    limits(OPEN311_RATE_PER_KEY=1)
    key = f"no-such-key-{uuid.uuid4().hex}"  # counted before the key is looked up
    post = f"{server}{OPEN311}/requests"
    for _attempt in range(5):  # until the three posts fall in one second
        forget_counters(security_app.config["REDIS_URL"])
        fresh_window(seconds=1, need=0.7)
        http = client()
        answers = [
            http.post(f"{post}.{fmt}", data=open311_fields(inside, "x", key))
            for fmt in ("json", "json", "xml")
        ]
        if [a.status_code for a in answers] == [403, 429, 429]:
            break

    assert answers[0].status_code == 403  # the unknown key, once
    retry_after(answers[1], window=1)
    assert answers[1].json() == [
        {"code": 429, "description": "too many requests: at most 1 a second"}
    ]
    retry_after(answers[2], window=1)
    errors = ET.fromstring(answers[2].text)
    assert errors.tag == "errors"
    assert errors.findtext("error/code") == "429"


def test_the_open311_listing_past_the_read_limit_is_429(
    server: str, limits: Callable[..., None]
) -> None:
    limits(RATE_READS_PER_CLIENT=2)
    fresh_window()
    listing = f"{server}{OPEN311}/requests.json"

    http = client()
    answers = [http.get(listing, params={"service_request_id": "0"}) for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [200, 200]
    retry_after(answers[2])
    assert answers[2].json() == [
        {"code": 429, "description": "too many requests: at most 2 a minute"}
    ]


@pytest.mark.parametrize("fmt", ["csv", "geojson"])
def test_open_data_past_the_read_limit_is_429(
    server: str, limits: Callable[..., None], fmt: str
) -> None:
    limits(RATE_READS_PER_CLIENT=2)
    fresh_window()
    export = f"{server}/open-data/cases.{fmt}"

    http = client()
    answers = [http.get(export) for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [200, 200]
    retry_after(answers[2])
    assert "too many requests: at most 2 a minute" in answers[2].text


# ---------------------------------------------------------------- client addresses and proxies


def test_a_forged_forwarded_for_does_not_escape_the_limit(
    server: str, limits: Callable[..., None]
) -> None:
    """With no trusted proxy (the default), X-Forwarded-For is the client's own word."""
    limits(RATE_READS_PER_CLIENT=2)
    fresh_window()
    listing = f"{server}{OPEN311}/requests.json"

    http = client()
    answers = [
        http.get(
            listing,
            params={"service_request_id": "0"},
            headers={"X-Forwarded-For": f"198.51.100.{n}"},
        )
        for n in range(3)
    ]

    assert [a.status_code for a in answers[:2]] == [200, 200]
    retry_after(answers[2])


def test_behind_a_trusted_proxy_the_forwarded_address_is_limited(
    proxied: Served, security_app: Flask, proxied_limits: Callable[..., None]
) -> None:
    """One trusted hop: each forwarded address has its own count; the proxy's is not used."""
    proxied_limits(RATE_READS_PER_CLIENT=2)
    listing = f"{proxied.url}{OPEN311}/requests.json"

    def get(address: str) -> requests.Response:
        return requests.get(
            listing, params={"service_request_id": "0"}, headers={"X-Forwarded-For": address}
        )

    fresh_window()
    address, neighbour = f"10.{new_address()[4:]}", f"10.{new_address()[4:]}"
    first = [get(address) for _ in range(3)]
    other = get(neighbour)

    assert [a.status_code for a in first[:2]] == [200, 200]
    retry_after(first[2])
    assert other.status_code == 200  # another client behind the same proxy is not starved
    conn = Redis.from_url(security_app.config["REDIS_URL"])
    try:
        counted = {k.decode() for k in conn.scan_iter(f"{PREFIX}reads:*")}
    finally:
        conn.close()
    assert any(f":client:{address}:" in k for k in counted)
    assert not any(":client:127.0.0.1:" in k for k in counted)


def test_the_account_limit_holds_across_addresses(
    proxied: Served,
    proxied_limits: Callable[..., None],
    inside: tuple[float, float],
    engine: Engine,
) -> None:
    """A signed-in account cannot spread its reports over addresses; another account from
    the last address is not held back by it."""
    proxied_limits(RATE_REPORTS_PER_ACCOUNT=2)
    marker = f"account-{uuid.uuid4().hex}"
    citizen, inspector = sign_in(proxied.url, "citizen"), sign_in(proxied.url, "inspector")
    tokens = {
        id(citizen): csrf_of(citizen, proxied.url),
        id(inspector): csrf_of(inspector, proxied.url),
    }

    def report(who: requests.Session, address: str) -> requests.Response:
        return who.post(
            f"{proxied.url}/api/reports",
            json=fields(inside, marker),
            headers={"X-CSRFToken": tokens[id(who)], "X-Forwarded-For": address},
        )

    fresh_window()
    addresses = [f"10.{new_address()[4:]}" for _ in range(3)]
    answers = [report(citizen, address) for address in addresses]
    other = report(inspector, addresses[-1])

    assert [a.status_code for a in answers[:2]] == [201, 201]
    retry_after(answers[2])
    assert answers[2].json()["error"]["code"] == "too_many_requests"
    assert other.status_code == 201
    assert cases_with(engine, marker) == 3


# ---------------------------------------------------------------- without Redis


def test_without_redis_reports_still_come_in(
    security_db: URL, inside: tuple[float, float], engine: Engine, tmp_path: Path
) -> None:
    app = create_app(
        {
            "DATABASE_URL": security_db.render_as_string(hide_password=False),
            "REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens there
            "SECRET_KEY": "x",
            "PHOTO_DIR": str(tmp_path),
            "OPEN311_RATE_PER_KEY": 1,
            "OPEN311_RATE_PER_IP": 1,
            "RATE_READS_PER_CLIENT": 1,
        }
    )
    marker = f"no-redis-{uuid.uuid4().hex}"
    try:
        with serving(app) as url:
            posts = [
                requests.post(f"{url}{OPEN311}/requests.json", data=open311_fields(inside, marker))
                for _ in range(3)
            ]
            reads = [
                requests.get(f"{url}{OPEN311}/requests.json", params={"service_request_id": "0"})
                for _ in range(3)
            ]
    finally:
        app.extensions[DB_EXTENSION].dispose()

    assert [p.status_code for p in posts] == [201, 201, 201], posts[-1].text[:300]
    assert [r.status_code for r in reads] == [200, 200, 200]
    assert cases_with(engine, marker) == 3
