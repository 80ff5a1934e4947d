"""Supporters (附议): a person about to report a problem that is already reported adds their
support to the open case instead of filing a duplicate.

One supporter per person per case: a signed-in account is the person; an anonymous visitor is
their e-mail address (lower case), else their phone number (digits only). A supporter hears
what happens to the case by the ways they give (accounts have no address: a signed-in citizen
gives one on the form too): an e-mail address is sent the confirmation of a follow of the
case first (cases.notices, double opt-in), a phone number hears by SMS at once, as a
reporter's phone does, starting with where the case stands. Supporting twice is answered as done,
never as a second row (a unique index over the case and `supporter_key`, written with
ON CONFLICT DO NOTHING: two clicks at once record one).

Only what the public may see can be supported: a case that entered the loop (filed and after)
and is still open; a report merged into another case supports that case. Staff do not
support: they file, merge or act.

Operators see each case's count on its page and in their duplicate suggestions (the most
supported of the candidates first, `cases.queries.duplicates_of`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from cases import notices, public, queries
from cases.models import Case, CaseEvent
from cases.status import OPEN_STATUSES
from gridmgmt.kernel.db import Base, Timestamped
from gridmgmt.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from gridmgmt.kernel.models import Role, User

MAX_CONTACT = 200
_EMAIL = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$")
MIN_PHONE_DIGITS = 6
# Who may support: the public (anonymous, or a citizen's account).
SUPPORTING_ROLES = frozenset({Role.CITIZEN.value})


class CaseSupporter(Timestamped, Base):
    """One person's support of an open case (instead of a duplicate report)."""

    __tablename__ = "case_supporters"
    __table_args__ = (
        UniqueConstraint("case_id", "supporter_key", name="uq_case_supporters_person"),
        CheckConstraint("user_id IS NOT NULL OR contact <> '{}'::jsonb", name="someone"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), nullable=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # e-mail, phone, name as given: never published, like a reporter's contact
    contact: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    supporter_key: Mapped[str] = mapped_column(String(64), nullable=False)
    lang: Mapped[str] = mapped_column(String(8), nullable=False, server_default="en")


# The public's reports in a community, newest first (`cases.nearby`), from the index.
Index("ix_cases_community_reported_at", Case.community_id, Case.reported_at, Case.id)
# The evaluation's follow-up and re-handling rates: a period's closings and re-handlings, with
# their cases (`maps.evaluation`), index-only (migration 0024).
Index(
    "ix_case_events_closes",
    CaseEvent.created_at,
    postgresql_include=["case_id"],
    postgresql_where=text("action IN ('close', 'rehandle')"),
)


# ---------------------------------------------------------------- rules (pure)


@dataclass(frozen=True)
class SupportInput:
    """Who supports: the signed-in account, or an anonymous visitor's contact."""

    email: str = ""
    phone: str = ""
    name: str = ""
    lang: str = "en"


def clean_contact(data: SupportInput) -> dict[str, str]:
    """The contact given, checked (empty values left out).

    Raises:
        InvalidInput: an e-mail or phone that cannot be one, or a value too long.
    """
    contact = {k: v.strip() for k, v in (("email", data.email), ("phone", data.phone),
                                         ("name", data.name)) if v and v.strip()}  # fmt: skip
    for name, value in contact.items():
        if len(value) > MAX_CONTACT:
            raise InvalidInput(
                "%(name)s has at most %(limit)s characters", field=name, name=name,
                limit=MAX_CONTACT,
            )  # fmt: skip
    if "email" in contact and not _EMAIL.match(contact["email"]):
        raise InvalidInput("the e-mail address is not valid", field="email")
    if "phone" in contact and len(re.sub(r"\D", "", contact["phone"])) < MIN_PHONE_DIGITS:
        raise InvalidInput("the phone number is not valid", field="phone")
    return contact


def supporter_key(user_id: int | None, contact: dict[str, str]) -> str:
    """The hash naming one person: their account, else their e-mail, else their phone.

    Raises:
        InvalidInput: an anonymous visitor who gave neither an e-mail nor a phone.
    """
    if user_id is not None:
        ident = f"user:{user_id}"
    elif contact.get("email"):
        ident = f"email:{contact['email'].lower()}"
    elif contact.get("phone"):
        ident = "phone:" + re.sub(r"\D", "", contact["phone"])
    else:
        raise InvalidInput(
            "to add your support, sign in or give an e-mail address or a phone number",
            field="email",
        )
    return hashlib.sha256(ident.encode()).hexdigest()


def may_be_supported(status: str) -> bool:
    """Whether the public may support a case in this status: listed and still open."""
    return public.is_listed(status) and status in {s.value for s in OPEN_STATUSES}


# ---------------------------------------------------------------- services


@dataclass(frozen=True)
class Supported:
    """The answer to a support: the case supported, whether this was new, the count now."""

    case: Case
    created: bool
    supporters: int


def add_support(
    session: Session, number: str, user: User | None, data: SupportInput, now: datetime
) -> Supported:
    """Record `user` (None: an anonymous visitor known by the contact in `data`) as a
    supporter of the open case numbered `number` (or of the case it was merged into). The
    caller commits.

    Raises:
        Forbidden: a member of staff (they file or merge reports instead).
        NotFound: no case the public may see has this number.
        Conflict: the case is no longer open.
        InvalidInput: no way to tell who supports (see `supporter_key`), a bad contact.
    """
    if user is not None and user.role not in SUPPORTING_ROLES:
        raise Forbidden("staff do not add support to reports: file or merge them instead")
    contact = clean_contact(data)  # a signed-in citizen may give one too, to hear back
    key = supporter_key(user.id if user is not None else None, contact)
    found = session.scalar(select(Case).where(Case.number == number.strip()))
    if found is None:
        raise NotFound("no case numbered %(number)r", number=number)
    case = queries.public_case(session, found)
    if not public.is_listed(case.status):
        raise NotFound("no case numbered %(number)r", number=number)  # not public yet
    if not may_be_supported(case.status):
        raise Conflict("case %(number)s is closed: report the problem again", number=case.number)
    statement = (
        insert(CaseSupporter)
        .values(
            case_id=case.id,
            user_id=user.id if user is not None else None,
            contact=contact,
            supporter_key=key,
            lang=(data.lang or "en")[:8],
            created_at=now,
        )
        .on_conflict_do_nothing(constraint="uq_case_supporters_person")
        .returning(CaseSupporter.id)
    )
    created = session.scalar(statement) is not None
    tell_supporter(session, case, contact, data.lang, now)
    return Supported(case, created, supporter_counts(session, [case.id]).get(case.id, 0))


def tell_supporter(
    session: Session, case: Case, contact: dict[str, str], language: str, now: datetime
) -> None:
    """A supporter who gave a way to reach them hears what happens to the case: an e-mail is
    sent the confirmation of a follow first (double opt-in, as any follower's), a phone hears
    by SMS at once (as a reporter's phone does: they gave it for this case) and is told where
    the case stands. Supporting again with a contact (say, after signing in without one)
    starts it; an address that already hears of the case is left alone (never two messages).

    Raises:
        InvalidInput: an e-mail or phone number the channels cannot write to.
    """
    email = contact.get("email")
    if email and not notices.hears_of_case(
        session, case.id, notices.NoticeChannel.EMAIL,
        notices.normal_address(notices.NoticeChannel.EMAIL, email),
    ):  # fmt: skip
        notices.request_follow(session, email, language, now, case_id=case.id)
    if contact.get("phone"):
        notices.follow_by_sms(session, case, contact["phone"], language, now)


def supporter_counts(session: Session, case_ids: Sequence[int]) -> dict[int, int]:
    """How many people support each of these cases (cases without supporters left out)."""
    if not case_ids:
        return {}
    query = (
        select(CaseSupporter.case_id, func.count())
        .where(CaseSupporter.case_id.in_(list(case_ids)))
        .group_by(CaseSupporter.case_id)
    )
    return {case_id: int(n) for case_id, n in session.execute(query).tuples()}
