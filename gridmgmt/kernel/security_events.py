"""The audit trail of security events: refused and suspicious requests, kept for administrators.

What is recorded (`SecurityEventKind`): failed sign-ins (unknown user, wrong password, wrong
second factor), the failure that locks an account or a client out, each sign-in refused while
locked, refused api keys (unknown or revoked), a case of another unit (or, for a citizen,
another person's case) asked for and answered 404, and rate-limit hits. Each event keeps its
time, the client's address (as the rate limits see it: the peer, or what a trusted proxy
forwarded), the path without its query string (a key or token in a URL never reaches the
table), the account or api key where known, and a few facts in `detail`. Never a password,
never a key's secret.

Written apart from the request: `record` inserts on a short connection and transaction of
its own (`engine.begin()`), so an event survives the request's own transaction rolling back
(a 404 or a 429 aborts the request's work), and a failure to record is logged, never raised:
the answer to the client does not depend on the audit trail. The table is append-only (a
trigger refuses UPDATE, DELETE and TRUNCATE; migration 0009).

Kept cheap under floods: the kinds a client can repeat at will (`SAMPLED`: rate-limit hits,
sign-ins refused while locked, refused api keys, other units' cases) are counted in Redis per
kind, client and account (or key, or limit) and minute, and only the 1st, 2nd, 4th, 8th...
hit of a minute is written, with `detail.hits` its number: a flood of 100,000 requests a
minute from one client costs 17 rows, and the last one says how big it was. One Redis round
trip decides (the rate limiter's own counting script). Failed sign-ins and lockouts are all
written: the sign-in throttle already bounds them (SIGNIN_FAILURES_PER_ACCOUNT and _PER_CLIENT
in SIGNIN_LOCKOUT_MINUTES). Without Redis every event is written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from flask import g, has_app_context, has_request_context, request
from redis.exceptions import RedisError
from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gridmgmt.kernel.db import Base, db, enum_check
from gridmgmt.kernel.errors import N_
from gridmgmt.kernel.queue import queues

log = logging.getLogger(__name__)
SAMPLE_PREFIX = "gridmgmt:secev:"  # Redis counters of the sampled kinds
MINUTE = 60
MAX_USERNAME = 100
MAX_PATH = 300
MAX_CLIENT = 64


class SecurityEventKind(str, Enum):
    """What happened."""

    SIGNIN_FAILED = "signin_failed"  # detail.reason: unknown_user, wrong_password, wrong_code
    SIGNIN_LOCKOUT = "signin_lockout"  # the failure that locks; detail.scope: account, client
    SIGNIN_THROTTLED = "signin_throttled"  # a sign-in refused while locked; detail.retry_after
    API_KEY_REFUSED = "api_key_refused"  # detail.reason: unknown, revoked
    CROSS_UNIT = "cross_unit"  # another unit's (or person's) case, answered 404; detail.case_id
    RATE_LIMITED = "rate_limited"  # a 429; detail.limit, detail.window
    CONTACT_SEARCH = "contact_search"  # staff searched cases by a reporter's phone or e-mail


# What the administrators' page calls each kind (`_(label)` there).
KIND_LABELS: dict[SecurityEventKind, str] = {
    SecurityEventKind.SIGNIN_FAILED: N_("Failed sign-in"),
    SecurityEventKind.SIGNIN_LOCKOUT: N_("Lockout"),
    SecurityEventKind.SIGNIN_THROTTLED: N_("Sign-in refused while locked"),
    SecurityEventKind.API_KEY_REFUSED: N_("API key refused"),
    SecurityEventKind.CROSS_UNIT: N_("Case outside the user's scope (404)"),
    SecurityEventKind.RATE_LIMITED: N_("Rate limit hit"),
    SecurityEventKind.CONTACT_SEARCH: N_("Case search by a reporter's phone or e-mail"),
}

# Kinds a client can repeat at will: written at the 1st, 2nd, 4th, 8th... hit of a minute.
SAMPLED = frozenset(
    {
        SecurityEventKind.SIGNIN_THROTTLED,
        SecurityEventKind.API_KEY_REFUSED,
        SecurityEventKind.CROSS_UNIT,
        SecurityEventKind.RATE_LIMITED,
    }
)


class SecurityEvent(Base):
    """One refused or suspicious request. Append-only: a trigger refuses UPDATE and DELETE."""

    __tablename__ = "security_events"
    __table_args__ = (
        CheckConstraint(enum_check("kind", SecurityEventKind), name="kind"),
        Index("ix_security_events_at", text("at DESC")),
        Index("ix_security_events_kind_at", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    kind: Mapped[SecurityEventKind] = mapped_column(String(32), nullable=False)
    client: Mapped[str] = mapped_column(String(MAX_CLIENT), nullable=False)  # an address
    username: Mapped[str | None] = mapped_column(String(MAX_USERNAME))  # as typed, or the user's
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    path: Mapped[str] = mapped_column(String(MAX_PATH), nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")

    @property
    def label(self) -> str:
        """The English label of the kind (a message id: translate it to show it)."""
        return KIND_LABELS.get(SecurityEventKind(self.kind), self.kind)


class HasId(Protocol):
    """A user or api key row, or anything else carrying its id."""

    @property
    def id(self) -> int: ...


class HasUsername(HasId, Protocol):
    """A user: an id and a username."""

    @property
    def username(self) -> str: ...


def _signed_in() -> HasUsername | None:
    """The user Flask-Login already loaded for this request, if any: never a new query (the
    request's session may be in a failed transaction when an event is recorded)."""
    user = g.get("_login_user")
    if user is not None and getattr(user, "is_authenticated", False):
        return user  # type: ignore[no-any-return]
    return None


def _sampled_hits(kind: SecurityEventKind, row: dict[str, Any]) -> int | None:
    """This hit's number in its minute (per kind, client and account or key or limit); None
    when Redis is unreachable (then every event is written)."""
    who = "\x1f".join(
        str(part)
        for part in (row["client"], row["username"], row["api_key_id"], row["detail"].get("limit"))
    )
    digest = hashlib.sha256(who.encode()).hexdigest()[:24]
    minute = int(time.time() // MINUTE)
    try:
        (hits,) = queues.count_hits([f"{SAMPLE_PREFIX}{kind.value}:{digest}:{minute}"], 2 * MINUTE)
    except RedisError:
        return None
    return int(hits)


def _write(row: dict[str, Any]) -> None:
    """Insert the event on a connection and transaction of its own (committed at once)."""
    with db.engine.begin() as connection:
        # Never wait long behind the request's own transaction (it runs in this same thread).
        connection.execute(text("SET LOCAL lock_timeout = '2s'"))
        connection.execute(SecurityEvent.__table__.insert(), row)


def record(
    kind: SecurityEventKind,
    *,
    username: str | None = None,
    user: HasUsername | None = None,
    api_key: HasId | int | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Record a security event of the current request; True when a row was written.

    Args:
        kind: what happened.
        username: the account name concerned, as typed (a sign-in); defaults to `user`'s.
        user: the account concerned; defaults to the signed-in user of the request, if any.
        api_key: the api key concerned (a row or its id) when known; never its secret.
        detail: a few JSON facts (a reason, a limit, a case id); nothing secret.

    Never raises: a failure to record is logged and the request goes on.
    """
    try:
        user = user or (_signed_in() if has_request_context() else None)
        key_id = api_key if isinstance(api_key, int) or api_key is None else api_key.id
        name = username if username is not None else (user.username if user else None)
        row: dict[str, Any] = {
            "kind": kind.value,
            "client": ((request.remote_addr or "unknown") if has_request_context() else "-")[
                :MAX_CLIENT
            ],
            "username": name[:MAX_USERNAME] if name else None,
            "user_id": user.id if user else None,
            "api_key_id": key_id,
            "path": (request.path if has_request_context() else "")[:MAX_PATH],
            "detail": dict(detail or {}),
        }
        if not has_app_context():
            log.warning("security event %s outside an app: not recorded (%s)", kind.value, row)
            return False
        if kind in SAMPLED:
            hits = _sampled_hits(kind, row)
            if hits is not None:
                if hits & (hits - 1):  # not a power of two: counted, not written
                    return False
                if hits > 1:
                    row["detail"]["hits"] = hits
        _write(row)
        return True
    except Exception:  # the audit trail never breaks the answer
        log.exception("could not record the security event %s", kind.value)
        return False
