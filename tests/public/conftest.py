"""Hearing back from the public: the demo city seeded once per module (rolled back at its
end, each test in a savepoint), a real SMTP server (aiosmtpd) and a real HTTP SMS gateway on
free ports of this machine, and helpers that move a case along the loop through the
lifecycle's services."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cases import intake, lifecycle
from cases.intake import ReportInput
from cases.lifecycle import ActionInput, CaseContext
from cases.models import Case, CaseSource
from cases.photos import Upload
from dispatch.services import dispatch_case
from gridmgmt.kernel.calendar_store import get_calendar
from gridmgmt.kernel.db import db
from gridmgmt.kernel.models import User
from grids.models import Area
from tests.support import free_port, jpeg, nested, point_in, seeded_demo

COMMUNITY = "990100006046"  # the demo community whose unit `staff` works for
GARBAGE = "E0102"  # exposed garbage: a community class
PUBLIC_URL = "http://city.example.test"


@dataclass(frozen=True)
class City:
    connection: Connection
    lon: float
    lat: float
    community_area_id: int


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[City]:
    """The demo city, seeded once in a module-long transaction that is rolled back."""
    with seeded_demo() as connection:
        session = db.session()
        lon, lat = point_in(session, COMMUNITY)
        area_id = session.scalar(select(Area.id).where(Area.code == COMMUNITY))
        db.session.remove()
        assert area_id is not None
        yield City(connection, lon, lat, area_id)


@pytest.fixture
def session(city: City, app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    """The app's session on the seeded city; links in messages start with PUBLIC_URL."""
    monkeypatch.setitem(app.config, "PUBLIC_URL", PUBLIC_URL)
    monkeypatch.setitem(app.config, "MAIL_MODE", "smtp")
    monkeypatch.setitem(app.config, "SMTP_HOST", "")
    monkeypatch.setitem(app.config, "SMS_GATEWAY_URL", "")
    with nested(city.connection) as session:
        yield session


@pytest.fixture
def ctx(session: Session, photo_dir: Path) -> CaseContext:
    return CaseContext(calendar=get_calendar(session, "us_la"), photo_root=photo_dir)


@dataclass(frozen=True)
class People:
    citizen: User
    inspector: User
    operator: User
    dispatcher: User
    staff: User


@pytest.fixture
def people(session: Session) -> People:
    users = {u.username: u for u in session.scalars(select(User))}
    return People(*(users[f] for f in People.__dataclass_fields__))


# ---------------------------------------------------------------- real servers


@dataclass
class SmtpServer:
    """aiosmtpd on a free port; `messages` are the parsed mails it accepted."""

    port: int
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    controller: Any = None
    delay: float = 0.0  # seconds the server takes to accept a message

    @property
    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
            for _, _, raw in self.received
        ]

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        server = self

        class Recorder:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                await asyncio.sleep(server.delay)
                server.received.append(
                    (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
                )
                return "250 OK"

        self.controller = Controller(Recorder(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(app: Flask, session: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """A real SMTP server on this machine, and the app set to send through it."""
    server = SmtpServer(free_port())
    server.start()
    for name, value in {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": server.port,
        "SMTP_STARTTLS": False,
        "SMTP_SSL": False,
        "SMTP_USER": "",
        "SMTP_TIMEOUT": 5.0,
        "MAIL_FROM": "city@example.test",
    }.items():
        monkeypatch.setitem(app.config, name, value)
    yield server
    server.stop()


@dataclass
class SmsGateway:
    """A local HTTP server that records the requests it gets and answers `status`."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def sms_gateway(
    app: Flask, session: Session, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SmsGateway]:
    gateway = SmsGateway("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            gateway.requests.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "content_type": self.headers.get("Content-Type"),
                    "idempotency_key": self.headers.get("Idempotency-Key"),
                    "json": json.loads(body),
                }
            )
            self.send_response(gateway.status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    gateway.url = f"http://127.0.0.1:{server.server_port}/send"
    monkeypatch.setitem(app.config, "SMS_GATEWAY_URL", gateway.url)
    monkeypatch.setitem(app.config, "SMS_GATEWAY_TOKEN", "gw-token-123")
    monkeypatch.setitem(app.config, "SMS_SENDER", "CITY")
    yield gateway
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- moving a case


def report(
    session: Session,
    ctx: CaseContext,
    city: City,
    who: User | None,
    at: tuple[float, float] | None = None,
    **fields: Any,
) -> Case:
    lon, lat = at or (city.lon, city.lat)
    data = ReportInput(category_code=GARBAGE, lon=lon, lat=lat, **fields)
    return intake.report_case(session, data, who, CaseSource.CITIZEN, ctx.photo_root).case


def step(
    session: Session, ctx: CaseContext, case: Case, action: str, who: User | None, **fields: Any
) -> Case:
    data = ActionInput(version=case.version, **fields)
    if action == "dispatch":
        return dispatch_case(session, case.id, who, data, ctx)
    return lifecycle.act(session, case.id, action, who, data, ctx)


INTERNAL_NOTE = "internal-note-7f3a: crew lead Zebedee"

ROAD: list[tuple[str, str, dict[str, Any]]] = [
    ("verify", "inspector", {}),
    ("file", "operator", {}),
    ("dispatch", "dispatcher", {}),
    ("accept", "staff", {}),
    ("report_done", "staff", {"note": INTERNAL_NOTE}),
    ("assign_check", "operator", {}),
    ("check_pass", "inspector", {}),
    ("close", "operator", {}),
]


def advance(session: Session, ctx: CaseContext, people: People, case: Case, until: str) -> Case:
    """Move a case along ROAD until its status is `until`."""
    for action, who, fields in ROAD:
        if case.status == until:
            break
        fields = dict(fields)
        if action == "report_done":
            fields["photos"] = [Upload("after.jpg", jpeg((30, 160, 30)))]
        case = step(session, ctx, case, action, getattr(people, who), **fields)
    assert case.status == until
    return case
