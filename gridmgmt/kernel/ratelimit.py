"""Abuse limits: fixed windows counted in Redis, per client address and per account or api key.

A view calls `limit(...)` before it does any work; past a limit it raises `TooManyRequests`,
which the edge answers 429 in the interface's own format (a page in the reader's language,
the JSON API's error object, Open311's error list), with `Retry-After` (the seconds left in
the window). The limits themselves are settings (`gridmgmt.kernel.config`).

Why not Flask-Limiter: the existing Redis script (`queues.count_hits`) counts every key of a
request in one round trip, about 60 us of CPU (README "Performance": it replaced a
four-command transaction in `bench/intake.py`'s intake path). Flask-Limiter (through `limits`)
counts each limit with its own Redis call, adds a dependency, and answers 429 in one format,
while ours takes three (page, JSON error, Open311's list); its key functions would still be
ours. What is left is this page.

Without Redis the limiter lets requests through (and logs it): reports must still come in.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request
from flask_login import current_user
from redis.exceptions import RedisError

from gridmgmt.kernel import security_events
from gridmgmt.kernel.errors import DomainError
from gridmgmt.kernel.queue import queues
from gridmgmt.kernel.security_events import SecurityEventKind

log = logging.getLogger(__name__)
PREFIX = "gridmgmt:rate:"  # every counter's key starts with this
MINUTE = 60


class TooManyRequests(DomainError):
    """A client, account or api key went past one of its limits (the error page's title,
    "Too many requests", is in `i18n.RUNTIME_WORDS`)."""

    code = "too_many_requests"
    status = 429


@dataclass(frozen=True)
class Refusal:
    """Which limit was passed, and how long until its window ends."""

    limit: int
    window: int
    retry_after: int


def client_address() -> str:
    """The client's address: the peer, or the address a trusted proxy forwarded
    (`GRIDMGMT_TRUSTED_PROXIES` hops, applied by werkzeug's ProxyFix in the app factory)."""
    return request.remote_addr or "unknown"


def account_of_user() -> str | None:
    """The signed-in user as a counter's identity, or None for an anonymous client."""
    if current_user and current_user.is_authenticated:
        return f"user:{current_user.get_id()}"
    return None


def account_of_key(secret: str) -> str:
    """An api key as a counter's identity (a hash: the same key counts as one, valid or not,
    and the secret is never written to Redis)."""
    return "key:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def _setting(name: str) -> int:
    return int(current_app.config[name])


def check(
    name: str,
    *,
    per_client: str,
    per_account: str | None = None,
    account: str | None = None,
    window: int = MINUTE,
) -> Refusal | None:
    """Count this request against the limits of `name` and say which one it passes, if any.

    Args:
        name: the group of endpoints that share the counters ("reports", "reads"...).
        per_client: the setting giving the requests a window allowed per client address.
        per_account: the setting giving those allowed per account (or api key).
        account: the account's identity (`account_of_user()`, `account_of_key()`); no
            account-wide limit when None.
        window: the window's length in seconds.

    A limit set to 0 or below is not applied.
    """
    now = time.time()
    index = int(now // window)
    limits = [(f"client:{client_address()}", _setting(per_client))]
    if per_account is not None and account is not None:
        limits.append((account, _setting(per_account)))
    limits = [(who, most) for who, most in limits if most > 0]
    if not limits:
        return None
    keys = [f"{PREFIX}{name}:{who}:{index}" for who, _ in limits]
    try:
        # Each counter lives two windows from its first hit, so a late hit never restarts one.
        counts = queues.count_hits(keys, 2 * window)
    except RedisError:
        log.warning("rate limits are off: Redis is unreachable")
        return None  # no Redis, no limiter: reports still come in
    passed = [most for (_, most), count in zip(limits, counts, strict=True) if count > most]
    if not passed:
        return None
    retry_after = max(1, int((index + 1) * window - now + 0.999))
    return Refusal(limit=min(passed), window=window, retry_after=retry_after)


def limit(
    name: str,
    *,
    per_client: str,
    per_account: str | None = None,
    account: str | None = None,
    window: int = MINUTE,
) -> None:
    """Count this request (see `check`) and refuse it past a limit.

    Raises:
        TooManyRequests: 429; the response carries `Retry-After`.
    """
    refusal = check(
        name, per_client=per_client, per_account=per_account, account=account, window=window
    )
    if refusal is None:
        return
    g.rate_retry_after = refusal.retry_after
    log.info("rate limit %s passed by %s", name, client_address())
    security_events.record(
        SecurityEventKind.RATE_LIMITED,
        detail={"limit": name, "most": refusal.limit, "window": refusal.window},
    )
    if refusal.window == 1:
        raise TooManyRequests("too many requests: at most %(limit)s a second", limit=refusal.limit)
    raise TooManyRequests("too many requests: at most %(limit)s a minute", limit=refusal.limit)


def _retry_after(response: Response) -> Response:
    """Tell a refused client when to come back (whatever format the error took)."""
    seconds = g.pop("rate_retry_after", None)
    if seconds is not None and response.status_code == TooManyRequests.status:
        response.headers["Retry-After"] = str(seconds)
    return response


def init_app(app: Flask) -> None:
    """Add `Retry-After` to the answers of refused requests."""
    app.after_request(_retry_after)
