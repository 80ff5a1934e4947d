"""What the public may see of a case: the rules every public output shares (Open311 reads,
the tracking page, open data). Pure: no Flask, no session.

- **Listed** are the cases that entered the loop: filed and after. Reports still waiting for
  verification, and reports that never became a case (refused, invalid, merged), are never
  listed; looked up by their number (the reporter has it) they answer with a public status
  and, for those that ended, a public reason code, without their description or address.
- **Statuses** are shown as a public status with a public text, never the internal step (a
  return to the centre, a failed check and the checks themselves are the city's business).
- **Notes** are shown only when staff marked them public (`public_note` in the event's data).
- **Coordinates** are rounded to `decimals` places (4 by default, about 11 m) everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from cases.status import CaseStatus as S
from gridmgmt.kernel.errors import N_

# An event whose note staff chose to show to the public carries this key in its data.
PUBLIC_NOTE = "public_note"


class PublicStatus(str, Enum):
    """Where a case stands, as the public is told."""

    RECEIVED = "received"  # reported, not yet verified or filed
    NOT_ACCEPTED = "not_accepted"  # rejected or found invalid
    DUPLICATE = "duplicate"  # merged into another case
    ACCEPTED = "accepted"  # filed, waiting for a unit (also after a unit handed it back)
    WITH_UNIT = "with_unit"  # a unit has it and its deadline runs
    ON_HOLD = "on_hold"  # suspended with the centre's approval
    BEING_CHECKED = "being_checked"  # the unit reported it done; the centre checks on site
    CLOSED = "closed"


PUBLIC_STATUS: dict[S, PublicStatus] = {
    S.REPORTED: PublicStatus.RECEIVED,
    S.VERIFIED: PublicStatus.RECEIVED,
    S.INVALID: PublicStatus.NOT_ACCEPTED,
    S.REJECTED: PublicStatus.NOT_ACCEPTED,
    S.MERGED: PublicStatus.DUPLICATE,
    S.FILED: PublicStatus.ACCEPTED,
    S.RETURNED: PublicStatus.ACCEPTED,
    S.DISPATCHED: PublicStatus.WITH_UNIT,
    S.IN_PROGRESS: PublicStatus.WITH_UNIT,
    S.SUSPENDED: PublicStatus.ON_HOLD,
    S.HANDLED: PublicStatus.BEING_CHECKED,
    S.CHECKING: PublicStatus.BEING_CHECKED,
    S.CHECKED: PublicStatus.BEING_CHECKED,
    S.CLOSED: PublicStatus.CLOSED,
}

# The public text of each public status (English message ids; the pages translate them).
PUBLIC_TEXT: dict[PublicStatus, str] = {
    PublicStatus.RECEIVED: N_("Received: being verified"),
    PublicStatus.NOT_ACCEPTED: N_("Not accepted as a case"),
    PublicStatus.DUPLICATE: N_("Already reported: followed in another case"),
    PublicStatus.ACCEPTED: N_("Accepted: being sent to the responsible unit"),
    PublicStatus.WITH_UNIT: N_("With the responsible unit"),
    PublicStatus.ON_HOLD: N_("On hold"),
    PublicStatus.BEING_CHECKED: N_("Reported fixed: being checked on site"),
    PublicStatus.CLOSED: N_("Closed"),
}

# Cases listed in public outputs: those that entered the loop (filed and after).
LISTED_STATUSES = frozenset({S.FILED, S.DISPATCHED, S.IN_PROGRESS, S.RETURNED, S.SUSPENDED,
                             S.HANDLED, S.CHECKING, S.CHECKED, S.CLOSED})  # fmt: skip
# Open311's "closed": nothing more will be done.
CLOSED_STATUSES = frozenset({PublicStatus.NOT_ACCEPTED, PublicStatus.DUPLICATE,
                             PublicStatus.CLOSED})  # fmt: skip


class PublicReason(str, Enum):
    """Why a report did not become a case, as the public is told (a code, never a note)."""

    NOT_CITY_PROBLEM = "not_city_problem"
    DUPLICATE = "duplicate"
    OUTSIDE_TERRITORY = "outside_territory"
    NOT_CONFIRMED = "not_confirmed"  # checked on site and not found


PUBLIC_REASON_TEXT: dict[PublicReason, str] = {
    PublicReason.NOT_CITY_PROBLEM: N_("Not a problem the city handles"),
    PublicReason.DUPLICATE: N_("Already reported"),
    PublicReason.OUTSIDE_TERRITORY: N_("Outside the city's territory"),
    PublicReason.NOT_CONFIRMED: N_("Not found on site"),
}


def public_status(status: str) -> PublicStatus:
    """The public status of an internal one."""
    return PUBLIC_STATUS[S(status)]


def is_listed(status: str) -> bool:
    """Whether a case in this status appears in public listings."""
    return S(status) in LISTED_STATUSES


def public_reason(status: str, reject_reason: str | None) -> PublicReason | None:
    """The public reason code of a report that did not become a case, else None.

    `reject_reason` is the reason code the operator chose when rejecting (a `RejectReason`
    value); anything else (a free text) gives no code but "not a city problem"."""
    match S(status):
        case S.MERGED:
            return PublicReason.DUPLICATE
        case S.INVALID:
            return PublicReason.NOT_CONFIRMED
        case S.REJECTED:
            try:
                return PublicReason(reject_reason or "")
            except ValueError:
                return PublicReason.NOT_CITY_PROBLEM
    return None


@dataclass(frozen=True)
class Step:
    """One line of a case's public timeline."""

    at: datetime
    status: PublicStatus
    note: str = ""  # a note staff marked public


def public_steps(events: Iterable[tuple[datetime, str, str]]) -> list[Step]:
    """A case's public timeline from its events (time, status after, public note or ""): a
    line where the public status changes or a public note was written (the public sees "with
    the unit" once, not dispatched, then in progress)."""
    steps: list[Step] = []
    for at, status, note in events:
        current = public_status(status)
        if not steps or current != steps[-1].status or note:
            steps.append(Step(at, current, note))
    return steps


def public_point(lon: float, lat: float, decimals: int) -> tuple[float, float]:
    """A position as public outputs give it: rounded to `decimals` places (4: about 11 m)."""
    return round(lon, decimals), round(lat, decimals)


def names_actor(viewer_role: str, actor_role: str, same_person: bool) -> bool:
    """Whether a page names the person behind an event (else it shows their role): a citizen
    is named to nobody but themselves; an inspector not to unit staff (the units handle
    what the supervision centre found, not who found it)."""
    if same_person:
        return True
    if actor_role == "citizen":
        return False
    return not (viewer_role == "unit_staff" and actor_role == "inspector")
