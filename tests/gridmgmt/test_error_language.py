"""Refusals are rendered at the edge, from the gettext catalogue, in the reader's language.

A domain error carries an English message id and its values; pages (the error page and
flashed messages) render it with the Chinese catalogue or in English, the JSON API always in
English. The expected Chinese is read from `messages.po` itself, so these tests fail if a page
shows anything but the catalogue's translation of the error that was raised.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable, Iterator

import pytest
from babel.messages.pofile import read_po
from flask import Flask
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cases.lifecycle import RejectReason
from gridmgmt.kernel.errors import Message
from maps.views import TABLES
from tests.gridmgmt.test_translations import PO
from tests.support import Web, browser, nested, point_in, seeded_demo

COMMUNITY = "990100006046"  # a community of the demo city
GARBAGE = "E0102"  # exposed garbage, a minor class of the demo catalogue


@pytest.fixture(scope="module")
def city(app: Flask) -> Iterator[Connection]:
    """The demo city, seeded once for the module in a transaction that is rolled back."""
    with seeded_demo() as connection:
        yield connection


@pytest.fixture
def session(city: Connection) -> Iterator[Session]:
    with nested(city) as session:
        yield session


@pytest.fixture(scope="module")
def chinese() -> Callable[[str], str]:
    """The catalogue's translation of a message id (failing on a missing one)."""
    with PO.open("rb") as file:
        catalogue = read_po(file)

    def translate(msgid: str) -> str:
        entry = catalogue.get(msgid)
        assert entry is not None and entry.string, f"{msgid!r} is not translated"
        return str(entry.string)

    return translate


def in_language(app: Flask, lang: str, username: str | None = None) -> Web:
    """A browser signed in as a demo login, reading pages in `lang` (the switch's cookie)."""
    web = browser(app, username)
    web.client.set_cookie("lang", lang)
    return web


def shown(page: str) -> str:
    """The page's text as a reader sees it (entities decoded)."""
    return html.unescape(page)


def flashed_errors(page: str) -> list[str]:
    return [
        shown(text)
        for text in re.findall(r'<p class="flash flash-error" role="alert">(.*?)</p>', page)
    ]


def test_an_error_page_renders_the_error_from_the_catalogue(
    app: Flask, session: Session, chinese: Callable[[str], str]
) -> None:
    error = Message(
        "unknown table %(name)r; tables are %(tables)s",
        {"name": "nope", "tables": ", ".join(TABLES)},
    )
    url = "/evaluation?table=nope&format=csv"

    zh = in_language(app, "zh", "leader").get(url)
    en = in_language(app, "en", "leader").get(url)

    assert zh.status_code == en.status_code == 400
    assert flashed_errors(zh.get_data(as_text=True)) == [error.render(chinese)]
    assert flashed_errors(en.get_data(as_text=True)) == [error.render()]
    assert error.render(chinese) != error.render()
    assert error.render(chinese).startswith("未知的表 'nope'")
    assert "<h1>400 · 输入无效</h1>" in zh.get_data(as_text=True)
    assert "<h1>400 · Invalid input</h1>" in en.get_data(as_text=True)


def test_a_not_found_page_and_the_api_for_the_same_error(
    app: Flask, session: Session, chinese: Callable[[str], str]
) -> None:
    zh = in_language(app, "zh", "operator")
    page = zh.get("/cases/987654321")
    api = zh.client.get("/api/cases/987654321", headers={"Accept-Language": "zh"})

    assert page.status_code == api.status_code == 404
    assert flashed_errors(page.get_data(as_text=True)) == [chinese("no such case")]
    assert chinese("no such case") == "没有这个案件"
    assert api.get_json()["error"] == {"code": "not_found", "message": "no such case"}


def test_a_refused_action_is_flashed_in_the_reader_s_language(
    app: Flask, session: Session, chinese: Callable[[str], str]
) -> None:
    lon, lat = point_in(session, COMMUNITY)
    citizen = browser(app)
    reported = citizen.api("/api/reports", {"category": GARBAGE, "lon": lon, "lat": lat})
    assert reported.status_code == 201, reported.get_json()
    case_id = reported.get_json()["id"]
    refusal = Message(
        "a rejection reason is one of %(reasons)s",
        {"reasons": ", ".join(r.value for r in RejectReason)},
    )

    pages = {}
    for lang in ("zh", "en"):
        operator = in_language(app, lang, "operator")
        refused = operator.post(f"/cases/{case_id}/reject", {"reason": "bored"})
        assert refused.status_code == 302
        pages[lang] = operator.get(refused.headers["Location"]).get_data(as_text=True)
    api = browser(app, "operator").api(f"/api/cases/{case_id}/actions/reject", {"reason": "bored"})

    assert flashed_errors(pages["zh"]) == [refusal.render(chinese)]
    assert refusal.render(chinese).startswith("不予受理的理由须为以下之一：")
    assert flashed_errors(pages["en"]) == [refusal.render()]
    assert api.status_code == 400
    assert api.get_json()["error"]["message"] == refusal.render()


def test_a_refused_photo_is_flashed_with_its_reason_translated_too(
    app: Flask, session: Session, chinese: Callable[[str], str]
) -> None:
    lon, lat = point_in(session, COMMUNITY)
    refusal = Message(
        "Photo %(name)r was refused: %(why)s.",
        {"name": "empty.jpg", "why": Message("the file is empty")},
    )
    pages = {}
    for lang in ("zh", "en"):
        citizen = in_language(app, lang)
        form = {"category": GARBAGE, "lon": str(lon), "lat": str(lat), "description": "x"}
        form["photos"] = (io.BytesIO(b""), "empty.jpg")
        page = citizen.post("/report", form)
        assert page.status_code == 400
        pages[lang] = page.get_data(as_text=True)

    assert flashed_errors(pages["zh"]) == [refusal.render(chinese)]
    assert flashed_errors(pages["zh"]) == ["照片 'empty.jpg' 未被接受：文件是空的。"]
    assert flashed_errors(pages["en"]) == ["Photo 'empty.jpg' was refused: the file is empty."]
