"""Security headers, private photos and the readiness details, over HTTP against the real
server: every kind of response carries the CSP, frame protection, nosniff and a referrer policy
(HSTS only over HTTPS); the map, report and case pages run in Chromium under that CSP without
a violation and with their Leaflet map drawn; a case's photo is `Cache-Control: private`;
`/readyz` details only for loopback clients and administrators."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from PIL import Image
from playwright.sync_api import Browser, Page
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from gridmgmt.app.demo import DEMO_PASSWORD
from tests.security.conftest import sign_in
from tests.support import point_in

CHROMIUM = "/usr/bin/chromium"
OUTSIDER = {"REMOTE_ADDR": "203.0.113.9"}


@pytest.fixture(scope="module", autouse=True)
def roomy_limits(security_app: Flask) -> Iterator[None]:
    """The rate limits out of the way: these tests send many requests from one address (the
    limits themselves are tests/security/test_rate_limits.py's)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in security_app.config if k.startswith(("RATE_", "OPEN311_RATE_"))]:
            patch.setitem(security_app.config, name, 1_000_000)
        yield


def assert_protected(answer: requests.Response) -> None:
    """The headers every response carries (over plain HTTP: no HSTS)."""
    headers = answer.headers
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'self'" in csp, (answer.url, csp)
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src is not None and "'unsafe-inline'" not in script_src.group(1)
    assert "'nonce-" in script_src.group(1)
    assert "object-src 'none'" in csp
    assert headers.get("X-Frame-Options") == "SAMEORIGIN"
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Referrer-Policy") == "strict-origin-when-cross-origin"
    assert "Strict-Transport-Security" not in headers


def test_every_kind_of_response_carries_the_headers(server: str) -> None:
    anonymous = requests.Session()
    leader = sign_in(server, "leader")
    answers = [
        anonymous.get(f"{server}/"),
        anonymous.get(f"{server}/report"),
        anonymous.get(f"{server}/static/js/map.js"),
        anonymous.get(f"{server}/api/cases/1"),  # 403 JSON
        anonymous.get(f"{server}/no-such-page"),  # 404 page
        anonymous.get(f"{server}/healthz"),
        anonymous.get(f"{server}/open311/v2/services.json"),
        anonymous.post(f"{server}/api/reports", json={}),  # 400: no CSRF token
        leader.get(f"{server}/maps"),
        leader.get(f"{server}/maps/frame"),
    ]
    assert [a.status_code for a in answers][:5] == [200, 200, 200, 403, 404]
    for answer in answers:
        assert_protected(answer)
    # Each response has its own nonce; the cached Folium page's inline scripts are allowed
    # by their hashes (its bytes are the same for everyone), and only those.
    frame = answers[-1]
    policy = frame.headers["Content-Security-Policy"]
    scripts = re.findall(r"<script>(.*?)</script>", frame.text, re.DOTALL)
    assert scripts
    hashes = {
        base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() for script in scripts
    }
    assert set(re.findall(r"'sha256-([^']+)'", policy)) == hashes
    nonces = {
        re.findall(r"'nonce-([^']+)'", a.headers["Content-Security-Policy"])[0] for a in answers
    }
    assert len(nonces) == len(answers)
    assert "'sha256-" not in answers[-2].headers["Content-Security-Policy"]


def test_hsts_only_over_https(security_app: Flask) -> None:
    client = security_app.test_client()
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
    secure = client.get("/healthz", base_url="https://city.example.org")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_a_base_maps_tiles_are_allowed_images(
    security_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(security_app.config, "TILE_URL", "https://{s}.tiles.example.org/{z}.png")
    policy = security_app.test_client().get("/healthz").headers["Content-Security-Policy"]
    images = re.search(r"img-src ([^;]*)", policy)
    assert images is not None
    assert images.group(1).split() == ["'self'", "data:", "blob:", "https://*.tiles.example.org"]


# ---------------------------------------------------------------- the pages in Chromium


def watched_page(browser: Browser, server: str, username: str | None) -> tuple[Page, list[str]]:
    """A page signed in as `username` that records every CSP violation (console messages and
    `securitypolicyviolation` events, in every frame)."""
    context = browser.new_context(base_url=server)
    context.set_default_timeout(15_000)
    violations: list[str] = []
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', e =>"
        " console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
    )
    page = context.new_page()
    page.on(
        "console",
        lambda m: (
            violations.append(m.text)
            if "Content Security Policy" in m.text or "CSP violation" in m.text
            else None
        ),
    )
    if username:
        page.goto("/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", DEMO_PASSWORD)
        with page.expect_navigation():
            page.click("main form button[type=submit]")
        assert "/login" not in page.url
    return page, violations


@pytest.fixture(scope="module")
def case_id(server: str, security_db: URL) -> int:
    """A case reported now by the inspector (inside the demo city)."""
    engine = create_engine(security_db)
    with Session(engine) as session:
        lon, lat = point_in(session, "990100006046")
    engine.dispose()
    http = sign_in(server, "inspector")
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get(f"{server}/report").text)
    assert token is not None
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 200)).save(buffer, "JPEG")
    answer = http.post(
        f"{server}/api/reports",
        data={"category": "E0102", "lon": str(lon), "lat": str(lat), "description": "headers"},
        files=[("photos", ("a.jpg", buffer.getvalue(), "image/jpeg"))],
        headers={"X-CSRFToken": token.group(1)},
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def test_map_page_runs_under_the_policy(browser: Browser, server: str) -> None:
    page, violations = watched_page(browser, server, "leader")
    page.goto("/maps")
    frame = page.frame_locator("iframe.supervisor-map")
    frame.locator(".leaflet-container").wait_for()
    frame.locator(".leaflet-control-layers").wait_for()  # the Folium script ran (nonce)
    page.wait_for_timeout(300)
    assert violations == []
    page.context.close()


def test_report_page_runs_under_the_policy(browser: Browser, server: str) -> None:
    page, violations = watched_page(browser, server, None)
    page.goto("/report")
    page.locator(".leaflet-container").first.wait_for()
    page.wait_for_timeout(300)
    assert violations == []
    page.context.close()


def test_case_page_runs_under_the_policy(browser: Browser, server: str, case_id: int) -> None:
    page, violations = watched_page(browser, server, "inspector")
    page.goto(f"/cases/{case_id}")
    page.locator("#case-map.leaflet-container").wait_for()  # the inline script ran (nonce)
    page.wait_for_timeout(300)
    assert violations == []
    page.context.close()


# ---------------------------------------------------------------- photos and readiness


def test_case_photos_are_private(server: str, security_db: URL, case_id: int) -> None:
    engine = create_engine(security_db)
    with engine.connect() as conn:
        photo_id = conn.execute(
            text("SELECT id FROM photos WHERE case_id = :c"), {"c": case_id}
        ).scalar_one()
    engine.dispose()
    http = sign_in(server, "inspector")
    for path in (f"/photos/{photo_id}", f"/photos/{photo_id}/thumb"):
        answer = http.get(f"{server}{path}")
        assert answer.status_code == 200
        directives = {d.strip() for d in answer.headers["Cache-Control"].split(",")}
        assert "private" in directives and "public" not in directives, directives
        assert any(d.startswith("max-age=") and d != "max-age=0" for d in directives)
        assert_protected(answer)


def details(answer: Any) -> dict[str, Any]:
    """The JSON of a /readyz answer (requests or the test client)."""
    return answer.json if isinstance(answer.json, dict) else answer.json()


def test_readiness_details_for_loopback_and_admins_only(server: str, security_app: Flask) -> None:
    local = requests.get(f"{server}/readyz")  # the server listens on loopback
    assert local.status_code == 200
    assert local.json()["checks"] == {"database": "ok", "redis": "ok"}

    outsider = security_app.test_client().get("/readyz", environ_base=OUTSIDER)
    assert outsider.status_code == 200
    assert outsider.get_json() == {"status": "ready"}

    admin = security_app.test_client()
    form = admin.get("/login", environ_base=OUTSIDER).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    signed = admin.post(
        "/login",
        data={"username": "admin", "password": DEMO_PASSWORD, "csrf_token": token.group(1)},
        environ_base=OUTSIDER,
    )
    assert signed.status_code in (302, 303)
    answer = admin.get("/readyz", environ_base=OUTSIDER)
    assert answer.get_json()["checks"]["database"] == "ok"
