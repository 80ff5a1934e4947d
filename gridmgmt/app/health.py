"""Liveness (`/healthz`) and readiness (`/readyz`: database and Redis reachable, and nothing
in the city's configuration blocking dispatch: else "not configured", naming the checks of
`dispatch.readiness` that fail).

The details of readiness (what failed, and how) are for the machine's own probes (a loopback
client) and signed-in administrators; anyone else gets only the status code and the word."""

from __future__ import annotations

from ipaddress import ip_address

from flask import Blueprint, Flask, jsonify, request
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import text

from dispatch import readiness
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import Role
from gridmgmt.kernel.queue import queues

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Answer 200 when PostgreSQL and Redis both answer, else 503 naming what failed."""
    checks: dict[str, str] = {}
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        checks["database"] = f"unreachable: {type(exc).__name__}: {str(exc).strip()[:200]}"
    try:
        queues.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}: {str(exc).strip()[:200]}"
    ready = all(v == "ok" for v in checks.values())
    status = "ready" if ready else "not ready"
    missing: list[str] = []
    if ready:
        try:
            missing = not_configured()
        except Exception as exc:  # the check itself failing: not ready either
            checks["database"] = f"setup check failed: {type(exc).__name__}"
            ready, status = False, "not ready"
        if missing:
            ready, status = False, "not configured"
    if not may_see_details():
        return jsonify(status=status), 200 if ready else 503
    extra = {"not_configured": missing} if missing else {}
    return jsonify(status=status, checks=checks, **extra), 200 if ready else 503


def not_configured() -> list[str]:
    """The names of the configuration checks that block dispatch (cached a few seconds)."""
    try:
        return [check.name for check in readiness.blocked_by()]
    finally:
        db.session.rollback()  # read only; the request's session is left clean


def may_see_details() -> bool:
    """A loopback client (the machine's own probes) or a signed-in administrator.
    `remote_addr` is the proxy's address unless the app trusts a proxy's headers."""
    try:
        loopback = ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return True
    try:  # loading the user needs the database, which may be what is down
        return bool(current_user.is_authenticated and current_user.role == Role.ADMIN)
    except Exception:
        return False


def init_app(app: Flask) -> None:
    """Register the health endpoints."""
    app.register_blueprint(bp)
