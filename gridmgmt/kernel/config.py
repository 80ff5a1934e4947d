"""Configuration from the environment, with defaults that match `scripts/stack.sh`."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:55432/gridmgmt"
DEFAULT_REDIS_URL = "redis://127.0.0.1:56379/0"


@dataclass
class Config:
    """Settings read once by `create_app`; every field can be overridden by an env variable."""

    DATABASE_URL: str = DEFAULT_DATABASE_URL
    REDIS_URL: str = DEFAULT_REDIS_URL
    SECRET_KEY: str = field(default_factory=lambda: secrets.token_hex(32))
    CITY_NAME: str = "Los Angeles (demo)"
    CALENDAR_CODE: str = "us_la"
    DISPLAY_TZ: str = "America/Los_Angeles"
    PHOTO_DIR: str = str(ROOT / "var" / "photos")
    MAX_CONTENT_LENGTH: int = 40 * 1024 * 1024  # a whole upload: several photos and the form
    REOPEN_DAYS: int = 7
    DISPATCH_GRACE_SECONDS: int = 30  # a filed case still waiting after this is swept again
    DISPATCH_GATHER_MS: int = 50  # while reports stream in, a drain waits this long for them
    DEADLINE_WARNING_HOURS: float = 2.0
    TILE_URL: str = ""  # e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png; empty: no tiles
    TILE_ATTRIBUTION: str = ""  # shown on the map with TILE_URL's tiles
    OPEN311_JURISDICTION: str = "la.gridmgmt.example"  # jurisdiction_id clients may send
    OPEN311_RATE_PER_KEY: int = 200  # POST requests a second per api_key
    OPEN311_RATE_PER_IP: int = 100  # ...and per client address
    SQL_ECHO: bool = False
    DB_POOL_SIZE: int = 10
    TESTING: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        """Build a config from `GRIDMGMT_*` variables (and plain DATABASE_URL / REDIS_URL)."""
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
        return cls(**values)

    def as_flask(self) -> dict[str, Any]:
        """Return the settings as a mapping for `app.config.update`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
