"""Signing in, attacked over HTTP: sessions end on the server (logout, new password,
deactivation, idle and absolute timeouts), password guessing is throttled per account and per
client, unknown usernames cost a password check, and the app refuses to run without a secret
key outside the demo."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator

import pyotp
import pytest
import requests
from flask import Flask
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from gridmgmt import create_app
from gridmgmt.app.demo import DEMO_PASSWORD
from gridmgmt.kernel.config import Config
from gridmgmt.kernel.db import EXTENSION as DB_EXTENSION
from tests.security.conftest import sign_in


@pytest.fixture(autouse=True)
def no_signin_counters(security_app: Flask) -> Iterator[None]:
    """Each test starts and ends without counted wrong passwords (they live in Redis)."""
    redis = Redis.from_url(security_app.config["REDIS_URL"])

    def forget() -> None:
        keys = list(redis.scan_iter("gridmgmt:signin:*"))
        if keys:
            redis.delete(*keys)

    forget()
    yield
    forget()
    redis.close()


@pytest.fixture
def settings(security_app: Flask) -> Iterator[dict[str, object]]:
    """Change the served app's settings for one test; restored afterwards."""
    saved = dict(security_app.config)
    yield security_app.config
    security_app.config.clear()
    security_app.config.update(saved)


def try_password(server: str, username: str, password: str) -> requests.Response:
    """One attempt through the login form, as a fresh client."""
    client = requests.Session()
    form = client.get(f"{server}/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    return client.post(
        f"{server}/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
        allow_redirects=False,
    )


def signed_in(client: requests.Session, server: str) -> bool:
    """Whether `client`'s cookies still open the operator's inbox."""
    answer = client.get(f"{server}/inbox", allow_redirects=False)
    assert answer.status_code in (200, 302, 401), answer.status_code
    return answer.status_code == 200


def log_out(client: requests.Session, server: str) -> None:
    page = client.get(f"{server}/inbox").text
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert token is not None
    answer = client.post(
        f"{server}/logout", headers={"X-CSRFToken": token.group(1)}, allow_redirects=False
    )
    assert answer.status_code in (302, 303)


def cli(security_app: Flask, *args: str, stdin: str | None = None) -> str:
    with security_app.app_context():  # this app's database, whatever another test pushed
        result = security_app.test_cli_runner().invoke(args=list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result.output


def test_cookie_copied_before_logout_is_refused(server: str) -> None:
    client = sign_in(server, "operator")
    copied = requests.Session()
    copied.cookies.update(client.cookies)
    assert signed_in(copied, server)
    log_out(client, server)
    assert not signed_in(copied, server)


def test_a_signed_out_request_answered_after_sign_in_keeps_the_session(server: str) -> None:
    # The phone app asks /api/offline/session on every page: one sent from the login page
    # just before the form is answered after it. Its answer must not put back the signed-out
    # cookie (Flask-Login's session protection used to write `_fresh` into it).
    client = requests.Session()
    client.get(f"{server}/login")  # a signed-out session holding a CSRF token
    before = client.cookies.get("session")
    late = requests.get(f"{server}/api/offline/session", cookies={"session": before})
    assert late.status_code == 200
    assert "session=" not in late.headers.get("Set-Cookie", "")
    assert late.json()["user"] == ""


def test_logout_ends_the_other_sessions_too(server: str) -> None:
    phone, laptop = sign_in(server, "operator"), sign_in(server, "operator")
    log_out(laptop, server)
    assert not signed_in(phone, server)


def test_new_password_ends_the_sessions(server: str, security_app: Flask) -> None:
    client = sign_in(server, "operator")
    new = "a-brand-new-operator-password"
    cli(security_app, "users", "password", "operator", "--password-stdin", stdin=new + "\n")
    try:
        assert not signed_in(client, server)
        assert signed_in(sign_in(server, "operator", new), server)
    finally:
        cli(
            security_app,
            "users",
            "password",
            "operator",
            "--password-stdin",
            stdin=DEMO_PASSWORD + "\n",
        )


def test_deactivation_ends_the_sessions(server: str, security_app: Flask) -> None:
    client = sign_in(server, "operator")
    cli(security_app, "users", "deactivate", "operator")
    try:
        assert not signed_in(client, server)
        assert try_password(server, "operator", DEMO_PASSWORD).status_code == 401
    finally:
        cli(security_app, "users", "activate", "operator")
    assert signed_in(sign_in(server, "operator"), server)


def test_idle_session_is_signed_out(server: str, settings: dict[str, object]) -> None:
    client = sign_in(server, "operator")
    assert signed_in(client, server)
    settings["SESSION_IDLE_MINUTES"] = 1 / 60  # one second
    time.sleep(1.5)
    assert not signed_in(client, server)
    settings["SESSION_IDLE_MINUTES"] = 120.0
    assert not signed_in(client, server)  # the session was emptied, not just turned away


def test_session_has_an_absolute_lifetime(server: str, settings: dict[str, object]) -> None:
    client = sign_in(server, "operator")
    settings["SESSION_MAX_HOURS"] = 1.5 / 3600
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # in use all the time: never idle
        assert signed_in(client, server)
        time.sleep(0.2)
    time.sleep(1.0)
    assert not signed_in(client, server)


def test_session_cookie_flags(server: str) -> None:
    answer = try_password(server, "operator", DEMO_PASSWORD)
    assert answer.status_code in (302, 303)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Expires" not in cookie  # a browser-session cookie, no remember-me


def test_production_cookie_is_secure() -> None:
    assert Config().SESSION_COOKIE_SECURE is True
    assert Config.from_env({}).SESSION_COOKIE_SECURE is True


def test_password_guessing_is_locked_out(server: str, security_app: Flask) -> None:
    answers = [try_password(server, "dispatcher", f"guess-{n}").status_code for n in range(25)]
    limit = security_app.config["SIGNIN_FAILURES_PER_ACCOUNT"]
    assert answers[:limit] == [401] * limit
    assert set(answers[limit:]) == {429}
    refused = try_password(server, "dispatcher", DEMO_PASSWORD)  # the right one, too late
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert "Too many wrong passwords" in refused.text
    # Another account is not locked, nor this client (its 5 counted failures are under 30).
    assert try_password(server, "leader", DEMO_PASSWORD).status_code in (302, 303)
    out = cli(security_app, "users", "unlock", "dispatcher")
    assert "unlocked" in out
    assert try_password(server, "dispatcher", DEMO_PASSWORD).status_code in (302, 303)


def test_lockout_answer_is_in_the_readers_language(server: str) -> None:
    for n in range(6):
        try_password(server, "water", f"guess-{n}")
    client = requests.Session()
    client.headers["Accept-Language"] = "zh-CN,zh;q=0.9"
    form = client.get(f"{server}/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    answer = client.post(
        f"{server}/login",
        data={"username": "water", "password": DEMO_PASSWORD, "csrf_token": token.group(1)},
    )
    assert answer.status_code == 429
    assert 'lang="zh' in answer.text


def test_lockout_lifts_with_time(server: str, settings: dict[str, object]) -> None:
    settings["SIGNIN_LOCKOUT_MINUTES"] = 1  # the smallest setting: a minute...
    for n in range(5):
        try_password(server, "inspector", f"guess-{n}")
    assert try_password(server, "inspector", DEMO_PASSWORD).status_code == 429
    redis = Redis.from_url(str(settings["REDIS_URL"]))
    keys = list(redis.scan_iter("gridmgmt:signin:account:*"))
    assert keys and all(0 < redis.ttl(key) <= 60 for key in keys)
    for key in keys:  # ...so time passes in Redis: the counter expires
        redis.pexpire(key, 1)
    time.sleep(0.1)
    assert try_password(server, "inspector", DEMO_PASSWORD).status_code in (302, 303)
    redis.close()


def test_many_accounts_from_one_client_are_locked(server: str, settings: dict[str, object]) -> None:
    settings["SIGNIN_FAILURES_PER_CLIENT"] = 8
    answers = [
        try_password(server, f"nobody{n}", "some-wrong-password").status_code for n in range(10)
    ]
    assert answers[:8] == [401] * 8
    assert answers[8:] == [429, 429]
    assert try_password(server, "leader", DEMO_PASSWORD).status_code == 429


def test_unknown_username_costs_a_password_check(server: str) -> None:
    def timed(username: str) -> float:
        started = time.perf_counter()
        assert try_password(server, username, "wrong-password-here").status_code == 401
        return time.perf_counter() - started

    # Interleaved, under the per-account limit; the median of five of each.
    wrong, unknown = [], []
    for n in range(5):
        wrong.append(timed(["citizen", "staff", "leader", "admin", "operator"][n]))
        unknown.append(timed(f"no-such-user-{n}"))
    # A password check (scrypt) takes tens of milliseconds; a page without it, a few.
    assert statistics.median(unknown) > 0.6 * statistics.median(wrong), (unknown, wrong)


def test_short_and_common_passwords_refused(security_app: Flask) -> None:
    runner = security_app.test_cli_runner()
    for password in ("short-pass1", "q1w2e3r4t5y6", "1QAZ2WSX3EDC"):
        result = runner.invoke(
            args=["users", "create", "weakling", "--role", "citizen", "--password-stdin"],
            input=password + "\n",
        )
        assert result.exit_code != 0, password
    assert "at least 12 characters" in result.output or "most common" in result.output


def test_no_secret_key_no_app(security_db: URL, redis_url: str) -> None:
    config = {"DATABASE_URL": security_db.render_as_string(hide_password=False)}
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(Config(REDIS_URL=redis_url, **config))
    demo = create_app(Config(REDIS_URL=redis_url, DEMO=True, **config))
    assert len(demo.config["SECRET_KEY"]) >= 32
    assert demo.config["SESSION_COOKIE_SECURE"] is False
    demo.extensions[DB_EXTENSION].dispose()


def test_tokens_are_stored_per_user(security_db: URL) -> None:
    engine = create_engine(security_db)
    with engine.connect() as conn:
        tokens = conn.scalars(text("SELECT session_token FROM users")).all()
    engine.dispose()
    assert len(set(tokens)) == len(tokens) and all(len(t) >= 32 for t in tokens)


def sign_in_with_code(server: str, username: str, code: str) -> requests.Response:
    client = requests.Session()
    form = client.get(f"{server}/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    return client.post(
        f"{server}/login",
        data={
            "username": username,
            "password": DEMO_PASSWORD,
            "code": code,
            "csrf_token": token.group(1),
        },
        allow_redirects=False,
    )


def test_admin_with_a_second_factor_needs_its_code(server: str, security_app: Flask) -> None:
    before = sign_in(server, "admin")
    uri = cli(security_app, "users", "totp", "admin").strip().splitlines()[0]
    assert uri.startswith("otpauth://totp/")
    totp = pyotp.parse_uri(uri)
    try:
        assert not signed_in(before, server)  # a new factor ends the sessions
        assert sign_in_with_code(server, "admin", "").status_code == 401
        wrong = f"{(int(totp.now()) + 500_000) % 1_000_000:06d}"
        assert sign_in_with_code(server, "admin", wrong).status_code == 401
        assert sign_in_with_code(server, "admin", totp.now()).status_code in (302, 303)
    finally:
        cli(security_app, "users", "totp", "admin", "--remove")


def test_production_refuses_an_admin_without_a_second_factor(
    server: str, settings: dict[str, object]
) -> None:
    settings["ADMIN_TOTP_REQUIRED"] = True
    answer = try_password(server, "admin", DEMO_PASSWORD)
    assert answer.status_code == 403
    assert "flask users totp admin" in answer.text
    assert try_password(server, "operator", DEMO_PASSWORD).status_code in (302, 303)


def test_production_requires_a_second_factor_by_default() -> None:
    assert Config().ADMIN_TOTP_REQUIRED is True
