"""Reports: a problem seen at a place becomes a located case (web form, JSON API, Open311).

A report is checked in the order of what the checks cost: coordinates, class, text, answers,
the number and sizes of photos, who may mark it urgent, then (when photos come with it) that a
cell holds the point; only then are its photos decoded, and written once all of them passed.
The case is written in one statement that locates it in its cell and records its first events;
the files a report wrote are removed if its transaction rolls back (`cases.photos`). Callers
own the commit.

Idempotency keys are scoped to their reporter: the key stored is a hash of (the account, the
api key, or for an anonymous reporter the browser session or else the client address; the
client's key), so another reporter's key never finds someone else's case.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cases import notices
from cases.catalogue import UrgentPolicy, urgent_policy
from cases.lifecycle import SYSTEM, Action, Actor, actor_of, create_case
from cases.models import (
    Case,
    CaseSource,
    PhotoKind,
)
from cases.photos import StoredPhoto, Upload, check_uploads, decode_photos, photo_rows
from gridmgmt.kernel import clock, logs, metrics
from gridmgmt.kernel.db import Prepared
from gridmgmt.kernel.errors import Conflict, DomainError, InvalidInput
from gridmgmt.kernel.models import Role, User
from grids import gridding
from grids.services import locate, outside_territory

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
    client_scope: str | None = None  # who an anonymous reporter is: their session, or address
    notify: bool = False  # hear back by the contact's e-mail and/or phone (cases.notices)
    language: str = "en"  # ...in this language (the request's)
    # Sent from a phone's outbox (`cases.offline`): the phone's UUID of the report, when it
    # was captured there, and the radius in metres of the position's accuracy.
    submission_uuid: str | None = None
    captured_at: datetime | None = None
    gps_accuracy: float | None = None


def scoped_key(
    key: str, reporter_id: int | None, api_key_id: int | None, client_scope: str | None
) -> str:
    """The stored form of a client's idempotency key: scoped to its reporter (the account, else
    the api key, else the anonymous client) and hashed to fit `cases.idempotency_key`."""
    if reporter_id is not None:
        owner = f"u{reporter_id}"
    elif api_key_id is not None:
        owner = f"k{api_key_id}"
    else:
        owner = f"a{client_scope or ''}"
    return "r1-" + hashlib.sha256(f"{owner}\x1f{key}".encode()).hexdigest()


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
        raise InvalidInput("unknown category %(code)r", field="category", code=code)
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
        logs.note_case(number)  # the request's or job's further log lines name it

    @cached_property
    def case(self) -> Case:
        """The case itself."""
        case = self._session.get(Case, self.case_id)
        if case is None:  # read in the transaction that wrote or found it: never gone
            raise LookupError(f"case {self.case_id} vanished from its own transaction")
        return case


def report_case(
    session: Session,
    data: ReportInput,
    reporter: User | None,
    source: CaseSource,
    photo_root: Path,
    api_key_id: int | None = None,
    trusted: bool = False,
    urgent: UrgentPolicy | None = None,
) -> ReportResult:
    """Create a case from a report, located in its unit grid cell.

    An inspector's report is verified at once (they are the inspector); a trusted channel's
    report is filed at once. A retry with the same idempotency key by the same reporter returns
    the first case. The urgent flag is kept only when `urgent` (default: the shipped
    catalogue's policy) allows the reporter's role, or the trusted channel; else it is ignored.

    Counted for /metrics: a new case as accepted, a refusal by its code, both by `source`.

    Raises:
        InvalidInput: bad coordinates, unknown category, too long a text, a bad photo or key.
        OutsideTerritory: the point is in no unit grid cell.
    """
    try:
        result = _report(session, data, reporter, source, photo_root, api_key_id, trusted, urgent)
    except DomainError as refusal:
        metrics.count_report_refused(source.value, refusal.code)
        raise
    if result.created:  # not an idempotent retry
        metrics.count_report_accepted(source.value)
    return result


def _report(
    session: Session,
    data: ReportInput,
    reporter: User | None,
    source: CaseSource,
    photo_root: Path,
    api_key_id: int | None,
    trusted: bool,
    urgent: UrgentPolicy | None,
) -> ReportResult:
    """`report_case`, uncounted."""
    if data.submission_uuid is not None:
        known = find_submission(session, data, reporter)
        if known is not None:
            return known
    check_captured_at(data.captured_at)
    from_phone = (data.submission_uuid, data.captured_at, data.gps_accuracy) != (None, None, None)
    key = (data.idempotency_key or "").strip() or None
    if key is not None:
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidInput("an idempotency key is 8-128 letters, digits or . _ : -")
        key = scoped_key(key, reporter.id if reporter else None, api_key_id, data.client_scope)
        existing = session.execute(
            select(Case.id, Case.number).where(Case.idempotency_key == key)
        ).first()
        if existing is not None:
            return ReportResult(session, existing.id, existing.number, False)
    # The cheap checks first: nothing is decoded or written for a report refused by one.
    lon, lat = gridding.check_lon_lat(data.lon, data.lat)
    category = find_category(session, data.category_code)
    if len(data.description) > MAX_DESCRIPTION:
        raise InvalidInput("a description has at most %(most)s characters", most=MAX_DESCRIPTION)
    attributes = check_attributes(category, data.attributes)
    media_url = (data.media_url or "").strip() or None
    if media_url is not None and not re.fullmatch(r"https?://\S{1,2000}", media_url):
        raise InvalidInput("media_url must be an http(s) URL", field="media_url")
    check_uploads(data.photos)
    contact = {k: v.strip() for k, v in data.contact.items() if v and v.strip()}
    if data.notify:  # a wrong address is refused before anything is written
        notices.reporter_addresses(contact)
    # Only the roles the catalogue names (and trusted channels, if it says so) mark a report
    # urgent: anyone else's flag is ignored and the case is created non-urgent.
    policy = urgent if urgent is not None else urgent_policy()
    is_urgent = bool(data.urgent) and policy.allows(reporter.role if reporter else None, trusted)
    photos: list[StoredPhoto] = []
    if data.photos:
        locate(session, lon, lat)  # OutsideTerritory before any photo is decoded
        photos = decode_photos(data.photos, photo_root, session)  # removed on rollback
    # The steps a report takes at once, each asked of the transition table: report; an
    # inspector's own report is verified; a trusted channel's is filed.
    actor = actor_of(reporter)
    steps = [(Action.REPORT, actor)]
    if reporter is not None and reporter.role == Role.INSPECTOR:
        steps.append((Action.VERIFY, actor))
    if trusted:
        steps.append((Action.FILE, Actor(SYSTEM)))
    values = {
        "source": source.value,
        "category_id": category.id,
        "urgent": is_urgent,
        "description": data.description.strip(),
        "address": (data.address or "").strip() or None,
        "lon": lon,
        "lat": lat,
        "reporter_id": reporter.id if reporter else None,
        "api_key_id": api_key_id,
        "contact": json.dumps(contact),
        "idempotency_key": key,
        "media_url": media_url,
        "attributes": json.dumps(attributes),
    }
    try:
        if key is None and not from_phone:
            created = create_case(session, values, steps, len(data.photos))
        else:
            with session.begin_nested():
                created = create_case(session, values, steps, len(data.photos))
                if created is not None and from_phone:
                    record_submission(session, created.id, data)
    except IntegrityError:
        # Another request with the same key or submission UUID won the race: theirs is the
        # case (or, for a UUID saying something else, a conflict).
        if data.submission_uuid is not None:
            known = find_submission(session, data, reporter)
            if known is not None:
                return known
        existing = session.execute(
            select(Case.id, Case.number).where(Case.idempotency_key == key)
        ).first()
        if existing is None:
            raise
        return ReportResult(session, existing.id, existing.number, False)
    if created is None:
        raise outside_territory(lon, lat)
    if photos:
        photo_rows(session, created.id, photos, PhotoKind.BEFORE, created.first_event)
    if data.notify:
        status = "filed" if trusted else "reported"
        notices.subscribe_reporter(
            session, created.id, contact, data.language, status, clock.now_utc()
        )
    return ReportResult(session, created.id, created.number, True)


# ---------------------------------------------------------------- submissions from an outbox

CAPTURED_AT_PAST = timedelta(days=90)  # a report kept on a phone longer than this is refused
CAPTURED_AT_FUTURE = timedelta(hours=1)  # a phone's clock a little ahead is still believed


def submission_digest(data: ReportInput) -> str:
    """The SHA-256 of what a report says (not its photos, which may come later, nor its keys):
    the same submission UUID must always say the same."""
    content = {
        "category": data.category_code,
        "lon": round(float(data.lon), 7),
        "lat": round(float(data.lat), 7),
        "description": data.description.strip(),
        "address": (data.address or "").strip(),
        "urgent": bool(data.urgent),
        "contact": {k: v.strip() for k, v in sorted(data.contact.items()) if v and v.strip()},
        "media_url": (data.media_url or "").strip(),
        "attributes": {k: v for k, v in sorted(data.attributes.items()) if v},
        "captured_at": data.captured_at.timestamp() if data.captured_at else None,
        "gps_accuracy": data.gps_accuracy,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def find_submission(
    session: Session, data: ReportInput, reporter: User | None
) -> ReportResult | None:
    """The case a submission UUID already made, if the same reporter sent the same content
    (ODK Central's rule); None when the UUID is new.

    Raises:
        Conflict: the UUID is another reporter's, or it came with different content.
    """
    found = session.execute(
        select(Case.id, Case.number, Case.reporter_id, Case.submission_digest).where(
            Case.submission_uuid == data.submission_uuid
        )
    ).first()
    if found is None:
        return None
    if found.reporter_id != (reporter.id if reporter else None):
        raise Conflict(
            "submission %(uuid)s was sent by another reporter",
            details={"reason": "submission_taken"},
            uuid=data.submission_uuid,
        )
    if found.submission_digest != submission_digest(data):
        raise Conflict(
            "submission %(uuid)s was already received as case %(number)s with different "
            "content: make a new report for a change",
            details={"reason": "submission_changed", "number": found.number},
            uuid=data.submission_uuid,
            number=found.number,
        )
    return ReportResult(session, found.id, found.number, False)


def check_captured_at(captured_at: datetime | None) -> None:
    """A capture time a phone may have: not in the future (but for a clock a little ahead)
    nor older than CAPTURED_AT_PAST.

    Raises:
        InvalidInput: a capture time outside that window, or without a time zone.
    """
    if captured_at is None:
        return
    if captured_at.tzinfo is None:
        raise InvalidInput("captured_at needs a time zone offset", field="captured_at")
    now = clock.now_utc()
    if captured_at > now + CAPTURED_AT_FUTURE:
        raise InvalidInput(
            "captured_at is in the future: check the phone's clock", field="captured_at"
        )
    if captured_at < now - CAPTURED_AT_PAST:
        raise InvalidInput(
            "captured_at is more than %(days)s days ago",
            field="captured_at",
            days=CAPTURED_AT_PAST.days,
        )


def record_submission(session: Session, case_id: int, data: ReportInput) -> None:
    """Write what a phone said of a new case: its submission UUID and digest, the capture time
    and the GPS accuracy (a UUID already taken raises IntegrityError, in the caller's
    savepoint)."""
    session.execute(
        update(Case.__table__)  # type: ignore[arg-type]
        .where(Case.__table__.c.id == case_id)
        .values(
            submission_uuid=data.submission_uuid,
            submission_digest=submission_digest(data) if data.submission_uuid else None,
            captured_at=data.captured_at,
            gps_accuracy_m=data.gps_accuracy,
        )
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
        raise InvalidInput(
            "unknown attribute %(code)r for %(category)s", code=unknown[0], category=category.code
        )
    answers: dict[str, Any] = {}
    for code, definition in definitions.items():
        raw = (given.get(code) or "").strip()
        if not raw:
            if definition.get("required"):
                raise InvalidInput(
                    "attribute[%(code)s] is required for %(category)s",
                    code=code,
                    category=category.code,
                )
            continue
        kind = definition.get("datatype", "string")
        if kind in ("singlevaluelist", "multivaluelist"):
            keys = {str(v["key"]) for v in definition.get("values", [])}
            chosen = raw.split(",") if kind == "multivaluelist" else [raw]
            if not set(chosen) <= keys:
                raise InvalidInput(
                    "attribute[%(code)s] is one of %(values)s",
                    code=code,
                    values=", ".join(sorted(keys)),
                )
            answers[code] = chosen if kind == "multivaluelist" else raw
        elif kind == "number":
            try:
                answers[code] = float(raw)
            except ValueError:
                raise InvalidInput("attribute[%(code)s] must be a number", code=code) from None
            if not math.isfinite(answers[code]):  # JSON has no NaN nor infinity
                raise InvalidInput("attribute[%(code)s] must be a number", code=code)
        elif kind == "datetime":
            try:
                answers[code] = datetime.fromisoformat(raw.replace("Z", "+00:00")).isoformat()
            except ValueError:
                raise InvalidInput(
                    "attribute[%(code)s] must be an ISO 8601 date-time", code=code
                ) from None
        else:
            answers[code] = raw[:1000]
    return answers
