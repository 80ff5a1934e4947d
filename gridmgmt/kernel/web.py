"""Signing in and out, sessions, CSRF, role checks and the per-role menu."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFProtect

from gridmgmt.kernel.auth import authenticate
from gridmgmt.kernel.db import db
from gridmgmt.kernel.i18n import gettext as _
from gridmgmt.kernel.i18n import is_local_path
from gridmgmt.kernel.models import Role, User

bp = Blueprint("auth", __name__, template_folder="templates")
login_manager = LoginManager()
csrf = CSRFProtect()
F = TypeVar("F", bound=Callable[..., Any])

# What each role finds in the menu: (label, endpoint).
MENU: dict[str, list[tuple[str, str]]] = {
    Role.INSPECTOR: [
        ("Report a problem", "cases.report_form"),
        ("My cases", "cases.my_cases"),
        ("Verification tasks", "cases.verification_tasks"),
    ],
    Role.OPERATOR: [
        ("Inbox", "cases.inbox"),
        ("Report a problem", "cases.report_form"),
        ("Map", "maps.map_page"),
    ],
    Role.DISPATCHER: [("Dispatch board", "dispatch.board"), ("Map", "maps.map_page")],
    Role.UNIT_STAFF: [("Work queue", "cases.work_queue")],
    Role.CITIZEN: [("Report a problem", "cases.report_form"), ("My cases", "cases.my_cases")],
    Role.LEADER: [
        ("Map", "maps.map_page"),
        ("Evaluation", "maps.evaluation_page"),
        ("Dashboard", "maps.dashboard"),
    ],
    Role.ADMIN: [
        ("Inbox", "cases.inbox"),
        ("Dispatch board", "dispatch.board"),
        ("Map", "maps.map_page"),
        ("Evaluation", "maps.evaluation_page"),
    ],
}
ANONYMOUS_MENU = [("Report a problem", "cases.report_form"), ("Track a case", "cases.track")]


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The signed-in user of a session, if still active."""
    user = db.session.get(User, int(user_id)) if user_id.isascii() and user_id.isdigit() else None
    return user if user is not None and user.active else None


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
        user = authenticate(
            db.session(), request.form.get("username", "").strip(), request.form.get("password", "")
        )
        if user is None:
            flash(_("Wrong username or password."), "error")
            return render_template("auth/login.html"), 401
        login_user(user)
        target = request.args.get("next", "")
        if is_local_path(target):
            return redirect(target)
        return redirect(home_for(user))
    return render_template("auth/login.html")


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Sign out."""
    logout_user()
    return redirect(url_for("home.index"))


def _menu() -> dict[str, Any]:
    entries = MENU.get(current_user.role, []) if current_user.is_authenticated else ANONYMOUS_MENU
    return {"nav_links": [(label, url_for(endpoint)) for label, endpoint in entries]}


def init_app(app: Flask) -> None:
    """Sessions, CSRF on every form, the login pages and the menu."""
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = None
    csrf.init_app(app)
    app.register_blueprint(bp)
    app.context_processor(_menu)
