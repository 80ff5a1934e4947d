"""Reports and photos sent later from a phone's outbox, through the real app on a seeded demo
city rolled back after each test: ODK Central's rules for a submission UUID (the same content
is the first case, other content a 409), photos one a request each with its UUID stored once,
the phone's capture time and GPS accuracy kept and shown; and the phone app's own routes (the
service worker's version, the manifest, what the outbox asks before sending)."""

from __future__ import annotations

import io
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cases import offline
from cases.models import Case, Photo
from gridmgmt.kernel import clock
from tests.support import Web, browser, jpeg

CATEGORY = "E0102"  # exposed garbage


def report(here: tuple[float, float], **extra: Any) -> dict[str, Any]:
    """An outbox's report: a new submission UUID, the phone's capture time and accuracy."""
    captured = clock.now_utc() - timedelta(hours=3)
    return {
        "category": CATEGORY,
        "lon": here[0],
        "lat": here[1],
        "description": "bags by the underpass",
        "submission_uuid": str(uuid.uuid4()),
        "captured_at": captured.isoformat(),
        "gps_accuracy": 12.5,
        **extra,
    }


def send_photo(web: Web, submission: str, photo_uuid: str, body: bytes, **headers: str) -> Any:
    """One photo of a submission, as the outbox sends it."""
    return web.client.post(
        f"/api/reports/{submission}/photos",
        data={
            "photo_uuid": photo_uuid,
            "captured_at": clock.now_utc().isoformat(),
            "photo": (io.BytesIO(body), "photo.jpg"),
        },
        content_type="multipart/form-data",
        headers={"X-CSRFToken": web.token, **headers},
    )


def cases_of(session: Session, submission: str) -> list[Case]:
    session.expire_all()
    return list(session.scalars(select(Case).where(Case.submission_uuid == submission)))


def stored_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_the_same_submission_twice_is_the_first_case(
    inspector: Web, session: Session, here: tuple[float, float]
) -> None:
    body = report(here)
    first = inspector.api("/api/reports", body)
    again = inspector.api("/api/reports", body)
    assert first.status_code == 201, first.get_json()
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["submission_uuid"] == body["submission_uuid"]
    (case,) = cases_of(session, body["submission_uuid"])
    assert case.gps_accuracy_m == 12.5
    assert case.captured_at is not None
    assert abs((case.reported_at - case.captured_at) - timedelta(hours=3)) < timedelta(minutes=1)


def test_the_same_submission_with_other_content_is_a_conflict(
    inspector: Web, session: Session, here: tuple[float, float]
) -> None:
    body = report(here)
    first = inspector.api("/api/reports", body)
    changed = inspector.api("/api/reports", {**body, "description": "something else"})
    assert changed.status_code == 409
    error = changed.get_json()["error"]
    assert error["code"] == "conflict"
    assert error["reason"] == "submission_changed"
    assert first.get_json()["number"] in error["message"]
    assert "different content" in error["message"]
    assert len(cases_of(session, body["submission_uuid"])) == 1


def test_another_reporter_cannot_take_a_submission_uuid(
    app: Flask, inspector: Web, session: Session, here: tuple[float, float]
) -> None:
    body = report(here)
    assert inspector.api("/api/reports", body).status_code == 201
    operator = browser(app, "operator")
    taken = operator.api("/api/reports", body)
    assert taken.status_code == 409
    assert taken.get_json()["error"]["reason"] == "submission_taken"
    photo = send_photo(operator, body["submission_uuid"], str(uuid.uuid4()), jpeg())
    assert photo.status_code == 404  # another's report: as if there were none
    assert len(cases_of(session, body["submission_uuid"])) == 1


def test_photos_come_later_one_a_request_and_a_repeat_stores_nothing(
    inspector: Web, session: Session, here: tuple[float, float], photo_dir: Path
) -> None:
    body = report(here)
    made = inspector.api("/api/reports", body).get_json()
    assert made["photos"] == 0
    photo_uuid = str(uuid.uuid4())
    first = send_photo(inspector, body["submission_uuid"], photo_uuid, jpeg((10, 200, 10)))
    assert first.status_code == 201, first.get_json()
    assert first.get_json() == {
        "photo_uuid": photo_uuid,
        "case_id": made["id"],
        "number": made["number"],
        "photos": 1,
        "created": True,
    }
    files = stored_files(photo_dir)
    assert len(files) == 2  # the photo and its thumbnail
    repeat = send_photo(inspector, body["submission_uuid"], photo_uuid, jpeg((10, 200, 10)))
    assert repeat.status_code == 200
    assert repeat.get_json()["created"] is False
    assert stored_files(photo_dir) == files
    second = send_photo(inspector, body["submission_uuid"], str(uuid.uuid4()), jpeg((0, 0, 200)))
    assert second.status_code == 201
    assert second.get_json()["photos"] == 2
    session.expire_all()
    rows = list(session.scalars(select(Photo).where(Photo.case_id == made["id"])))
    assert len(rows) == 2
    assert photo_uuid in {r.client_uuid for r in rows}
    assert all(r.captured_at is not None and r.kind == "before" for r in rows)
    # The report itself sent again (its reply lost) is still the same case, with its photos.
    again = inspector.api("/api/reports", body).get_json()
    assert (again["id"], again["photos"]) == (made["id"], 2)


def test_a_photo_uuid_of_another_report_is_a_conflict(
    inspector: Web, here: tuple[float, float]
) -> None:
    one, two = report(here), report(here, description="another")
    inspector.api("/api/reports", one)
    inspector.api("/api/reports", two)
    photo_uuid = str(uuid.uuid4())
    assert send_photo(inspector, one["submission_uuid"], photo_uuid, jpeg()).status_code == 201
    clash = send_photo(inspector, two["submission_uuid"], photo_uuid, jpeg())
    assert clash.status_code == 409
    assert clash.get_json()["error"]["reason"] == "photo_taken"


def test_photos_are_refused_before_their_report_and_past_the_limit(
    inspector: Web, session: Session, here: tuple[float, float], photo_dir: Path
) -> None:
    early = send_photo(inspector, str(uuid.uuid4()), str(uuid.uuid4()), jpeg())
    assert early.status_code == 404
    assert "send the report before its photos" in early.get_json()["error"]["message"]
    assert send_photo(inspector, "not-a-uuid", str(uuid.uuid4()), jpeg()).status_code == 404
    body = report(here)
    inspector.api("/api/reports", body)
    for n in range(6):
        sent = send_photo(inspector, body["submission_uuid"], str(uuid.uuid4()), jpeg((n, 0, 0)))
        assert sent.status_code == 201
    seventh = send_photo(inspector, body["submission_uuid"], str(uuid.uuid4()), jpeg())
    assert seventh.status_code == 400
    broken = report(here, description="broken photo")
    inspector.api("/api/reports", broken)
    bad = send_photo(inspector, broken["submission_uuid"], str(uuid.uuid4()), b"not a photo")
    assert bad.status_code == 400
    assert bad.get_json()["error"]["code"] == "invalid_photo"
    case = cases_of(session, broken["submission_uuid"])[0]
    assert session.scalar(select(func.count()).where(Photo.case_id == case.id)) == 0


def test_capture_times_a_phone_cannot_have_are_refused(
    inspector: Web, session: Session, here: tuple[float, float]
) -> None:
    future = (clock.now_utc() + timedelta(days=2)).isoformat()
    ahead = inspector.api("/api/reports", report(here, captured_at=future))
    assert ahead.status_code == 400
    assert ahead.get_json()["error"]["field"] == "captured_at"
    naive = inspector.api("/api/reports", report(here, captured_at="2026-11-30T10:00:00"))
    assert naive.status_code == 400
    wild = inspector.api("/api/reports", report(here, gps_accuracy=-3))
    assert wild.status_code == 400
    assert session.scalar(select(func.count()).where(Case.captured_at.is_not(None))) == 0


def test_a_refusal_carries_the_reader_s_language_when_asked(
    inspector: Web, here: tuple[float, float]
) -> None:
    inspector.get("/lang/zh")
    body = report((here[0] + 40, here[1]))  # far outside the city
    headers = {"X-CSRFToken": inspector.token, "X-Localized-Errors": "1"}
    refused = inspector.client.post("/api/reports", json=body, headers=headers)
    assert refused.status_code == 400 or refused.status_code == 422, refused.get_json()
    error = refused.get_json()["error"]
    assert error["message"].isascii()  # the API's English stays
    assert not error["localized"].isascii()  # and the reader's Chinese comes with it
    plain = inspector.api("/api/reports", body).get_json()["error"]
    assert "localized" not in plain


def test_the_case_page_shows_the_capture_time_and_the_accuracy(
    inspector: Web, here: tuple[float, float]
) -> None:
    made = inspector.api("/api/reports", report(here, gps_accuracy=7.6)).get_json()
    page = inspector.get(f"/cases/{made['id']}").get_data(as_text=True)
    assert "GPS ±8 m" in page
    assert 'class="captured-at"' in page
    plain = inspector.api("/api/reports", {"category": CATEGORY, "lon": here[0], "lat": here[1]})
    page = inspector.get(f"/cases/{plain.get_json()['id']}").get_data(as_text=True)
    assert "captured-at" not in page and "GPS ±" not in page


def test_the_service_worker_changes_with_the_deployment(
    app: Flask, inspector: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = inspector.get("/sw.js")
    assert first.status_code == 200
    assert first.headers["Service-Worker-Allowed"] == "/"
    assert "no-cache" in first.headers["Cache-Control"]
    source = first.get_data(as_text=True)
    assert "__GRIDMGMT_VERSION__" not in source and "/static/js/outbox-core.js" in source
    monkeypatch.setitem(app.config, "ASSET_VERSION", "next-release")
    second = inspector.get("/sw.js").get_data(as_text=True)
    assert second != source  # the browser sees new bytes: it installs the new worker


def test_the_manifest_and_what_the_outbox_asks(app: Flask, inspector: Web) -> None:
    manifest = inspector.get("/manifest.webmanifest")
    assert manifest.mimetype == "application/manifest+json"
    body = manifest.get_json(force=True)
    assert body["start_url"] == "/report" and body["display"] == "standalone"
    for icon in body["icons"]:
        assert inspector.get(icon["src"]).status_code == 200
    who = inspector.get("/api/offline/session")
    assert who.headers["Cache-Control"] == "no-store"
    facts = who.get_json()
    assert facts["role"] == "inspector" and facts["user"]
    assert set(facts["pages"]) == {"/report", "/tasks", "/outbox"}
    anonymous = browser(app).get("/api/offline/session").get_json()
    assert anonymous["user"] == "" and "/tasks" not in anonymous["pages"]
    assert inspector.get("/outbox").status_code == 200


def test_the_outbox_question_never_starts_a_session(app: Flask) -> None:
    """Asked by a phone whose cookie is gone, it sets no cookie (a session of its own could
    replace the page's and fail the page's form); once the page has started one, it answers
    that session's token."""
    phone = app.test_client()  # no page seen yet
    first = phone.get("/api/offline/session")
    assert first.get_json()["csrf_token"] == ""
    assert "Set-Cookie" not in first.headers
    page = phone.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token is not None
    again = phone.get("/api/offline/session")
    assert again.get_json()["csrf_token"] == token.group(1)
    assert "Set-Cookie" not in again.headers


def test_the_boxes_of_cells_kept_are_the_map_s_own() -> None:
    """The boxes and their URLs are the ones map.js asks for (CHUNK_DEG, its `fixed`), so the
    worker's kept copy is found; the four nearest a place, each once, at most `most`."""
    map_js = (Path(__file__).parents[2] / "gridmgmt/static/js/map.js").read_text()
    chunk = re.search(r"var CHUNK_DEG = ([0-9.]+);", map_js)
    assert chunk is not None and float(chunk.group(1)) == offline.CELL_BOX_DEG
    # 116.3961 is in column 23279 (116.395-116.4), nearer its west side; 39.9041 in row 7980
    # (39.9-39.905), nearer its north side.
    assert offline.boxes_near((116.3961, 39.9041)) == [
        (23279, 7980),
        (23278, 7980),
        (23279, 7981),
        (23278, 7981),
    ]
    assert offline.bbox_param(offline.box_of(23279, 7980)) == "116.395,39.9,116.4,39.905"
    assert offline.bbox_param(offline.box_of(-1, 0)) == "-0.005,0,0,0.005"
    boxes = offline.cell_boxes([(116.3961, 39.9041), (116.3962, 39.9042), (116.5, 39.9)])
    assert len(boxes) == 8  # the two first places share their four boxes
    assert len(offline.cell_boxes([(116.0 + k / 100, 39.9) for k in range(50)], most=10)) == 10


def test_an_inspector_s_phone_keeps_the_cells_around_their_work(
    app: Flask, inspector: Web, session: Session, here: tuple[float, float]
) -> None:
    made = inspector.api("/api/reports", report(here))
    assert made.status_code == 201, made.get_json()
    plain = inspector.get("/api/offline/session").get_json()
    assert "cells" not in plain  # asked only by the keeping round: no query on every send
    cells = inspector.get("/api/offline/session?keep=1").get_json()["cells"]
    assert 4 <= len(cells) <= offline.MOST_CELL_BOXES
    boxes = [
        tuple(float(v) for v in url.split("?bbox=", 1)[1].split(","))
        for url in cells
        if url.startswith("/territory/cells.geojson?bbox=")
    ]
    assert len(boxes) == len(cells)
    mine = [b for b in boxes if b[0] <= here[0] < b[2] and b[1] <= here[1] < b[3]]
    assert len(mine) == 1  # the box of the inspector's own report
    answer = inspector.get(cells[boxes.index(mine[0])])
    assert answer.status_code == 200
    assert answer.get_json()["features"]  # the cells there, with their codes
    for name in ("citizen", None):
        web = browser(app, name) if name else browser(app)
        assert web.get("/api/offline/session?keep=1").get_json()["cells"] == []
