"""Re-handling (重办): the operators' review of follow-up complaints.

An answer "not fixed" or "dissatisfied" that gives a reason waits for review
(`cases.followup`, `review_state` pending). The operator judges it:

- **reasonable**: the closed case goes back to the same unit through the transition table
  (`Action.REHANDLE`: closed → dispatched, a new deadline from the class's limit, counted in
  `cases.rehandle_count`, apart from rework after a failed check). The other complaints of the
  same round of that case waiting for review are settled with it: one re-handling answers them.
- **not reasonable**: recorded with the operator's reason, which is required
  (`Action.DISMISS_COMPLAINT`: the status stays, the event keeps the reason); supervisors and
  leaders see it on the case page.

Both write the case's event through the lifecycle (the audit trail), check the version of the
case the operator saw (a stale form is a 409) and lock the answer, so that two operators
judging the same answer at once judge it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from cases import lifecycle
from cases.followup import FollowupAnswer, ReviewState
from cases.lifecycle import Action, ActionInput, CaseContext
from cases.models import Case
from gridmgmt.kernel.clock import now_utc
from gridmgmt.kernel.errors import N_, Conflict, Forbidden, InvalidInput, NotFound
from gridmgmt.kernel.models import Role, User

MAX_REASON = 2000
QUEUE_LIMIT = 200
# Who sees the operators' verdicts on the case page: the supervision side and leaders.
SEES_REVIEWS = frozenset({Role.OPERATOR, Role.DISPATCHER, Role.LEADER, Role.ADMIN})


class Verdict(str, Enum):
    """The operator's judgement of a complaint."""

    REASONABLE = "reasonable"
    UNREASONABLE = "unreasonable"


# Words the pages show from values (`_(e.action|replace('_', ' ')|capitalize)` in a case's
# timeline, `_(a.respondent|capitalize)` and `_(a.channel|capitalize)` in the queue).
WORDS = (
    N_("Rehandle"), N_("Dismiss complaint"),
    N_("Reporter"), N_("Supporter"), N_("Follower"),
    N_("Link"), N_("Tracking"), N_("Phone"),
)  # fmt: skip

VERDICT_TEXT = {
    Verdict.REASONABLE: N_("Reasonable: re-handle by the same unit"),
    Verdict.UNREASONABLE: N_("Not reasonable"),
}


def parse_verdict(raw: str | None) -> Verdict:
    """The verdict a form sent.

    Raises:
        InvalidInput: none or an unknown one.
    """
    try:
        return Verdict((raw or "").strip())
    except ValueError:
        raise InvalidInput(
            "judge the complaint: reasonable or unreasonable", field="verdict"
        ) from None


@dataclass(frozen=True)
class Pending:
    """A complaint waiting for review, with its case."""

    answer: FollowupAnswer
    case: Case


def pending_reviews(session: Session, limit: int = QUEUE_LIMIT) -> list[Pending]:
    """The complaints waiting for review, oldest first (the partial index of pending answers)."""
    answers = list(
        session.scalars(
            select(FollowupAnswer)
            .where(FollowupAnswer.review_state == ReviewState.PENDING.value)
            .order_by(FollowupAnswer.answered_at, FollowupAnswer.id)
            .limit(limit)
        )
    )
    ids = {a.case_id for a in answers}
    cases = {
        c.id: c
        for c in session.scalars(
            select(Case).where(Case.id.in_(ids)).options(selectinload(Case.category))
        )
    }
    return [Pending(a, cases[a.case_id]) for a in answers]


def reviews_of(session: Session, case_id: int) -> list[FollowupAnswer]:
    """A case's follow-up answers, the latest first (the case page shows them with their
    reviews to the supervision side)."""
    return list(
        session.scalars(
            select(FollowupAnswer)
            .where(FollowupAnswer.case_id == case_id)
            .order_by(FollowupAnswer.answered_at.desc(), FollowupAnswer.id.desc())
        )
    )


def review_answer(
    session: Session,
    answer_id: int,
    user: User,
    verdict: Verdict,
    reason: str,
    version: int | None,
    context: CaseContext,
) -> FollowupAnswer:
    """Judge one pending complaint for the operator `user`; the caller commits.

    Args:
        version: the version of the case the operator saw (None: any).
        reason: the operator's reason: required when not reasonable; when reasonable, an
            optional note for the unit (the complaint's own comment is the re-handling's
            reason).

    Raises:
        Forbidden: not an operator.
        NotFound: no such answer.
        Conflict: the answer was already judged, or the case changed since `version`, or the
            case is not closed any more (re-handled or reopened meanwhile).
        InvalidInput: no reason for "not reasonable", or too long a reason.
    """
    if user.role != Role.OPERATOR:
        raise Forbidden("only operators review follow-up complaints")
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON:
        raise InvalidInput("a reason has at most %(most)s characters", most=MAX_REASON)
    if verdict == Verdict.UNREASONABLE and not reason:
        raise InvalidInput("say why the complaint is not reasonable", field="reason")
    answer = session.scalar(
        select(FollowupAnswer).where(FollowupAnswer.id == answer_id).with_for_update()
    )
    if answer is None:
        raise NotFound("no such follow-up answer")
    if answer.review_state != ReviewState.PENDING.value:
        raise Conflict("this complaint was already judged: reload the queue")
    case = lifecycle.locked_case(session, answer.case_id, user, version)
    now = now_utc()
    if verdict == Verdict.REASONABLE:
        note = answer.comment if not reason else f"{answer.comment}\n— {reason}"
        data = ActionInput(reason=note, review=answer.id)
        lifecycle.apply_action(
            session, case, Action.REHANDLE, lifecycle.actor_of(user), data, context
        )
        # One re-handling answers every complaint of this round of the case.
        session.execute(
            update(FollowupAnswer)
            .where(
                FollowupAnswer.case_id == answer.case_id,
                FollowupAnswer.round == answer.round,
                FollowupAnswer.review_state == ReviewState.PENDING.value,
                FollowupAnswer.id != answer.id,
            )
            .values(
                review_state=ReviewState.REASONABLE.value,
                review_reason=reason,
                reviewed_by=user.id,
                reviewed_at=now,
            )
        )
    else:
        data = ActionInput(reason=reason, review=answer.id)
        lifecycle.apply_action(
            session, case, Action.DISMISS_COMPLAINT, lifecycle.actor_of(user), data, context
        )
    _judged(answer, verdict, reason, user, now)
    session.flush()
    return answer


def _judged(
    answer: FollowupAnswer, verdict: Verdict, reason: str, user: User, now: datetime
) -> None:
    answer.review_state = ReviewState(verdict.value).value  # type: ignore[assignment]
    answer.review_reason = reason
    answer.reviewed_by = user.id
    answer.reviewed_at = now
