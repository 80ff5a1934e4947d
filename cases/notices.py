"""Telling the public what became of a report: subscriptions and the notification outbox.

- A **subscription** is one address (an e-mail, or a phone for SMS) that hears about a case:
  its reporter's (made at report time, when they ask to hear back), a follower's (a case or a
  community followed from its public page, confirmed by a link first: double opt-in).
- The **outbox** (`notices`) has one row per message, written in the same transaction as the
  case change that causes it (the lifecycle's event writer calls `queue_for_event`), so a
  message exists exactly when its change committed. Each row has a dedupe key (unique): the
  same event never queues a message twice for one address.
- `cases.jobs.drain_notices` sends them: it locks a few due rows (FOR UPDATE SKIP LOCKED, so
  two drains never take the same row), renders, hands each to its channel and marks it sent
  only once the server accepted it; a failure leaves it queued with its attempt counted and
  the next attempt later (backoff), until `MAX_ATTEMPTS`. A lost job only delays: the
  scheduler runs a drain every minute anyway.

Messages say only what the public may see (the public status, the public reason of a
refusal, the responsible unit's public name and the deadline): never an internal note, never
a staff member's name. They are written in the language the reporter used, and carry the
tracking link and a one-click unsubscribe link (also as RFC 8058 List-Unsubscribe for mail).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from flask import current_app, g, has_app_context, render_template, url_for
from flask_babel import refresh
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from redis.exceptions import RedisError
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from cases.followup import DEFAULT_LINK_DAYS
from cases.models import Case
from cases.public import (
    PUBLIC_REASON_TEXT,
    PublicReason,
    PublicStatus,
    public_reason,
    public_status,
)
from gridmgmt.kernel.db import AppSession, Base, Timestamped, db, enum_check
from gridmgmt.kernel.errors import N_, DomainError, InvalidInput, NotFound
from gridmgmt.kernel.i18n import gettext, localized, localtime
from gridmgmt.kernel.models import Unit
from gridmgmt.kernel.queue import PERIODIC_QUEUE, queues
from grids.models import Area

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BATCH = 50  # messages one drain locks and sends at a time
BACKOFF_SECONDS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600)
LANGUAGES = ("en", "zh")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,60}")
PHONE = re.compile(r"\+?[0-9(][0-9 ().-]{5,30}")


class NoticeChannel(str, Enum):
    """How a message goes out."""

    EMAIL = "email"
    SMS = "sms"


class NoticeState(str, Enum):
    """Where a message stands in the outbox."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"  # gave up after MAX_ATTEMPTS
    CANCELLED = "cancelled"  # its address unsubscribed before it went


class NoticeKind(str, Enum):
    """What a message is about (its template)."""

    CONFIRM = "confirm"  # confirm following a case or a community
    RECEIVED = "received"  # your report was received
    FILED = "filed"  # accepted as a case
    REJECTED = "rejected"  # not accepted, with the public reason
    DISPATCHED = "dispatched"  # sent to a unit, with its public name and the deadline
    DONE = "done"  # the unit reported it fixed
    CLOSED = "closed"  # closed, with the follow-up link
    REOPENED = "reopened"  # handled again
    NEW_REPORT = "new_report"  # a new case in a followed community


class SubscriptionKind(str, Enum):
    """Why an address hears about a case."""

    REPORTER = "reporter"  # reported it and asked to hear back
    CASE = "case"  # follows the case
    COMMUNITY = "community"  # follows new cases in a community


class Subscription(Timestamped, Base):
    """An address that hears about a case or a community; active once confirmed and until
    unsubscribed."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(enum_check("kind", SubscriptionKind), name="kind"),
        CheckConstraint(enum_check("channel", NoticeChannel), name="channel"),
        CheckConstraint(
            "(kind = 'community') = (community_id IS NOT NULL AND case_id IS NULL)",
            name="target",
        ),
        Index(  # one subscription per address and target
            "uq_subscriptions_target_address",
            "kind",
            text("coalesce(case_id, 0)"),
            text("coalesce(community_id, 0)"),
            "channel",
            "address",
            unique=True,
        ),
        Index("ix_subscriptions_case_id", "case_id", postgresql_where=text("case_id IS NOT NULL")),
        Index(
            "ix_subscriptions_community_id",
            "community_id",
            postgresql_where=text("community_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[SubscriptionKind] = mapped_column(String(16), nullable=False)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    community_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    channel: Mapped[NoticeChannel] = mapped_column(String(8), nullable=False)
    address: Mapped[str] = mapped_column(String(254), nullable=False)
    language: Mapped[str] = mapped_column(String(8), nullable=False, server_default="en")
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Notice(Timestamped, Base):
    """One message in the outbox. `data` holds the public facts it is rendered from;
    `subject` and `body` are what was sent (kept for the demo's mailbox and for support)."""

    __tablename__ = "notices"
    __table_args__ = (
        CheckConstraint(enum_check("channel", NoticeChannel), name="channel"),
        CheckConstraint(enum_check("state", NoticeState), name="state"),
        CheckConstraint(enum_check("kind", NoticeKind), name="kind"),
        Index(  # the drain: queued messages that are due
            "ix_notices_due", "next_attempt_at", postgresql_where=text("state = 'queued'")
        ),
        Index("ix_notices_case_id", "case_id", postgresql_where=text("case_id IS NOT NULL")),
        Index("ix_notices_sent_at", "sent_at", postgresql_where=text("state = 'sent'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    recipient: Mapped[str] = mapped_column(String(254), nullable=False)
    channel: Mapped[NoticeChannel] = mapped_column(String(8), nullable=False)
    kind: Mapped[NoticeKind] = mapped_column(String(16), nullable=False)
    language: Mapped[str] = mapped_column(String(8), nullable=False, server_default="en")
    state: Mapped[NoticeState] = mapped_column(
        String(16), nullable=False, server_default=NoticeState.QUEUED.value
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# ---------------------------------------------------------------- tokens


class LinkExpired(DomainError):
    """A link from a message is past its validity (410: ask for a new one)."""

    code = "expired"
    status = 410


TOKEN_SALT = {
    "unsubscribe": "gridmgmt.notices.unsubscribe",
    "confirm": "gridmgmt.notices.confirm",
    "followup": "gridmgmt.followup.link",
}
CONFIRM_DAYS = 7  # a follow request's confirmation link


def _serializer(secret: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=TOKEN_SALT[purpose])


def sign(secret: str, purpose: str, payload: dict[str, Any]) -> str:
    """A URL-safe signed (not encrypted) token for a link: it names ids, never an address."""
    return _serializer(secret, purpose).dumps(payload)


def unsign(secret: str, purpose: str, token: str, max_age_seconds: int | None) -> dict[str, Any]:
    """The payload of a token made by `sign` for this purpose.

    Raises:
        LinkExpired: the token is older than `max_age_seconds`.
        NotFound: not a token of ours (a typo, a forged or truncated link).
    """
    try:
        payload = _serializer(secret, purpose).loads(token, max_age=max_age_seconds)
    except SignatureExpired:
        raise LinkExpired("this link has expired") from None
    except BadSignature:
        raise NotFound("this link is not valid: check that it was copied whole") from None
    if not isinstance(payload, dict):
        raise NotFound("this link is not valid: check that it was copied whole")
    return payload


REPORTER_CODE_LENGTH = 12  # base32 characters: 60 bits, shown as three groups of four


def reporter_code(secret: str, case_id: int) -> str:
    """The code an anonymous reporter is shown at report time and gives on the tracking page
    to answer the follow-up: derived from the case's id and the app's secret, so nothing is
    stored (changing SECRET_KEY changes the codes)."""
    digest = hmac.new(secret.encode(), f"reporter\x1f{case_id}".encode(), hashlib.sha256)
    raw = base64.b32encode(digest.digest()).decode()[:REPORTER_CODE_LENGTH]
    return "-".join(raw[i : i + 4] for i in range(0, REPORTER_CODE_LENGTH, 4))


def check_reporter_code(secret: str, case_id: int, given: str) -> bool:
    """Whether `given` is the case's reporter code (spaces, dashes and case do not matter)."""
    cleaned = re.sub(r"[\s-]", "", given or "").upper()
    expected = reporter_code(secret, case_id).replace("-", "")
    return hmac.compare_digest(cleaned.encode(), expected.encode())


# ---------------------------------------------------------------- subscriptions


def normal_address(channel: NoticeChannel, raw: str) -> str:
    """An address as stored: an e-mail lower-cased, a phone's digits (with a leading +).

    Raises:
        InvalidInput: not an e-mail address / phone number.
    """
    value = (raw or "").strip()
    if channel == NoticeChannel.EMAIL:
        if len(value) > 254 or not EMAIL.fullmatch(value):
            raise InvalidInput("%(value)r is not an e-mail address", field="email", value=value)
        return value.lower()
    if not PHONE.fullmatch(value):
        raise InvalidInput("%(value)r is not a phone number", field="phone", value=value)
    return ("+" if value.startswith("+") else "") + re.sub(r"[^0-9]", "", value)


def language_of(value: str | None) -> str:
    """A supported language code (English when unknown)."""
    return value if value in LANGUAGES else "en"


def subscribe(
    session: Session,
    kind: SubscriptionKind,
    channel: NoticeChannel,
    address: str,
    language: str,
    now: datetime,
    case_id: int | None = None,
    community_id: int | None = None,
    confirmed: bool = False,
) -> Subscription:
    """The subscription of `address` to a case or a community, made if new (a second request
    for the same address and target returns the first; one that had unsubscribed starts again
    unconfirmed, or confirmed when `confirmed`)."""
    statement = (
        insert(Subscription)
        .values(
            kind=kind.value,
            channel=channel.value,
            address=address,
            language=language_of(language),
            case_id=case_id,
            community_id=community_id,
            confirmed_at=now if confirmed else None,
        )
        .on_conflict_do_nothing()
        .returning(Subscription.id)
    )
    new_id = session.scalar(statement)
    if new_id is not None:
        found = session.get(Subscription, new_id)
    else:
        found = session.scalar(
            select(Subscription).where(
                Subscription.kind == kind.value,
                func.coalesce(Subscription.case_id, 0) == (case_id or 0),
                func.coalesce(Subscription.community_id, 0) == (community_id or 0),
                Subscription.channel == channel.value,
                Subscription.address == address,
            )
        )
        if found is not None and found.unsubscribed_at is not None:
            found.unsubscribed_at = None
            found.confirmed_at = now if confirmed else None
            found.language = language_of(language)
    if found is None:  # inserted or conflicting in this very transaction: always there
        raise NotFound("no such subscription")
    return found


def reporter_addresses(contact: dict[str, str]) -> list[tuple[NoticeChannel, str]]:
    """The addresses a reporter who asked to hear back gave: (channel, normal address).

    Raises:
        InvalidInput: an e-mail or phone that is not one, or neither given.
    """
    found = []
    for channel, field in ((NoticeChannel.EMAIL, "email"), (NoticeChannel.SMS, "phone")):
        raw = (contact.get(field) or "").strip()
        if raw:
            found.append((channel, normal_address(channel, raw)))
    if not found:
        raise InvalidInput("to hear back, give an e-mail address or a phone number", field="email")
    return found


def subscribe_reporter(
    session: Session,
    case_id: int,
    contact: dict[str, str],
    language: str,
    status: str,
    now: datetime,
) -> list[Subscription]:
    """A reporter asked to hear back: their e-mail and/or phone subscribe to the case (no
    confirmation: they gave it with their own report) and the first message is queued.

    Raises:
        InvalidInput: neither a valid e-mail nor a valid phone to write to.
    """
    made = [
        subscribe(session, SubscriptionKind.REPORTER, channel, address, language, now,
                  case_id=case_id, confirmed=True)
        for channel, address in reporter_addresses(contact)
    ]  # fmt: skip
    first = NoticeKind.FILED if status == "filed" else NoticeKind.RECEIVED
    for subscription in made:
        enqueue(session, subscription, first, case_id, {}, f"{first.value}:{case_id}", now)
    return made


def hears_of_case(session: Session, case_id: int, channel: NoticeChannel, address: str) -> bool:
    """Whether an address already hears of a case (an active subscription of any kind): a
    second way in, say a reporter who also supports the case, must not double its messages."""
    return bool(
        session.scalar(
            select(func.count())
            .select_from(Subscription)
            .where(
                Subscription.case_id == case_id,
                Subscription.channel == channel.value,
                Subscription.address == address,
                Subscription.confirmed_at.is_not(None),
                Subscription.unsubscribed_at.is_(None),
            )
        )
    )


def where_it_stands(
    status: str, unit_name: str | None, deadline: datetime | None
) -> tuple[NoticeKind, dict[str, Any]] | None:
    """The message that tells someone who starts hearing of a listed open case where it
    stands (the one its last change sent), with its public facts; None when no message says
    it (a case on hold without a deadline)."""
    match public_status(status):
        case PublicStatus.ACCEPTED:
            return NoticeKind.FILED, {}
        case PublicStatus.WITH_UNIT | PublicStatus.ON_HOLD if deadline is not None:
            return NoticeKind.DISPATCHED, {"unit": unit_name, "deadline": deadline.isoformat()}
        case PublicStatus.BEING_CHECKED:
            return NoticeKind.DONE, {}
    return None


def follow_by_sms(
    session: Session, case: Case, phone: str, language: str, now: datetime
) -> Subscription | None:
    """Someone who gave their phone number for this very case (a supporter, as a reporter
    does with their report) hears of it by SMS from now on: no confirmation round, as for a
    reporter's phone, and a first message saying where the case stands, whose Stop link
    ends it. None when the number already hears of the case (nothing queued).

    Raises:
        InvalidInput: not a phone number.
    """
    address = normal_address(NoticeChannel.SMS, phone)
    if hears_of_case(session, case.id, NoticeChannel.SMS, address):
        return None
    subscription = subscribe(
        session, SubscriptionKind.CASE, NoticeChannel.SMS, address, language, now,
        case_id=case.id, confirmed=True,
    )  # fmt: skip
    session.flush()
    unit = session.get(Unit, case.unit_id) if case.unit_id else None
    first = where_it_stands(case.status, unit.name if unit else None, case.deadline)
    if first is not None:
        kind, data = first
        enqueue(session, subscription, kind, case.id, data, f"stands:{case.id}", now)
    return subscription


def request_follow(
    session: Session,
    address: str,
    language: str,
    now: datetime,
    case_id: int | None = None,
    community_id: int | None = None,
) -> Subscription:
    """Someone asks to follow a case or a community by e-mail: the subscription waits for its
    confirmation link (double opt-in), which is queued now. Asking again re-sends it (at most
    once a day: the dedupe key has the date).

    Raises:
        InvalidInput: not an e-mail address.
    """
    email = normal_address(NoticeChannel.EMAIL, address)
    kind = SubscriptionKind.COMMUNITY if community_id is not None else SubscriptionKind.CASE
    subscription = subscribe(
        session, kind, NoticeChannel.EMAIL, email, language, now,
        case_id=case_id, community_id=community_id,
    )  # fmt: skip
    if subscription.confirmed_at is None:
        session.flush()
        key = f"confirm:{subscription.id}:{now.date().isoformat()}"
        enqueue(session, subscription, NoticeKind.CONFIRM, case_id, {}, key, now)
    return subscription


def confirm(session: Session, subscription_id: int, now: datetime) -> Subscription:
    """Confirm a follow request (the link in its message); confirming twice changes nothing.

    Raises:
        NotFound: no such subscription.
    """
    subscription = session.get(Subscription, subscription_id, with_for_update=True)
    if subscription is None:
        raise NotFound("no such subscription")
    if subscription.confirmed_at is None or subscription.unsubscribed_at is not None:
        subscription.confirmed_at = now
        subscription.unsubscribed_at = None
    return subscription


def unsubscribe(session: Session, subscription_id: int, now: datetime) -> Subscription:
    """Stop a subscription (one click from any of its messages) and cancel its queued
    messages; unsubscribing twice changes nothing.

    Raises:
        NotFound: no such subscription.
    """
    subscription = session.get(Subscription, subscription_id, with_for_update=True)
    if subscription is None:
        raise NotFound("no such subscription")
    if subscription.unsubscribed_at is None:
        subscription.unsubscribed_at = now
        session.execute(
            update(Notice)
            .where(
                Notice.subscription_id == subscription_id,
                Notice.state == NoticeState.QUEUED.value,
            )
            .values(state=NoticeState.CANCELLED.value, last_error="unsubscribed")
        )
    return subscription


def follower_counts(session: Session, case_id: int) -> dict[str, int]:
    """How many follow a case, by kind (confirmed and not unsubscribed): what staff see of
    its followers (a count, never who)."""
    rows = session.execute(
        select(Subscription.kind, func.count())
        .where(
            Subscription.case_id == case_id,
            Subscription.confirmed_at.is_not(None),
            Subscription.unsubscribed_at.is_(None),
        )
        .group_by(Subscription.kind)
    )
    return {kind: count for kind, count in rows.tuples()}


# ---------------------------------------------------------------- the outbox


NOTICE_KEY = "gridmgmt.notices.queued"  # session.info: a message was queued in this transaction


def enqueue(
    session: Session,
    subscription: Subscription,
    kind: NoticeKind,
    case_id: int | None,
    data: dict[str, Any],
    dedupe: str,
    now: datetime,
) -> int | None:
    """Queue one message to a subscription (nothing when the same dedupe key was queued
    already); its id, or None for a duplicate."""
    statement = (
        insert(Notice)
        .values(
            case_id=case_id,
            subscription_id=subscription.id,
            recipient=subscription.address,
            channel=subscription.channel,
            kind=kind.value,
            language=subscription.language,
            dedupe_key=f"{dedupe}:{subscription.id}"[:128],
            data=data,
            next_attempt_at=now,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Notice.id)
    )
    new_id = session.scalar(statement)
    if new_id is not None:
        session.info[NOTICE_KEY] = True
    return new_id


# What each action of the lifecycle tells the public: action → kind of message.
ACTION_NOTICE = {
    "file": NoticeKind.FILED,
    "reject": NoticeKind.REJECTED,
    "invalidate": NoticeKind.REJECTED,
    "merge": NoticeKind.REJECTED,  # already reported: the reporter now hears of that case
    "dispatch": NoticeKind.DISPATCHED,
    "report_done": NoticeKind.DONE,
    "close": NoticeKind.CLOSED,
    "reopen": NoticeKind.REOPENED,
    "rehandle": NoticeKind.REOPENED,  # 重办 after a follow-up complaint
}

# One statement queues an action's messages for many cases: to the reporters and followers
# of each case, the reporters of the reports merged into it, and (for a filing) those who
# follow its community. The facts of each message come as a JSON array, a row per case.
_QUEUE = text("""
    WITH e AS (
        SELECT * FROM jsonb_to_recordset(CAST(:events AS jsonb))
            AS e(case_id bigint, kind text, data jsonb)
    ), active AS (
        SELECT * FROM subscriptions WHERE confirmed_at IS NOT NULL AND unsubscribed_at IS NULL
    ), r AS (
        SELECT e.case_id, e.kind, e.data, s.id AS sid, s.kind AS skind, s.address, s.channel,
               s.language
        FROM e JOIN active s ON s.case_id = e.case_id
        UNION ALL
        SELECT e.case_id, e.kind, e.data, s.id, s.kind, s.address, s.channel, s.language
        FROM e JOIN cases d ON d.merged_into_id = e.case_id
        JOIN active s ON s.case_id = d.id AND s.kind = 'reporter'
        UNION ALL
        SELECT e.case_id, 'new_report', e.data, s.id, s.kind, s.address, s.channel, s.language
        FROM e JOIN cases c ON c.id = e.case_id
        JOIN active s ON s.community_id = c.community_id AND s.kind = 'community'
        WHERE e.kind = 'filed'
    )
    INSERT INTO notices (case_id, subscription_id, recipient, channel, kind, language,
                         dedupe_key, data, next_attempt_at)
    SELECT case_id, sid, address, channel, kind, language,
           left(kind || ':' || case_id || ':' || :stamp || ':' || sid, 128),
           data || jsonb_build_object('respondent', skind), :now
    FROM r
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id
""")


# Whether anyone hears of these cases at all (most cases: nobody), before writing anything.
_ANYONE = text("""
    SELECT EXISTS (
        SELECT FROM subscriptions s
        WHERE s.confirmed_at IS NOT NULL AND s.unsubscribed_at IS NULL AND (
            s.case_id = ANY(:ids)
            OR s.case_id IN (SELECT d.id FROM cases d WHERE d.merged_into_id = ANY(:ids))
            OR (:filed AND s.community_id IN (SELECT c.community_id FROM cases c
                                               WHERE c.id = ANY(:ids)))))
""")


def queue_for_events(
    session: Session, action: str, events: Iterable[tuple[int, dict[str, Any]]], now: datetime
) -> int:
    """Queue the messages an action causes, for each (case id, the event's record): called
    by the lifecycle's event writer in the transaction of the change. How many were queued.

    Only the public facts are kept: a refusal's public reason, the unit's public name and the
    deadline, the follow-up round; never a note or an actor."""
    kind = ACTION_NOTICE.get(action)
    if kind is None:
        return 0
    events = list(events)
    ids = [case_id for case_id, _ in events]
    if not ids or not session.scalar(_ANYONE, {"ids": ids, "filed": kind == NoticeKind.FILED}):
        return 0  # nobody hears of these cases: a read, no write (the dispatcher's batches)
    rows = []
    for case_id, record in events:
        data: dict[str, Any] = {}
        if kind == NoticeKind.REJECTED:
            # the public reason's code only: a free-text reason is the city's business
            status = {"reject": "rejected", "merge": "merged"}.get(action, "invalid")
            reason = public_reason(status, record.get("reason"))
            data["reason"] = reason.value if reason else None
        elif kind == NoticeKind.DISPATCHED:
            data["unit"] = record.get("unit_name")
            data["deadline"] = record.get("deadline")
        elif kind == NoticeKind.REOPENED:
            data["deadline"] = record.get("deadline")
        elif kind == NoticeKind.CLOSED:
            data["round"] = closing_round(session, case_id)
        rows.append({"case_id": case_id, "kind": kind.value, "data": data})
    stamp = now.strftime("%Y%m%dT%H%M%S.%f")
    queued = list(session.scalars(_QUEUE, {"events": json.dumps(rows), "stamp": stamp, "now": now}))
    if queued:
        session.info[NOTICE_KEY] = True
    return len(queued)


def closing_round(session: Session, case_id: int) -> int:
    """The follow-up round a close opens: how many times the case has been closed."""
    closes = session.scalar(
        text("SELECT count(*) FROM case_events WHERE case_id = :id AND action = 'close'"),
        {"id": case_id},
    )
    return max(int(closes or 0), 1)


@dataclass(frozen=True)
class Due:
    """A message taken from the outbox to send: its row is locked until the caller commits."""

    notice: Notice
    case: Case | None
    subscription: Subscription | None


def take_due(session: Session, now: datetime, skip_channels: Iterable[str] = ()) -> Due | None:
    """Lock the next due queued message (FOR UPDATE SKIP LOCKED: another drain takes the
    next one), or None; `skip_channels`: channels whose server just failed."""
    notice = session.scalar(
        select(Notice)
        .where(
            Notice.state == NoticeState.QUEUED.value,
            Notice.next_attempt_at <= now,
            Notice.channel.not_in(list(skip_channels)),
        )
        .order_by(Notice.next_attempt_at, Notice.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if notice is None:
        return None
    case = session.get(Case, notice.case_id) if notice.case_id else None
    subscription = (
        session.get(Subscription, notice.subscription_id) if notice.subscription_id else None
    )
    return Due(notice, case, subscription)


def mark_sent(notice: Notice, subject: str, body: str, now: datetime) -> None:
    """The server accepted the message."""
    notice.state = NoticeState.SENT.value
    notice.subject, notice.body = subject, body
    notice.attempts += 1
    notice.sent_at = now
    notice.last_error = None


def mark_failed(notice: Notice, error: str, now: datetime, permanent: bool = False) -> None:
    """A try failed: try again later (backoff), or give up after MAX_ATTEMPTS or when the
    failure is permanent (the server refused the address)."""
    notice.attempts += 1
    notice.last_error = error[:1000]
    if permanent or notice.attempts >= MAX_ATTEMPTS:
        notice.state = NoticeState.FAILED.value
        return
    delay = BACKOFF_SECONDS[min(notice.attempts - 1, len(BACKOFF_SECONDS) - 1)]
    notice.next_attempt_at = now + timedelta(seconds=delay)


def requeue_failed(session: Session, now: datetime) -> int:
    """Give the messages that failed (after MAX_ATTEMPTS, or refused) another round of
    attempts, e.g. once a mail server's configuration is fixed; how many."""
    result = session.execute(
        update(Notice)
        .where(Notice.state == NoticeState.FAILED.value)
        .values(state=NoticeState.QUEUED.value, attempts=0, next_attempt_at=now)
    )
    if result.rowcount:
        session.info[NOTICE_KEY] = True
    return int(result.rowcount or 0)


def outbox_counts(session: Session) -> dict[str, int]:
    """How many messages are in each state."""
    rows = session.execute(select(Notice.state, func.count()).group_by(Notice.state))
    return {state: count for state, count in rows.tuples()}


def cancel(notice: Notice, why: str) -> None:
    """Not to be sent after all (its address unsubscribed)."""
    notice.state = NoticeState.CANCELLED.value
    notice.last_error = why


# ---------------------------------------------------------------- rendering (needs the app)

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"  # `make run`'s address

SUBJECTS = {
    NoticeKind.CONFIRM: N_("Confirm that you want to follow %(what)s"),
    NoticeKind.RECEIVED: N_("Report %(number)s was received"),
    NoticeKind.FILED: N_("Report %(number)s was accepted as a case"),
    NoticeKind.REJECTED: N_("Report %(number)s was not accepted"),
    NoticeKind.DISPATCHED: N_("Case %(number)s was sent to %(unit)s"),
    NoticeKind.DONE: N_("Case %(number)s was reported fixed"),
    NoticeKind.CLOSED: N_("Case %(number)s is closed"),
    NoticeKind.REOPENED: N_("Case %(number)s is being handled again"),
    NoticeKind.NEW_REPORT: N_("New case %(number)s in %(community)s"),
}


BODIES = {
    NoticeKind.CONFIRM: N_(
        "Someone, probably you, asked to follow %(what)s by e-mail. To confirm, open this link:"
    ),
    NoticeKind.RECEIVED: N_(
        "We received report %(number)s (%(category)s). It is being verified; we will tell "
        "you what becomes of it."
    ),
    NoticeKind.FILED: N_(
        "Report %(number)s (%(category)s) was accepted as a case and is being sent to the "
        "responsible unit."
    ),
    NoticeKind.REJECTED: N_(
        "Report %(number)s (%(category)s) was not accepted as a case: %(reason)s."
    ),
    NoticeKind.DISPATCHED: N_(
        "Case %(number)s (%(category)s) was sent to %(unit)s, which is to handle it by "
        "%(deadline)s."
    ),
    NoticeKind.DONE: N_(
        "The responsible unit reported case %(number)s (%(category)s) fixed. The city checks "
        "it on site before closing it."
    ),
    NoticeKind.CLOSED: N_("Case %(number)s (%(category)s) is closed."),
    NoticeKind.REOPENED: N_(
        "Case %(number)s (%(category)s) is being handled again, to be done by %(deadline)s."
    ),
    NoticeKind.NEW_REPORT: N_("A new case %(number)s (%(category)s) was filed in %(community)s."),
}
TEXTS = {
    "ask": N_(
        "Was the problem really fixed? Tell us in a minute (this link works for %(days)s days):"
    ),
    "ask_short": N_("Fixed? Tell us:"),
    "track": N_("Follow its progress:"),
    "unsubscribe": N_("To stop these messages, one click:"),
    "stop": N_("Stop:"),
    "ignore": N_("If you did not ask for this, ignore this message: nothing more will be sent."),
}
FACTS = ("number", "category", "reason", "unit", "deadline", "community", "what", "days")


@dataclass(frozen=True)
class Rendered:
    """A message ready for its channel."""

    subject: str
    body: str
    unsubscribe_url: str | None


def public_url(config: Any) -> str:
    """The base of the links in messages: PUBLIC_URL, else this machine's demo address."""
    return (str(config.get("PUBLIC_URL") or "") or DEFAULT_PUBLIC_URL).rstrip("/")


def render(due: Due) -> Rendered:
    """The subject and text of a message, in its language, from its public facts; with the
    tracking link, the follow-up link (a reporter's message on a close) and the one-click
    unsubscribe link. Rendered in a request context on PUBLIC_URL, so links are absolute."""
    notice = due.notice
    config = current_app.config
    secret = str(config["SECRET_KEY"])
    with current_app.test_request_context("/", base_url=public_url(config)):
        g.lang = language_of(notice.language)
        refresh()
        case = due.case
        facts: dict[str, Any] = {"number": case.number if case else ""}
        links: dict[str, str] = {}
        if case is not None:
            facts["category"] = localized(case.category, "name")
            links["track"] = url_for("cases.track_case", number=case.number, _external=True)
        data = notice.data or {}
        kind = NoticeKind(notice.kind)
        if kind == NoticeKind.REJECTED:
            try:
                reason = PublicReason(data.get("reason") or "")
            except ValueError:
                reason = PublicReason.NOT_CITY_PROBLEM
            facts["reason"] = gettext(PUBLIC_REASON_TEXT[reason])
        if data.get("unit"):
            facts["unit"] = data["unit"]
        elif kind == NoticeKind.DISPATCHED:
            facts["unit"] = gettext("the responsible unit")
        if data.get("deadline"):
            facts["deadline"] = localtime(datetime.fromisoformat(data["deadline"]))
        subscription = due.subscription
        if subscription is not None:
            token = sign(secret, "unsubscribe", {"s": subscription.id})
            links["unsubscribe"] = url_for("public.unsubscribe", token=token, _external=True)
        if kind == NoticeKind.CONFIRM and subscription is not None:
            token = sign(secret, "confirm", {"s": subscription.id})
            links["confirm"] = url_for("public.confirm_follow", token=token, _external=True)
        if subscription is not None and subscription.community_id is not None:
            area = due_area(subscription.community_id)
            facts["community"] = area.name if area is not None else ""
            facts["what"] = gettext("new cases in %(community)s", community=facts["community"])
        elif case is not None:
            facts["what"] = gettext("case %(number)s", number=case.number)
        if (
            kind == NoticeKind.CLOSED
            and subscription is not None
            and subscription.kind == SubscriptionKind.REPORTER.value
            and case is not None
        ):
            payload = {"s": subscription.id, "c": case.id, "r": int(data.get("round") or 1)}
            token = sign(secret, "followup", payload)
            links["followup"] = url_for("public.followup_link", token=token, _external=True)
            facts["days"] = int(config.get("FOLLOWUP_LINK_DAYS") or DEFAULT_LINK_DAYS)
        facts = {name: "" for name in FACTS} | facts
        subject = gettext(SUBJECTS[kind], **facts)
        words = {name: gettext(text_, **facts) for name, text_ in TEXTS.items()}
        words["body"] = gettext(BODIES[kind], **facts)
        template = "sms" if notice.channel == NoticeChannel.SMS.value else "mail"
        body = render_template(
            f"cases/notices/{template}.txt",
            kind=kind.value,
            text=words,
            links=links,
            city=config.get("CITY_NAME", ""),
        )
    refresh()
    return Rendered(subject, body.strip() + "\n", links.get("unsubscribe"))


def due_area(area_id: int) -> Area | None:
    """A community (its public name), read through the app's session."""
    return db.session().get(Area, area_id)


# ---------------------------------------------------------------- the doorbell

DRAIN_JOB = "cases.jobs.drain_notices"
PENDING_FLAG = "gridmgmt:notices:pending"
FLAG_TTL_SECONDS = 30


def ring() -> bool:
    """Enqueue a drain of the outbox unless one is waiting; True when one was enqueued.

    Raises:
        RedisError: Redis is unreachable.
    """
    redis = queues.redis
    if not redis.set(PENDING_FLAG, "1", nx=True, ex=FLAG_TTL_SECONDS):
        return False
    try:
        queues.get(PERIODIC_QUEUE).enqueue(
            DRAIN_JOB, job_id=f"notices-{uuid.uuid4().hex[:16]}", result_ttl=300,
            failure_ttl=7 * 24 * 3600,
        )  # fmt: skip
    except BaseException:
        redis.delete(PENDING_FLAG)
        raise
    return True


@event.listens_for(AppSession, "after_commit")
def _ring_on_commit(session: Session) -> None:
    if not session.info.pop(NOTICE_KEY, None) or not has_app_context():
        return
    try:
        ring()
    except RedisError as exc:  # the messages are safe in the outbox: the periodic drain sends
        log.warning("notices doorbell failed (%s); the periodic drain will send them", exc)
    except Exception:  # after the commit nothing may fail the request
        log.exception("notices doorbell failed; the periodic drain will send them")


@event.listens_for(AppSession, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(NOTICE_KEY, None)
