"""Reports: a problem seen at a place becomes a located case (web form, JSON API, Open311).

A report is checked in full (place, class, text, photos) before any SQL, then written in one
statement that locates the case in its cell and records its first events. Callers own the
commit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cases.lifecycle import (
    SYSTEM,
    Action,
    Actor,
    CaseState,
    Upload,
    actor_of,
    decide,
    decode_photos,
    photo_rows,
    refused,
)
from cases.models import (
    Case,
    CaseSource,
    CaseStatus,
    PhotoKind,
)
from gridmgmt.kernel.db import Prepared
from gridmgmt.kernel.doorbell import ring_after_commit
from gridmgmt.kernel.errors import InvalidInput
from gridmgmt.kernel.models import Role, User
from grids import gridding
from grids.services import cell_at, outside_territory

MAX_DESCRIPTION = 4000
IDEMPOTENCY_KEY = r"[A-Za-z0-9._:-]{8,128}"  # what a client's retry key may be
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY)


@dataclass(frozen=True)
class ReportInput:
    """What a reporter sends: where, what, and optionally photos and contact details."""

    category_code: str
    lon: float
    lat: float
    description: str = ""
    address: str | None = None
    urgent: bool = False
    idempotency_key: str | None = None
    contact: dict[str, str] = field(default_factory=dict)
    photos: Sequence[Upload] = ()
    media_url: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CategoryRef:
    """What a report needs of its class: the id, the code, the extra questions it asks."""

    id: int
    code: str
    attributes: list[dict[str, Any]]


_FIND_CATEGORY = Prepared(
    "gridmgmt_find_category",
    "SELECT id, code, attributes FROM categories WHERE code = :code AND active",
)


def find_category(session: Session, code: str) -> CategoryRef:
    """The active category with this code.

    Raises:
        InvalidInput: unknown or inactive category.
    """
    row = _FIND_CATEGORY.execute(session, {"code": code}).first()
    if row is None:
        raise InvalidInput(f"unknown category {code!r}", field="category")
    return CategoryRef(row.id, row.code, row.attributes or [])


class ReportResult:
    """The case a report made, and whether this call made it (False: an idempotent retry).

    The case row is written with Core; its ORM object is loaded only when asked for.
    """

    def __init__(self, session: Session, case_id: int, number: str, created: bool) -> None:
        self._session = session
        self.case_id = case_id
        self.number = number
        self.created = created

    @cached_property
    def case(self) -> Case:
        """The case itself."""
        case = self._session.get(Case, self.case_id)
        assert case is not None
        return case


def report_case(
    session: Session,
    data: ReportInput,
    reporter: User | None,
    source: CaseSource,
    photo_root: Path,
    api_key_id: int | None = None,
    trusted: bool = False,
) -> ReportResult:
    """Create a case from a report, located in its unit grid cell.

    An inspector's report is verified at once (they are the inspector); a trusted channel's
    report is filed at once. A retry with the same idempotency key returns the first case.

    Raises:
        InvalidInput: bad coordinates, unknown category, too long a text, a bad photo or key.
        OutsideTerritory: the point is in no unit grid cell.
    """
    key = (data.idempotency_key or "").strip() or None
    if key is not None:
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidInput("an idempotency key is 8-128 letters, digits or . _ : -")
        existing = session.execute(
            select(Case.id, Case.number).where(Case.idempotency_key == key)
        ).first()
        if existing is not None:
            return ReportResult(session, existing.id, existing.number, False)
    lon, lat = gridding.check_lon_lat(data.lon, data.lat)
    category = find_category(session, data.category_code)
    if len(data.description) > MAX_DESCRIPTION:
        raise InvalidInput(f"a description has at most {MAX_DESCRIPTION} characters")
    attributes = check_attributes(category, data.attributes)
    photos = decode_photos(data.photos, photo_root)  # before any SQL: decoding takes long
    media_url = (data.media_url or "").strip() or None
    if media_url is not None and not re.fullmatch(r"https?://\S{1,2000}", media_url):
        raise InvalidInput("media_url must be an http(s) URL", field="media_url")
    # The steps a report takes at once, each asked of the transition table: report; an
    # inspector's own report is verified; a trusted channel's is filed.
    actor = actor_of(reporter)
    steps = [(Action.REPORT, actor)]
    if reporter is not None and reporter.role == Role.INSPECTOR:
        steps.append((Action.VERIFY, actor))
    if trusted:
        steps.append((Action.FILE, Actor(SYSTEM)))
    status: CaseStatus | None = None
    events: list[dict[str, Any]] = []
    for action, who in steps:
        decision = decide(CaseState(status), action, who)
        if not decision.allowed:
            raise refused(decision)
        events.append(
            {
                "action": action.value,
                "from": status.value if status else None,
                "to": decision.to.value,
                "actor_id": who.user_id,
                "role": who.role,
            }
        )
        status = decision.to
    assert status is not None
    values = {
        "source": source.value,
        "status": status.value,
        "category_id": category.id,
        "urgent": data.urgent,
        "description": data.description.strip(),
        "address": (data.address or "").strip() or None,
        "lon": lon,
        "lat": lat,
        "reporter_id": reporter.id if reporter else None,
        "api_key_id": api_key_id,
        "contact": json.dumps({k: v.strip() for k, v in data.contact.items() if v and v.strip()}),
        "idempotency_key": key,
        "media_url": media_url,
        "attributes": json.dumps(attributes),
        "filed": status == CaseStatus.FILED,
        "events": json.dumps(events),
        "photos": len(data.photos),
    }
    try:
        if key is None:
            row = _INSERT_REPORT.execute(session, values).first()
        else:
            with session.begin_nested():
                row = _INSERT_REPORT.execute(session, values).first()
    except IntegrityError:
        # Another request with the same key won the race: theirs is the case.
        existing = session.execute(
            select(Case.id, Case.number).where(Case.idempotency_key == key)
        ).first()
        if existing is None:
            raise
        return ReportResult(session, existing.id, existing.number, False)
    if row is None:
        raise outside_territory(lon, lat)
    case_id, number, first_event = row
    if photos:
        photo_rows(session, case_id, photos, PhotoKind.BEFORE, first_event)
    if status == CaseStatus.FILED:
        ring_after_commit(session, case_id)
    return ReportResult(session, case_id, number, True)


# A report is one statement: locate (the tie-break of `grids.services.cell_at`), insert the
# case and its events in order, the first event carrying the number of photos. No row when the
# point is outside every cell (and then no event either).
_INSERT_REPORT = Prepared(
    "gridmgmt_report",
    f"""
    WITH new_case AS (
        INSERT INTO cases (source, status, category_id, urgent, description, address, location,
                           cell_id, community_id, reporter_id, api_key_id, contact,
                           idempotency_key, media_url, attributes, filed_at, dispatch_state)
        SELECT :source, :status, :category_id, :urgent, :description, :address, p.geom,
               g.id, g.community_id, :reporter_id, :api_key_id, CAST(:contact AS jsonb),
               :idempotency_key, :media_url, CAST(:attributes AS jsonb),
               CASE WHEN :filed THEN now() END,
               CASE WHEN :filed THEN 'queued' ELSE 'none' END
        FROM (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS geom) AS p
        CROSS JOIN LATERAL ({cell_at("p.geom")}) AS g
        RETURNING id, number
    ), new_events AS (
        INSERT INTO case_events (case_id, action, from_status, to_status, actor_id, actor_role,
                                 data)
        SELECT c.id, e.action, e."from", e."to", e.actor_id, e.role,
               CASE WHEN e.n = 1 AND :photos > 0
                    THEN jsonb_build_object('photos', CAST(:photos AS int))
                    ELSE '{{}}'::jsonb END
        FROM new_case AS c
        CROSS JOIN ROWS FROM (
                 jsonb_to_recordset(CAST(:events AS jsonb))
                     AS (action text, "from" text, "to" text, actor_id int, role text)
             ) WITH ORDINALITY AS e(action, "from", "to", actor_id, role, n)
        ORDER BY e.n
        RETURNING id
    )
    -- the ids are drawn in the ORDER BY's order: the lowest is the report's own event
    SELECT id, number, (SELECT min(id) FROM new_events) AS first_event FROM new_case
""",
)


def check_attributes(category: CategoryRef, given: dict[str, str]) -> dict[str, Any]:
    """The class's extra answers (Open311 attributes), checked against its definitions.

    Raises:
        InvalidInput: a required answer is missing, a value is not one of the list, not a
            number or not a date-time, or the attribute is unknown.
    """
    definitions = {a["code"]: a for a in category.attributes}
    unknown = sorted(set(given) - set(definitions))
    if unknown:
        raise InvalidInput(f"unknown attribute {unknown[0]!r} for {category.code}")
    answers: dict[str, Any] = {}
    for code, definition in definitions.items():
        raw = (given.get(code) or "").strip()
        if not raw:
            if definition.get("required"):
                raise InvalidInput(f"attribute[{code}] is required for {category.code}")
            continue
        kind = definition.get("datatype", "string")
        if kind in ("singlevaluelist", "multivaluelist"):
            keys = {str(v["key"]) for v in definition.get("values", [])}
            chosen = raw.split(",") if kind == "multivaluelist" else [raw]
            if not set(chosen) <= keys:
                raise InvalidInput(f"attribute[{code}] is one of {', '.join(sorted(keys))}")
            answers[code] = chosen if kind == "multivaluelist" else raw
        elif kind == "number":
            try:
                answers[code] = float(raw)
            except ValueError:
                raise InvalidInput(f"attribute[{code}] must be a number") from None
            if not math.isfinite(answers[code]):  # JSON has no NaN nor infinity
                raise InvalidInput(f"attribute[{code}] must be a number")
        elif kind == "datetime":
            try:
                answers[code] = datetime.fromisoformat(raw.replace("Z", "+00:00")).isoformat()
            except ValueError:
                raise InvalidInput(f"attribute[{code}] must be an ISO 8601 date-time") from None
        else:
            answers[code] = raw[:1000]
    return answers
