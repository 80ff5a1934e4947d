"""Photos sent after their report, one a request, from a phone's outbox (ODK Central's way).

A phone without a signal keeps a report and its photos; when the network returns it sends the
report (with its submission UUID: `cases.intake`) and then each photo on its own, so that a
weak signal never restarts a 40 MB body. Each photo carries its own UUID: the first request
stores it, a repeat (the reply was lost) stores nothing and answers the same, and a UUID
already used for another case is refused. Only the reporter of the case (the same account, or
for an anonymous report whoever holds its submission UUID) may add photos to it, at most
MAX_PHOTOS in all. The caller owns the commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cases.intake import check_captured_at
from cases.models import Case, CaseEvent, Photo, PhotoKind
from cases.photos import MAX_PHOTOS, Upload, check_uploads, decode_photos, photo_rows
from gridmgmt.kernel.errors import Conflict, InvalidInput, NotFound
from gridmgmt.kernel.models import User


@dataclass(frozen=True)
class AttachResult:
    """The case a photo belongs to, how many photos it has now, and whether this call stored
    the photo (False: a repeat)."""

    case_id: int
    number: str
    photos: int
    created: bool


def attach_photo(
    session: Session,
    submission_uuid: str,
    photo_uuid: str,
    upload: Upload,
    reporter: User | None,
    photo_root: Path,
    captured_at: datetime | None = None,
) -> AttachResult:
    """Add one photo to the case a submission made, once.

    Raises:
        NotFound: no case has this submission UUID, or it is another reporter's.
        Conflict: the photo UUID belongs to another case's photo.
        InvalidInput: the case has MAX_PHOTOS photos already, a bad capture time, or the
            upload is not an acceptable photo (`cases.photos.PhotoError`).
    """
    try:
        submission_uuid = str(uuid.UUID(submission_uuid))
    except ValueError:
        raise NotFound("no report with submission %(uuid)s", uuid=submission_uuid[:64]) from None
    photo_uuid = photo_uuid.lower()
    case = session.execute(
        select(Case.id, Case.number, Case.reporter_id)
        .where(Case.submission_uuid == submission_uuid)
        .with_for_update()  # photos of one report are counted one request at a time
    ).first()
    if case is None or case.reporter_id != (reporter.id if reporter else None):
        raise NotFound(
            "no report with submission %(uuid)s: send the report before its photos",
            uuid=submission_uuid,
        )
    repeat = _known_photo(session, photo_uuid, case.id, case.number)
    if repeat is not None:
        return repeat
    count = _photo_count(session, case.id)
    if count >= MAX_PHOTOS:
        raise InvalidInput(
            "case %(number)s has %(most)s photos already", number=case.number, most=MAX_PHOTOS
        )
    check_captured_at(captured_at)
    check_uploads([upload])
    first_event = session.scalar(
        select(func.min(CaseEvent.id)).where(CaseEvent.case_id == case.id)
    )  # the report's: the photo is part of what was reported
    try:
        with session.begin_nested():
            stored = decode_photos([upload], photo_root, session)  # removed on rollback
            (row,) = photo_rows(session, case.id, stored, PhotoKind.BEFORE, first_event)
            row.client_uuid = photo_uuid
            row.captured_at = captured_at
            session.flush()
    except IntegrityError:
        # The same photo in a request running alongside (its reply lost, the phone sent it
        # again at once): theirs is stored.
        repeat = _known_photo(session, photo_uuid, case.id, case.number)
        if repeat is None:
            raise
        return repeat
    return AttachResult(case.id, case.number, count + 1, True)


def _photo_count(session: Session, case_id: int) -> int:
    """How many photos a case has."""
    return int(session.scalar(select(func.count()).where(Photo.case_id == case_id)) or 0)


def _known_photo(
    session: Session, photo_uuid: str, case_id: int, number: str
) -> AttachResult | None:
    """The answer to a photo UUID already stored for this case (None: a new one).

    Raises:
        Conflict: the UUID is another case's photo.
    """
    owner = session.scalar(select(Photo.case_id).where(Photo.client_uuid == photo_uuid))
    if owner is None:
        return None
    if owner != case_id:
        raise Conflict(
            "photo %(uuid)s was already sent with another report",
            details={"reason": "photo_taken"},
            uuid=photo_uuid,
        )
    return AttachResult(case_id, number, _photo_count(session, case_id), False)
