"""The cases' RQ jobs: sweeping stored photo files that no case refers to, and draining the
notification outbox. They run in the worker's app context and let exceptions propagate (RQ
records and retries them).

A report or action writes its photo files before its rows commit, and removes them if its
transaction rolls back; a process killed in between leaves files behind, as does a report
that lost an idempotency race. Those files, older than `PHOTO_ORPHAN_GRACE_SECONDS` (so that a
report being written is not raced) and with no `photos` row naming them, are removed here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cases import notices
from cases.models import Photo
from cases.photos import STORED_NAME
from gridmgmt.kernel import channels
from gridmgmt.kernel.clock import now_utc
from gridmgmt.kernel.db import db
from gridmgmt.kernel.queue import queues

BATCH = 1000  # files looked up in one query
DEFAULT_GRACE_SECONDS = 3600
log = logging.getLogger(__name__)  # one INFO line when a sweep removed files, else DEBUG


def _old_files(root: Path, older_than: float) -> Iterator[tuple[str, Path]]:
    """(name relative to `root`, path) of stored photos and left-over temporary files whose
    modification time is before `older_than` (epoch seconds)."""
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            temporary = name.startswith(".") and name.endswith(".tmp")
            if not (temporary or STORED_NAME.fullmatch(relative)):
                continue  # not a file the photo store makes: not ours to remove
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < older_than:
                    yield relative, path


def _referenced(session: Session, names: list[str]) -> set[str]:
    """The names among `names` that a photo row refers to (as its file or its thumbnail)."""
    rows = session.execute(
        select(Photo.path, Photo.thumb_path).where(
            or_(Photo.path.in_(names), Photo.thumb_path.in_(names))
        )
    )
    return {name for row in rows for name in row} & set(names)


def sweep_orphan_photos(session: Session, root: Path, grace_seconds: float) -> int:
    """Remove the files under `root` older than `grace_seconds` that no photo row refers to;
    how many were removed."""
    if not root.is_dir():
        return 0
    older_than = time.time() - grace_seconds
    removed = 0
    batch: list[tuple[str, Path]] = []

    def flush() -> int:
        names = [name for name, _ in batch]
        keep = _referenced(session, names)
        count = 0
        for name, path in batch:
            if name in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < older_than:  # not used again meanwhile
                    path.unlink()
                    count += 1
        batch.clear()
        return count

    for item in _old_files(root, older_than):
        batch.append(item)
        if len(batch) >= BATCH:
            removed += flush()
    if batch:
        removed += flush()
    return removed


def remove_orphan_photos() -> int:
    """Remove stored photo files no case refers to, older than the grace period."""
    config = current_app.config
    grace = float(config.get("PHOTO_ORPHAN_GRACE_SECONDS", DEFAULT_GRACE_SECONDS))
    with db.transaction() as session:
        removed = sweep_orphan_photos(session, Path(config["PHOTO_DIR"]), grace)
    db.session.remove()
    if removed:
        log.info("removed %d photo files no case refers to", removed)
    else:
        log.debug("no orphan photo file to remove")
    return removed


# ---------------------------------------------------------------- the notification outbox

DRAIN_LIMIT = 500  # messages one job sends at most; then the next drain goes on
NOT_CONFIGURED_DELAY = timedelta(minutes=5)  # no server set: look again later, uncounted


def mail_mode(config: Mapping[str, Any]) -> str:
    """`mailbox` (messages are kept for the demo's /mailbox page instead of being sent) or
    `smtp` (sent through the channels): MAIL_MODE, else mailbox in the demo."""
    mode = str(config.get("MAIL_MODE") or "").strip().lower()
    if mode in ("mailbox", "smtp"):
        return mode
    return "mailbox" if config.get("DEMO") else "smtp"


def _configured(config: Mapping[str, Any], channel: str) -> bool:
    if channel == notices.NoticeChannel.SMS.value:
        return bool(config.get("SMS_GATEWAY_URL"))
    return bool(config.get("SMTP_HOST"))


def deliver(session: Session, due: notices.Due, config: Mapping[str, Any], now: Any) -> str:
    """Send one locked message and record how it went: "sent", "retry", "failed",
    "cancelled" or "waiting" (no server configured: not counted as an attempt). The row is
    marked sent only after the server accepted the message."""
    notice = due.notice
    subscription = due.subscription
    if subscription is not None and subscription.unsubscribed_at is not None:
        notices.cancel(notice, "unsubscribed")
        return "cancelled"
    mode = mail_mode(config)
    if mode == "smtp" and not _configured(config, notice.channel):
        notice.last_error = f"no {notice.channel} server configured"
        notice.next_attempt_at = now + NOT_CONFIGURED_DELAY
        return "waiting"
    rendered = notices.render(due)
    if mode == "smtp":
        try:
            if notice.channel == notices.NoticeChannel.SMS.value:
                sms = channels.OutgoingSms(notice.recipient, rendered.body, notice.dedupe_key)
                channels.send_sms(config, sms)
            else:
                headers = {}
                if rendered.unsubscribe_url:
                    headers = {
                        "List-Unsubscribe": f"<{rendered.unsubscribe_url}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                    }
                mail = channels.OutgoingMail(
                    notice.recipient, rendered.subject, rendered.body, headers, notice.language,
                    key=notice.dedupe_key,
                )  # fmt: skip
                channels.send_mail(config, mail)
        except channels.SendError as err:
            notices.mark_failed(notice, str(err), now, permanent=err.permanent)
            log.warning("notice %s not sent (attempt %s): %s", notice.id, notice.attempts, err)
            return "failed" if notice.state == notices.NoticeState.FAILED.value else "retry"
    notices.mark_sent(notice, rendered.subject, rendered.body, now)
    return "sent"


def send_due_notices(limit: int = DRAIN_LIMIT) -> dict[str, int]:
    """Send the due messages of the outbox, one transaction each: lock the next one (SKIP
    LOCKED: drains running at once never take the same message), send it, mark it. Running
    it twice, or losing a job, never sends a message twice nor loses one: a message is marked
    sent in the transaction that held its lock while the server accepted it. (A process
    killed between the server's acceptance and the commit sends that one message again: at
    least once, never lost.) How many messages ended how."""
    config = current_app.config
    with contextlib.suppress(Exception):  # a message queued from now on rings again
        queues.redis.delete(notices.PENDING_FLAG)
    counts: dict[str, int] = {}
    down: set[str] = set()  # a channel whose server failed: its messages wait for the next drain
    for _ in range(limit):
        with db.transaction() as session:
            now = now_utc()
            due = notices.take_due(session, now, down)
            if due is None:
                break
            outcome = deliver(session, due, config, now)
            if outcome == "retry":
                down.add(due.notice.channel)
        counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        log.info("notices drained: %s", counts)
    else:
        log.debug("no notice due")
    return counts


def drain_notices(limit: int = DRAIN_LIMIT) -> dict[str, int]:
    """The RQ job: `send_due_notices` in the worker's app context, then its session ends."""
    try:
        return send_due_notices(limit)
    finally:
        db.session.remove()


# The cases' periodic jobs (dotted path → seconds), run by `flask dispatch scheduler`; the
# drain of the outbox is registered with its own setting (NOTICE_DRAIN_SECONDS).
PERIODIC_JOBS = {f"{__name__}.remove_orphan_photos": 3600}
