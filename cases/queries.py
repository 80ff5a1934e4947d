"""Reading cases: who may see which, lookups by id and number, duplicates, notes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cases import public
from cases.models import Case, CaseEvent
from cases.public import PublicReason, PublicStatus
from cases.status import OPEN_STATUSES, CaseStatus
from gridmgmt.kernel import security_events
from gridmgmt.kernel.db import sql_in
from gridmgmt.kernel.errors import NotFound
from gridmgmt.kernel.models import Role, User
from gridmgmt.kernel.security_events import SecurityEventKind


def visible_cases(user: User | None) -> Any:
    """A filter for the cases this user may see: unit staff their unit's, citizens their own."""
    if user is None:
        return Case.id.is_(None)
    if user.role == Role.UNIT_STAFF:
        return Case.unit_id == user.unit_id
    if user.role == Role.CITIZEN:
        return Case.reporter_id == user.id
    return Case.id.isnot(None)


def get_case(session: Session, case_id: int, user: User | None, lock: bool = False) -> Case:
    """The case with this id, if the user may see it (and locked for update when asked).

    Raises:
        NotFound: no such case, or one this user may not see (no IDOR: same answer).
    """
    query = select(Case).where(Case.id == case_id)
    if user is not None:
        query = query.where(visible_cases(user))
    if lock:
        query = query.with_for_update()
    case = session.scalar(query)
    if case is None:
        if user is not None and session.scalar(select(Case.id).where(Case.id == case_id)):
            # It exists but is another unit's (or person's): answered as missing, recorded.
            security_events.record(
                SecurityEventKind.CROSS_UNIT, user=user, detail={"case_id": case_id}
            )
        raise NotFound("no such case")
    return case


def find_by_number(session: Session, number: str) -> Case:
    """The case with this public number (for the tracking page).

    Raises:
        NotFound: no such case.
    """
    case = session.scalar(select(Case).where(Case.number == number.strip()))
    if case is None:
        raise NotFound("no case numbered %(number)r", number=number)
    return case


def find_duplicates(session: Session, case: Case, limit: int = 5) -> list[tuple[Case, float]]:
    """Open cases of the same class near this one, within its class's radius and time window.

    Returns (case, distance in metres) pairs, nearest first.
    """
    return duplicates_of(session, [case.id], limit).get(case.id, [])


# For each case, the open cases of its class within its class's radius, reported at most its
# class's window before it: the most supported first (people who found the case already
# reported and added their support, `cases.support`), then the nearest, at most :limit each
# (one query for a whole list).
# The bounding box lets the GiST index of `location` find the few cases nearby; the distance on
# the geography alone could use no index and read every open case of the class.
_DUPLICATES = text(f"""
    SELECT n.id AS for_id, d.id, d.distance
    FROM cases n
    JOIN categories k ON k.id = n.category_id
    CROSS JOIN LATERAL (
        SELECT c.id, ST_Distance(c.location::geography, n.location::geography) AS distance,
               (SELECT count(*) FROM case_supporters s WHERE s.case_id = c.id) AS supporters
        FROM cases c
        WHERE c.id <> n.id AND c.category_id = n.category_id
          AND {sql_in("c.status", sorted(OPEN_STATUSES))} AND c.merged_into_id IS NULL
          AND c.reported_at >= n.reported_at - make_interval(hours => k.duplicate_window_hours)
          -- the spatial index first: a box at least the radius wide each way (a degree of
          -- latitude is at least 110,574 m, of longitude at most 111,320 m × cos(latitude)),
          -- then the exact test
          AND c.location && ST_Expand(n.location, k.duplicate_radius_m
                / (110574.0 * greatest(cos(radians(abs(ST_Y(n.location)))), 0.01)))
          AND ST_DWithin(c.location::geography, n.location::geography, k.duplicate_radius_m)
        ORDER BY supporters DESC, distance, c.id
        LIMIT :limit
    ) AS d
    WHERE n.id = ANY(:ids)
    ORDER BY n.id, d.supporters DESC, d.distance, d.id
""")


def duplicates_of(
    session: Session, case_ids: Sequence[int], limit: int = 5
) -> dict[int, list[tuple[Case, float]]]:
    """`find_duplicates` for several cases at once: case id → its suggestions."""
    if not case_ids:
        return {}
    rows = session.execute(_DUPLICATES, {"ids": list(case_ids), "limit": limit}).all()
    found = {
        c.id: c for c in session.scalars(select(Case).where(Case.id.in_({r.id for r in rows})))
    }
    suggestions: dict[int, list[tuple[Case, float]]] = {}
    for row in rows:
        suggestions.setdefault(row.for_id, []).append((found[row.id], float(row.distance)))
    return suggestions


def last_notes(session: Session, case_ids: Sequence[int]) -> dict[int, str]:
    """Each case's latest non-empty event note (a return's reason, a handling note...)."""
    last = (
        select(CaseEvent.case_id, func.max(CaseEvent.id).label("id"))
        .where(CaseEvent.case_id.in_(list(case_ids)), CaseEvent.note != "")
        .group_by(CaseEvent.case_id)
        .subquery()
    )
    query = select(CaseEvent.case_id, CaseEvent.note).join(last, last.c.id == CaseEvent.id)
    return dict(session.execute(query).tuples().all())


def public_case(session: Session, case: Case) -> Case:
    """The case a reporter should be told about: the open case it was merged into, if any."""
    seen = {case.id}
    while case.merged_into_id is not None and case.merged_into_id not in seen:
        target = session.get(Case, case.merged_into_id)
        if target is None:
            break
        seen.add(target.id)
        case = target
    return case


def public_notes(
    session: Session, case_ids: Sequence[int], since: datetime | None = None
) -> dict[int, str]:
    """Each case's latest note that staff marked public (no other note is ever public).
    `since`: the earliest report time of the cases (a case's events are never older than its
    report, its first event), so that only the event log's months from then on are read: for
    a page of recent cases one partition, not one probe per case in every month kept."""
    where = [
        CaseEvent.case_id.in_(list(case_ids)),
        CaseEvent.note != "",
        CaseEvent.data.has_key(public.PUBLIC_NOTE),
    ]
    if since is not None:
        where.append(CaseEvent.created_at >= since)
    last = (
        select(CaseEvent.case_id, func.max(CaseEvent.id).label("id"))
        .where(*where)
        .group_by(CaseEvent.case_id)
        .subquery()
    )
    query = select(CaseEvent.case_id, CaseEvent.note).join(last, last.c.id == CaseEvent.id)
    if since is not None:
        query = query.where(CaseEvent.created_at >= since)
    return dict(session.execute(query).tuples().all())


def reject_reasons(session: Session, case_ids: Sequence[int]) -> dict[int, str]:
    """The reason code of each rejected case's rejection."""
    query = (
        select(CaseEvent.case_id, CaseEvent.data["reason"].astext)
        .where(CaseEvent.case_id.in_(list(case_ids)), CaseEvent.to_status == CaseStatus.REJECTED)
        .order_by(CaseEvent.id)
    )
    return dict(session.execute(query).tuples().all())  # the latest wins


@dataclass(frozen=True)
class PublicCase:
    """A case as every public output shows it (`cases.public` has the rules)."""

    case: Case
    status: PublicStatus
    listed: bool  # entered the loop: its description, address and unit may be shown
    note: str  # the latest note staff marked public, or ""
    reason: PublicReason | None  # why a report did not become a case
    merged_into: str | None  # the case number a duplicate is followed in
    lon: float  # rounded by the coordinate policy
    lat: float

    @property
    def text(self) -> str:
        """The public status text (an English message id)."""
        return public.PUBLIC_TEXT[self.status]

    @property
    def reason_text(self) -> str | None:
        """Why it did not become a case (an English message id), if it did not."""
        return public.PUBLIC_REASON_TEXT[self.reason] if self.reason else None


def public_cases(session: Session, cases: Sequence[Case], decimals: int) -> list[PublicCase]:
    """The public view of cases (a few queries for a whole page)."""
    ids = [c.id for c in cases]
    notes = public_notes(session, ids, since=min((c.reported_at for c in cases), default=None))
    rejected = [c.id for c in cases if c.status == CaseStatus.REJECTED]
    reasons = reject_reasons(session, rejected) if rejected else {}
    targets = {c.merged_into_id for c in cases if c.merged_into_id}
    numbers = (
        dict(session.execute(select(Case.id, Case.number).where(Case.id.in_(targets))).all())
        if targets
        else {}
    )
    # The positions in one query (not each case's geometry parsed in Python).
    points = {
        case_id: (x, y)
        for case_id, x, y in session.execute(
            select(Case.id, func.ST_X(Case.location), func.ST_Y(Case.location)).where(
                Case.id.in_(ids)
            )
        )
    }
    views = []
    for case in cases:
        lon, lat = public.public_point(*points[case.id], decimals)
        views.append(
            PublicCase(
                case=case,
                status=public.public_status(case.status),
                listed=public.is_listed(case.status),
                note=notes.get(case.id, ""),
                reason=public.public_reason(case.status, reasons.get(case.id)),
                merged_into=numbers.get(case.merged_into_id) if case.merged_into_id else None,
                lon=lon,
                lat=lat,
            )
        )
    return views
