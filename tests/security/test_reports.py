"""Reports as an outsider would abuse them, over HTTP against the real server: who may mark a
report urgent, whose idempotency key finds whose case, and that a refused report (outside the
city, an unknown class, a fake or huge photo) leaves nothing under PHOTO_DIR; plus the sweep of
photo files no case refers to and the removal of files a rolled-back transaction wrote."""

from __future__ import annotations

import io
import os
import re
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from PIL import Image
from sqlalchemy import Engine, text

from cases import photos
from cases.catalogue import read_urgent_policy, urgent_policy
from cases.jobs import remove_orphan_photos
from cases.photos import Upload, decode_photos
from gridmgmt.app.demo import DEMO_API_KEY
from gridmgmt.kernel.auth import create_api_key
from gridmgmt.kernel.db import db
from gridmgmt.kernel.errors import InvalidInput
from tests.security.conftest import sign_in

GARBAGE = "E0102"  # exposed garbage: handled by the community unit (demo user `staff`)
OUTSIDE = (2.35, 48.85)  # Paris: a good point, far from the demo city


# ---------------------------------------------------------------- helpers


def jpeg(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (48, 32)) -> bytes:
    """A real JPEG; each colour makes other bytes, so another stored file."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def unique_jpeg() -> bytes:
    """A JPEG no other test stores (its stored file is new)."""
    seed = uuid.uuid4().bytes
    return jpeg((seed[0], seed[1], seed[2]), (40 + seed[3] % 50, 30 + seed[4] % 50))


def pixel_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A small PNG whose header claims 400 million pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def files_under(root: Path) -> set[Path]:
    """Every file under the photo folder (hidden temporary files too)."""
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def csrf_of(session: requests.Session, server: str) -> str:
    """The CSRF token of this browser session, from the report page."""
    page = session.get(f"{server}/report").text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


class Reporter:
    """A browser (anonymous or signed in) that reports through the form and the JSON API."""

    def __init__(self, server: str, username: str | None = None) -> None:
        self.server = server
        self.http = sign_in(server, username) if username else requests.Session()
        self.token = csrf_of(self.http, server)

    def form(
        self, fields: dict[str, Any], files: list[tuple[str, bytes]] = ()
    ) -> requests.Response:
        """POST /report as the page's form does (multipart, CSRF token)."""
        body = {"csrf_token": self.token, **{k: str(v) for k, v in fields.items()}}
        uploads = [("photos", (name, data, "application/octet-stream")) for name, data in files]
        return self.http.post(
            f"{self.server}/report",
            data=body,
            files=uploads or [("photos", ("", b"", "application/octet-stream"))],
            allow_redirects=False,
        )

    def api(
        self,
        fields: dict[str, Any],
        files: list[tuple[str, bytes]] = (),
        key: str | None = None,
        path: str = "/api/reports",
    ) -> requests.Response:
        """POST to the JSON API, multipart when there are photos, else JSON."""
        headers = {"X-CSRFToken": self.token}
        if key:
            headers["Idempotency-Key"] = key
        if files:
            uploads = [("photos", (name, data, "image/jpeg")) for name, data in files]
            data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()}
            return self.http.post(f"{self.server}{path}", data=data, files=uploads, headers=headers)
        return self.http.post(f"{self.server}{path}", json=fields, headers=headers)


def open311(server: str, fields: dict[str, Any], media: list[tuple[str, bytes]] = ()) -> Any:
    """POST /open311/v2/requests.json with the fields (api_key included by the caller)."""
    files = [("media", (name, data, "image/jpeg")) for name, data in media]
    return requests.post(
        f"{server}/open311/v2/requests.json",
        data={k: str(v) for k, v in fields.items()},
        files=files or None,
    )


@pytest.fixture(autouse=True)
def no_rate_limits(security_app: Flask) -> Iterator[None]:
    """These tests send many reports from one address in a minute: the abuse limits (tested
    on their own) are lifted while they run, and restored after."""
    saved = {
        k: v for k, v in security_app.config.items() if k.startswith(("RATE_", "OPEN311_RATE"))
    }
    security_app.config.update(dict.fromkeys(saved, 0))  # 0: a limit is not applied
    yield
    security_app.config.update(saved)


@pytest.fixture
def photo_dir(security_app: Flask) -> Path:
    return Path(security_app.config["PHOTO_DIR"])


def case_row(engine: Engine, number: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT id, urgent, reporter_id, api_key_id FROM cases WHERE number = :n"),
            {"n": number},
        ).one()


def number_of(answer: requests.Response, engine: Engine) -> str:
    """The case number a report's answer names (form redirect, JSON API or Open311)."""
    if answer.status_code in (302, 303):
        location = answer.headers["Location"]
        tracked = re.search(r"/track/([^/?#]+)", location)
        if tracked:
            return tracked.group(1)
        case_id = int(re.search(r"/cases/(\d+)", location).group(1))  # type: ignore[union-attr]
        with engine.connect() as connection:
            return connection.scalar(
                text("SELECT number FROM cases WHERE id = :id"), {"id": case_id}
            )
    body = answer.json()
    return body[0]["service_request_id"] if isinstance(body, list) else body["number"]


def report_fields(point: tuple[float, float], **extra: Any) -> dict[str, Any]:
    return {"category": GARBAGE, "lon": point[0], "lat": point[1], "description": "x", **extra}


@pytest.fixture(scope="module")
def trusted_key(security_app: Flask) -> str:
    """A trusted Open311 api key (a city's own hotline system)."""
    with security_app.app_context(), db.transaction() as session:
        issued = create_api_key(session, f"hotline-{uuid.uuid4().hex[:8]}", trusted=True)
        secret = issued.secret
    db.session.remove()
    return secret


# ---------------------------------------------------------------- urgent


@pytest.mark.parametrize("channel", ["form", "api"])
def test_a_citizens_urgent_flag_is_ignored(
    server: str, engine: Engine, inside: tuple[float, float], channel: str
) -> None:
    for who in ("citizen", None):  # signed in, and anonymous
        reporter = Reporter(server, who)
        fields = report_fields(inside, urgent="1" if channel == "form" else True)
        answer = reporter.form(fields) if channel == "form" else reporter.api(fields)
        assert answer.status_code in (201, 302), answer.text[:300]
        assert case_row(engine, number_of(answer, engine)).urgent is False, who
        if channel == "api":
            assert answer.json()["urgent"] is False


@pytest.mark.parametrize("who", ["inspector", "operator"])
def test_the_catalogues_roles_may_mark_urgent(
    server: str, engine: Engine, inside: tuple[float, float], who: str
) -> None:
    reporter = Reporter(server, who)
    by_form = reporter.form(report_fields(inside, urgent="1"))
    by_api = reporter.api(report_fields(inside, urgent=True))

    assert case_row(engine, number_of(by_form, engine)).urgent is True
    assert by_api.status_code == 201 and by_api.json()["urgent"] is True


def test_open311_urgent_only_from_a_trusted_key(
    server: str, engine: Engine, inside: tuple[float, float], trusted_key: str
) -> None:
    point = {"service_code": GARBAGE, "long": inside[0], "lat": inside[1], "urgent": "true"}
    untrusted = open311(server, {"api_key": DEMO_API_KEY, **point})
    trusted = open311(server, {"api_key": trusted_key, **point})

    assert untrusted.status_code == 201, untrusted.text[:300]
    assert trusted.status_code == 201, trusted.text[:300]
    assert case_row(engine, number_of(untrusted, engine)).urgent is False
    assert case_row(engine, number_of(trusted, engine)).urgent is True


def test_the_urgent_policy_is_the_catalogues() -> None:
    policy = urgent_policy()
    assert policy.roles == {"inspector", "operator"} and policy.trusted_api_keys
    assert not policy.allows("citizen") and not policy.allows(None, trusted=False)
    assert policy.allows(None, trusted=True) and not policy.allows("dispatcher", trusted=True)
    with pytest.raises(InvalidInput):
        read_urgent_policy({"urgent_roles": ["citizen"]})
    with pytest.raises(InvalidInput):
        read_urgent_policy({"urgent_roles": ["root"]})
    assert not read_urgent_policy({"urgent_trusted_api_keys": False}).allows(None, True)


# ---------------------------------------------------------------- idempotency keys


def test_another_account_reusing_a_key_gets_its_own_case(
    server: str, engine: Engine, inside: tuple[float, float]
) -> None:
    key = f"shared-{uuid.uuid4().hex}"
    alice, bob = Reporter(server, "citizen"), Reporter(server, "inspector")

    first = alice.api(report_fields(inside, description="alice's"), key=key)
    stolen = bob.api(report_fields(inside, description="bob's"), key=key)
    retried = alice.api(report_fields(inside, description="alice's"), key=key)

    assert first.status_code == 201 and stolen.status_code == 201, stolen.text[:300]
    assert stolen.json()["number"] != first.json()["number"]
    assert (
        case_row(engine, stolen.json()["number"]).reporter_id
        != case_row(engine, first.json()["number"]).reporter_id
    )
    assert retried.status_code == 200 and retried.json()["number"] == first.json()["number"]
    bob_again = bob.api(report_fields(inside, description="bob's"), key=key)
    assert bob_again.status_code == 200 and bob_again.json()["number"] == stolen.json()["number"]


def test_anonymous_browsers_keys_are_their_own(
    server: str, engine: Engine, inside: tuple[float, float]
) -> None:
    key = f"anon-{uuid.uuid4().hex}"
    one, other = Reporter(server), Reporter(server)

    first = one.form(report_fields(inside, idempotency_key=key))
    stolen = other.form(report_fields(inside, idempotency_key=key))
    retried = one.form(report_fields(inside, idempotency_key=key))
    by_api = one.api(report_fields(inside), key=key)  # the same browser, the other channel

    assert first.status_code == stolen.status_code == 302
    assert number_of(stolen, engine) != number_of(first, engine)
    assert number_of(retried, engine) == number_of(first, engine)
    assert by_api.status_code == 200 and by_api.json()["number"] == number_of(first, engine)


def test_an_api_key_does_not_find_another_keys_case(
    server: str, engine: Engine, inside: tuple[float, float], trusted_key: str
) -> None:
    key = f"o311-{uuid.uuid4().hex}"
    point = {"service_code": GARBAGE, "long": inside[0], "lat": inside[1], "device_id": "d1"}
    first = open311(server, {"api_key": DEMO_API_KEY, "idempotency_key": key, **point})
    other = open311(server, {"api_key": trusted_key, "idempotency_key": key, **point})
    retried = open311(server, {"api_key": DEMO_API_KEY, "idempotency_key": key, **point})

    assert first.status_code == other.status_code == 201
    assert number_of(other, engine) != number_of(first, engine)
    assert retried.status_code == 200 and number_of(retried, engine) == number_of(first, engine)


# ---------------------------------------------------------------- refused reports leave nothing


@pytest.mark.parametrize("channel", ["form", "api", "open311"])
@pytest.mark.parametrize(
    "refusal", ["outside", "unknown_class", "bad_answer", "fake_photo", "huge_photo"]
)
def test_a_refused_report_leaves_no_file(
    server: str,
    inside: tuple[float, float],
    photo_dir: Path,
    channel: str,
    refusal: str,
) -> None:
    point = OUTSIDE if refusal == "outside" else inside
    category = "E9999" if refusal == "unknown_class" else GARBAGE
    media = [("good.jpg", unique_jpeg())]
    if refusal == "fake_photo":
        media.append(("fake.jpg", b"\xff\xd8\xff" + os.urandom(2000)))  # a JPEG's start, no image
    if refusal == "huge_photo":
        media.append(("bomb.png", pixel_bomb()))
    attributes = {"attribute[nonsense]": "1"} if refusal == "bad_answer" else {}
    before = files_under(photo_dir)

    if channel == "open311":
        fields = {"api_key": DEMO_API_KEY, "service_code": category, "long": point[0]}
        answer = open311(server, {**fields, "lat": point[1], **attributes}, media)
    else:
        reporter = Reporter(server, "inspector")
        fields = report_fields(point, category=category)
        if refusal == "bad_answer":  # the web and JSON channels send no attributes
            fields["description"] = "x" * 4001
        answer = reporter.form(fields, media) if channel == "form" else reporter.api(fields, media)

    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert files_under(photo_dir) == before


def test_too_many_photos_are_refused_before_any_is_decoded(
    server: str, inside: tuple[float, float], photo_dir: Path
) -> None:
    before = files_under(photo_dir)
    media = [(f"{i}.jpg", unique_jpeg()) for i in range(photos.MAX_PHOTOS + 1)]

    answer = open311(
        server,
        {"api_key": DEMO_API_KEY, "service_code": GARBAGE, "long": inside[0], "lat": inside[1]},
        media,
    )

    assert answer.status_code == 400
    assert files_under(photo_dir) == before


def test_an_accepted_report_keeps_its_photos(
    server: str, engine: Engine, inside: tuple[float, float], photo_dir: Path
) -> None:
    before = files_under(photo_dir)
    answer = Reporter(server, "inspector").api(report_fields(inside), [("a.jpg", unique_jpeg())])

    assert answer.status_code == 201
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT path, thumb_path FROM photos WHERE case_id = :id"),
            {"id": answer.json()["id"]},
        ).all()
    assert files_under(photo_dir) - before == {photo_dir / name for row in stored for name in row}


def test_a_refused_action_leaves_no_photo(
    server: str, inside: tuple[float, float], photo_dir: Path
) -> None:
    """Report done by the unit with a good photo and a fake one: refused, nothing stored."""
    inspector, operator = Reporter(server, "inspector"), Reporter(server, "operator")
    dispatcher, staff = Reporter(server, "dispatcher"), Reporter(server, "staff")
    case = inspector.api(report_fields(inside)).json()
    for who, action in ((operator, "file"), (dispatcher, "dispatch"), (staff, "accept")):
        answer = who.api({}, path=f"/api/cases/{case['id']}/actions/{action}")
        assert answer.status_code == 200, (action, answer.text[:300])
    before = files_under(photo_dir)

    answer = staff.api(
        {"note": "cleaned"},
        [("after.jpg", unique_jpeg()), ("fake.jpg", b"\xff\xd8\xff" + os.urandom(500))],
        path=f"/api/cases/{case['id']}/actions/report_done",
    )

    assert answer.status_code == 400, answer.text[:300]
    assert files_under(photo_dir) == before
    done = staff.api(
        {"note": "cleaned"},
        [("after.jpg", unique_jpeg())],
        path=f"/api/cases/{case['id']}/actions/report_done",
    )
    assert done.status_code == 200, done.text[:300]
    assert len(files_under(photo_dir) - before) == 2  # the photo and its thumbnail


# ---------------------------------------------------------------- rollback and the sweep


def test_files_of_a_rolled_back_transaction_are_removed(
    security_app: Flask, photo_dir: Path
) -> None:
    before = files_under(photo_dir)
    shared = unique_jpeg()
    with security_app.app_context():
        with db.transaction() as session:  # an earlier report stored this image: kept
            decode_photos([Upload("kept.jpg", shared)], photo_dir, session)
        kept = files_under(photo_dir) - before
        with pytest.raises(RuntimeError), db.transaction() as session:
            session.execute(text("SELECT 1"))
            decode_photos(
                [Upload("a.jpg", unique_jpeg()), Upload("kept.jpg", shared)], photo_dir, session
            )
            assert len(files_under(photo_dir) - before) == 4
            with session.begin_nested():  # a savepoint released (a keyed report's insert)...
                session.execute(text("SELECT 1"))
            raise RuntimeError("the report's insert failed")  # ...then the whole rolls back
        db.session.remove()

    assert len(kept) == 2
    assert files_under(photo_dir) - before == kept


def test_the_sweep_removes_old_files_no_case_refers_to(
    server: str, security_app: Flask, engine: Engine, inside: tuple[float, float], photo_dir: Path
) -> None:
    answer = Reporter(server, "inspector").api(report_fields(inside), [("a.jpg", unique_jpeg())])
    assert answer.status_code == 201
    long_ago = 1_000_000_000
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT path, thumb_path FROM photos WHERE case_id = :id"),
            {"id": answer.json()["id"]},
        ).all()
    referenced = {photo_dir / name for row in rows for name in row}
    assert len(referenced) == 2
    for path in referenced:  # old, but a case refers to them
        os.utime(path, (long_ago, long_ago))
    old_orphan = photos.write_photo(photos.prepare_photo(unique_jpeg()), photo_dir)
    for path, _ in old_orphan:
        os.utime(path, (long_ago, long_ago))
    new_orphan = photos.write_photo(photos.prepare_photo(unique_jpeg()), photo_dir)
    stray_temp = photo_dir / "ab" / ".abc.jpg.123.tmp"
    stray_temp.parent.mkdir(parents=True, exist_ok=True)
    stray_temp.write_bytes(b"half")
    os.utime(stray_temp, (long_ago, long_ago))
    not_ours = photo_dir / "README.txt"
    not_ours.write_text("kept")
    os.utime(not_ours, (long_ago, long_ago))

    with security_app.app_context():
        removed = remove_orphan_photos()

    left = files_under(photo_dir)
    assert removed == 3
    assert referenced <= left
    assert not {path for path, _ in old_orphan} & left
    assert {path for path, _ in new_orphan} <= left  # within the grace period
    assert stray_temp not in left and not_ours in left


def test_the_sweep_is_a_periodic_job(security_app: Flask) -> None:
    from gridmgmt.kernel.queue import periodic_jobs

    assert periodic_jobs(security_app).get("cases.jobs.remove_orphan_photos") == 3600
