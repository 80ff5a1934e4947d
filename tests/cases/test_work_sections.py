"""The lists of a page of work (the operator's inbox, the dispatcher's board) show their first
cases, oldest first, and say how many there are in all (`cases.views.Section`): a page of
hundreds of cards, each with its forms, was 500 kB and most of the inbox's time."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from redis import Redis
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cases.views import SECTION_LIMIT
from gridmgmt.kernel.db import db
from tests.support import browser, nested, seeded_demo

EXTRA = SECTION_LIMIT + 20


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[Connection]:
    with seeded_demo() as connection:
        yield connection


@pytest.fixture
def session(city: Connection, redis_conn: Redis) -> Iterator[Session]:
    db.session.remove()
    with nested(city) as session:
        yield session


def waiting(session: Session, status: str, prefix: str, count: int = EXTRA) -> int:
    """`count` more cases of `status`, numbered `prefix` + 8 digits and older than any other
    (2001, a minute apart); how many cases of `status` there are now."""
    session.execute(
        text("""INSERT INTO cases (number, source, status, category_id, location, reported_at,
                                   handled_at, description)
                SELECT :p || lpad(g::text, 8, '0'), 'operator', :s,
                       (SELECT min(id) FROM categories), ST_SetSRID(ST_MakePoint(0, 0), 4326),
                       timestamptz '2001-01-02' + g * interval '1 minute',
                       timestamptz '2001-01-03' + g * interval '1 minute', 'waiting'
                FROM generate_series(1, :n) g"""),
        {"p": prefix, "s": status, "n": count},
    )
    return session.scalar(text("SELECT count(*) FROM cases WHERE status = :s"), {"s": status})


def test_the_inbox_shows_the_oldest_new_reports_and_counts_them_all(
    app: Flask, session: Session
) -> None:
    total = waiting(session, "reported", "INBX")
    page = browser(app, "operator").get("/inbox").get_data(as_text=True)
    new = page.split("<h2>", 2)[1]  # the new reports' section
    cards = re.findall(r'<li class="card" data-case="([^"]+)"', new)
    assert cards == [f"INBX{n:08d}" for n in range(1, SECTION_LIMIT + 1)]
    assert f'data-total="{total}"' in new
    assert f"The first {SECTION_LIMIT} of {total:,}." in new


def test_the_inbox_tables_show_their_first_cases_and_count_them_all(
    app: Flask, session: Session
) -> None:
    total = waiting(session, "handled", "HNDL")
    page = browser(app, "operator").get("/inbox").get_data(as_text=True)
    handled = page.split("<h2>", 3)[2]  # "Handled: send an inspector to check"
    shown = sorted(set(re.findall(r"HNDL\d{8}", handled)))
    assert shown == [f"HNDL{n:08d}" for n in range(1, SECTION_LIMIT + 1)]  # handled first
    assert f"The first {SECTION_LIMIT} of {total:,}." in handled
    zh = browser(app, "operator")
    zh.get("/lang/zh")
    assert f'data-total="{total}"' in zh.get("/inbox").get_data(as_text=True)


def test_a_short_list_shows_every_case_and_says_nothing_more(app: Flask, session: Session) -> None:
    total = waiting(session, "handled", "FEW", count=5)
    assert total < SECTION_LIMIT
    page = browser(app, "operator").get("/inbox").get_data(as_text=True)
    handled = page.split("<h2>", 3)[2]  # "Handled: send an inspector to check"
    assert len(set(re.findall(r"FEW\d{8}", handled))) == 5
    assert "list-more" not in handled
