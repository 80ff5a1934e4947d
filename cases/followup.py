"""The satisfaction follow-up (回访): after a case closes, the people who reported it say
whether the problem was really fixed and whether they are satisfied.

One answer per person per round (一事一评): `round` 1 is the follow-up after the first close,
a case reopened and closed again asks again in round 2, and so on. `respondent_key` is a hash
that names the person, not the channel, so the reporter answering by the e-mailed link, on the
tracking page or to an operator's phone call is one answer. An answer "not fixed" or
"dissatisfied" that gives a reason (the comment) waits for an operator's review
(`review_state` pending): reasonable sends the case back to its unit (重办), unreasonable is
recorded with the operator's reason.

The services here record answers (`record_answer`); the links' tokens are in
`cases.notices` (one place signs and checks every token the public receives).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from cases.models import Case, CaseEvent
from cases.status import CaseStatus
from gridmgmt.kernel.db import Base, enum_check
from gridmgmt.kernel.errors import N_, Conflict, InvalidInput, NotFound

DEFAULT_LINK_DAYS = 14
MAX_COMMENT = 2000


class Respondent(str, Enum):
    """Who answers: the case's reporter, someone who supported it, or a follower."""

    REPORTER = "reporter"
    SUPPORTER = "supporter"
    FOLLOWER = "follower"


class Channel(str, Enum):
    """How the answer came: the e-mailed/texted link, the tracking page, an operator's call."""

    LINK = "link"
    TRACKING = "tracking"
    PHONE = "phone"


class Fixed(str, Enum):
    """Was the problem fixed (the resolution rate counts yes / (yes + no))."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


class Satisfaction(str, Enum):
    """满意 / 基本满意 / 不满意."""

    SATISFIED = "satisfied"
    BASICALLY_SATISFIED = "basically_satisfied"
    DISSATISFIED = "dissatisfied"


class ReviewState(str, Enum):
    """An operator's review of a complaint: none needed, waiting, or judged."""

    NONE = "none"
    PENDING = "pending"
    REASONABLE = "reasonable"
    UNREASONABLE = "unreasonable"


FIXED_TEXT = {
    Fixed.YES: N_("Yes, it is fixed"),
    Fixed.NO: N_("No, it is not fixed"),
    Fixed.UNKNOWN: N_("I don't know"),
}
SATISFACTION_TEXT = {
    Satisfaction.SATISFIED: N_("Satisfied"),
    Satisfaction.BASICALLY_SATISFIED: N_("Basically satisfied"),
    Satisfaction.DISSATISFIED: N_("Dissatisfied"),
}


class FollowupAnswer(Base):
    """One person's answer to the follow-up of one round of a case."""

    __tablename__ = "followup_answers"
    __table_args__ = (
        UniqueConstraint("case_id", "round", "respondent_key", name="uq_followup_answers_person"),
        CheckConstraint("round >= 1", name="round_positive"),
        CheckConstraint(enum_check("respondent", Respondent), name="respondent"),
        CheckConstraint(enum_check("channel", Channel), name="channel"),
        CheckConstraint(enum_check("fixed", Fixed), name="fixed"),
        CheckConstraint(
            f"satisfaction IS NULL OR {enum_check('satisfaction', Satisfaction)}",
            name="satisfaction",
        ),
        CheckConstraint(enum_check("review_state", ReviewState), name="review_state"),
        Index(  # the operators' review queue, oldest first
            "ix_followup_answers_pending",
            "answered_at",
            postgresql_where=text("review_state = 'pending'"),
        ),
        Index("ix_followup_answers_answered_at", "answered_at"),  # the rates by period
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), nullable=False)
    round: Mapped[int] = mapped_column(Integer, nullable=False)
    respondent: Mapped[Respondent] = mapped_column(String(16), nullable=False)
    channel: Mapped[Channel] = mapped_column(String(16), nullable=False)
    fixed: Mapped[Fixed] = mapped_column(String(16), nullable=False)
    satisfaction: Mapped[Satisfaction | None] = mapped_column(String(24))
    comment: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    photo_id: Mapped[int | None] = mapped_column(ForeignKey("photos.id"))
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    respondent_key: Mapped[str] = mapped_column(String(64), nullable=False)
    review_state: Mapped[ReviewState] = mapped_column(
        String(16), nullable=False, server_default=ReviewState.NONE.value
    )
    review_reason: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AlreadyAnswered(Conflict):
    """This person already answered this round (409)."""

    code = "already_answered"


# ---------------------------------------------------------------- rules (pure)


def respondent_key(kind: str, ident: str | int) -> str:
    """The hash naming a person for "one answer per person per round": the reporter of case
    42 is ("reporter", 42) whatever channel they answer by; a follower is their address."""
    return hashlib.sha256(f"{kind}\x1f{ident}".encode()).hexdigest()


def needs_review(fixed: Fixed, satisfaction: Satisfaction | None, comment: str) -> bool:
    """A complaint with a reason goes to the operators' review queue."""
    complaint = fixed == Fixed.NO or satisfaction == Satisfaction.DISSATISFIED
    return complaint and bool(comment.strip())


def parse_answer(
    fixed: str | None, satisfaction: str | None, comment: str | None
) -> tuple[Fixed, Satisfaction | None, str]:
    """The checked answer from what a form or API sent.

    Raises:
        InvalidInput: no or an unknown "fixed", an unknown satisfaction, too long a comment.
    """
    try:
        was_fixed = Fixed((fixed or "").strip())
    except ValueError:
        raise InvalidInput(
            "say whether the problem was fixed: yes, no or don't know", field="fixed"
        ) from None
    rating: Satisfaction | None = None
    if (satisfaction or "").strip():
        try:
            rating = Satisfaction(satisfaction.strip())  # type: ignore[union-attr]
        except ValueError:
            raise InvalidInput(
                "satisfied, basically satisfied or dissatisfied", field="satisfaction"
            ) from None
    text_ = (comment or "").strip()
    if len(text_) > MAX_COMMENT:
        raise InvalidInput("a comment has at most %(most)s characters", most=MAX_COMMENT)
    return was_fixed, rating, text_


# ---------------------------------------------------------------- services


@dataclass(frozen=True)
class Round:
    """The follow-up round a closed case is in, and until when it may be answered."""

    case_id: int
    number: int
    closed_at: datetime
    expires_at: datetime


def current_round(session: Session, case: Case, link_days: int) -> Round:
    """The open follow-up round of a case: the number of times it was closed.

    Raises:
        Conflict: the case is not closed (nothing to answer yet, or reopened meanwhile).
    """
    if case.status != CaseStatus.CLOSED.value or case.closed_at is None:
        raise Conflict(
            "case %(number)s is not closed: there is nothing to answer", number=case.number
        )
    closes = session.scalar(
        select(func.count())
        .select_from(CaseEvent)
        .where(CaseEvent.case_id == case.id, CaseEvent.action == "close")
    )
    number = max(int(closes or 0), 1)
    return Round(case.id, number, case.closed_at, case.closed_at + timedelta(days=link_days))


@dataclass(frozen=True)
class AnswerInput:
    """A checked answer and who gives it, by which channel."""

    fixed: Fixed
    satisfaction: Satisfaction | None
    comment: str
    respondent: Respondent
    channel: Channel
    respondent_key: str
    photo_id: int | None = None
    recorded_by: int | None = None


def record_answer(
    session: Session, case_id: int, round_number: int, answer: AnswerInput, now: datetime
) -> FollowupAnswer:
    """Record one person's answer for the round (INSERT ... ON CONFLICT DO NOTHING: two
    submits at once record one).

    Raises:
        AlreadyAnswered: this person already answered this round.
    """
    values = {
        "case_id": case_id,
        "round": round_number,
        "respondent": answer.respondent.value,
        "channel": answer.channel.value,
        "fixed": answer.fixed.value,
        "satisfaction": answer.satisfaction.value if answer.satisfaction else None,
        "comment": answer.comment,
        "photo_id": answer.photo_id,
        "recorded_by": answer.recorded_by,
        "answered_at": now,
        "respondent_key": answer.respondent_key,
        "review_state": (
            ReviewState.PENDING
            if needs_review(answer.fixed, answer.satisfaction, answer.comment)
            else ReviewState.NONE
        ).value,
    }
    statement = (
        insert(FollowupAnswer)
        .values(**values)
        .on_conflict_do_nothing(constraint="uq_followup_answers_person")
        .returning(FollowupAnswer.id)
    )
    new_id = session.scalar(statement)
    if new_id is None:
        raise AlreadyAnswered("this follow-up was already answered: one answer per round")
    row = session.get(FollowupAnswer, new_id)
    if row is None:  # just inserted in this transaction
        raise NotFound("no such answer")
    return row


def answered(session: Session, case_id: int, round_number: int, key: str) -> bool:
    """Whether this person already answered this round."""
    found = session.scalar(
        select(FollowupAnswer.id).where(
            FollowupAnswer.case_id == case_id,
            FollowupAnswer.round == round_number,
            FollowupAnswer.respondent_key == key,
        )
    )
    return found is not None
