"""The audit trail, attacked over HTTP against the real server: failed and throttled sign-ins,
lockouts, refused api keys, other units' cases answered 404 and rate-limit hits are recorded
with their time, client address and account; the administrators' page lists them (and only
administrators see it); the table refuses to be rewritten; repeated hits are sampled; and a
failure to record never breaks the answer.

Each test speaks from a loopback address of its own (127.x.y.z), so that its events are told
apart from every other test's by their client address."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from redis import Redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from gridmgmt.app.demo import DEMO_API_KEY, DEMO_PASSWORD
from gridmgmt.kernel import security_events
from gridmgmt.kernel.security_events import SAMPLE_PREFIX, SecurityEventKind
from tests.conftest import as_owner
from tests.security.conftest import sign_in
from tests.security.test_rate_limits import FromAddress, fresh_window, new_address
from tests.security.test_reports import Reporter, report_fields

OPEN311 = "/open311/v2"


# ---------------------------------------------------------------- helpers and fixtures


def forget(redis_url: str, *patterns: str) -> None:
    """Delete the Redis keys matching `patterns` (sign-in counters, rate and event samples)."""
    conn = Redis.from_url(redis_url)
    try:
        for pattern in patterns:
            keys = list(conn.scan_iter(pattern))
            if keys:
                conn.delete(*keys)
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def fresh_counters(security_app: Flask) -> Iterator[None]:
    """No counted wrong passwords, rate hits or event samples before or after a test."""
    patterns = ("gridmgmt:signin:*", "gridmgmt:rate:*", f"{SAMPLE_PREFIX}*")
    forget(security_app.config["REDIS_URL"], *patterns)
    yield
    forget(security_app.config["REDIS_URL"], *patterns)


@pytest.fixture
def settings(security_app: Flask, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Change the served app's settings for one test (restored after it)."""

    def change(**values: Any) -> None:
        for name, value in values.items():
            assert name in security_app.config, name
            monkeypatch.setitem(security_app.config, name, value)

    return change


def events_from(engine: Engine, address: str, kind: SecurityEventKind | None = None) -> list[Any]:
    """The events recorded for a client address (of one kind), oldest first."""
    query = "SELECT * FROM security_events WHERE client = :client"
    if kind is not None:
        query += " AND kind = :kind"
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(query + " ORDER BY id"),
                {"client": address, "kind": kind.value if kind else None},
            )
        )


def user_id(engine: Engine, username: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(text("SELECT id FROM users WHERE username = :u"), {"u": username})
        )


def at_address(http: requests.Session) -> str:
    """Have `http` speak from a loopback address of its own from now on; that address."""
    address = new_address()
    http.mount("http://", FromAddress(address))
    return address


def from_address() -> tuple[requests.Session, str]:
    """A new client speaking from a loopback address of its own, and that address."""
    http = requests.Session()
    return http, at_address(http)


def try_password(server: str, username: str, password: str, http: requests.Session) -> Any:
    """One attempt through the login form (its CSRF token first)."""
    form = http.get(f"{server}/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    return http.post(
        f"{server}/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
        allow_redirects=False,
    )


def row_text(row: Any) -> str:
    """Everything an event row holds, as text (to look for a secret in it)."""
    return " ".join(str(value) for value in row._mapping.values())


# ---------------------------------------------------------------- sign-in


def test_a_wrong_password_is_recorded_with_client_and_username(server: str, engine: Engine) -> None:
    http, address = from_address()
    wrong = f"not-the-password-{uuid.uuid4().hex[:8]}"

    answer = try_password(server, "operator", wrong, http)

    assert answer.status_code == 401
    (event,) = events_from(engine, address, SecurityEventKind.SIGNIN_FAILED)
    assert event.username == "operator"
    assert event.user_id == user_id(engine, "operator")
    assert event.path == "/login"
    assert event.detail == {"reason": "wrong_password"}
    assert time.time() - event.at.timestamp() < 60
    assert wrong not in row_text(event)  # never the password


def test_an_unknown_username_is_recorded_without_an_account(server: str, engine: Engine) -> None:
    http, address = from_address()
    name = f"nobody-{uuid.uuid4().hex[:8]}"

    assert try_password(server, name, "whatever-it-is-123", http).status_code == 401

    (event,) = events_from(engine, address, SecurityEventKind.SIGNIN_FAILED)
    assert (event.username, event.user_id) == (name, None)
    assert event.detail == {"reason": "unknown_user"}


def test_a_lockout_and_each_refused_attempt_are_recorded(
    server: str, engine: Engine, settings: Callable[..., None]
) -> None:
    settings(SIGNIN_FAILURES_PER_ACCOUNT=3)
    http, address = from_address()

    answers = [try_password(server, "leader", f"guess-{n}", http) for n in range(3)]
    refused = try_password(server, "leader", DEMO_PASSWORD, http)  # the right one, too late

    assert [a.status_code for a in answers] == [401, 401, 401]
    assert refused.status_code == 429
    failed = events_from(engine, address, SecurityEventKind.SIGNIN_FAILED)
    assert [e.detail["reason"] for e in failed] == ["wrong_password"] * 3
    (lockout,) = events_from(engine, address, SecurityEventKind.SIGNIN_LOCKOUT)
    assert (lockout.username, lockout.user_id) == ("leader", user_id(engine, "leader"))
    assert lockout.detail["scope"] == "account"
    assert lockout.detail["failures"] == 3
    assert lockout.id > failed[-1].id  # the third failure locked the account
    (throttled,) = events_from(engine, address, SecurityEventKind.SIGNIN_THROTTLED)
    assert throttled.username == "leader"
    assert 0 < throttled.detail["retry_after"] <= 15 * 60


# ---------------------------------------------------------------- api keys


def test_an_unknown_api_key_is_refused_in_open311s_format_and_recorded(
    server: str, engine: Engine, inside: tuple[float, float]
) -> None:
    http, address = from_address()
    guess = f"guessed-{uuid.uuid4().hex}"
    fields = {"api_key": guess, "service_code": "E0102", "lat": inside[1], "long": inside[0]}

    answer = http.post(f"{server}{OPEN311}/requests.json", data=fields)

    assert answer.status_code == 403
    assert answer.json() == [{"code": 403, "description": "api_key is not valid"}]
    (event,) = events_from(engine, address, SecurityEventKind.API_KEY_REFUSED)
    assert (event.api_key_id, event.username, event.user_id) == (None, None, None)
    assert event.path == f"{OPEN311}/requests.json"
    assert event.detail == {"reason": "unknown"}
    assert guess not in row_text(event)


def test_a_read_with_an_unknown_key_is_refused_and_one_without_a_key_is_not(
    server: str, engine: Engine
) -> None:
    http, address = from_address()
    listing = f"{server}{OPEN311}/requests.xml"

    refused = http.get(listing, params={"service_request_id": "0", "api_key": "bad-key"})
    keyless = http.get(listing, params={"service_request_id": "0"})
    good = http.get(listing, params={"service_request_id": "0", "api_key": DEMO_API_KEY})

    assert refused.status_code == 403
    assert "<code>403</code>" in refused.text and "api_key is not valid" in refused.text
    assert (keyless.status_code, good.status_code) == (200, 200)
    (event,) = events_from(engine, address, SecurityEventKind.API_KEY_REFUSED)
    assert "bad-key" not in row_text(event)


# ---------------------------------------------------------------- other units' cases


@pytest.fixture(scope="module")
def community_case(server: str, inside: tuple[float, float]) -> int:
    """A case dispatched to the first community's unit (the demo `staff`), not `water`'s."""
    inspector, operator = Reporter(server, "inspector"), Reporter(server, "operator")
    dispatcher = Reporter(server, "dispatcher")
    case = inspector.api(report_fields(inside))
    assert case.status_code == 201, case.text[:300]
    number = case.json()["id"]
    for who, action in ((operator, "file"), (dispatcher, "dispatch")):
        answer = who.api({}, path=f"/api/cases/{number}/actions/{action}")
        assert answer.status_code == 200, (action, answer.text[:300])
    return int(number)


def test_another_units_case_is_a_404_and_recorded(
    server: str, engine: Engine, community_case: int, settings: Callable[..., None]
) -> None:
    settings(RATE_ACTIONS_PER_CLIENT=0, RATE_ACTIONS_PER_ACCOUNT=0)
    water = sign_in(server, "water")
    address = at_address(water)
    own = sign_in(server, "staff")

    page = water.get(f"{server}/cases/{community_case}")
    api = water.get(f"{server}/api/cases/{community_case}")

    assert (page.status_code, api.status_code) == (404, 404)
    assert own.get(f"{server}/cases/{community_case}").status_code == 200  # its own unit's
    events = events_from(engine, address, SecurityEventKind.CROSS_UNIT)
    assert [e.path for e in events] == [f"/cases/{community_case}", f"/api/cases/{community_case}"]
    assert {(e.username, e.user_id) for e in events} == {("water", user_id(engine, "water"))}
    assert events[0].detail == {"case_id": community_case}
    assert events[1].detail == {"case_id": community_case, "hits": 2}


def test_the_event_outlives_the_refused_actions_rollback(
    server: str, engine: Engine, community_case: int
) -> None:
    """An action on another unit's case: the request's transaction rolls back (404), the
    event written beside it stays."""
    water = Reporter(server, "water")
    address = at_address(water.http)

    answer = water.api({}, path=f"/api/cases/{community_case}/actions/accept")

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
    (event,) = events_from(engine, address, SecurityEventKind.CROSS_UNIT)
    assert event.path == f"/api/cases/{community_case}/actions/accept"


# ---------------------------------------------------------------- rate limits and sampling


def test_a_rate_limit_hit_is_recorded_and_a_flood_is_sampled(
    server: str, engine: Engine, settings: Callable[..., None]
) -> None:
    settings(RATE_READS_PER_CLIENT=2)
    fresh_window(need=20.0)  # the limit's window and the sampling's minute are the same
    http, address = from_address()
    listing = f"{server}{OPEN311}/requests.json"

    answers = [http.get(listing, params={"service_request_id": "0"}) for _ in range(12)]

    assert [a.status_code for a in answers] == [200, 200] + [429] * 10
    events = events_from(engine, address, SecurityEventKind.RATE_LIMITED)
    # 10 hits: the 1st, 2nd, 4th and 8th are written, each saying which hit it was.
    assert [e.detail.get("hits") for e in events] == [None, 2, 4, 8]
    assert events[0].detail == {"limit": "reads", "most": 2, "window": 60}
    assert {e.path for e in events} == {f"{OPEN311}/requests.json"}


def test_a_signed_in_users_rate_limit_hit_names_the_account(
    server: str, engine: Engine, settings: Callable[..., None], inside: tuple[float, float]
) -> None:
    settings(RATE_REPORTS_PER_ACCOUNT=1, RATE_REPORTS_PER_CLIENT=100)
    fresh_window()
    inspector = Reporter(server, "inspector")
    address = at_address(inspector.http)

    answers = [inspector.api(report_fields(inside)) for _ in range(2)]

    assert [a.status_code for a in answers] == [201, 429]
    (event,) = events_from(engine, address, SecurityEventKind.RATE_LIMITED)
    assert (event.username, event.user_id) == ("inspector", user_id(engine, "inspector"))
    assert event.detail["limit"] == "reports"


# ---------------------------------------------------------------- the administrators' page


@pytest.fixture(scope="module")
def admin(server: str) -> requests.Session:
    return sign_in(server, "admin")


def test_the_admin_page_lists_the_events_newest_first(
    server: str, engine: Engine, admin: requests.Session
) -> None:
    http, address = from_address()
    for name in ("first-try", "second-try"):
        try_password(server, name, "wrong-password-123", http)
    http.post(f"{server}{OPEN311}/requests.json", data={"api_key": "nope"})

    page = admin.get(f"{server}/admin/security", params={"who": address})

    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    rows = re.findall(r'<tr data-event="(\d+)" data-kind="(\w+)">', page.text)
    assert [kind for _, kind in rows] == ["api_key_refused", "signin_failed", "signin_failed"]
    assert [int(i) for i, _ in rows] == sorted((int(i) for i, _ in rows), reverse=True)
    assert page.text.index("second-try") < page.text.index("first-try")
    assert address in page.text and "unknown username" in page.text


def test_the_admin_page_filters_by_kind_and_account_and_pages(
    server: str, engine: Engine, admin: requests.Session
) -> None:
    http, address = from_address()
    name = f"pager-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        try_password(server, name, "wrong-password-123", http)
    http.post(f"{server}{OPEN311}/requests.json", data={"api_key": "nope"})
    ids = [e.id for e in events_from(engine, address, SecurityEventKind.SIGNIN_FAILED)]

    by_kind = admin.get(
        f"{server}/admin/security", params={"who": address, "kind": "api_key_refused"}
    )
    by_name = admin.get(f"{server}/admin/security", params={"who": name.upper()})
    older = admin.get(f"{server}/admin/security", params={"who": name, "before": ids[-1]})

    assert re.findall(r'data-kind="(\w+)"', by_kind.text) == ["api_key_refused"]
    assert [int(i) for i in re.findall(r'data-event="(\d+)"', by_name.text)] == ids[::-1]
    assert [int(i) for i in re.findall(r'data-event="(\d+)"', older.text)] == ids[-2::-1]
    assert 'rel="next"' not in older.text  # the last page


def test_the_admin_pages_next_link_starts_below_the_last_event_shown(
    security_app: Flask, engine: Engine
) -> None:
    from gridmgmt.app.security import find_events

    with security_app.test_request_context("/admin/security"):
        first, below = find_events(None, "", None, size=2)
        second, _ = find_events(None, "", below, size=2)
    assert below == first[-1].event.id
    assert all(row.event.id < below for row in second)


def test_the_admin_page_is_for_administrators_only(server: str) -> None:
    anonymous = requests.get(f"{server}/admin/security", allow_redirects=False)
    assert anonymous.status_code in (302, 303)
    assert "/login" in anonymous.headers["Location"]
    for role in ("operator", "leader", "staff"):
        answer = sign_in(server, role).get(f"{server}/admin/security", allow_redirects=False)
        assert answer.status_code == 403, role


def test_the_admin_page_in_chinese_on_a_phone(server: str, admin: requests.Session) -> None:
    page = admin.get(
        f"{server}/admin/security",
        headers={
            "Accept-Language": "zh-CN,zh;q=0.9",
            "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
        },
    )
    assert page.status_code == 200
    assert '<html lang="zh">' in page.text
    assert 'name="viewport"' in page.text
    assert '<div class="table-wrap">' in page.text or "empty" in page.text
    assert "<script" not in page.text  # nothing for the CSP to allow


def test_the_menu_and_home_page_link_to_it_for_the_admin(
    server: str, admin: requests.Session
) -> None:
    assert 'href="/admin/security"' in admin.get(f"{server}/").text
    assert 'href="/admin/security"' in admin.get(f"{server}/admin/security").text
    assert 'href="/admin/security"' not in sign_in(server, "leader").get(f"{server}/").text


# ---------------------------------------------------------------- the table and the writer


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE security_events SET username = 'someone-else'",
        "DELETE FROM security_events",
        "TRUNCATE security_events",
    ],
)
def test_the_table_refuses_to_be_rewritten(
    security_db: URL, engine: Engine, server: str, statement: str
) -> None:
    http, address = from_address()
    try_password(server, "nobody-at-all", "wrong-password-123", http)
    assert events_from(engine, address)
    owner = create_engine(as_owner(security_db))  # the tables' owner, not only the app's role
    try:
        with (
            pytest.raises(DBAPIError, match="security_events is append-only"),
            owner.begin() as connection,
        ):
            connection.execute(text(statement))
    finally:
        owner.dispose()
    assert events_from(engine, address)


def test_a_failure_to_record_is_logged_not_raised(
    security_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with security_app.test_request_context("/somewhere", environ_base={"REMOTE_ADDR": "10.9.8.7"}):
        written = security_events.record(
            SecurityEventKind.SIGNIN_FAILED, username="x", api_key=2_000_000_000
        )  # no such key: the foreign key refuses the row
    assert written is False
    assert "could not record the security event signin_failed" in caplog.text
