"""Photos sent after their report, one a request, from a phone's outbox (ODK Central's way).

A phone without a signal keeps a report and its photos; when the network returns it sends the
report (with its submission UUID: `cases.intake`) and then each photo on its own, so that a
weak signal never restarts a 40 MB body. Each photo carries its own UUID: the first request
stores it, a repeat (the reply was lost) stores nothing and answers the same, and a UUID
already used for another case is refused. Only the reporter of the case (the same account, or
for an anonymous report whoever holds its submission UUID) may add photos to it, at most
MAX_PHOTOS in all. The caller owns the commit.

It also says which grid cells an inspector's phone keeps for the map without a signal: the
boxes of cells (the same boxes the maps ask `cells.geojson` for) around the inspector's tasks
and recent reports.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cases.intake import check_captured_at
from cases.models import Case, CaseEvent, CaseStatus, Photo, PhotoKind
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


# The boxes of cells the maps ask for (static/js/map.js, CHUNK_DEG): the same box is the same
# URL, which is what the service worker keeps and finds again.
CELL_BOX_DEG = 0.005
# At most this many boxes kept on a phone: ~10 kB each for 100 m cells (measured: README).
MOST_CELL_BOXES = 100
# The places of this many tasks of each list, and of the reports made in this long.
PLACES_PER_LIST = 50
RECENT_REPORTS = timedelta(days=14)

Place = tuple[float, float]  # (lon, lat)
Box = tuple[float, float, float, float]  # (west, south, east, north)


def boxes_near(place: Place) -> list[tuple[int, int]]:
    """The four boxes (column, row) nearest a place: its own and the neighbours on the sides
    it is closest to. A phone's map at street level (zoom 17, ~350 × 270 m) centred on the
    place stays within them, as a box is ~430 × 555 m."""
    lon, lat = place
    x, y = lon / CELL_BOX_DEG, lat / CELL_BOX_DEG
    i, j = math.floor(x), math.floor(y)
    di = -1 if x - i < 0.5 else 1
    dj = -1 if y - j < 0.5 else 1
    return [(i, j), (i + di, j), (i, j + dj), (i + di, j + dj)]


def cell_boxes(places: Iterable[Place], most: int = MOST_CELL_BOXES) -> list[Box]:
    """The boxes of cells around the places, the first places' first, each once, at most
    `most` of them."""
    seen: dict[tuple[int, int], None] = {}
    for place in places:
        for key in boxes_near(place):
            if len(seen) >= most:
                return [box_of(*k) for k in seen]
            seen.setdefault(key)
    return [box_of(*k) for k in seen]


def box_of(i: int, j: int) -> Box:
    """The box in column i, row j: its corners as the maps compute them."""
    return (i * CELL_BOX_DEG, j * CELL_BOX_DEG, (i + 1) * CELL_BOX_DEG, (j + 1) * CELL_BOX_DEG)


def bbox_param(box: Box) -> str:
    """A box as the maps write it in `?bbox=` (rounded to 1e-6, no trailing zeros), so that
    the URL is the one the map asks for, character for character."""

    def fixed(value: float) -> str:
        text = f"{round(value * 1e6) / 1e6:.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text

    return ",".join(fixed(v) for v in box)


def places_of_inspector(session: Session, user_id: int, now: datetime) -> list[Place]:
    """Where an inspector goes next: the checks on site given to them, then those given to no
    one, then the reports they made lately, then the citizen reports to verify (the task list's
    order within each)."""
    where = (
        (Case.status == CaseStatus.CHECKING, Case.check_inspector_id == user_id),
        (Case.status == CaseStatus.CHECKING, Case.check_inspector_id.is_(None)),
        (Case.reporter_id == user_id, Case.reported_at >= now - RECENT_REPORTS),
        (Case.status == CaseStatus.REPORTED,),
    )
    orders = (Case.handled_at, Case.handled_at, Case.reported_at.desc(), Case.reported_at)
    places: list[Place] = []
    for conditions, order in zip(where, orders, strict=True):
        rows = session.execute(
            select(func.ST_X(Case.location), func.ST_Y(Case.location))
            .where(*conditions)
            .order_by(order)
            .limit(PLACES_PER_LIST)
        )
        places.extend((float(lon), float(lat)) for lon, lat in rows)
    return places
