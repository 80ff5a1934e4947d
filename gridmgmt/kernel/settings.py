"""The city's own settings, kept in the database and changed on `/admin/settings`: its name,
its business calendar, and the base map's tile layer (URL and attribution).

One row (`city_settings`, id 1). A field left empty (NULL) falls back to the server's
configuration (`CITY_NAME`, `CALENDAR_CODE`, `TILE_URL`, `TILE_ATTRIBUTION`), so a server set up
from environment variables works before anyone opens the page, and the page shows what each
field would be without its own value.

Every process reads the row at most once every `REFRESH_SECONDS` (a change made in one web
process reaches the others and the workers within that time; the process that made it sees it
at once). The values are checked here, whoever calls: a tile URL is an http(s) template with
{z}, {x} and {y}; an attribution is plain text (it is shown on every map).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from flask import Flask, current_app
from sqlalchemy import CheckConstraint, DateTime, SmallInteger, String, Text, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from gridmgmt.kernel.db import Base, db
from gridmgmt.kernel.errors import InvalidInput
from gridmgmt.kernel.models import CalendarRecord

REFRESH_SECONDS = 5.0
NAME_MAX = 200
ATTRIBUTION_MAX = 300
TILE_URL_MAX = 500
_TILE_URL = re.compile(r"^https?://[^\s<>\"']+$")
_CACHE_KEY = "gridmgmt.kernel.settings"

# Each field and the configuration key it falls back to.
FALLBACKS = {
    "name": "CITY_NAME",
    "calendar_code": "CALENDAR_CODE",
    "tile_url": "TILE_URL",
    "tile_attribution": "TILE_ATTRIBUTION",
}


class CitySettingsRow(Base):
    """The one row of the city's settings; NULL fields fall back to the configuration."""

    __tablename__ = "city_settings"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False, default=1)
    name: Mapped[str | None] = mapped_column(Text)
    calendar_code: Mapped[str | None] = mapped_column(String(32))
    tile_url: Mapped[str | None] = mapped_column(Text)
    tile_attribution: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


@dataclass(frozen=True)
class CitySettings:
    """The settings in force: the row's values, else the configuration's."""

    name: str
    calendar_code: str
    tile_url: str
    tile_attribution: str

    def facts(self) -> dict[str, Any]:
        """As the audit log keeps them."""
        return asdict(self)


def stored_settings(session: Session) -> dict[str, str | None]:
    """The values the city stored (None: it stored none, the configuration's is used)."""
    row = session.get(CitySettingsRow, 1)
    return {field: getattr(row, field) if row is not None else None for field in FALLBACKS}


def effective(stored: dict[str, str | None], config: Any) -> CitySettings:
    """The settings in force given the stored values (None: the configuration's)."""
    values = {
        field: stored.get(field) if stored.get(field) is not None else config.get(key, "")
        for field, key in FALLBACKS.items()
    }
    return CitySettings(**{k: str(v) for k, v in values.items()})


def read_settings(session: Session) -> CitySettings:
    """The settings in force, read now from `session`."""
    return effective(stored_settings(session), current_app.config)


def city_settings() -> CitySettings:
    """The settings in force, read at most every `REFRESH_SECONDS` in this process, on a
    connection of its own (never inside the caller's transaction). While the database cannot
    be read (an error page during an outage), the last values read, else the configuration's.
    """
    cache = current_app.extensions.setdefault(_CACHE_KEY, {})
    now = time.monotonic()
    if cache.get("until", 0.0) < now:
        columns = [getattr(CitySettingsRow, field) for field in FALLBACKS]
        try:
            with db.engine.connect() as connection:
                row = connection.execute(select(*columns).where(CitySettingsRow.id == 1)).first()
        except SQLAlchemyError:
            cache["until"] = now + REFRESH_SECONDS  # don't hammer a database that is down
        else:
            values = row._mapping if row is not None else {}
            cache["stored"] = {field: values.get(field) for field in FALLBACKS}
            cache["until"] = now + REFRESH_SECONDS
    return effective(cache.get("stored", {}), current_app.config)


def forget() -> None:
    """Read the settings again next time (after a change in this process)."""
    current_app.extensions.get(_CACHE_KEY, {}).pop("until", None)


def _clean(field: str, value: str | None, session: Session) -> str | None:
    """A submitted value checked; "" or None: fall back to the configuration."""
    value = (value or "").strip()
    if not value:
        return None
    if field == "name" and len(value) > NAME_MAX:
        raise InvalidInput("the city's name is longer than %(max)s characters", max=NAME_MAX)
    if field == "calendar_code":
        known = session.scalar(select(CalendarRecord.id).where(CalendarRecord.code == value))
        if known is None:
            raise InvalidInput(
                "no calendar %(code)s is loaded: load it first (flask calendar load FILE)",
                code=value,
            )
    if field == "tile_url":
        if len(value) > TILE_URL_MAX or not _TILE_URL.match(value):
            raise InvalidInput("the tile URL must be an http(s) address without spaces")
        if not all(part in value for part in ("{z}", "{x}", "{y}")):
            raise InvalidInput("the tile URL needs {z}, {x} and {y}, as a tile server's do")
    if field == "tile_attribution":
        if len(value) > ATTRIBUTION_MAX:
            raise InvalidInput(
                "the attribution is longer than %(max)s characters", max=ATTRIBUTION_MAX
            )
        if "<" in value or ">" in value:
            raise InvalidInput("the attribution is plain text: no HTML tags")
    return value


def change_settings(session: Session, values: dict[str, str | None]) -> tuple[CitySettings, ...]:
    """Store the submitted fields (`FALLBACKS`' names; "" or None: back to the configuration)
    in the caller's transaction; the settings in force before and after.

    Raises:
        InvalidInput: a value that cannot be used (nothing is changed).
    """
    unknown = set(values) - set(FALLBACKS)
    if unknown:
        raise InvalidInput("unknown setting %(name)s", name=", ".join(sorted(unknown)))
    cleaned = {field: _clean(field, value, session) for field, value in values.items()}
    before = read_settings(session)
    row = session.get(CitySettingsRow, 1, with_for_update=True)
    if row is None:
        row = CitySettingsRow(id=1)
        session.add(row)
    for field, value in cleaned.items():
        setattr(row, field, value)
    session.flush()
    return before, read_settings(session)


def init_app(app: Flask) -> None:
    """Templates see the settings in force as `city`."""
    app.context_processor(lambda: {"city": city_settings()})
