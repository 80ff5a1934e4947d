"""The outbox on a committed database, as workers see it: drains running at the same time
never send a message twice (SKIP LOCKED), and messages queued while no job ran (a lost job)
are sent by the next drain."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL

from cases import jobs
from cases.intake import ReportInput, report_case
from cases.models import CaseSource
from cases.notices import Notice
from gridmgmt.kernel.db import db
from tests.conftest import demo_clone
from tests.public.conftest import GARBAGE, SmtpServer
from tests.support import free_port, point_in, real_app

MESSAGES = 24


@pytest.fixture(scope="module")
def mail_server() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port(), delay=0.02)  # slow enough for the drains to overlap
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def committed(
    demo_database_url: URL,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    mail_server: SmtpServer,
) -> Iterator[Flask]:
    settings = {"MAIL_MODE": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": mail_server.port,
                "SMTP_STARTTLS": False, "PUBLIC_URL": "http://city.example.test"}  # fmt: skip
    photos = tmp_path_factory.mktemp("photos")
    with demo_clone("outbox", demo_database_url) as url, real_app(url, redis_url, photos,
                                                                  **settings) as app:  # fmt: skip
        yield app


def test_two_drains_at_once_send_each_message_once(
    committed: Flask, mail_server: SmtpServer, tmp_path: Path
) -> None:
    app = committed
    with app.app_context():
        with db.transaction() as session:
            lon, lat = point_in(session, "990100006046")
            for n in range(MESSAGES):
                data = ReportInput(category_code=GARBAGE, lon=lon, lat=lat, notify=True,
                                   contact={"email": f"r{n}@example.org"})  # fmt: skip
                report_case(session, data, None, CaseSource.CITIZEN, tmp_path)
        db.session.remove()
        # No job ran (Redis lost it, or the worker was down): all wait in the outbox.
        queued = db.session().scalar(
            select(func.count()).select_from(Notice).where(Notice.state == "queued")
        )
        db.session.remove()
        assert queued == MESSAGES

    results: list[dict[str, int]] = []

    def drain() -> None:
        with app.app_context():
            results.append(jobs.drain_notices())

    threads = [threading.Thread(target=drain) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(r.get("sent", 0) for r in results) == MESSAGES
    recipients = [rcpt for _, rcpts, _ in mail_server.received for rcpt in rcpts]
    assert sorted(recipients) == sorted(f"r{n}@example.org" for n in range(MESSAGES))
    with app.app_context():
        states = (
            db.session()
            .execute(text("SELECT state, sum(attempts) FROM notices GROUP BY state"))
            .all()
        )
        db.session.remove()
    assert [tuple(s) for s in states] == [("sent", MESSAGES)]  # one attempt each
    with app.app_context():
        assert jobs.drain_notices() == {}
    assert len(mail_server.received) == MESSAGES
