"""Signing in and out, sessions, CSRF, role checks and the per-role menu."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFProtect
from redis.exceptions import RedisError

from gridmgmt.kernel import metrics, security_events
from gridmgmt.kernel.auth import (
    authenticate,
    check_second_factor,
    find_account,
    record_signin,
    signin_failure_reason,
)
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import N_
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.i18n import is_local_path
from gridmgmt.kernel.models import Role, User
from gridmgmt.kernel.queue import queues
from gridmgmt.kernel.security_events import SecurityEventKind

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__, template_folder="templates")
login_manager = LoginManager()
csrf = CSRFProtect()
F = TypeVar("F", bound=Callable[..., Any])

# What each role finds in the menu: (label, endpoint).
MENU: dict[str, list[tuple[str, str]]] = {
    Role.INSPECTOR: [
        (N_("Report a problem"), "cases.report_form"),
        (N_("My cases"), "cases.my_cases"),
        (N_("Verification tasks"), "cases.verification_tasks"),
    ],
    Role.OPERATOR: [
        (N_("Inbox"), "cases.inbox"),
        (N_("Report a problem"), "cases.report_form"),
        (N_("Search"), "case_search.search_page"),
        (N_("Map"), "maps.map_page"),
        (N_("Follow-up complaints"), "participation.review_queue"),
    ],
    Role.DISPATCHER: [
        (N_("Dispatch board"), "dispatch.board"),
        (N_("Search"), "case_search.search_page"),
        (N_("Map"), "maps.map_page"),
    ],
    Role.UNIT_STAFF: [
        (N_("Work queue"), "cases.work_queue"),
        (N_("Search"), "case_search.search_page"),
    ],
    Role.CITIZEN: [
        (N_("Report a problem"), "cases.report_form"),
        (N_("My cases"), "cases.my_cases"),
        (N_("Reports near me"), "participation.nearby_page"),
    ],
    Role.LEADER: [
        (N_("Map"), "maps.map_page"),
        (N_("Evaluation"), "maps.evaluation_page"),
        (N_("Dashboard"), "maps.dashboard"),
        (N_("Search"), "case_search.search_page"),
    ],
    Role.ADMIN: [
        (N_("Setup check"), "admin.setup"),
        (N_("People"), "admin.people"),
        (N_("Units"), "dispatch_admin.units"),
        (N_("Routing"), "dispatch_admin.routing"),
        (N_("Catalogue"), "catalogue_admin.catalogue"),
        (N_("Calendar"), "calendar_admin.calendar_page"),
        (N_("Territory"), "grids_admin.territory"),
        (N_("City settings"), "admin.city_settings_page"),
        (N_("API keys"), "admin.keys"),
        (N_("Audit log"), "admin.audit"),
        (N_("Security events"), "security.events"),
        (N_("Dispatch board"), "dispatch.board"),
        (N_("Search"), "case_search.search_page"),
    ],
}
ANONYMOUS_MENU = [
    (N_("Report a problem"), "cases.report_form"),
    (N_("Track a case"), "cases.track"),
    (N_("Reports near me"), "participation.nearby_page"),
]


# Session keys: when the user signed in and when the session was last used (Unix seconds).
SIGNED_IN_AT = "signed_in_at"
SEEN_AT = "seen_at"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The signed-in user of a session: refused (and the session emptied) when the session's
    token is no longer the user's (signed out, new password, deactivated), the user is
    inactive, or the session is idle or old past the settings."""
    user = _session_user(user_id)
    if user is None:
        session.clear()
    return user


def _session_user(user_id: str) -> User | None:
    id_part, _, token = user_id.partition(":")
    if not (id_part.isascii() and id_part.isdigit() and token):
        return None
    now = time.time()
    signed_in_at, seen_at = session.get(SIGNED_IN_AT), session.get(SEEN_AT)
    if not isinstance(signed_in_at, int | float) or not isinstance(seen_at, int | float):
        return None
    idle = float(current_app.config["SESSION_IDLE_MINUTES"]) * 60
    if (
        now - seen_at > idle
        or now - signed_in_at > float(current_app.config["SESSION_MAX_HOURS"]) * 3600
    ):
        return None
    user = db.session.get(User, int(id_part))
    if user is None or not user.active:
        return None
    if not hmac.compare_digest(user.session_token.encode(), token.encode()):
        return None
    if now - seen_at > min(60.0, idle / 4):  # not a new cookie on every request
        session[SEEN_AT] = now
    return user


# Sign-in throttling: Redis counters of wrong passwords per username and per client address.
# A counter lasts SIGNIN_LOCKOUT_MINUTES from its first failure; the failure that reaches a
# limit restarts it, so the lock lasts that long from then.
def _account_key(username: str) -> str:
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return f"gridmgmt:signin:account:{account}"


def _throttle_keys(username: str) -> list[tuple[str, int]]:
    config = current_app.config
    return [
        (_account_key(username), int(config["SIGNIN_FAILURES_PER_ACCOUNT"])),
        (
            f"gridmgmt:signin:client:{request.remote_addr}",
            int(config["SIGNIN_FAILURES_PER_CLIENT"]),
        ),
    ]


def signin_locked_for(username: str) -> int:
    """Seconds until `username` may try again from this client (0: now); fails open."""
    keys = _throttle_keys(username)
    try:
        counts = queues.redis.mget([key for key, _ in keys])
        waits = [
            queues.redis.ttl(key)
            for (key, limit), count in zip(keys, counts, strict=True)
            if count is not None and int(count) >= limit
        ]
    except RedisError:
        log.warning("sign-in throttling is off: Redis is unreachable")
        return 0
    return max((max(wait, 1) for wait in waits), default=0)


def record_signin_failure(username: str, user: User | None = None) -> None:
    """Count a wrong password for `username` (the account `user`, if it exists) and for this
    client; the failure that reaches a limit starts a lock and is recorded as a lockout."""
    keys = _throttle_keys(username)
    window = int(current_app.config["SIGNIN_LOCKOUT_MINUTES"]) * 60
    try:
        counts = queues.count_hits([key for key, _ in keys], window)
        for scope, (key, limit), count in zip(("account", "client"), keys, counts, strict=True):
            if count == limit:
                queues.redis.expire(key, window)
                security_events.record(
                    SecurityEventKind.SIGNIN_LOCKOUT,
                    username=username,
                    user=user,
                    detail={"scope": scope, "failures": count, "minutes": window // 60},
                )
    except RedisError:
        log.warning("sign-in throttling is off: Redis is unreachable")


def lift_signin_lock(username: str) -> bool:
    """Forget the wrong passwords counted for `username` (all clients' locks stay); True
    when there were some.

    Raises:
        RedisError: Redis is unreachable.
    """
    return bool(queues.redis.delete(_account_key(username)))


def role_required(*roles: Role) -> Callable[[F], F]:
    """Let only signed-in users with one of `roles` through: others get 403 (or the login)."""

    def wrap(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in {r.value for r in roles}:
                abort(403)
            return view(*args, **kwargs)

        return cast(F, guarded)

    return wrap


def home_for(user: User) -> str:
    """The first page of a role."""
    entries = MENU.get(Role(user.role))
    return url_for(entries[0][1]) if entries else url_for("home.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign in with a username and password."""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        wait = signin_locked_for(username)
        if wait:
            security_events.record(
                SecurityEventKind.SIGNIN_THROTTLED, username=username, detail={"retry_after": wait}
            )
            metrics.count_sign_in_failure("throttled")
            minutes = math.ceil(wait / 60)
            flash(
                _(
                    "Too many wrong passwords: try again in %(minutes)s minutes.",
                    minutes=minutes,
                ),
                "error",
            )
            return render_template("auth/login.html"), 429, {"Retry-After": str(wait)}
        user = authenticate(db.session(), username, request.form.get("password", ""))
        # A wrong second factor answers as a wrong password: it tells nothing about which.
        if user is None or not check_second_factor(user, request.form.get("code", "")):
            account = user or find_account(db.session(), username)
            reason = signin_failure_reason(user, account)
            security_events.record(
                SecurityEventKind.SIGNIN_FAILED,
                username=username,
                user=account,
                detail={"reason": reason},
            )
            metrics.count_sign_in_failure(reason)
            record_signin_failure(username, account)
            flash(_("Wrong username or password."), "error")
            return render_template("auth/login.html"), 401
        if (
            user.role == Role.ADMIN
            and user.totp_secret is None
            and current_app.config.get("ADMIN_TOTP_REQUIRED", True)
        ):
            flash(
                _(
                    "Administrators sign in with a code from an authenticator app: "
                    "ask for one with flask users totp %(username)s.",
                    username=user.username,
                ),
                "error",
            )
            return render_template("auth/login.html"), 403
        with contextlib.suppress(RedisError):
            lift_signin_lock(username)
        login_user(user)
        with db.transaction() as db_session:
            record_signin(db_session, user.id)
        now = time.time()
        session[SIGNED_IN_AT] = now
        session[SEEN_AT] = now
        target = request.args.get("next", "")
        if is_local_path(target):
            return redirect(target)
        return redirect(home_for(user))
    return render_template("auth/login.html")


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Sign out: this session and every other session of the user end."""
    if current_user.is_authenticated:
        with db.transaction() as db_session:
            user = db_session.get(User, current_user.id)
            if user is not None:
                user.end_sessions()
    logout_user()
    session.clear()
    return redirect(url_for("home.index"))


def _menu() -> dict[str, Any]:
    entries = MENU.get(current_user.role, []) if current_user.is_authenticated else ANONYMOUS_MENU
    there = current_app.view_functions  # a page of a package the app was built without: left out
    return {
        "nav_links": [
            (label, url_for(endpoint)) for label, endpoint in entries if endpoint in there
        ],
    }


def init_app(app: Flask) -> None:
    """Sessions, CSRF on every form, the login pages and the menu.

    Raises:
        RuntimeError: no SECRET_KEY outside the demo.
    """
    if not app.config.get("SECRET_KEY"):
        if not app.config.get("DEMO"):
            raise RuntimeError(
                "GRIDMGMT_SECRET_KEY is not set: give the app a long random secret key "
                "(only the demo, GRIDMGMT_DEMO=1, makes up one of its own)"
            )
        app.config["SECRET_KEY"] = secrets.token_hex(32)
    # The session cookie: out of scripts' reach, not sent along by other sites' forms, and
    # over HTTPS only except in the demo (plain HTTP on this machine). No remember-me cookie.
    secure = bool(app.config.get("SESSION_COOKIE_SECURE", True)) and not app.config.get("DEMO")
    if app.config.get("DEMO"):
        app.config["ADMIN_TOTP_REQUIRED"] = False  # the demo admin signs in with its password
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=secure,
    )
    login_manager.init_app(app)
    # No Flask-Login "session protection": in its default mode it writes `_fresh` into every
    # signed-out session that holds anything (a CSRF token), so a request sent just before
    # sign-in (the phone app asks /api/offline/session on every page) answered just after it
    # put the signed-out cookie back and signed the person out. Sessions here are guarded by
    # the user's session token (ended at sign-out and password change) and the idle and age
    # limits; nothing asks for a "fresh" sign-in.
    login_manager.session_protection = None
    login_manager.login_view = "auth.login"
    login_manager.login_message = None
    csrf.init_app(app)
    app.register_blueprint(bp)
    app.context_processor(_menu)
