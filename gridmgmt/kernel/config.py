"""Configuration from the environment, with defaults that match `scripts/stack.sh`.

The private stack's roles have passwords, kept in var/secrets/ (made by `scripts/stack.sh
up`): without DATABASE_URL, REDIS_URL and MIGRATE_DATABASE_URL in the environment, the defaults
are its URLs with those passwords (the app's role, Redis, the owner's role), when they exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:55432/gridmgmt"
DEFAULT_REDIS_URL = "redis://127.0.0.1:56379/0"
SECRETS = ROOT / "var" / "secrets"
STACK_OWNER_ROLE = "gridmgmt_owner"


def stack_secret(name: str) -> str | None:
    """A password of the private stack (var/secrets/`name`), or None."""
    path = SECRETS / name
    try:
        return path.read_text().strip() or None
    except OSError:  # absent, or not readable by this user
        return None


def stack_defaults(app_role: str) -> dict[str, str]:
    """The private stack's URLs with their passwords, for those of them that have one."""
    defaults = {}
    for field, secret, role in (
        ("DATABASE_URL", "pg_app", app_role),
        ("MIGRATE_DATABASE_URL", "pg_owner", STACK_OWNER_ROLE),
    ):
        password = stack_secret(secret)
        if password:
            defaults[field] = DEFAULT_DATABASE_URL.replace("postgres@", f"{role}:{password}@", 1)
    password = stack_secret("redis")
    if password:
        defaults["REDIS_URL"] = DEFAULT_REDIS_URL.replace("//", f"//:{password}@", 1)
    return defaults


@dataclass
class Config:
    """Settings read once by `create_app`; every field can be overridden by an env variable."""

    DATABASE_URL: str = DEFAULT_DATABASE_URL
    REDIS_URL: str = DEFAULT_REDIS_URL
    # Migrations connect as the owner of the tables (empty: as DATABASE_URL); the web app and
    # the workers as APP_ROLE, which gridmgmt.kernel.roles grants only what they need.
    MIGRATE_DATABASE_URL: str = ""
    APP_ROLE: str = "gridmgmt_app"
    SECRET_KEY: str = ""  # required outside the demo (the app refuses to start without it)
    DEMO: bool = False  # `make run`: plain HTTP on this machine, a random SECRET_KEY allowed
    SESSION_COOKIE_SECURE: bool = True  # send the session cookie over HTTPS only (off in DEMO)
    SESSION_IDLE_MINUTES: float = 120.0  # a session unused this long is signed out
    SESSION_MAX_HOURS: float = 12.0  # ...and any session this long after its sign-in
    SIGNIN_FAILURES_PER_ACCOUNT: int = 5  # wrong passwords before a username is locked
    SIGNIN_FAILURES_PER_CLIENT: int = 30  # ...and before a client address is locked
    SIGNIN_LOCKOUT_MINUTES: int = 15  # how long a lock (and a failure's count) lasts
    ADMIN_TOTP_REQUIRED: bool = True  # administrators need a second factor (off in DEMO)
    CITY_NAME: str = "Los Angeles (demo)"
    CALENDAR_CODE: str = "us_la"
    DISPLAY_TZ: str = "America/Los_Angeles"
    PHOTO_DIR: str = str(ROOT / "var" / "photos")
    MAX_CONTENT_LENGTH: int = 40 * 1024 * 1024  # a whole upload: several photos and the form
    PHOTO_DECODE_SLOTS: int = 2  # photos a process decodes at once (each may take ~160 MB)
    PHOTO_ORPHAN_GRACE_SECONDS: int = 3600  # an unreferenced photo file older than this is swept
    REOPEN_DAYS: int = 7
    DISPATCH_GRACE_SECONDS: int = 30  # a filed case still waiting after this is swept again
    DISPATCH_GATHER_MS: int = 50  # while reports stream in, a drain waits this long for them
    DEADLINE_WARNING_HOURS: float = 2.0
    TILE_URL: str = ""  # e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png; empty: no tiles
    TILE_ATTRIBUTION: str = ""  # shown on the map with TILE_URL's tiles
    PUBLIC_COORDINATE_DECIMALS: int = 4  # public outputs round positions: 4 places ≈ 11 m
    OPEN311_JURISDICTION: str = "la.gridmgmt.example"  # jurisdiction_id clients may send
    OPEN311_RATE_PER_KEY: int = 200  # POST requests a second per api_key
    OPEN311_RATE_PER_IP: int = 100  # ...and per client address
    # Abuse limits (gridmgmt.kernel.ratelimit), a minute's requests; 0 turns one off.
    RATE_REPORTS_PER_CLIENT: int = 20  # reports (form, JSON API) per client address
    RATE_REPORTS_PER_ACCOUNT: int = 10  # ...and per signed-in account
    RATE_ACTIONS_PER_CLIENT: int = 600  # case actions through the JSON API per client address
    RATE_ACTIONS_PER_ACCOUNT: int = 120  # ...and per signed-in account
    RATE_READS_PER_CLIENT: int = 60  # Open311 listings and open data exports per client address
    RATE_READS_PER_ACCOUNT: int = 120  # ...and per signed-in account or api_key
    RATE_SUPPORT_PER_CLIENT: int = 20  # supports of a report (cases.support) per client address
    RATE_SUPPORT_PER_ACCOUNT: int = 10  # ...and per signed-in account
    # The three rates (三率) of the evaluation (maps.evaluation, maps.aggregate.Scoring).
    RESPONSE_LIMIT_HOURS: float = 2.0  # a unit accepts or returns a case within this (wall-clock)
    SATISFACTION_BASIC_WEIGHT: float = 1.0  # what 基本满意 counts for (some cities: 0.8)
    # The score's share of each rate (fractions of its 100 points; the on-time closure rate has
    # the rest) and the points off per re-handling: 0, the score is the on-time rate's alone.
    SCORE_WEIGHT_RESPONSE: float = 0.0
    SCORE_WEIGHT_RESOLUTION: float = 0.0
    SCORE_WEIGHT_SATISFACTION: float = 0.0
    SCORE_WEIGHT_FOLLOWUP: float = 0.0
    SCORE_REHANDLE_PENALTY: float = 0.0
    TRUSTED_PROXIES: int = 0  # reverse proxies in front whose X-Forwarded-For/-Proto are believed
    # The event logs' monthly partitions (gridmgmt.kernel.partitions): made this many months
    # ahead; whole months older than a retention are dropped (0: kept forever; else >= 6).
    PARTITION_MONTHS_AHEAD: int = 3
    CASE_EVENTS_RETENTION_MONTHS: int = 0  # a case's history
    SECURITY_EVENTS_RETENTION_MONTHS: int = 0  # the audit trail of refused requests
    # Reads on a hot standby (gridmgmt.kernel.db.reads_replica): empty, none.
    READ_DATABASE_URL: str = ""  # e.g. `scripts/stack.sh standby env`; the app's role there
    READ_STATEMENT_TIMEOUT_MS: int = 5000  # a read on the replica longer than this fails
    READ_MAX_LAG_SECONDS: float = 30.0  # further behind than this, reads go to the primary
    READ_CHECK_SECONDS: float = 2.0  # how long a process trusts its verdict on the replica
    # Hearing back from the public (cases.notices, gridmgmt.kernel.channels).
    PUBLIC_URL: str = ""  # base of the links in messages, e.g. https://city.example (else local)
    MAIL_MODE: str = ""  # smtp | mailbox (kept for /mailbox, no sending) | "": mailbox in DEMO
    SMTP_HOST: str = ""  # empty in smtp mode: messages wait in the outbox
    SMTP_PORT: int = 587
    SMTP_STARTTLS: bool = True  # upgrade the connection (port 587); SMTP_SSL: TLS from the start
    SMTP_SSL: bool = False
    SMTP_USER: str = ""
    SMTP_PASSWORD: str = ""
    SMTP_TIMEOUT: float = 10.0  # seconds, also the SMS gateway's
    MAIL_FROM: str = "gridmgmt@localhost"
    SMS_ADAPTER: str = "http"  # gridmgmt.kernel.channels.SMS_ADAPTERS
    SMS_GATEWAY_URL: str = ""  # empty: text messages wait in the outbox
    SMS_GATEWAY_TOKEN: str = ""  # sent as `Authorization: Bearer <it>`
    SMS_SENDER: str = ""
    NOTICE_DRAIN_SECONDS: int = 60  # the periodic drain of the outbox (a lost job only delays)
    FOLLOWUP_LINK_DAYS: int = 14  # how long a follow-up link (and the tracking code) answers
    RATE_FOLLOWS_PER_CLIENT: int = 10  # follow requests (confirmation mails) a minute per address
    SQL_ECHO: bool = False
    DB_POOL_SIZE: int = 10
    TESTING: bool = False
    # Seeing how it is doing (gridmgmt.kernel.metrics, gridmgmt.kernel.logs).
    METRICS_TOKEN: str = ""  # /metrics wants `Authorization: Bearer <it>`; empty: loopback only
    LOG_FORMAT: str = "json"  # one JSON object a line; `text`: readable lines (make run)
    LOG_LEVEL: str = "INFO"  # DEBUG also shows the periodic jobs that found nothing to do

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        """Build a config from `GRIDMGMT_*` variables (and plain DATABASE_URL, REDIS_URL and
        MIGRATE_DATABASE_URL)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(
                f"GRIDMGMT_{f.name}", env.get(f.name) if f.name.endswith("_URL") else None
            )
            if raw is None:
                continue
            if f.type in ("bool", bool):
                values[f.name] = raw.lower() in {"1", "true", "yes", "on"}
            elif f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        stack = stack_defaults(values.get("APP_ROLE", cls.APP_ROLE))
        if "DATABASE_URL" in values:  # another server: its migrations use DATABASE_URL too
            stack.pop("MIGRATE_DATABASE_URL", None)
        return cls(**{**stack, **values})

    @property
    def migrate_database_url(self) -> str:
        """The URL migrations use: MIGRATE_DATABASE_URL, or DATABASE_URL without one."""
        return self.MIGRATE_DATABASE_URL or self.DATABASE_URL

    def as_flask(self) -> dict[str, Any]:
        """Return the settings as a mapping for `app.config.update`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
