"""The public's side of hearing back: follow a case or a community, unsubscribe, answer the
satisfaction follow-up (by the e-mailed link or on the tracking page with the reporter's
code); and the staff's: record a follow-up made by phone, see how many follow a case, and the
demo's mailbox of the messages sent.

Every page here takes its authority from a signed token or the reporter's code, never from
a case number alone: a number is public, so a page found by it shows nothing private and
changes nothing without the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cases import followup, notices, queries
from cases import photos as photo_store
from cases.followup import (
    AnswerInput,
    Channel,
    FollowupAnswer,
    Respondent,
    parse_answer,
    record_answer,
    respondent_key,
)
from cases.forms import uploads
from cases.models import Case, PhotoKind
from cases.notices import Notice, NoticeState, Subscription, SubscriptionKind
from cases.public import is_listed
from gridmgmt.kernel import clock, ratelimit
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from gridmgmt.kernel.i18n import current_lang, gettext
from gridmgmt.kernel.models import Role
from gridmgmt.kernel.web import role_required
from grids.models import Area, AreaLevel

bp = Blueprint("public", __name__, template_folder="templates")

STAFF_ROLES = (Role.OPERATOR, Role.DISPATCHER, Role.LEADER, Role.ADMIN)
MAILBOX_ROLES = (Role.OPERATOR, Role.ADMIN)
MAILBOX_PAGE = 100


def secret() -> str:
    return str(current_app.config["SECRET_KEY"])


def link_days() -> int:
    return int(current_app.config.get("FOLLOWUP_LINK_DAYS") or followup.DEFAULT_LINK_DAYS)


def photo_root() -> Path:
    return Path(current_app.config["PHOTO_DIR"])


def limit_follows() -> None:
    """Follow requests send mail to the address given: a client may ask only a few a minute.

    Raises:
        TooManyRequests: past the limit.
    """
    ratelimit.limit("follows", per_client="RATE_FOLLOWS_PER_CLIENT")


def listed_case(session: Session, number: str) -> Case:
    """A case the public may follow: listed (filed and after), by its number.

    Raises:
        NotFound: no such case, or not one the public sees.
    """
    case = session.scalar(select(Case).where(Case.number == number.strip()))
    if case is None or not is_listed(case.status):
        raise NotFound("no case numbered %(number)s is public", number=number)
    return case


# ---------------------------------------------------------------- following


@bp.route("/track/<number>/follow", methods=["GET", "POST"])
def follow_case(number: str) -> ResponseReturnValue:
    """Follow a public case by e-mail: a confirmation link is sent first (double opt-in)."""
    session = db.session()
    case = listed_case(session, number)
    if request.method == "GET":
        return render_template("cases/follow.html", case=case, community=None)
    limit_follows()
    try:
        with db.transaction() as tx:
            notices.request_follow(
                tx, request.form.get("email", ""), current_lang(), clock.now_utc(), case_id=case.id
            )
    except InvalidInput as err:
        return render_template(
            "cases/follow.html", case=case, community=None, error=err.render(_t())
        ), 400
    return render_template("cases/follow_sent.html", case=case, community=None)


@bp.route("/communities/<int:area_id>/follow", methods=["GET", "POST"])
def follow_community(area_id: int) -> ResponseReturnValue:
    """Follow the new cases of a community by e-mail (confirmed by a link first)."""
    session = db.session()
    area = session.get(Area, area_id)
    if area is None or area.level != AreaLevel.COMMUNITY.value:
        raise NotFound("no such community")
    if request.method == "GET":
        return render_template("cases/follow.html", case=None, community=area)
    limit_follows()
    try:
        with db.transaction() as tx:
            notices.request_follow(
                tx, request.form.get("email", ""), current_lang(), clock.now_utc(),
                community_id=area.id,
            )  # fmt: skip
    except InvalidInput as err:
        return render_template(
            "cases/follow.html", case=None, community=area, error=err.render(_t())
        ), 400
    return render_template("cases/follow_sent.html", case=None, community=area)


@bp.get("/follow/confirm/<token>")
def confirm_follow(token: str) -> ResponseReturnValue:
    """The confirmation link of a follow request: the subscription starts."""
    payload = notices.unsign(secret(), "confirm", token, notices.CONFIRM_DAYS * 86400)
    with db.transaction() as session:
        subscription = notices.confirm(session, int(payload.get("s", 0)), clock.now_utc())
        target = _target(session, subscription)
    return render_template("cases/follow_done.html", target=target, confirmed=True)


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe(token: str) -> ResponseReturnValue:
    """Stop hearing about a case or community: GET asks to confirm with one button (a link
    scanner's visit changes nothing); POST (the button, or a mail client's RFC 8058 one-click
    `List-Unsubscribe=One-Click`) stops it. The token authorises: no CSRF token is needed."""
    payload = notices.unsign(secret(), "unsubscribe", token, None)
    subscription_id = int(payload.get("s", 0))
    session = db.session()
    subscription = session.get(Subscription, subscription_id)
    if subscription is None:
        raise NotFound("no such subscription")
    if request.method == "GET":
        return render_template(
            "cases/unsubscribe.html",
            target=_target(session, subscription),
            done=subscription.unsubscribed_at is not None,
        )
    with db.transaction() as tx:
        stopped = notices.unsubscribe(tx, subscription_id, clock.now_utc())
        target = _target(tx, stopped)
    return render_template("cases/unsubscribe.html", target=target, done=True)


def _target(session: Session, subscription: Subscription) -> dict[str, str]:
    """What a subscription is about, as the public may be told: a case number or a community."""
    if subscription.community_id is not None:
        area = session.get(Area, subscription.community_id)
        return {"community": area.name if area else ""}
    case = session.get(Case, subscription.case_id) if subscription.case_id else None
    return {"number": case.number if case else ""}


def _t() -> Any:
    return gettext


# ---------------------------------------------------------------- the satisfaction follow-up


def _answer_from_form(
    session: Session, case: Case, respondent: Respondent, channel: Channel, key: str
) -> AnswerInput:
    """The checked answer of the follow-up form; its photo (if any) is checked and stored
    (removed again if the transaction rolls back).

    Raises:
        InvalidInput: a missing or unknown choice, too long a comment, a bad photo.
    """
    form = request.form
    fixed, satisfaction, comment = parse_answer(
        form.get("fixed"), form.get("satisfaction"), form.get("comment")
    )
    photo_id = None
    files = uploads(request.files)
    if len(files) > 1:
        raise InvalidInput("one photo at most", field="photo")
    if files:
        photo_store.check_uploads(files)
        stored = photo_store.decode_photos(files, photo_root(), session)
        rows = photo_store.photo_rows(session, case.id, stored, PhotoKind.AFTER)
        photo_id = rows[0].id
    recorded_by = current_user.id if channel == Channel.PHONE else None
    return AnswerInput(fixed, satisfaction, comment, respondent, channel, key, photo_id,
                       recorded_by)  # fmt: skip


def _followup_page(
    case: Case, round_: followup.Round, status: int = 200, **extra: Any
) -> ResponseReturnValue:
    return render_template(
        "cases/followup.html",
        case=case,
        round=round_,
        fixed_text=followup.FIXED_TEXT,
        satisfaction_text=followup.SATISFACTION_TEXT,
        form=request.form if request.method == "POST" else {},
        **extra,
    ), status


def _answer(
    case_id: int, round_number: int | None, respondent: Respondent, channel: Channel, key: str,
    page: dict[str, Any],
) -> ResponseReturnValue:  # fmt: skip
    """Show the follow-up form (GET) or record its answer (POST), for one person and round.

    A closed case's round answers until FOLLOWUP_LINK_DAYS after its close; a link of an
    earlier round (the case was reopened and closed again) or of a reopened case says so."""
    session = db.session()
    case = session.get(Case, case_id)
    if case is None:
        raise NotFound("no such case")
    round_ = followup.current_round(session, case, link_days())
    if round_number is not None and round_number != round_.number:
        raise notices.LinkExpired("this follow-up was for an earlier closing of the case")
    if clock.now_utc() > round_.expires_at:
        raise notices.LinkExpired("the follow-up of this case has ended")
    if followup.answered(session, case.id, round_.number, key):
        return _followup_page(case, round_, 409, already=True, **page)
    if request.method == "GET":
        return _followup_page(case, round_, **page)
    try:
        with db.transaction() as tx:
            locked = tx.get(Case, case.id, with_for_update=True)
            if locked is None or followup.current_round(tx, locked, link_days()) != round_:
                raise Conflict("the case changed meanwhile: reload the page")
            answer = _answer_from_form(tx, locked, respondent, channel, key)
            record_answer(tx, case.id, round_.number, answer, clock.now_utc())
    except followup.AlreadyAnswered:
        return _followup_page(case, round_, 409, already=True, **page)
    except InvalidInput as err:
        return _followup_page(case, round_, 400, error=err.render(_t()), **page)
    return render_template("cases/followup_thanks.html", case=case, **page)


@bp.route("/followup/<token>", methods=["GET", "POST"])
def followup_link(token: str) -> ResponseReturnValue:
    """The follow-up link of a closed case's message to its reporter (or the reporter of a
    report merged into it): signed, for one person and one round, valid FOLLOWUP_LINK_DAYS."""
    payload = notices.unsign(secret(), "followup", token, link_days() * 86400)
    session = db.session()
    subscription = session.get(Subscription, int(payload.get("s", 0)))
    case_id, round_number = int(payload.get("c", 0)), int(payload.get("r", 0))
    if subscription is None or subscription.kind != SubscriptionKind.REPORTER.value:
        raise NotFound("this link is not valid: check that it was copied whole")
    # The reporter of the case, or of a report merged into it: one answer per report.
    key = respondent_key("reporter", subscription.case_id or case_id)
    page = {"action": url_for("public.followup_link", token=token)}
    return _answer(case_id, round_number, Respondent.REPORTER, Channel.LINK, key, page)


@bp.route("/track/<number>/followup", methods=["GET", "POST"])
def followup_tracking(number: str) -> ResponseReturnValue:
    """The follow-up on the tracking page: the reporter gives the code shown when they
    reported. A report merged into another case rates that case."""
    session = db.session()
    try:
        reported = queries.find_by_number(session, number)
    except DomainError:
        raise NotFound("no case numbered %(number)s", number=number) from None
    case = queries.public_case(session, reported)
    page = {"action": url_for("public.followup_tracking", number=reported.number), "ask_code": True}
    if request.method == "GET":
        round_ = followup.current_round(session, case, link_days())
        if clock.now_utc() > round_.expires_at:
            raise notices.LinkExpired("the follow-up of this case has ended")
        return _followup_page(case, round_, **page)
    code = request.form.get("code", "")
    if not notices.check_reporter_code(secret(), reported.id, code):
        ratelimit.limit("followup_codes", per_client="RATE_FOLLOWS_PER_CLIENT")
        round_ = followup.current_round(session, case, link_days())
        message = gettext("This is not the code of report %(number)s.", number=reported.number)
        return _followup_page(case, round_, 403, error=message, **page)
    key = respondent_key("reporter", reported.id)
    return _answer(case.id, None, Respondent.REPORTER, Channel.TRACKING, key, page)


# ---------------------------------------------------------------- staff


@bp.route("/cases/<int:case_id>/followup", methods=["GET", "POST"])
@role_required(*STAFF_ROLES)
def followup_staff(case_id: int) -> ResponseReturnValue:
    """A case's public side for staff: how many follow it (a count, never who), its
    follow-up answers, and (operators) the form to record a follow-up made by phone."""
    session = db.session()
    case = queries.get_case(session, case_id, current_user)
    answers = list(
        session.scalars(
            select(FollowupAnswer)
            .where(FollowupAnswer.case_id == case.id)
            .order_by(FollowupAnswer.round, FollowupAnswer.answered_at)
        )
    )
    counts = notices.follower_counts(session, case.id)
    may_record = current_user.role == Role.OPERATOR.value and case.status == "closed"
    error = None
    status = 200
    if request.method == "POST":
        if not may_record:
            raise Forbidden("only operators record a follow-up, once the case is closed")
        try:
            with db.transaction() as tx:
                locked = tx.get(Case, case.id, with_for_update=True)
                if locked is None:
                    raise NotFound("no such case")
                round_ = followup.current_round(tx, locked, link_days())
                key = respondent_key("reporter", case.id)
                answer = _answer_from_form(tx, locked, Respondent.REPORTER, Channel.PHONE, key)
                record_answer(tx, case.id, round_.number, answer, clock.now_utc())
            return redirect(url_for("public.followup_staff", case_id=case.id))
        except (InvalidInput, Conflict) as err:
            error, status = err.render(_t()), err.status
    return render_template(
        "cases/followup_staff.html",
        case=case,
        answers=answers,
        counts=counts,
        may_record=may_record,
        fixed_text=followup.FIXED_TEXT,
        satisfaction_text=followup.SATISFACTION_TEXT,
        labels={k.value: v for k, v in (followup.FIXED_TEXT | followup.SATISFACTION_TEXT).items()},
        form=request.form if request.method == "POST" else {},
        error=error,
    ), status


def mailbox_allowed() -> bool:
    """The demo's mailbox: operators and administrators, or anyone in the demo."""
    if current_app.config.get("DEMO"):
        return True
    return current_user.is_authenticated and current_user.role in {r.value for r in MAILBOX_ROLES}


@bp.get("/mailbox")
def mailbox() -> ResponseReturnValue:
    """The messages sent (newest first), to read in the demo: with MAIL_MODE=mailbox (the
    default of `make run`) nothing leaves the machine and they are all here."""
    if not mailbox_allowed():
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.path))
        abort(403)
    session = db.session()
    rows = list(
        session.scalars(
            select(Notice)
            .where(Notice.state == NoticeState.SENT.value)
            .order_by(Notice.sent_at.desc(), Notice.id.desc())
            .limit(MAILBOX_PAGE)
        )
    )
    waiting = session.scalar(
        select(func.count()).select_from(Notice).where(Notice.state == NoticeState.QUEUED.value)
    )
    return render_template("cases/mailbox.html", messages=rows, waiting=waiting or 0)


@bp.get("/mailbox/<int:notice_id>")
def mailbox_message(notice_id: int) -> ResponseReturnValue:
    """One sent message as its reader got it."""
    if not mailbox_allowed():
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.path))
        abort(403)
    notice = db.session().get(Notice, notice_id)
    if notice is None or notice.state != NoticeState.SENT.value:
        abort(404)
    return render_template("cases/mailbox.html", message=notice, messages=None, waiting=0)


def reporter_code_message(case_id: int) -> str:
    """The flash that shows a reporter their follow-up code, once, at report time."""
    code = notices.reporter_code(secret(), case_id)
    return gettext(
        "Your follow-up code is %(code)s. Keep it: once the case is closed you can say on its "
        "tracking page whether the problem was fixed.",
        code=code,
    )


@click.group("notices")
def notices_cli() -> None:
    """The notification outbox."""


@notices_cli.command("status")
def notices_status() -> None:
    """How many messages are queued, sent, failed or cancelled."""
    counts = notices.outbox_counts(db.session())
    for state in NoticeState:
        click.echo(f"{state.value}: {counts.get(state.value, 0)}")


@notices_cli.command("retry")
def notices_retry() -> None:
    """Queue the failed messages again (after fixing the mail server or gateway)."""
    with db.transaction() as session:
        count = notices.requeue_failed(session, clock.now_utc())
    click.echo(f"{count} failed messages queued again")


def init_app(app: Flask) -> None:
    """Register the pages and `flask notices`; the unsubscribe address takes mail clients'
    one-click POSTs (RFC 8058), which carry no CSRF token: the signed token authorises them."""
    from gridmgmt.kernel.web import csrf

    app.register_blueprint(bp)
    app.cli.add_command(notices_cli)
    csrf.exempt(unsubscribe)
