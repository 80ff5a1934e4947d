"""Sending a message out: e-mail over SMTP and SMS through an HTTP gateway.

Adapters only: they send one ready message and say how it went (`SendError`, temporary or
permanent); what to send and when to try again is the outbox's (`cases.notices`,
`cases.jobs.drain_notices`). Settings (gridmgmt.kernel.config): SMTP_HOST, SMTP_PORT,
SMTP_STARTTLS, SMTP_SSL, SMTP_USER, SMTP_PASSWORD, MAIL_FROM, SMTP_TIMEOUT;
SMS_GATEWAY_URL, SMS_GATEWAY_TOKEN, SMS_SENDER.

The SMS gateway adapter posts JSON `{"to": "+1555...", "text": "...", "sender": "..."}` to
SMS_GATEWAY_URL with `Authorization: Bearer <SMS_GATEWAY_TOKEN>`; a 2xx answer is accepted, a
4xx (but 408 and 429) is a permanent refusal, anything else temporary. Most gateways take
this shape or a small proxy in front of them does; another shape is another adapter
registered in `SMS_ADAPTERS`.

Sending is at least once: a message the server accepted but whose "sent" mark was never
committed (a crash, a timeout after the server took it) goes again. So that receivers can
tell it is the same message, each one carries its outbox row's dedupe key (`key`): an e-mail's
Message-ID is derived from it (the same on every attempt, `message_id`), and the SMS gateway
gets it as an `Idempotency-Key` header, which gateways that keep such keys use to drop the
second request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any


class SendError(Exception):
    """A message was not accepted. `permanent`: trying again will not help (a refused
    address); otherwise the server was unreachable or busy."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class OutgoingMail:
    """A ready e-mail: plain text, with extra headers (List-Unsubscribe...)."""

    to: str
    subject: str
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)
    language: str = "en"
    key: str = ""  # the outbox row's dedupe key: the same Message-ID on every attempt


@dataclass(frozen=True)
class OutgoingSms:
    """A ready text message."""

    to: str
    text: str
    key: str = ""  # the outbox row's dedupe key: the gateway's Idempotency-Key


def message_id(config: Mapping[str, Any], key: str, domain: str) -> str:
    """The Message-ID of the message with this dedupe key: the same on every attempt, so a
    resend after a crash is recognisably the same message. Keyed by SECRET_KEY, so two
    installations never make the same one and the key's ids are not shown to recipients."""
    secret = str(config.get("SECRET_KEY") or "").encode()
    digest = hmac.new(secret, f"message-id\x1f{key}".encode(), hashlib.sha256).hexdigest()
    return f"<{digest[:40]}.notice@{domain}>"


def build_mail(config: Mapping[str, Any], mail: OutgoingMail) -> EmailMessage:
    """The MIME message for `mail` (UTF-8 text, a Message-ID and Date, its headers)."""
    message = EmailMessage()
    sender = str(config.get("MAIL_FROM") or "gridmgmt@localhost")
    domain = sender.rsplit("@", 1)[-1].strip("> ") or "localhost"
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = (
        message_id(config, mail.key, domain) if mail.key else make_msgid(domain=domain)
    )
    message["Auto-Submitted"] = "auto-generated"
    for name, value in mail.headers.items():
        message[name] = value
    message.set_content(mail.body, charset="utf-8")
    message["Content-Language"] = mail.language  # after set_content, which clears Content-*
    return message


def send_mail(config: Mapping[str, Any], mail: OutgoingMail) -> None:
    """Hand `mail` to the SMTP server; returns once the server accepted it.

    Raises:
        SendError: not accepted (permanent when the server refused the recipient).
    """
    host = str(config.get("SMTP_HOST") or "")
    if not host:
        raise SendError("SMTP_HOST is not set")
    port = int(config.get("SMTP_PORT") or 25)
    timeout = float(config.get("SMTP_TIMEOUT") or 10)
    message = build_mail(config, mail)
    try:
        client: smtplib.SMTP
        if config.get("SMTP_SSL"):
            client = smtplib.SMTP_SSL(host, port, timeout=timeout,
                                      context=ssl.create_default_context())  # fmt: skip
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if config.get("SMTP_STARTTLS") and not config.get("SMTP_SSL"):
                client.starttls(context=ssl.create_default_context())
            if config.get("SMTP_USER"):
                client.login(str(config["SMTP_USER"]), str(config.get("SMTP_PASSWORD") or ""))
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as err:
        codes = [code for code, _ in err.recipients.values()]
        raise SendError(
            f"recipient refused: {codes}", permanent=all(c >= 500 for c in codes)
        ) from None
    except smtplib.SMTPResponseException as err:
        raise SendError(f"SMTP {err.smtp_code}: {err.smtp_error!r}", permanent=False) from None
    except (OSError, smtplib.SMTPException) as err:
        raise SendError(f"SMTP server unreachable: {err}") from None


def send_sms_http(config: Mapping[str, Any], sms: OutgoingSms) -> None:
    """POST the text to the configured HTTP gateway as JSON (see the module's docstring).

    Raises:
        SendError: not accepted.
    """
    url = str(config.get("SMS_GATEWAY_URL") or "")
    if not url:
        raise SendError("SMS_GATEWAY_URL is not set")
    payload = {"to": sms.to, "text": sms.text, "sender": str(config.get("SMS_SENDER") or "")}
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, ensure_ascii=False).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Authorization": f"Bearer {config.get('SMS_GATEWAY_TOKEN') or ''}",
            **({"Idempotency-Key": sms.key} if sms.key else {}),
        },
    )
    timeout = float(config.get("SMTP_TIMEOUT") or 10)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as err:
        permanent = 400 <= err.code < 500 and err.code not in (408, 429)
        raise SendError(f"SMS gateway answered {err.code}", permanent=permanent) from None
    except (OSError, ValueError) as err:
        raise SendError(f"SMS gateway unreachable: {err}") from None


# SMS gateway adapters by name (setting SMS_ADAPTER): one function per gateway's API.
SMS_ADAPTERS: dict[str, Callable[[Mapping[str, Any], OutgoingSms], None]] = {
    "http": send_sms_http,
}


def send_sms(config: Mapping[str, Any], sms: OutgoingSms) -> None:
    """Send a text through the configured adapter.

    Raises:
        SendError: not accepted, or no such adapter.
    """
    name = str(config.get("SMS_ADAPTER") or "http")
    adapter = SMS_ADAPTERS.get(name)
    if adapter is None:
        raise SendError(f"no SMS adapter called {name!r}", permanent=False)
    adapter(config, sms)
